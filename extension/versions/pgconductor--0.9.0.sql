\echo Use "CREATE EXTENSION pgconductor" to load this file. \quit

-- source: extension/src/00_preamble.sql
-- pgconductor: durable task execution on PostgreSQL alone.
--
-- This script is built by concatenating extension/src/NN_*.sql in order (see the Makefile).
-- Every scheduling rule lives in the functions below; clients only call them.
--
-- Settings read by the extension:
--   pgconductor.fake_now    timestamptz text; when set, pgconductor._now() returns it instead of
--                           the transaction time. Tests move time with it: SET pgconductor.fake_now = '...'.
--   pgconductor.test_clock  honoured only as a database-wide setting made by the database's owner
--                           (ALTER DATABASE db SET pgconductor.test_clock = on): without it, a session
--                           that sets fake_now gets an error instead of a moved clock.

COMMENT ON SCHEMA pgconductor IS 'pgconductor: durable task execution (tables, claim/complete/heartbeat functions)';

-- source: extension/src/05_internal.sql
-- Internal helpers: the one clock, input validation, windows and backoff.
-- Names start with "_" and are not granted to PUBLIC (see 90_grants.sql).

-- The test clock's gate: returns p_fake as a timestamptz when the database's owner turned the
-- test clock on for this database (ALTER DATABASE ... SET pgconductor.test_clock = on), else
-- raises 55000. A role's own or a session's setting does not count: any caller could move time
-- for everyone (expire live orchestrators, write heartbeats dated far ahead). Locks nothing.
CREATE FUNCTION pgconductor._test_clock(p_fake text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_db_role_setting AS s
         WHERE s.setrole = 0
           AND s.setdatabase = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = current_database())
           AND s.setconfig && ARRAY['pgconductor.test_clock=on', 'pgconductor.test_clock=true',
                                    'pgconductor.test_clock=1', 'pgconductor.test_clock=yes']) THEN
        RAISE EXCEPTION 'pgconductor.fake_now is set, but the test clock is off in database %', quote_ident(current_database())
            USING ERRCODE = '55000',
                  HINT = 'RESET pgconductor.fake_now. In a test database its owner turns the test clock on: ALTER DATABASE <db> SET pgconductor.test_clock = on.';
    END IF;
    RETURN p_fake::timestamptz;
END
$$;

-- The one clock: pgconductor.fake_now when set and the test clock is on (tests), else the
-- transaction's start time. Locks nothing; returns timestamptz. Every time-dependent rule calls
-- this and nothing else.
-- Hot helpers such as this one use a SQL-standard body (RETURN ...): its names are bound when
-- the function is created, so there is no search_path to pin, and without a SET clause the
-- planner inlines the call (a pinned SQL function is planned anew in every statement).
CREATE FUNCTION pgconductor._now()
RETURNS timestamptz
LANGUAGE sql STABLE
RETURN CASE WHEN coalesce(current_setting('pgconductor.fake_now', true), '') = '' THEN now()
            ELSE pgconductor._test_clock(current_setting('pgconductor.fake_now', true)) END;

-- A time-ordered uuid (version 7 layout): 48 bits of milliseconds from _now(), then random
-- bits. New executions get one, so rows invoked together sit together in the heap and
-- claims in (priority, run_at, id) order read few pages. Locks nothing. Inlined (see _now).
CREATE FUNCTION pgconductor._uuid7()
RETURNS uuid
LANGUAGE sql VOLATILE
RETURN encode(
    set_bit(set_bit(
        overlay(uuid_send(gen_random_uuid())
                PLACING substring(int8send(floor(extract(epoch FROM pgconductor._now()) * 1000)::bigint) FROM 3)
                FROM 1 FOR 6),
        52, 1), 53, 1),  -- version nibble 0100 (v4) becomes 0111 (v7); the variant bits stay
    'hex')::uuid;

-- True when p_key is a usable task key: 1-200 characters, no control characters, no
-- leading or trailing white space. The tables' CHECK constraints spell the same rule out
-- inline (a function call there costs on every claim): keep the three in step.
CREATE FUNCTION pgconductor._valid_task_key(p_key text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN p_key IS NOT NULL
   AND char_length(p_key) BETWEEN 1 AND 200
   AND p_key !~ '[[:cntrl:]]'
   AND p_key = btrim(p_key);

-- True when p_queue is a valid queue name: 1-48 characters of [a-z0-9_-], starting with a
-- letter or digit. The partition is named "executions_<queue>", so names map 1:1 to tables.
CREATE FUNCTION pgconductor._valid_queue_name(p_queue text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN p_queue IS NOT NULL AND p_queue ~ '^[a-z0-9][a-z0-9_-]{0,47}$';

-- The longest interval a task or orchestrator setting may hold (backoff, timeout, start-by...):
-- larger ones overflowed the time arithmetic of every later result of that task. Inlined.
CREATE FUNCTION pgconductor._max_interval()
RETURNS interval
LANGUAGE sql IMMUTABLE
RETURN interval '365 days';

-- The most queues a database may hold: each is a partition with its indexes, and a statement
-- that reads every partition locks them all (thousands exhaust the lock table: 53200). Inlined.
CREATE FUNCTION pgconductor._max_queues()
RETURNS integer
LANGUAGE sql IMMUTABLE
RETURN 100;

-- p_value made safe for an error message: quoted, control characters and the Unicode line and
-- paragraph separators (U+2028, U+2029) shown as "?", cut after 60 characters, 'NULL' for
-- NULL. One line, whatever the caller sent. Locks nothing.
CREATE FUNCTION pgconductor._show(p_value text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN CASE WHEN p_value IS NULL THEN 'NULL'
            ELSE quote_literal(regexp_replace(left(p_value, 60), '[[:cntrl:]' || chr(8232) || chr(8233) || ']', '?', 'g'))
                 || CASE WHEN char_length(p_value) > 60 THEN '...' ELSE '' END END;

-- Raises 22023 with a hint unless p_key is a valid task key; returns nothing.
CREATE FUNCTION pgconductor._assert_task_key(p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT pgconductor._valid_task_key(p_key) THEN
        RAISE EXCEPTION 'invalid task key %', pgconductor._show(p_key)
            USING ERRCODE = '22023',
                  HINT = 'A task key is 1-200 characters, without control characters or surrounding spaces.';
    END IF;
END
$$;

-- Raises 22023 with a hint unless p_queue is a valid queue name; returns nothing.
CREATE FUNCTION pgconductor._assert_queue_name(p_queue text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT pgconductor._valid_queue_name(p_queue) THEN
        RAISE EXCEPTION 'invalid queue name %', pgconductor._show(p_queue)
            USING ERRCODE = '22023',
                  HINT = 'A queue name is 1-48 characters of a-z, 0-9, "_" and "-", starting with a letter or digit.';
    END IF;
END
$$;

-- Raises 22023 unless p_key is NULL (no deduplication) or 1-250 characters: the unique index
-- on (queue, task_key, dedupe_key) refuses entries over about 2.7 kB (54000). Returns nothing.
CREATE FUNCTION pgconductor._assert_dedupe_key(p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_key IS NOT NULL AND char_length(p_key) NOT BETWEEN 1 AND 250 THEN
        RAISE EXCEPTION 'invalid dedupe key % (% characters)', pgconductor._show(p_key), char_length(p_key)
            USING ERRCODE = '22023', HINT = 'A dedupe key is 1-250 characters (hash a longer one), or NULL for none.';
    END IF;
END
$$;

-- True when p_name is a usable event name: 1-200 characters without control characters. The
-- one rule for emit_event() and for the event waits of durable workflows. Inlined.
CREATE FUNCTION pgconductor._valid_event_name(p_name text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN char_length(p_name) BETWEEN 1 AND 200 AND p_name !~ '[[:cntrl:]]';

-- Raises 22023 unless p_key is NULL (none) or a usable concurrency key: 1-250 characters
-- without control characters (the claim joins task and key with one). Returns nothing.
CREATE FUNCTION pgconductor._assert_concurrency_key(p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_key IS NOT NULL AND (char_length(p_key) NOT BETWEEN 1 AND 250 OR p_key ~ '[[:cntrl:]]') THEN
        RAISE EXCEPTION 'invalid concurrency key % (% characters)', pgconductor._show(p_key), char_length(p_key)
            USING ERRCODE = '22023', HINT = 'A concurrency key (a tenant, a user...) is 1-250 characters without control characters, or NULL for none.';
    END IF;
END
$$;

-- Raises 22023 unless p_value is NULL (no limit) or at least 1 (p_what names the setting).
-- Returns nothing.
CREATE FUNCTION pgconductor._assert_limit(p_what text, p_value integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value < 1 THEN
        RAISE EXCEPTION '% must be at least 1, got %', p_what, p_value
            USING ERRCODE = '22023', HINT = 'Pass NULL for no limit.';
    END IF;
END
$$;

-- Raises 22023 unless p_value lies in [p_min, p_max] (p_what names the setting in the
-- message); NULL passes when p_nullable. Returns nothing.
CREATE FUNCTION pgconductor._assert_interval(p_what text, p_value interval, p_min interval, p_nullable boolean,
                                             p_max interval DEFAULT pgconductor._max_interval())
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NULL AND p_nullable THEN
        RETURN;
    END IF;
    IF p_value IS NULL OR p_value < p_min OR p_value > p_max THEN
        RAISE EXCEPTION '% must be between % and %, got %', p_what, p_min, p_max,
                        coalesce(p_value::text, 'NULL')
            USING ERRCODE = '22023', HINT = format('Pass an interval such as ''30 seconds''%s.',
                                                   CASE WHEN p_nullable THEN ', or NULL for none' ELSE '' END);
    END IF;
END
$$;

-- Raises 22023 unless p_tz names a time zone the server knows as a zone (an IANA name such
-- as Europe/Berlin, or UTC), whatever the session's timezone_abbreviations: an abbreviation
-- valid only in the registering session made every later claim of other sessions fail. A
-- name with a digit must be listed in pg_timezone_names (Etc/GMT+3 is, the POSIX string
-- UTC+2, which means UTC-2, is not); the others need no such look-up (150 ms). The SET
-- clause restores the session's TimeZone when the function returns.
CREATE FUNCTION pgconductor._assert_timezone(p_tz text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
    IF p_tz IS NULL OR p_tz = '' OR char_length(p_tz) > 100 THEN
        RAISE invalid_parameter_value;
    END IF;
    PERFORM set_config('TimeZone', p_tz, true);
    IF p_tz ~ '[0-9]' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names AS z WHERE z.name = p_tz) THEN
        RAISE invalid_parameter_value;
    END IF;
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE EXCEPTION 'unknown time zone %', pgconductor._show(p_tz)
        USING ERRCODE = '22023', HINT = 'Use a zone name such as Europe/Berlin or UTC (see pg_timezone_names); abbreviations such as CEST are not zones.';
END
$$;

-- True when p_at falls inside the daily window [p_start, p_end) read in time zone p_tz.
-- A window whose end is before its start crosses midnight (22:00-06:00). No window = always.
CREATE FUNCTION pgconductor._in_window(p_start time, p_end time, p_tz text, p_at timestamptz)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN p_start IS NULL OR p_end IS NULL THEN true
        WHEN p_start < p_end THEN l.t >= p_start AND l.t < p_end
        ELSE l.t >= p_start OR l.t < p_end
    END
    FROM (SELECT (p_at AT TIME ZONE coalesce(p_tz, 'UTC'))::time AS t) AS l
$$;

-- Tasks whose daily window is closed at p_at: the claim skips them. A task whose time zone
-- the server no longer knows counts as closed, so one bad setting never fails the claims of
-- other tasks. Locks nothing; returns the task keys (empty when no task has a window).
CREATE FUNCTION pgconductor._closed_tasks(p_at timestamptz)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_closed text[] := '{}';
    v_task   record;
BEGIN
    FOR v_task IN
        SELECT t.key, t.window_start, t.window_end, t.timezone FROM pgconductor.tasks AS t
         WHERE t.window_start IS NOT NULL
    LOOP
        BEGIN
            IF NOT pgconductor._in_window(v_task.window_start, v_task.window_end, v_task.timezone, p_at) THEN
                v_closed := v_closed || v_task.key;
            END IF;
        EXCEPTION WHEN invalid_parameter_value OR data_exception THEN
            v_closed := v_closed || v_task.key;
        END;
    END LOOP;
    RETURN v_closed;
END
$$;

-- Delay before retry number p_attempt + 1: min(cap, base * 2^(attempt-1)), with "equal
-- jitter" (uniform in [d/2, d]) so retry storms spread out. Never exceeds p_cap, and never
-- overflows: computed in seconds (double precision), capped before it becomes an interval.
CREATE FUNCTION pgconductor._backoff(p_attempt integer, p_base interval, p_cap interval)
RETURNS interval
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT make_interval(secs => d / 2 + d / 2 * random())
    FROM (SELECT least(extract(epoch FROM least(p_cap, pgconductor._max_interval()))::double precision,
                       greatest(extract(epoch FROM p_base)::double precision, 0)
                       * power(2::double precision, least(greatest(coalesce(p_attempt, 1), 1) - 1, 60))) AS d) AS b
$$;

-- source: extension/src/10_types.sql
-- Composite types returned by the public API.

-- One claimed execution, as get_executions() hands it to a worker. attempt counts the
-- attempts spent (a released attempt is given back); lease numbers every claim of the
-- execution and never repeats: (orchestrator id, lease) is what a result must quote. steps:
-- the stored steps of a durable workflow by key (NULL when none; see _steps_by_key).
CREATE TYPE pgconductor.claimed_execution AS (
    id           uuid,
    task_key     text,
    queue        text,
    payload      jsonb,
    attempt      integer,
    max_attempts integer,
    priority     integer,
    run_at       timestamptz,
    timeout_ms   bigint,
    lease        integer,
    steps        jsonb
);

-- source: extension/src/20_tables.sql
-- Tables. Live executions sit in the small, hot, LIST-partitioned table "executions" (one
-- partition per queue); an execution that ends moves to "finished_executions", so claims
-- never scan finished work.

-- Queues: inserting a row creates the queue's partition, deleting it drops it (25_queues.sql);
-- at most _max_queues() of them.
-- paused: claims skip the queue; fair_share: its concurrency keys share the claim round-robin
-- (47_flow_gate.sql), served by an index on its partition made by set_fair_share().
CREATE TABLE pgconductor.queues (
    name       text PRIMARY KEY CONSTRAINT queues_name_valid CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,47}$'),
    created_at timestamptz NOT NULL DEFAULT pgconductor._now(),
    paused     boolean NOT NULL DEFAULT false,
    fair_share boolean NOT NULL DEFAULT false
);

-- Tasks: settings per task key. A key invoked before any worker registered it needs no row
-- here: it runs with the defaults (3 attempts, no window, 1 s..10 min backoff). The column
-- defaults are the only home of the defaults: register_task() and declare_task() read them.
-- max_retry_after: how often a handler may put its execution back with RetryAfter.
-- Flow control (48_flow.sql): max_running and max_running_per_key cap running executions of
-- the task and of each concurrency key; rate_limit and rate_limit_per_key cap starts per
-- rate_period; start_within expires executions not started that long after run_at; paused:
-- claims skip it; keep_completed / keep_failed: how long maintain() keeps them once ended.
CREATE TABLE pgconductor.tasks (
    key          text PRIMARY KEY CONSTRAINT tasks_key_valid
                     CHECK (char_length(key) BETWEEN 1 AND 200 AND key !~ '[[:cntrl:]]' AND key = btrim(key)),
    queue        text NOT NULL DEFAULT 'default' CONSTRAINT tasks_queue_valid CHECK (queue ~ '^[a-z0-9][a-z0-9_-]{0,47}$'),
    max_attempts integer NOT NULL DEFAULT 3 CONSTRAINT tasks_max_attempts_positive CHECK (max_attempts >= 1),
    window_start time,
    window_end   time,
    timezone     text NOT NULL DEFAULT 'UTC',
    backoff_base interval NOT NULL DEFAULT '1 second' CONSTRAINT tasks_backoff_base_nonnegative CHECK (backoff_base >= interval '0'),
    backoff_cap  interval NOT NULL DEFAULT '10 minutes'
                     CONSTRAINT tasks_backoff_cap_bounded CHECK (backoff_cap <= pgconductor._max_interval()),
    timeout      interval CONSTRAINT tasks_timeout_positive CHECK (timeout > interval '0')
                     CONSTRAINT tasks_timeout_bounded CHECK (timeout <= pgconductor._max_interval()),
    created_at   timestamptz NOT NULL DEFAULT pgconductor._now(),
    updated_at   timestamptz NOT NULL DEFAULT pgconductor._now(),
    max_retry_after integer NOT NULL DEFAULT 20
                     CONSTRAINT tasks_max_retry_after_nonnegative CHECK (max_retry_after >= 0),
    max_running         integer CONSTRAINT tasks_max_running_positive CHECK (max_running >= 1),
    max_running_per_key integer CONSTRAINT tasks_max_running_per_key_positive CHECK (max_running_per_key >= 1),
    rate_limit          integer CONSTRAINT tasks_rate_limit_positive CHECK (rate_limit >= 1),
    rate_limit_per_key  integer CONSTRAINT tasks_rate_limit_per_key_positive CHECK (rate_limit_per_key >= 1),
    rate_period         interval NOT NULL DEFAULT '1 second'
                            CONSTRAINT tasks_rate_period_bounded CHECK (rate_period > interval '0' AND rate_period <= pgconductor._max_interval()),
    start_within        interval CONSTRAINT tasks_start_within_bounded
                            CHECK (start_within > interval '0' AND start_within <= pgconductor._max_interval()),
    paused              boolean NOT NULL DEFAULT false,
    keep_completed      interval NOT NULL DEFAULT '7 days'
                            CONSTRAINT tasks_keep_completed_bounded CHECK (keep_completed >= interval '0' AND keep_completed <= pgconductor._max_interval()),
    keep_failed         interval NOT NULL DEFAULT '30 days'
                            CONSTRAINT tasks_keep_failed_bounded CHECK (keep_failed >= interval '0' AND keep_failed <= pgconductor._max_interval()),
    CONSTRAINT tasks_window_both_or_neither CHECK ((window_start IS NULL) = (window_end IS NULL)),
    CONSTRAINT tasks_window_not_empty CHECK (window_start IS NULL OR window_start <> window_end),
    CONSTRAINT tasks_backoff_cap_ge_base CHECK (backoff_cap >= backoff_base)
);

-- Live executions: pending (locked_by IS NULL) or running (locked_by = the orchestrator
-- holding the lease). attempts: attempts spent; lease: claims ever made (never decreases, so
-- (locked_by, lease) identifies one claim). Priority: lower runs first. errors: every attempt's
-- error, oldest first (_with_error keeps the last 50); retry_afters: RetryAfter put it back.
-- Durable workflows (46_workflows.sql): parent_id/parent_step name a child's parent and the
-- parent's step; waiting (sleep | children | event) marks a parked execution, which no claim
-- sees until it is woken (run_at is its wake time or deadline); has_steps: steps are stored.
-- concurrency_key: the key its task's per-key limits, rate limits and fair share count by;
-- start_by: it ends 'expired' when no claim started it by then (maintain()).
CREATE TABLE pgconductor.executions (
    id            uuid NOT NULL DEFAULT pgconductor._uuid7(),
    task_key      text NOT NULL CONSTRAINT executions_task_key_valid
                      CHECK (char_length(task_key) BETWEEN 1 AND 200 AND task_key !~ '[[:cntrl:]]' AND task_key = btrim(task_key)),
    queue         text NOT NULL DEFAULT 'default',
    payload       jsonb NOT NULL DEFAULT '{}',
    run_at        timestamptz NOT NULL DEFAULT pgconductor._now(),
    priority      integer NOT NULL DEFAULT 0,
    attempts      integer NOT NULL DEFAULT 0 CONSTRAINT executions_attempts_nonnegative CHECK (attempts >= 0),
    lease         integer NOT NULL DEFAULT 0,
    locked_by     uuid,
    locked_at     timestamptz,
    last_error    text,
    dedupe_key    text,
    cancel_reason text,
    created_at    timestamptz NOT NULL DEFAULT pgconductor._now(),
    errors        jsonb NOT NULL DEFAULT '[]',
    retry_afters  integer NOT NULL DEFAULT 0,
    parent_id     uuid,
    parent_step   text,
    waiting       text CONSTRAINT executions_waiting_valid CHECK (waiting IN ('sleep', 'children', 'event')),
    has_steps     boolean NOT NULL DEFAULT false,
    concurrency_key text,
    start_by      timestamptz,
    CONSTRAINT executions_pkey PRIMARY KEY (id, queue),
    CONSTRAINT executions_lock_consistent CHECK ((locked_by IS NULL) = (locked_at IS NULL))
) PARTITION BY LIST (queue);

-- The claim path: pending rows in claim order. The claim reads only the rows it returns;
-- parked rows are not in it, so a million of them cost a claim nothing.
CREATE INDEX executions_claim_idx ON pgconductor.executions (priority, run_at, id)
    INCLUDE (task_key, attempts) WHERE locked_by IS NULL AND waiting IS NULL;
-- Parked rows by wake time: the claim wakes the due ones of its queue.
CREATE INDEX executions_timers_idx ON pgconductor.executions (run_at) WHERE waiting IS NOT NULL;
-- Children by parent: cancelling a parent reaches its live children.
CREATE INDEX executions_parent_idx ON pgconductor.executions (parent_id) WHERE parent_id IS NOT NULL;
-- Recovery and release: the rows an orchestrator holds.
CREATE INDEX executions_locked_by_idx ON pgconductor.executions (locked_by) WHERE locked_by IS NOT NULL;
-- Start-by deadlines: maintain() expires the overdue ones.
CREATE INDEX executions_start_by_idx ON pgconductor.executions (start_by) WHERE start_by IS NOT NULL;
-- Cancel by concurrency key.
CREATE INDEX executions_concurrency_key_idx ON pgconductor.executions (task_key, concurrency_key)
    WHERE concurrency_key IS NOT NULL;
-- Deduplication: one live execution per (queue, task, dedupe key).
CREATE UNIQUE INDEX executions_dedupe_key ON pgconductor.executions (queue, task_key, dedupe_key)
    WHERE dedupe_key IS NOT NULL;

-- Executions that ended. state: completed | failed | cancelled | expired. Partitioned by
-- finished_at: daily partitions made ahead by maintain() (_add_finished_partitions), the rest
-- in the default partition; retention drops a whole day's partition once every row in it is
-- past its task's keep (_drop_finished_partitions) instead of deleting its rows one by one,
-- and deletes the rest per task policy in bounded batches (maintain()); prune_finished() by age.
CREATE TABLE pgconductor.finished_executions (
    id              uuid NOT NULL,
    task_key        text NOT NULL,
    queue           text NOT NULL,
    payload         jsonb NOT NULL,
    state           text NOT NULL CONSTRAINT finished_state_valid CHECK (state IN ('completed', 'failed', 'cancelled', 'expired')),
    attempts        integer NOT NULL,
    lease           integer NOT NULL DEFAULT 0,
    priority        integer NOT NULL,
    run_at          timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    orchestrator_id uuid,
    last_error      text,
    result          jsonb,
    errors          jsonb NOT NULL DEFAULT '[]',
    parent_id       uuid,
    parent_step     text,
    CONSTRAINT finished_executions_pkey PRIMARY KEY (id, finished_at)
) PARTITION BY RANGE (finished_at);
CREATE TABLE pgconductor.finished_executions_default PARTITION OF pgconductor.finished_executions DEFAULT;
-- Retention only: every extra index here is paid by every completion.
CREATE INDEX finished_executions_finished_at_idx ON pgconductor.finished_executions (finished_at);
-- Listing and bulk retries of failed and cancelled executions, newest first; partial, so a
-- completion does not pay for it.
CREATE INDEX finished_executions_unsuccessful_idx ON pgconductor.finished_executions (state, task_key, id)
    WHERE state <> 'completed';
-- A parent's children that ended.
CREATE INDEX finished_executions_parent_idx ON pgconductor.finished_executions (parent_id)
    WHERE parent_id IS NOT NULL;

-- Orchestrators (one per worker process). expired_at: heartbeat lapsed and recovery took its
-- work; drained: recovery found nothing more to release; stopped_at: left cleanly.
CREATE TABLE pgconductor.orchestrators (
    id                uuid PRIMARY KEY,
    started_at        timestamptz NOT NULL DEFAULT pgconductor._now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT pgconductor._now(),
    stale_after       interval NOT NULL DEFAULT '30 seconds' CONSTRAINT orchestrators_stale_after_positive CHECK (stale_after > interval '0'),
    version           text,
    info              jsonb NOT NULL DEFAULT '{}',
    expired_at        timestamptz,
    drained           boolean NOT NULL DEFAULT false,
    stopped_at        timestamptz
);

-- Signals waiting for an orchestrator: shutdown, cancel (execution_id), lease_lost
-- (execution_id: recovery gave its execution away). Delivered and deleted by heartbeat().
CREATE TABLE pgconductor.signals (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    orchestrator_id uuid NOT NULL REFERENCES pgconductor.orchestrators (id) ON DELETE CASCADE,
    kind            text NOT NULL CONSTRAINT signals_kind_valid CHECK (kind IN ('shutdown', 'cancel', 'lease_lost')),
    execution_id    uuid,
    created_at      timestamptz NOT NULL DEFAULT pgconductor._now(),
    CONSTRAINT signals_unique UNIQUE NULLS NOT DISTINCT (orchestrator_id, kind, execution_id)
);

-- source: extension/src/21_workflow_tables.sql
-- Tables of durable workflows: stored steps, emitted events and the waits for them.

-- One row per step an execution reached. kind: step (a ctx.step result), sleep (until: the
-- wake time), child (child_id: the child execution; state waiting until it ends), event (a
-- wait for an event; event_id: the event it got). seq: the order in which the run first
-- reached it (a replay that meets another key there is not deterministic). Kept as long as
-- the execution is.
CREATE TABLE pgconductor.steps (
    execution_id uuid NOT NULL,
    key          text NOT NULL CONSTRAINT steps_key_valid
                     CHECK (char_length(key) BETWEEN 1 AND 200 AND key !~ '[[:cntrl:]]'),
    seq          integer NOT NULL CONSTRAINT steps_seq_nonnegative CHECK (seq >= 0),
    kind         text NOT NULL CONSTRAINT steps_kind_valid CHECK (kind IN ('step', 'sleep', 'child', 'event')),
    state        text NOT NULL DEFAULT 'done'
                     CONSTRAINT steps_state_valid CHECK (state IN ('done', 'waiting', 'failed', 'cancelled', 'timed_out')),
    result       jsonb,
    error        text,
    child_id     uuid,
    until        timestamptz,
    event_id     bigint,
    created_at   timestamptz NOT NULL DEFAULT pgconductor._now(),
    done_at      timestamptz,
    CONSTRAINT steps_pkey PRIMARY KEY (execution_id, key)
);
-- A child's end finds its parent's step.
CREATE INDEX steps_child_idx ON pgconductor.steps (child_id) WHERE child_id IS NOT NULL;

-- Emitted events, kept for prune_finished()'s retention so a wait registered after the
-- emit still finds it.
CREATE TABLE pgconductor.events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL CONSTRAINT events_name_valid
                   CHECK (char_length(name) BETWEEN 1 AND 200 AND name !~ '[[:cntrl:]]'),
    payload    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT pgconductor._now()
);
CREATE INDEX events_name_idx ON pgconductor.events (name, created_at);

-- Parked executions waiting for an event. match_key: one top-level "key=value" of match (the
-- first key), NULL for an empty match. An emit looks up the waits of its name whose match_key
-- is one of its payload's own pairs (or NULL), so it costs O(matching waits), not O(waits).
CREATE TABLE pgconductor.event_waits (
    execution_id uuid NOT NULL,
    step_key     text NOT NULL,
    event_name   text NOT NULL,
    match        jsonb NOT NULL DEFAULT '{}',
    match_key    text,
    created_at   timestamptz NOT NULL DEFAULT pgconductor._now(),
    CONSTRAINT event_waits_pkey PRIMARY KEY (execution_id, step_key)
);
CREATE INDEX event_waits_lookup_idx ON pgconductor.event_waits (event_name, match_key);

-- source: extension/src/22_flow_tables.sql
-- Flow-control state (48_flow_gate.sql, 40_invoke.sql). Running counts are not stored: a slot
-- is the lease of the execution holding it (executions.locked_by), so it is freed by the
-- very statement that ends, releases, parks or recovers that execution, and cannot leak.

-- Token buckets of rate-limited tasks: per_key false is the task's bucket (key ''), true one
-- concurrency key's (key '' for executions without one). tokens as of "at"; the bucket
-- refills at capacity per rate_period up to capacity. No row: a full bucket (maintain()
-- deletes the full ones).
CREATE TABLE pgconductor.rate_buckets (
    task_key text NOT NULL,
    per_key  boolean NOT NULL,
    key      text NOT NULL,
    tokens   double precision NOT NULL,
    at       timestamptz NOT NULL,
    PRIMARY KEY (task_key, per_key, key)
);

-- Throttle periods: the execution admitted for (task, key) and the end of its period; until
-- then invokes with that key get its id back (a finished one keeps its period). key '' is
-- the whole task. maintain() deletes the ended periods.
CREATE TABLE pgconductor.throttle_slots (
    task_key     text NOT NULL,
    key          text NOT NULL,
    until        timestamptz NOT NULL,
    execution_id uuid NOT NULL,
    PRIMARY KEY (task_key, key)
);

-- Fair-share weights of concurrency keys in a queue (no row: weight 1). A key of weight w is
-- served w rows for every row of a key of weight 1 while both wait.
CREATE TABLE pgconductor.key_weights (
    queue  text NOT NULL REFERENCES pgconductor.queues (name) ON DELETE CASCADE,
    key    text NOT NULL,
    weight integer NOT NULL CONSTRAINT key_weights_weight_range CHECK (weight BETWEEN 1 AND 100),
    PRIMARY KEY (queue, key)
);

-- source: extension/src/25_queues.sql
-- Queues are LIST partitions of pgconductor.executions, created on demand and dropped with
-- drop_queue(). The partition of queue q is pgconductor."executions_q$".

-- The partition that holds queue p_queue's executions. The "$", which queue names never
-- contain, ends every partition name: index names PostgreSQL makes up end in letters (_pkey,
-- _idx, _key), so no queue's partition can collide with another's index (queue "pkey" or
-- "default_pkey" used to fail with 42P07). Inlined.
CREATE FUNCTION pgconductor._partition_name(p_queue text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN 'executions_' || p_queue || '$';

-- Trigger on queues: INSERT creates the partition, DELETE drops it, a rename is refused
-- (the other columns are settings: pause_queue, set_fair_share).
-- Takes the locks CREATE/DROP TABLE take on pgconductor.executions.
CREATE FUNCTION pgconductor._queues_partition_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('CREATE TABLE pgconductor.%I PARTITION OF pgconductor.executions FOR VALUES IN (%L)',
                       pgconductor._partition_name(NEW.name), NEW.name);
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('DROP TABLE IF EXISTS pgconductor.%I', pgconductor._partition_name(OLD.name));
        RETURN OLD;
    ELSIF NEW.name = OLD.name THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'queues cannot be renamed'
        USING ERRCODE = '55000', HINT = 'Create a new queue with create_queue() and drop the old one with drop_queue().';
END
$$;

CREATE TRIGGER queues_partition_insert AFTER INSERT ON pgconductor.queues
    FOR EACH ROW EXECUTE FUNCTION pgconductor._queues_partition_trigger();
CREATE TRIGGER queues_partition_delete AFTER DELETE ON pgconductor.queues
    FOR EACH ROW EXECUTE FUNCTION pgconductor._queues_partition_trigger();
CREATE TRIGGER queues_no_rename BEFORE UPDATE ON pgconductor.queues
    FOR EACH ROW EXECUTE FUNCTION pgconductor._queues_partition_trigger();

INSERT INTO pgconductor.queues (name) VALUES ('default');

-- Makes sure queue p_queue exists (validating its name); cheap when it does.
-- Raises 22023 for an invalid name, 54000 when _max_queues() exist already. Returns true when
-- this call created it.
CREATE FUNCTION pgconductor.create_queue(p_queue text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_created boolean;
BEGIN
    PERFORM pgconductor._assert_queue_name(p_queue);
    IF EXISTS (SELECT 1 FROM pgconductor.queues WHERE name = p_queue) THEN
        RETURN false;
    END IF;
    IF (SELECT count(*) FROM pgconductor.queues) >= pgconductor._max_queues() THEN
        RAISE EXCEPTION 'cannot create queue %: the database holds % queues, the most it may', pgconductor._show(p_queue), pgconductor._max_queues()
            USING ERRCODE = '54000', HINT = 'Drop unused queues with drop_queue(). For many tenants, use one queue and a key per tenant, not a queue each.';
    END IF;
    INSERT INTO pgconductor.queues (name) VALUES (p_queue) ON CONFLICT (name) DO NOTHING;
    GET DIAGNOSTICS v_created = ROW_COUNT;
    RETURN v_created;
END
$$;

-- Drops queue p_queue and its partition. Refuses the default queue (42501) and a queue that
-- still holds executions (55006) unless p_force is true (NULL counts as false: an argument that
-- destroys executions is never implied). Forced, its live executions end cancelled (kept in
-- finished_executions; running ones signalled). Returns false when the queue did not exist.
CREATE FUNCTION pgconductor.drop_queue(p_queue text, p_force boolean DEFAULT false)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_live bigint;
BEGIN
    PERFORM pgconductor._assert_queue_name(p_queue);
    IF p_queue = 'default' THEN
        RAISE EXCEPTION 'the default queue cannot be dropped'
            USING ERRCODE = '42501', HINT = 'Drop the other queues; "default" always exists.';
    END IF;
    PERFORM 1 FROM pgconductor.queues WHERE name = p_queue FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT count(*) INTO v_live FROM pgconductor.executions WHERE queue = p_queue;
    IF v_live > 0 AND p_force IS NOT TRUE THEN
        RAISE EXCEPTION 'queue % still holds % execution(s)', quote_literal(p_queue), v_live
            USING ERRCODE = '55006', HINT = 'Wait for them to finish, cancel them, or call drop_queue(queue, p_force => true).';
    END IF;
    IF v_live > 0 THEN
        -- Forced: the live executions end cancelled, kept in finished_executions like any other
        -- end; running ones are signalled so their handlers stop.
        PERFORM pgconductor._signal(e.locked_by, 'cancel', e.id)
           FROM pgconductor.executions AS e WHERE e.queue = p_queue AND e.locked_by IS NOT NULL;
        PERFORM pgconductor._finish(e.id, p_queue, 'cancelled', format('queue %s was dropped', quote_literal(p_queue)))
           FROM pgconductor.executions AS e WHERE e.queue = p_queue;
    END IF;
    DELETE FROM pgconductor.queues WHERE name = p_queue;
    RETURN true;
END
$$;

-- source: extension/src/30_tasks.sql
-- Task settings: register_task() sets all of them, declare_task() only the ones it is given.
-- The defaults live in one place, the columns of pgconductor.tasks: both read them from there.

-- A tasks row holding nothing but the column defaults (key NULL). Inserts a probe row and
-- rolls it back in a subtransaction, so the table definition stays the defaults' only home.
-- Locks nothing that outlives the call.
CREATE FUNCTION pgconductor._task_defaults()
RETURNS pgconductor.tasks
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row pgconductor.tasks;
BEGIN
    BEGIN
        INSERT INTO pgconductor.tasks (key) VALUES ('pgconductor defaults probe ' || gen_random_uuid())
        RETURNING * INTO v_row;
        RAISE EXCEPTION USING ERRCODE = 'P0004';  -- undo the probe; the variable keeps the row
    EXCEPTION WHEN assert_failure THEN
        NULL;
    END;
    v_row.key := NULL;
    RETURN v_row;
END
$$;

-- Validates p_task (every setting; 22023 with a hint for a bad one), makes sure its queue
-- exists and upserts it (paused is set only for a new row: pause_task() owns it). Row lock:
-- the task's row. Returns nothing.
CREATE FUNCTION pgconductor._save_task(p_task pgconductor.tasks)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgconductor._assert_task_key(p_task.key);
    PERFORM pgconductor._assert_queue_name(p_task.queue);
    IF p_task.max_attempts IS NULL OR p_task.max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, got %', coalesce(p_task.max_attempts::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Use 1 for "never retry".';
    END IF;
    IF (p_task.window_start IS NULL) <> (p_task.window_end IS NULL) OR p_task.window_start = p_task.window_end THEN
        RAISE EXCEPTION 'invalid window % - %', coalesce(p_task.window_start::text, 'NULL'), coalesce(p_task.window_end::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Give both ends and make them differ; a window ending before it starts crosses midnight.';
    END IF;
    PERFORM pgconductor._assert_timezone(p_task.timezone);
    PERFORM pgconductor._assert_interval('backoff_base', p_task.backoff_base, interval '0', false);
    PERFORM pgconductor._assert_interval('backoff_cap', p_task.backoff_cap, interval '0', false);
    IF p_task.backoff_cap < p_task.backoff_base THEN
        RAISE EXCEPTION 'backoff_cap % is below backoff_base %', p_task.backoff_cap, p_task.backoff_base
            USING ERRCODE = '22023', HINT = 'The cap bounds the doubling delays: 0 <= base <= cap.';
    END IF;
    PERFORM pgconductor._assert_interval('timeout', p_task.timeout, interval '1 millisecond', true);
    IF p_task.max_retry_after IS NULL OR p_task.max_retry_after < 0 THEN
        RAISE EXCEPTION 'max_retry_after must be 0 or more, got %', coalesce(p_task.max_retry_after::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'How often a handler may put its execution back with RetryAfter; 0 forbids it.';
    END IF;
    PERFORM pgconductor._assert_limit('max_running', p_task.max_running);
    PERFORM pgconductor._assert_limit('max_running_per_key', p_task.max_running_per_key);
    PERFORM pgconductor._assert_limit('rate_limit', p_task.rate_limit);
    PERFORM pgconductor._assert_limit('rate_limit_per_key', p_task.rate_limit_per_key);
    PERFORM pgconductor._assert_interval('rate_period', p_task.rate_period, interval '1 millisecond', false);
    PERFORM pgconductor._assert_interval('start_within', p_task.start_within, interval '1 millisecond', true);
    PERFORM pgconductor._assert_interval('keep_completed', p_task.keep_completed, interval '0', false);
    PERFORM pgconductor._assert_interval('keep_failed', p_task.keep_failed, interval '0', false);
    PERFORM pgconductor.create_queue(p_task.queue);
    INSERT INTO pgconductor.tasks AS t (key, queue, max_attempts, window_start, window_end, timezone,
                                        backoff_base, backoff_cap, timeout, max_retry_after, max_running,
                                        max_running_per_key, rate_limit, rate_limit_per_key, rate_period,
                                        start_within, paused, keep_completed, keep_failed)
    VALUES (p_task.key, p_task.queue, p_task.max_attempts, p_task.window_start, p_task.window_end,
            p_task.timezone, p_task.backoff_base, p_task.backoff_cap, p_task.timeout, p_task.max_retry_after,
            p_task.max_running, p_task.max_running_per_key, p_task.rate_limit, p_task.rate_limit_per_key,
            p_task.rate_period, p_task.start_within, coalesce(p_task.paused, false), p_task.keep_completed,
            p_task.keep_failed)
    ON CONFLICT (key) DO UPDATE
       SET queue = excluded.queue, max_attempts = excluded.max_attempts,
           window_start = excluded.window_start, window_end = excluded.window_end,
           timezone = excluded.timezone, backoff_base = excluded.backoff_base,
           backoff_cap = excluded.backoff_cap, timeout = excluded.timeout,
           max_retry_after = excluded.max_retry_after, max_running = excluded.max_running,
           max_running_per_key = excluded.max_running_per_key, rate_limit = excluded.rate_limit,
           rate_limit_per_key = excluded.rate_limit_per_key, rate_period = excluded.rate_period,
           start_within = excluded.start_within, keep_completed = excluded.keep_completed,
           keep_failed = excluded.keep_failed, updated_at = pgconductor._now();
END
$$;

-- The settings declare_task() takes and _task_settings() returns: their one list. Inlined.
CREATE FUNCTION pgconductor._task_setting_keys()
RETURNS text[]
LANGUAGE sql IMMUTABLE
RETURN ARRAY['queue', 'max_attempts', 'window_start', 'window_end', 'timezone', 'backoff_base_ms',
             'backoff_cap_ms', 'timeout_ms', 'max_retry_after', 'max_running', 'max_running_per_key',
             'rate_limit', 'rate_limit_per_key', 'rate_period_ms', 'start_within_ms', 'keep_completed_ms',
             'keep_failed_ms'];

-- Task p_key's settings as jsonb (the keys declare_task() takes, _task_setting_keys();
-- intervals in milliseconds). Locks nothing. NULL for a task without a row.
CREATE FUNCTION pgconductor._task_settings(p_key text)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
               'queue', t.queue, 'max_attempts', t.max_attempts,
               'window_start', t.window_start::text, 'window_end', t.window_end::text, 'timezone', t.timezone,
               'backoff_base_ms', round(extract(epoch FROM t.backoff_base) * 1000)::bigint,
               'backoff_cap_ms', round(extract(epoch FROM t.backoff_cap) * 1000)::bigint,
               'timeout_ms', round(extract(epoch FROM t.timeout) * 1000)::bigint,
               'max_retry_after', t.max_retry_after,
               'max_running', t.max_running, 'max_running_per_key', t.max_running_per_key,
               'rate_limit', t.rate_limit, 'rate_limit_per_key', t.rate_limit_per_key,
               'rate_period_ms', round(extract(epoch FROM t.rate_period) * 1000)::bigint,
               'start_within_ms', round(extract(epoch FROM t.start_within) * 1000)::bigint,
               'keep_completed_ms', round(extract(epoch FROM t.keep_completed) * 1000)::bigint,
               'keep_failed_ms', round(extract(epoch FROM t.keep_failed) * 1000)::bigint)
      FROM pgconductor.tasks AS t WHERE t.key = p_key
$$;

-- Creates or updates task p_key with every setting: one left NULL takes the column default
-- (no window, no timeout, no limits; a paused task stays paused). Windows are daily [start, end) in p_timezone (a zone name) and may
-- cross midnight; intervals are at most _max_interval(). Raises 22023 for bad input.
CREATE FUNCTION pgconductor.register_task(
    p_key             text,
    p_queue           text DEFAULT NULL,
    p_max_attempts    integer DEFAULT NULL,
    p_window_start    time DEFAULT NULL,
    p_window_end      time DEFAULT NULL,
    p_timezone        text DEFAULT NULL,
    p_backoff_base    interval DEFAULT NULL,
    p_backoff_cap     interval DEFAULT NULL,
    p_timeout         interval DEFAULT NULL,
    p_max_retry_after integer DEFAULT NULL,
    p_max_running     integer DEFAULT NULL,
    p_max_running_per_key integer DEFAULT NULL,
    p_rate_limit      integer DEFAULT NULL,
    p_rate_limit_per_key integer DEFAULT NULL,
    p_rate_period     interval DEFAULT NULL,
    p_start_within    interval DEFAULT NULL,
    p_keep_completed  interval DEFAULT NULL,
    p_keep_failed     interval DEFAULT NULL
)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_task pgconductor.tasks := pgconductor._task_defaults();
BEGIN
    v_task.key := p_key;
    v_task.queue := coalesce(p_queue, v_task.queue);
    v_task.max_attempts := coalesce(p_max_attempts, v_task.max_attempts);
    v_task.window_start := p_window_start;
    v_task.window_end := p_window_end;
    v_task.timezone := coalesce(p_timezone, v_task.timezone);
    v_task.backoff_base := coalesce(p_backoff_base, v_task.backoff_base);
    v_task.backoff_cap := coalesce(p_backoff_cap, v_task.backoff_cap);
    v_task.timeout := p_timeout;
    v_task.max_retry_after := coalesce(p_max_retry_after, v_task.max_retry_after);
    v_task.max_running := p_max_running;
    v_task.max_running_per_key := p_max_running_per_key;
    v_task.rate_limit := p_rate_limit;
    v_task.rate_limit_per_key := p_rate_limit_per_key;
    v_task.rate_period := coalesce(p_rate_period, v_task.rate_period);
    v_task.start_within := p_start_within;
    v_task.keep_completed := coalesce(p_keep_completed, v_task.keep_completed);
    v_task.keep_failed := coalesce(p_keep_failed, v_task.keep_failed);
    PERFORM pgconductor._save_task(v_task);
END
$$;

-- Sets only the settings present in p_settings (a JSON object with _task_setting_keys());
-- the others keep their stored value, or the default for a new task; a JSON
-- null resets one to its default. So a worker declaring its tasks at start keeps what an
-- operator set in SQL. Raises 22023 for unknown keys or bad values. Returns the settings.
CREATE FUNCTION pgconductor.declare_task(p_key text, p_settings jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_def     pgconductor.tasks := pgconductor._task_defaults();
    v_task    pgconductor.tasks;
    v_s       jsonb := coalesce(p_settings, '{}');
    v_unknown text;
BEGIN
    PERFORM pgconductor._assert_task_key(p_key);
    IF jsonb_typeof(v_s) <> 'object' THEN
        RAISE EXCEPTION 'task settings must be a JSON object, got %', pgconductor._show(v_s::text)
            USING ERRCODE = '22023', HINT = 'For example {"max_attempts": 5, "timeout_ms": 30000}.';
    END IF;
    SELECT string_agg(quote_literal(left(k, 40)), ', ') INTO v_unknown FROM jsonb_object_keys(v_s) AS k
     WHERE NOT (k = ANY (pgconductor._task_setting_keys()));
    IF v_unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown task setting(s) %', pgconductor._show(v_unknown)
            USING ERRCODE = '22023', HINT = 'Known: ' || array_to_string(pgconductor._task_setting_keys(), ', ') || '.';
    END IF;
    SELECT * INTO v_task FROM pgconductor.tasks AS t WHERE t.key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        v_task := v_def;
        v_task.key := p_key;
    END IF;
    BEGIN
        IF v_s ? 'queue' THEN v_task.queue := coalesce(v_s->>'queue', v_def.queue); END IF;
        IF v_s ? 'max_attempts' THEN v_task.max_attempts := coalesce((v_s->>'max_attempts')::integer, v_def.max_attempts); END IF;
        IF v_s ? 'window_start' THEN v_task.window_start := (v_s->>'window_start')::time; END IF;
        IF v_s ? 'window_end' THEN v_task.window_end := (v_s->>'window_end')::time; END IF;
        IF v_s ? 'timezone' THEN v_task.timezone := coalesce(v_s->>'timezone', v_def.timezone); END IF;
        IF v_s ? 'backoff_base_ms' THEN
            v_task.backoff_base := coalesce(make_interval(secs => (v_s->>'backoff_base_ms')::numeric / 1000), v_def.backoff_base);
        END IF;
        IF v_s ? 'backoff_cap_ms' THEN
            v_task.backoff_cap := coalesce(make_interval(secs => (v_s->>'backoff_cap_ms')::numeric / 1000), v_def.backoff_cap);
        END IF;
        IF v_s ? 'timeout_ms' THEN v_task.timeout := make_interval(secs => (v_s->>'timeout_ms')::numeric / 1000); END IF;
        IF v_s ? 'max_retry_after' THEN
            v_task.max_retry_after := coalesce((v_s->>'max_retry_after')::integer, v_def.max_retry_after);
        END IF;
        IF v_s ? 'max_running' THEN v_task.max_running := (v_s->>'max_running')::integer; END IF;
        IF v_s ? 'max_running_per_key' THEN v_task.max_running_per_key := (v_s->>'max_running_per_key')::integer; END IF;
        IF v_s ? 'rate_limit' THEN v_task.rate_limit := (v_s->>'rate_limit')::integer; END IF;
        IF v_s ? 'rate_limit_per_key' THEN v_task.rate_limit_per_key := (v_s->>'rate_limit_per_key')::integer; END IF;
        IF v_s ? 'rate_period_ms' THEN
            v_task.rate_period := coalesce(make_interval(secs => (v_s->>'rate_period_ms')::numeric / 1000), v_def.rate_period);
        END IF;
        IF v_s ? 'start_within_ms' THEN
            v_task.start_within := make_interval(secs => (v_s->>'start_within_ms')::numeric / 1000);
        END IF;
        IF v_s ? 'keep_completed_ms' THEN
            v_task.keep_completed := coalesce(make_interval(secs => (v_s->>'keep_completed_ms')::numeric / 1000), v_def.keep_completed);
        END IF;
        IF v_s ? 'keep_failed_ms' THEN
            v_task.keep_failed := coalesce(make_interval(secs => (v_s->>'keep_failed_ms')::numeric / 1000), v_def.keep_failed);
        END IF;
    EXCEPTION WHEN data_exception THEN  -- a value of the wrong type or out of range
        RAISE EXCEPTION 'invalid task settings %', pgconductor._show(v_s::text)
            USING ERRCODE = '22023', HINT = 'Integers for the limits, max_attempts, max_retry_after and the *_ms keys; "HH:MM" for window ends; strings for queue and timezone.';
    END;
    PERFORM pgconductor._save_task(v_task);
    RETURN pgconductor._task_settings(p_key);
END
$$;

-- source: extension/src/38_claim_rules.sql
-- The claim's rules, each written once (41_claim.sql runs them in stages): _claimable is
-- the per-row rule every pick shares; _claim_gate decides per task (windows, pauses,
-- concurrency and rate limits) before the pick; _claim_trim admits the part of a pick that
-- the limits allow (and says what that leaves of them); _spend_tokens charges rate limits for what was admitted; _pick_fair is
-- the round-robin pick of fair-share queues.

-- The separator of task key and concurrency key in the gate's key lists (neither contains
-- control characters). Inlined.
CREATE FUNCTION pgconductor._key_sep()
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN chr(31);

-- True when task p_task has a limit the claim must count (running or rate). Inlined.
CREATE FUNCTION pgconductor._limited(p_task pgconductor.tasks)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN p_task.max_running IS NOT NULL OR p_task.max_running_per_key IS NOT NULL
    OR p_task.rate_limit IS NOT NULL OR p_task.rate_limit_per_key IS NOT NULL;

-- True when task p_task has any rule of the gate (a window, a pause, a limit). Inlined.
CREATE FUNCTION pgconductor._gated(p_task pgconductor.tasks)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN p_task.window_start IS NOT NULL OR p_task.paused OR pgconductor._limited(p_task);

-- The per-row rule of every pick: pending, not parked, due, of a wanted task that the gate
-- did not block, whose key the gate did not block, not past its start-by deadline, with an
-- attempt left (p_max_attempts: task key -> max_attempts of the tasks with a row; the others
-- have the default 3). Inlined into each pick, so the partial claim index still applies
-- (a sub-select here would stop the inlining: hence the map).
CREATE FUNCTION pgconductor._claimable(p_row pgconductor.executions, p_now timestamptz, p_task_keys text[],
                                       p_blocked text[], p_blocked_keys text[], p_max_attempts jsonb)
RETURNS boolean
LANGUAGE sql STABLE
RETURN p_row.locked_by IS NULL AND p_row.waiting IS NULL AND p_row.run_at <= p_now
   AND (p_task_keys IS NULL OR p_row.task_key = ANY (p_task_keys))
   AND NOT (p_row.task_key = ANY (p_blocked))
   AND (cardinality(p_blocked_keys) = 0
        OR NOT (p_row.task_key || pgconductor._key_sep() || coalesce(p_row.concurrency_key, '') = ANY (p_blocked_keys)))
   AND (p_row.start_by IS NULL OR p_row.start_by > p_now)
   AND (p_row.attempts = 0 OR p_row.attempts < coalesce((p_max_attempts->>p_row.task_key)::integer, 3));

-- Tokens in a bucket of p_capacity that held p_tokens at p_at and refills p_capacity per
-- p_period, as of p_now (never more than p_capacity). Inlined.
CREATE FUNCTION pgconductor._refilled(p_tokens double precision, p_at timestamptz, p_capacity integer,
                                      p_period interval, p_now timestamptz)
RETURNS double precision
LANGUAGE sql IMMUTABLE
RETURN least(p_capacity::double precision,
             p_tokens + p_capacity * greatest(extract(epoch FROM p_now - p_at), 0)::double precision
                                   / greatest(extract(epoch FROM p_period), 0.001)::double precision);

-- Of the tasks p_task_keys (NULL: all), those held back whatever their limits: paused, or
-- outside their daily window at p_now. Locks nothing. Returns their keys.
CREATE FUNCTION pgconductor._held_tasks(p_task_keys text[], p_now timestamptz)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_held    text[];
    v_windows boolean;
BEGIN
    SELECT coalesce(array_agg(t.key) FILTER (WHERE t.paused), '{}'), coalesce(bool_or(t.window_start IS NOT NULL), false)
      INTO v_held, v_windows
      FROM pgconductor.tasks AS t
     WHERE (t.paused OR t.window_start IS NOT NULL) AND (p_task_keys IS NULL OR t.key = ANY (p_task_keys));
    IF v_windows THEN
        v_held := v_held || pgconductor._closed_tasks(p_now);
    END IF;
    RETURN v_held;
END
$$;

-- The gate: which of the tasks p_task_keys (NULL: all) may start executions now. blocked:
-- tasks paused, outside their window, or at a limit; blocked_keys: task-and-key pairs
-- (_key_sep) at a per-key limit; limits: what is left of each limit for _claim_trim, NULL
-- when no limited task is wanted. For limited tasks it takes a transaction advisory lock per
-- task, in key order (claims of tasks whose limits interact cannot deadlock), and then counts
-- running executions: a concurrent claim's leases are counted once it commits, so limits are
-- never over-admitted. Raises 25000 outside READ COMMITTED, where a claim could count from
-- an older snapshot.
CREATE FUNCTION pgconductor._claim_gate(p_task_keys text[], p_now timestamptz,
                                        OUT blocked text[], OUT blocked_keys text[], OUT limits jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_limited text[];
BEGIN
    blocked_keys := '{}';
    blocked := pgconductor._held_tasks(p_task_keys, p_now);
    v_limited := ARRAY(SELECT t.key FROM pgconductor.tasks AS t
                        WHERE pgconductor._limited(t) AND (p_task_keys IS NULL OR t.key = ANY (p_task_keys))
                          AND NOT (t.key = ANY (blocked))
                        ORDER BY t.key);
    IF cardinality(v_limited) = 0 THEN
        RETURN;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'claims of tasks with limits must run in READ COMMITTED, not %', current_setting('transaction_isolation')
            USING ERRCODE = '25000', HINT = 'Call get_executions() in its own READ COMMITTED transaction (autocommit).';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('pgconductor.limit ' || k, 0))
       FROM unnest(v_limited) AS k ORDER BY k;

    WITH lim AS (
        SELECT t.* FROM pgconductor.tasks AS t WHERE t.key = ANY (v_limited)
    ), running AS (
        SELECT e.task_key, coalesce(e.concurrency_key, '') AS k, count(*)::integer AS n
          FROM pgconductor.executions AS e
         WHERE e.locked_by IS NOT NULL AND e.task_key = ANY (v_limited)
         GROUP BY 1, 2
    ), buckets AS (
        SELECT b.task_key, b.per_key, b.key,
               floor(pgconductor._refilled(b.tokens, b.at, CASE WHEN b.per_key THEN l.rate_limit_per_key ELSE l.rate_limit END,
                                           l.rate_period, p_now))::integer AS tokens
          FROM pgconductor.rate_buckets AS b
          JOIN lim AS l ON l.key = b.task_key
         WHERE CASE WHEN b.per_key THEN l.rate_limit_per_key ELSE l.rate_limit END IS NOT NULL
    ), task_allow AS (
        SELECT l.key,
               least(l.max_running - coalesce((SELECT sum(r.n) FROM running AS r WHERE r.task_key = l.key), 0),
                     CASE WHEN l.rate_limit IS NOT NULL
                          THEN coalesce((SELECT b.tokens FROM buckets AS b WHERE b.task_key = l.key AND NOT b.per_key),
                                        l.rate_limit) END)::integer AS allow,
               least(l.max_running_per_key, l.rate_limit_per_key) AS key_default
          FROM lim AS l
    ), key_allow AS (
        SELECT l.key AS task_key, k.k,
               least(l.max_running_per_key - coalesce(r.n, 0),
                     CASE WHEN l.rate_limit_per_key IS NOT NULL THEN coalesce(b.tokens, l.rate_limit_per_key) END) AS allow
          FROM lim AS l
          JOIN (SELECT r.task_key, r.k FROM running AS r
                UNION SELECT b.task_key, b.key FROM buckets AS b WHERE b.per_key) AS k ON k.task_key = l.key
          LEFT JOIN running AS r ON r.task_key = l.key AND r.k = k.k
          LEFT JOIN buckets AS b ON b.task_key = l.key AND b.per_key AND b.key = k.k
         WHERE l.max_running_per_key IS NOT NULL OR l.rate_limit_per_key IS NOT NULL
    )
    SELECT blocked || ARRAY(SELECT a.key FROM task_allow AS a WHERE a.allow <= 0),
           ARRAY(SELECT a.task_key || pgconductor._key_sep() || a.k FROM key_allow AS a WHERE a.allow <= 0),
           jsonb_build_object(
               'task', (SELECT coalesce(jsonb_object_agg(a.key, a.allow), '{}') FROM task_allow AS a WHERE a.allow IS NOT NULL),
               'key', (SELECT coalesce(jsonb_object_agg(a.task_key || pgconductor._key_sep() || a.k, a.allow), '{}')
                         FROM key_allow AS a WHERE a.allow IS NOT NULL),
               'key_default', (SELECT coalesce(jsonb_object_agg(a.key, a.key_default), '{}')
                                 FROM task_allow AS a WHERE a.key_default IS NOT NULL),
               'rated', (SELECT coalesce(bool_or(l.rate_limit IS NOT NULL OR l.rate_limit_per_key IS NOT NULL), false) FROM lim AS l))
      INTO blocked, blocked_keys, limits;
END
$$;

-- The trim: of the rows p_ids picked in queue p_queue (in pick order), those the limits
-- p_limits (from _claim_gate) admit: per task and per key, the first ones up to what is
-- left. Also what the admitted rows leave of the limits, for the claim's next round (one
-- read of the picked rows serves both): limits, and the tasks and task-and-key pairs that
-- reached theirs. Locks nothing more. Returns ids in pick order, limits, blocked,
-- blocked_keys. PL/pgSQL, not SQL: a SQL function called in a PL/pgSQL expression keeps its
-- plans for the whole transaction, and so missed the partition of a queue created meanwhile.
CREATE FUNCTION pgconductor._claim_trim(p_queue text, p_ids uuid[], p_limits jsonb,
                                        OUT ids uuid[], OUT limits jsonb, OUT blocked text[], OUT blocked_keys text[])
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- Taken apart once: an arrow into p_limits in the query copied the whole object per row.
    v_task    jsonb := p_limits->'task';
    v_key     jsonb := p_limits->'key';
    v_default jsonb := p_limits->'key_default';
BEGIN
    WITH picked AS (
        SELECT p.id, p.ord, e.task_key, coalesce(e.concurrency_key, '') AS k,
               row_number() OVER (PARTITION BY e.task_key ORDER BY p.ord) AS rn_task,
               row_number() OVER (PARTITION BY e.task_key, coalesce(e.concurrency_key, '') ORDER BY p.ord) AS rn_key
          FROM unnest(p_ids) WITH ORDINALITY AS p(id, ord)
          JOIN pgconductor.executions AS e ON e.queue = p_queue AND e.id = p.id
    ), admitted AS (
        SELECT x.id, x.ord, x.task_key, x.k FROM picked AS x
         WHERE x.rn_task <= coalesce((v_task->>x.task_key)::integer, 2147483647)
           AND x.rn_key <= coalesce((v_key->>(x.task_key || pgconductor._key_sep() || x.k))::integer,
                                    (v_default->>x.task_key)::integer, 2147483647)
    ), tasks_left AS (
        SELECT t.key AS task_key, t.value::integer - (SELECT count(*) FROM admitted AS a WHERE a.task_key = t.key)::integer AS allow
          FROM jsonb_each_text(v_task) AS t
    ), keys_left AS (
        SELECT a.task_key || pgconductor._key_sep() || a.k AS key,
               coalesce((v_key->>(a.task_key || pgconductor._key_sep() || a.k))::integer,
                        (v_default->>a.task_key)::integer) - count(*)::integer AS allow
          FROM admitted AS a
         WHERE v_default ? a.task_key OR v_key ? (a.task_key || pgconductor._key_sep() || a.k)
         GROUP BY a.task_key, a.k
    )
    SELECT (SELECT coalesce(array_agg(a.id ORDER BY a.ord), '{}') FROM admitted AS a),
           jsonb_set(jsonb_set(p_limits, '{task}', (SELECT coalesce(jsonb_object_agg(t.task_key, t.allow), '{}') FROM tasks_left AS t)),
                     '{key}', v_key || (SELECT coalesce(jsonb_object_agg(k.key, k.allow), '{}') FROM keys_left AS k)),
           ARRAY(SELECT t.task_key FROM tasks_left AS t WHERE t.allow <= 0),
           ARRAY(SELECT k.key FROM keys_left AS k WHERE k.allow <= 0)
      INTO ids, limits, blocked, blocked_keys;
END
$$;

-- Charges the rate limits of the executions p_ids of queue p_queue just claimed: one token
-- each from their task's bucket and their key's. Row locks: those buckets. Returns nothing.
CREATE FUNCTION pgconductor._spend_tokens(p_queue text, p_ids uuid[], p_now timestamptz)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO pgconductor.rate_buckets AS b (task_key, per_key, key, tokens, at)
    SELECT u.task_key, u.per_key, u.key, u.capacity - u.n, p_now
      FROM (SELECT e.task_key, s.per_key, CASE WHEN s.per_key THEN coalesce(e.concurrency_key, '') ELSE '' END AS key,
                   CASE WHEN s.per_key THEN t.rate_limit_per_key ELSE t.rate_limit END AS capacity, count(*) AS n
              FROM pgconductor.executions AS e
              JOIN pgconductor.tasks AS t ON t.key = e.task_key
             CROSS JOIN (VALUES (false), (true)) AS s(per_key)
             WHERE e.queue = p_queue AND e.id = ANY (p_ids)
               AND CASE WHEN s.per_key THEN t.rate_limit_per_key ELSE t.rate_limit END IS NOT NULL
             GROUP BY 1, 2, 3, 4) AS u
    ON CONFLICT (task_key, per_key, key) DO UPDATE
       SET tokens = (SELECT pgconductor._refilled(b.tokens, b.at, c.capacity, t.rate_period, p_now) - (c.capacity - excluded.tokens)
                       FROM pgconductor.tasks AS t
                      CROSS JOIN LATERAL (SELECT CASE WHEN b.per_key THEN t.rate_limit_per_key ELSE t.rate_limit END AS capacity) AS c
                      WHERE t.key = b.task_key),
           at = greatest(b.at, p_now)  -- a claim that waited for the lock must not credit the wait twice
$$;

-- source: extension/src/39_invoke_checks.sql
-- Enqueue input checks shared by submit(), submit_batch() and their invoke forms.

-- Raises 22023 for a run_at that is not a finite time ('infinity' would never run and
-- '-infinity' cannot be ordered against a claim position). Returns nothing.
CREATE FUNCTION pgconductor._assert_run_at(p_run_at timestamptz)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT isfinite(p_run_at) THEN
        RAISE EXCEPTION 'run_at must be a finite time, got %', p_run_at
            USING ERRCODE = '22023', HINT = 'Pass NULL for now, or a timestamptz.';
    END IF;
END
$$;

-- The most queues one invoke_batch() may create: a batch naming hundreds of new queues
-- created them all in one transaction (each a partition) and could exhaust shared memory. Inlined.
CREATE FUNCTION pgconductor._max_new_queues_per_call()
RETURNS integer
LANGUAGE sql IMMUTABLE
RETURN 10;

-- Raises 22023 unless the enqueue options are usable together: on_conflict replace | keep |
-- supersede; throttle and debounce between 1 ms and _max_interval(), not both; debounce_max
-- only with debounce and not below it; debounce only with replace. Returns nothing.
CREATE FUNCTION pgconductor._assert_invoke_options(p_on_conflict text, p_throttle interval, p_debounce interval,
                                                   p_debounce_max interval)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_on_conflict IS NOT NULL AND p_on_conflict NOT IN ('replace', 'keep', 'supersede') THEN
        RAISE EXCEPTION 'invalid on_conflict %', pgconductor._show(p_on_conflict)
            USING ERRCODE = '22023', HINT = 'Use replace (update a pending one), keep (return the live one) or supersede (cancel it, make a new one).';
    END IF;
    PERFORM pgconductor._assert_interval('throttle', p_throttle, interval '1 millisecond', true);
    PERFORM pgconductor._assert_interval('debounce', p_debounce, interval '1 millisecond', true);
    PERFORM pgconductor._assert_interval('debounce_max', p_debounce_max, interval '1 millisecond', true);
    IF p_throttle IS NOT NULL AND p_debounce IS NOT NULL THEN
        RAISE EXCEPTION 'throttle and debounce exclude each other'
            USING ERRCODE = '22023', HINT = 'Throttle runs the first call of a period, debounce the last: pick one.';
    END IF;
    IF p_debounce_max IS NOT NULL AND (p_debounce IS NULL OR p_debounce_max < p_debounce) THEN
        RAISE EXCEPTION 'debounce_max % needs a debounce no longer than it', p_debounce_max
            USING ERRCODE = '22023', HINT = 'debounce_max bounds how long repeated calls may delay the run: pass debounce too.';
    END IF;
    IF p_debounce IS NOT NULL AND coalesce(p_on_conflict, 'replace') <> 'replace' THEN
        RAISE EXCEPTION 'debounce takes no on_conflict (got %)', p_on_conflict
            USING ERRCODE = '22023', HINT = 'Debounced calls always replace the pending execution''s payload.';
    END IF;
END
$$;

-- Raises 22023 for a start-by deadline that is not finite or not after the run time
-- p_run_at (it could never start). NULL passes. Returns nothing.
CREATE FUNCTION pgconductor._assert_start_by(p_start_by timestamptz, p_run_at timestamptz)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT isfinite(p_start_by) OR p_start_by <= p_run_at THEN
        RAISE EXCEPTION 'start_by % is not after run_at %', p_start_by, p_run_at
            USING ERRCODE = '22023', HINT = 'start_by is the latest time the execution may start: later than its run_at.';
    END IF;
END
$$;

-- p_array with its first element at subscript 1 ('[0:1]={...}' arrays pair by position). Locks nothing.
CREATE FUNCTION pgconductor._from_one(p_array anyarray)
RETURNS anyarray
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_array IS NULL OR array_lower(p_array, 1) = 1 THEN p_array ELSE ARRAY(SELECT unnest(p_array)) END
$$;


-- source: extension/src/40_invoke.sql
-- Enqueueing one execution: submit() returns (id, outcome), invoke() the id. Many in one
-- statement: 40_invoke_batch.sql. All callable from plain SQL and from triggers.

-- Enqueues one execution after its inputs were checked (submit, submit_batch): the queue is
-- p_queue, else the task's, else 'default' (created on demand); start_by is p_start_by, else
-- run_at + the task's start_within. Without a dedupe key, throttle or debounce: one INSERT.
-- With a dedupe key the live execution holding it decides, by p_on_conflict: replace (a
-- pending one takes the new payload, run_at and priority; a started one, running or parked,
-- lets go of the key and a new one is made), keep (the live one is returned unchanged),
-- supersede (the live one is cancelled, a running one signalled, and a new one made).
-- Throttle and debounce key by the dedupe key, '' (the whole task) without one. Row locks:
-- the execution holding the key, the throttle slot. Returns (id, outcome): created | updated
-- | kept | superseded | throttled | debounced. Notifies pgconductor_invoke when it is due now.
CREATE FUNCTION pgconductor._submit_one(
    p_task_key text, p_payload jsonb, p_queue text, p_run_at timestamptz, p_priority integer, p_dedupe_key text,
    p_concurrency_key text, p_on_conflict text, p_throttle interval, p_debounce interval, p_debounce_max interval,
    p_start_by timestamptz, OUT id uuid, OUT outcome text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now      timestamptz := pgconductor._now();
    v_queue    text;
    v_exists   boolean;
    v_within   interval;
    v_run_at   timestamptz := coalesce(p_run_at, v_now);
    v_start_by timestamptz;
    v_payload  jsonb := coalesce(p_payload, '{}');
    v_priority integer := coalesce(p_priority, 0);
    v_key      text := p_dedupe_key;
    v_new      uuid := pgconductor._uuid7();
    v_holder   record;
BEGIN
    -- The common case costs one lookup: the queue, whether it exists, the task's start_within.
    SELECT coalesce(p_queue, t.queue, 'default'), t.start_within INTO v_queue, v_within
      FROM (SELECT 1) AS one LEFT JOIN pgconductor.tasks AS t ON t.key = p_task_key;
    v_exists := EXISTS (SELECT 1 FROM pgconductor.queues AS q WHERE q.name = v_queue);
    IF NOT v_exists THEN
        PERFORM pgconductor.create_queue(v_queue);
    END IF;

    IF p_throttle IS NOT NULL THEN
        -- The first call of a period takes the slot (a row lock: concurrent calls wait for it and
        -- then see it taken); later calls of the period get its execution back.
        v_key := coalesce(p_dedupe_key, '');
        INSERT INTO pgconductor.throttle_slots AS s (task_key, key, until, execution_id)
        VALUES (p_task_key, v_key, v_now + p_throttle, v_new)
        ON CONFLICT (task_key, key) DO UPDATE SET until = excluded.until, execution_id = excluded.execution_id
         WHERE s.until <= v_now
        RETURNING s.execution_id INTO id;
        IF id IS NULL THEN
            SELECT s.execution_id INTO id FROM pgconductor.throttle_slots AS s
             WHERE s.task_key = p_task_key AND s.key = v_key;
            outcome := 'throttled';
            RETURN;
        END IF;
        v_key := p_dedupe_key;
    ELSIF p_debounce IS NOT NULL THEN
        v_key := coalesce(p_dedupe_key, '');
        v_run_at := v_run_at + p_debounce;
    END IF;
    v_start_by := coalesce(p_start_by, v_run_at + v_within);

    IF v_key IS NULL THEN
        INSERT INTO pgconductor.executions (id, task_key, queue, payload, run_at, priority, concurrency_key, start_by)
        VALUES (v_new, p_task_key, v_queue, v_payload, v_run_at, v_priority, p_concurrency_key, v_start_by);
        id := v_new;
        outcome := 'created';
    ELSE
        -- A claim may take the pending row between our statements: then try again.
        FOR v_try IN 1..5 LOOP
            IF coalesce(p_on_conflict, 'replace') = 'replace' THEN
                -- A started one (running or parked) keeps running without the key.
                UPDATE pgconductor.executions AS e SET dedupe_key = NULL
                 WHERE e.queue = v_queue AND e.task_key = p_task_key AND e.dedupe_key = v_key
                   AND (e.locked_by IS NOT NULL OR e.waiting IS NOT NULL);
                INSERT INTO pgconductor.executions AS e
                    (id, task_key, queue, payload, run_at, priority, dedupe_key, concurrency_key, start_by)
                VALUES (v_new, p_task_key, v_queue, v_payload, v_run_at, v_priority, v_key, p_concurrency_key, v_start_by)
                ON CONFLICT (queue, task_key, dedupe_key) WHERE dedupe_key IS NOT NULL
                DO UPDATE SET payload = excluded.payload, priority = excluded.priority,
                              concurrency_key = excluded.concurrency_key, start_by = excluded.start_by,
                              -- Debounced: one period after the last call, bounded from the first.
                              run_at = CASE WHEN p_debounce_max IS NULL THEN excluded.run_at
                                            ELSE least(excluded.run_at, e.created_at + p_debounce_max) END
                        WHERE e.locked_by IS NULL AND e.waiting IS NULL
                RETURNING e.id INTO id;
                outcome := CASE WHEN id = v_new THEN 'created' WHEN p_debounce IS NOT NULL THEN 'debounced' ELSE 'updated' END;
            ELSE
                SELECT e.id, e.locked_by, e.waiting INTO v_holder FROM pgconductor.executions AS e
                 WHERE e.queue = v_queue AND e.task_key = p_task_key AND e.dedupe_key = v_key
                   FOR UPDATE;
                IF FOUND AND p_on_conflict = 'keep' THEN
                    id := v_holder.id;
                    outcome := 'kept';
                    RETURN;
                END IF;
                IF FOUND THEN
                    UPDATE pgconductor.executions AS e SET dedupe_key = NULL WHERE e.id = v_holder.id AND e.queue = v_queue;
                    PERFORM pgconductor.cancel(v_holder.id, 'superseded by a newer invoke with the same dedupe key');
                END IF;
                INSERT INTO pgconductor.executions AS e
                    (id, task_key, queue, payload, run_at, priority, dedupe_key, concurrency_key, start_by)
                VALUES (v_new, p_task_key, v_queue, v_payload, v_run_at, v_priority, v_key, p_concurrency_key, v_start_by)
                ON CONFLICT (queue, task_key, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
                RETURNING e.id INTO id;
                outcome := CASE WHEN v_holder.id IS NOT NULL THEN 'superseded' ELSE 'created' END;
            END IF;
            EXIT WHEN id IS NOT NULL;
        END LOOP;
        IF id IS NULL THEN
            RAISE EXCEPTION 'could not enqueue % with dedupe key %: the execution holding it keeps changing',
                            pgconductor._show(p_task_key), pgconductor._show(v_key)
                USING ERRCODE = '40001', HINT = 'Retry the call.';
        END IF;
        IF p_throttle IS NOT NULL AND id <> v_new THEN
            UPDATE pgconductor.throttle_slots AS s SET execution_id = id
             WHERE s.task_key = p_task_key AND s.key = coalesce(p_dedupe_key, '');
        END IF;
    END IF;

    IF v_run_at <= v_now THEN
        PERFORM pg_notify('pgconductor_invoke', v_queue);
    END IF;
END
$$;

-- Raises 22023 unless the arguments of one submit()/invoke() are usable (the common case,
-- a task key and maybe a run_at, costs two inlined checks). Returns nothing.
CREATE FUNCTION pgconductor._check_submit(
    p_task_key text, p_run_at timestamptz, p_dedupe_key text, p_concurrency_key text, p_on_conflict text,
    p_throttle interval, p_debounce interval, p_debounce_max interval, p_start_by timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT pgconductor._valid_task_key(p_task_key) THEN
        PERFORM pgconductor._assert_task_key(p_task_key);
    END IF;
    IF NOT isfinite(p_run_at) THEN
        PERFORM pgconductor._assert_run_at(p_run_at);
    END IF;
    IF p_dedupe_key IS NOT NULL OR p_concurrency_key IS NOT NULL OR p_on_conflict IS NOT NULL
       OR p_throttle IS NOT NULL OR p_debounce IS NOT NULL OR p_debounce_max IS NOT NULL OR p_start_by IS NOT NULL THEN
        PERFORM pgconductor._assert_dedupe_key(p_dedupe_key);
        PERFORM pgconductor._assert_concurrency_key(p_concurrency_key);
        PERFORM pgconductor._assert_invoke_options(p_on_conflict, p_throttle, p_debounce, p_debounce_max);
        PERFORM pgconductor._assert_start_by(p_start_by, coalesce(p_run_at, pgconductor._now()));
    END IF;
END
$$;

-- Enqueues one execution of p_task_key (see _submit_one for the queue, dedupe keys,
-- on_conflict, throttle, debounce and start-by). Raises 22023 for bad input. Returns (id,
-- outcome): created | updated | kept | superseded | throttled | debounced.
CREATE FUNCTION pgconductor.submit(
    p_task_key        text,
    p_payload         jsonb DEFAULT '{}',
    p_queue           text DEFAULT NULL,
    p_run_at          timestamptz DEFAULT NULL,
    p_priority        integer DEFAULT 0,
    p_dedupe_key      text DEFAULT NULL,
    p_concurrency_key text DEFAULT NULL,
    p_on_conflict     text DEFAULT NULL,
    p_throttle        interval DEFAULT NULL,
    p_debounce        interval DEFAULT NULL,
    p_debounce_max    interval DEFAULT NULL,
    p_start_by        timestamptz DEFAULT NULL
)
RETURNS TABLE (id uuid, outcome text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgconductor._check_submit(p_task_key, p_run_at, p_dedupe_key, p_concurrency_key, p_on_conflict,
                                      p_throttle, p_debounce, p_debounce_max, p_start_by);
    SELECT s.id, s.outcome INTO id, outcome FROM pgconductor._submit_one(
        p_task_key, p_payload, p_queue, p_run_at, p_priority, p_dedupe_key, p_concurrency_key, p_on_conflict,
        p_throttle, p_debounce, p_debounce_max, p_start_by) AS s;
    RETURN NEXT;
END
$$;

-- Enqueues one execution, as submit() does, and returns its id (for a throttled call, the
-- execution of the period). Raises 22023 for bad input.
CREATE FUNCTION pgconductor.invoke(
    p_task_key        text,
    p_payload         jsonb DEFAULT '{}',
    p_queue           text DEFAULT NULL,
    p_run_at          timestamptz DEFAULT NULL,
    p_priority        integer DEFAULT 0,
    p_dedupe_key      text DEFAULT NULL,
    p_concurrency_key text DEFAULT NULL,
    p_on_conflict     text DEFAULT NULL,
    p_throttle        interval DEFAULT NULL,
    p_debounce        interval DEFAULT NULL,
    p_debounce_max    interval DEFAULT NULL,
    p_start_by        timestamptz DEFAULT NULL
)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id uuid;
BEGIN
    PERFORM pgconductor._check_submit(p_task_key, p_run_at, p_dedupe_key, p_concurrency_key, p_on_conflict,
                                      p_throttle, p_debounce, p_debounce_max, p_start_by);
    SELECT s.id INTO v_id FROM pgconductor._submit_one(
        p_task_key, p_payload, p_queue, p_run_at, p_priority, p_dedupe_key, p_concurrency_key, p_on_conflict,
        p_throttle, p_debounce, p_debounce_max, p_start_by) AS s;
    RETURN v_id;
END
$$;

-- source: extension/src/40_invoke_batch.sql
-- Enqueueing many executions in one call: submit_batch() and its invoke_batch() forms.

-- Enqueues many executions (parallel arrays; NULL elements take the defaults; the scalar
-- options apply to every element), as submit() does for one. Without dedupe keys, throttle
-- or debounce: one INSERT for the whole batch; with them, element by element in input order,
-- so a key repeated in the batch meets the execution its earlier element made or updated.
-- Raises 22023 for bad input. Returns (id, outcome) per element, in input order.
CREATE FUNCTION pgconductor.submit_batch(
    p_task_keys        text[],
    p_payloads         jsonb[],
    p_queues           text[] DEFAULT NULL,
    p_run_ats          timestamptz[] DEFAULT NULL,
    p_priorities       integer[] DEFAULT NULL,
    p_dedupe_keys      text[] DEFAULT NULL,
    p_concurrency_keys text[] DEFAULT NULL,
    p_on_conflict      text DEFAULT NULL,
    p_throttle         interval DEFAULT NULL,
    p_debounce         interval DEFAULT NULL,
    p_debounce_max     interval DEFAULT NULL,
    p_start_bys        timestamptz[] DEFAULT NULL
)
RETURNS TABLE (id uuid, outcome text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now   timestamptz := pgconductor._now();
    v_n     integer := coalesce(cardinality(p_task_keys), 0);
    v_bad   integer;
    v_queue text;
BEGIN
    IF coalesce(cardinality(p_payloads), 0) <> v_n
       OR (p_queues IS NOT NULL AND cardinality(p_queues) <> v_n)
       OR (p_run_ats IS NOT NULL AND cardinality(p_run_ats) <> v_n)
       OR (p_priorities IS NOT NULL AND cardinality(p_priorities) <> v_n)
       OR (p_dedupe_keys IS NOT NULL AND cardinality(p_dedupe_keys) <> v_n)
       OR (p_concurrency_keys IS NOT NULL AND cardinality(p_concurrency_keys) <> v_n)
       OR (p_start_bys IS NOT NULL AND cardinality(p_start_bys) <> v_n) THEN
        RAISE EXCEPTION 'invoke_batch arrays have different lengths'
            USING ERRCODE = '22023', HINT = 'Pass one element per execution in every array (or NULL for a whole optional array).';
    END IF;
    IF greatest(array_ndims(p_task_keys), array_ndims(p_payloads), array_ndims(p_queues), array_ndims(p_run_ats),
                array_ndims(p_priorities), array_ndims(p_dedupe_keys), array_ndims(p_concurrency_keys),
                array_ndims(p_start_bys)) > 1 THEN
        RAISE EXCEPTION 'invoke_batch takes one-dimensional arrays'
            USING ERRCODE = '22023', HINT = 'Pass a flat array with one element per execution.';
    END IF;
    PERFORM pgconductor._assert_invoke_options(p_on_conflict, p_throttle, p_debounce, p_debounce_max);
    IF v_n = 0 THEN
        RETURN;
    END IF;
    p_task_keys := pgconductor._from_one(p_task_keys);
    p_payloads := pgconductor._from_one(p_payloads);
    p_queues := pgconductor._from_one(p_queues);
    p_run_ats := pgconductor._from_one(p_run_ats);
    p_priorities := pgconductor._from_one(p_priorities);
    p_dedupe_keys := pgconductor._from_one(p_dedupe_keys);
    p_concurrency_keys := pgconductor._from_one(p_concurrency_keys);
    p_start_bys := pgconductor._from_one(p_start_bys);

    SELECT min(u.ord) INTO v_bad FROM unnest(p_task_keys) WITH ORDINALITY AS u(k, ord)
     WHERE NOT pgconductor._valid_task_key(u.k);
    IF v_bad IS NOT NULL THEN
        PERFORM pgconductor._assert_task_key(p_task_keys[v_bad]);
    END IF;
    PERFORM pgconductor._assert_run_at(r) FROM unnest(p_run_ats) AS r WHERE NOT isfinite(r);
    PERFORM pgconductor._assert_dedupe_key(d) FROM unnest(p_dedupe_keys) AS d WHERE d IS NOT NULL;
    PERFORM pgconductor._assert_concurrency_key(c) FROM unnest(p_concurrency_keys) AS c WHERE c IS NOT NULL;
    PERFORM pgconductor._assert_start_by(u.s, coalesce(u.r, v_now))
       FROM unnest(p_start_bys, coalesce(p_run_ats, array_fill(NULL::timestamptz, ARRAY[v_n]))) AS u(s, r)
      WHERE u.s IS NOT NULL;
    SELECT count(*) INTO v_bad
      FROM (SELECT DISTINCT q FROM unnest(p_queues) AS q) AS d
     WHERE d.q IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pgconductor.queues AS x WHERE x.name = d.q);
    IF v_bad > pgconductor._max_new_queues_per_call() THEN
        RAISE EXCEPTION 'invoke_batch would create % new queues; one call creates at most %', v_bad, pgconductor._max_new_queues_per_call()
            USING ERRCODE = '54000', HINT = 'Create the queues first with create_queue(), or split the batch.';
    END IF;

    IF p_throttle IS NOT NULL OR p_debounce IS NOT NULL
       OR (p_dedupe_keys IS NOT NULL AND EXISTS (SELECT 1 FROM unnest(p_dedupe_keys) AS d WHERE d IS NOT NULL)) THEN
        FOR v_bad IN 1..v_n LOOP
            RETURN QUERY SELECT s.id, s.outcome FROM pgconductor._submit_one(
                p_task_keys[v_bad], p_payloads[v_bad], p_queues[v_bad], p_run_ats[v_bad], p_priorities[v_bad],
                p_dedupe_keys[v_bad], p_concurrency_keys[v_bad], p_on_conflict, p_throttle, p_debounce,
                p_debounce_max, p_start_bys[v_bad]) AS s;
        END LOOP;
        RETURN;
    END IF;

    -- Queues first (created on demand), then one INSERT for the whole batch.
    FOR v_queue IN
        SELECT DISTINCT coalesce(u.q, t.queue, 'default')
          FROM unnest(p_task_keys, coalesce(p_queues, array_fill(NULL::text, ARRAY[v_n]))) AS u(k, q)
          LEFT JOIN pgconductor.tasks AS t ON t.key = u.k
    LOOP
        PERFORM pgconductor.create_queue(v_queue);
        IF p_run_ats IS NULL OR EXISTS (SELECT 1 FROM unnest(p_run_ats) AS r WHERE r IS NULL OR r <= v_now) THEN
            PERFORM pg_notify('pgconductor_invoke', v_queue);
        END IF;
    END LOOP;

    RETURN QUERY
    WITH input AS MATERIALIZED (
        SELECT u.ord, pgconductor._uuid7() AS id, u.k AS task_key, coalesce(u.q, t.queue, 'default') AS queue,
               coalesce(u.p, '{}') AS payload, coalesce(u.r, v_now) AS run_at, coalesce(u.pr, 0) AS priority,
               u.ck AS concurrency_key, coalesce(u.sb, coalesce(u.r, v_now) + t.start_within) AS start_by
          -- A NULL optional array unnests as all NULL (unnest pads the shorter arrays).
          FROM unnest(p_task_keys, p_payloads, p_queues, p_run_ats, p_priorities, p_concurrency_keys, p_start_bys)
               WITH ORDINALITY AS u(k, p, q, r, pr, ck, sb, ord)
          LEFT JOIN pgconductor.tasks AS t ON t.key = u.k
    ), inserted AS (
        INSERT INTO pgconductor.executions (id, task_key, queue, payload, run_at, priority, concurrency_key, start_by)
        SELECT i.id, i.task_key, i.queue, i.payload, i.run_at, i.priority, i.concurrency_key, i.start_by FROM input AS i
    )
    SELECT i.id, 'created'::text FROM input AS i ORDER BY i.ord;
END
$$;

-- Enqueues many executions, as submit_batch() does. Returns their ids in input order.
CREATE FUNCTION pgconductor.invoke_batch(
    p_task_keys        text[],
    p_payloads         jsonb[],
    p_queues           text[] DEFAULT NULL,
    p_run_ats          timestamptz[] DEFAULT NULL,
    p_priorities       integer[] DEFAULT NULL,
    p_dedupe_keys      text[] DEFAULT NULL,
    p_concurrency_keys text[] DEFAULT NULL,
    p_on_conflict      text DEFAULT NULL,
    p_throttle         interval DEFAULT NULL,
    p_debounce         interval DEFAULT NULL,
    p_debounce_max     interval DEFAULT NULL,
    p_start_bys        timestamptz[] DEFAULT NULL
)
RETURNS SETOF uuid
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.id FROM pgconductor.submit_batch(p_task_keys, p_payloads, p_queues, p_run_ats, p_priorities, p_dedupe_keys,
                                              p_concurrency_keys, p_on_conflict, p_throttle, p_debounce, p_debounce_max,
                                              p_start_bys) AS s
$$;

-- Many payloads for one task: a thin form of invoke_batch(). Returns ids in input order.
CREATE FUNCTION pgconductor.invoke_batch(
    p_task_key text,
    p_payloads jsonb[],
    p_queue    text DEFAULT NULL,
    p_run_at   timestamptz DEFAULT NULL,
    p_priority integer DEFAULT 0
)
RETURNS SETOF uuid
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgconductor.invoke_batch(
        array_fill(p_task_key, ARRAY[coalesce(cardinality(p_payloads), 0)]),
        coalesce(p_payloads, '{}'),
        array_fill(p_queue, ARRAY[coalesce(cardinality(p_payloads), 0)]),
        array_fill(p_run_at, ARRAY[coalesce(cardinality(p_payloads), 0)]),
        array_fill(p_priority, ARRAY[coalesce(cardinality(p_payloads), 0)]))
$$;

-- source: extension/src/41_claim.sql
-- Claiming: the one claim shape. Up to p_batch_size due executions of one queue, in
-- (priority, run_at, id) order, FOR UPDATE SKIP LOCKED, in one statement; each claim takes a
-- lease (locked_by = orchestrator, lease + 1) and spends an attempt (attempts + 1).
-- A claim that finds nothing writes nothing: no transaction id, no WAL, no commit flush.
--
-- The claim position. A long transaction elsewhere keeps the old versions of claimed and
-- finished rows from being vacuumed; their entries stay at the head of the claim index, and a
-- claim that starts from the head steps over all of them (each claim of a draining backlog
-- gets slower: quadratic). So each database session remembers, per queue, the key
-- (priority, run_at, id) where its last claim ended when that claim filled its batch; the
-- next claim with the same task filter takes rows of a higher priority first, then continues
-- after that key. A pass from the head runs whenever that does not fill the batch, and at
-- least once a second (by _now()): while a backlog drains, a row that became due behind the
-- position (invoked with a past run_at, released, or left by a claim that rolled back) waits
-- at most about a second; higher priorities are always served first. The position is text
-- written under a pinned DateStyle, and one that does not parse is ignored, so no session
-- setting can make a claim fail.

-- Up to p_limit concurrency keys ('' for none) of queue p_queue with a claimable row
-- (_claimable with the other arguments, not among p_exclude), in "C" order, from p_from on
-- and no greater than p_upto (NULL: no bound), each with its first claimable row: a loose
-- scan of the fair index, each step one probe for the next greater key (keys contain no
-- control characters, so in "C" order k || chr(1) is where the keys after k begin). Locks
-- nothing. Returns keys and ids, in key order. PL/pgSQL: a SQL function in a PL/pgSQL
-- expression would keep its plans for the transaction.
CREATE FUNCTION pgconductor._fair_firsts(p_queue text, p_from text, p_upto text, p_limit integer,
                                         p_task_keys text[], p_blocked text[], p_blocked_keys text[],
                                         p_max_attempts jsonb, p_exclude uuid[], p_now timestamptz,
                                         OUT keys text[], OUT ids uuid[])
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH RECURSIVE ks(k, id, n) AS (
        SELECT f.k, f.id, 1 FROM (
            SELECT coalesce(e.concurrency_key, '') COLLATE "C" AS k, e.id FROM pgconductor.executions AS e
             WHERE e.queue = p_queue AND coalesce(e.concurrency_key, '') COLLATE "C" >= p_from
               AND pgconductor._claimable(e, p_now, p_task_keys, p_blocked, p_blocked_keys, p_max_attempts)
               AND NOT (e.id = ANY (p_exclude))
             ORDER BY coalesce(e.concurrency_key, '') COLLATE "C", e.priority, e.run_at, e.id LIMIT 1) AS f
         WHERE p_upto IS NULL OR f.k <= p_upto COLLATE "C"
        UNION ALL
        SELECT f.k, f.id, ks.n + 1 FROM ks CROSS JOIN LATERAL (
            SELECT coalesce(e.concurrency_key, '') COLLATE "C" AS k, e.id FROM pgconductor.executions AS e
             WHERE e.queue = p_queue AND coalesce(e.concurrency_key, '') COLLATE "C" >= ks.k || chr(1)
               AND pgconductor._claimable(e, p_now, p_task_keys, p_blocked, p_blocked_keys, p_max_attempts)
               AND NOT (e.id = ANY (p_exclude))
             ORDER BY coalesce(e.concurrency_key, '') COLLATE "C", e.priority, e.run_at, e.id LIMIT 1) AS f
         WHERE ks.n < p_limit AND (p_upto IS NULL OR f.k <= p_upto COLLATE "C")
    )
    SELECT coalesce(array_agg(ks.k ORDER BY ks.n), '{}'), coalesce(array_agg(ks.id ORDER BY ks.n), '{}')
      INTO keys, ids
      FROM ks;
END
$$;

-- The fair-share pick of queue p_queue: up to p_limit claimable rows (_claimable with the
-- other arguments), round-robin over its concurrency keys (rows without one form key ''),
-- starting after key p_cursor and wrapping around; a key of weight w (key_weights) gives w
-- rows a round (2w when the batch is 100 or more: see v_serve). Reads the queue's fair index (set_fair_share): one probe per key served, so
-- the cost follows the batch, not the backlog or the number of keys. Locks what it returns
-- (SKIP LOCKED). Returns the ids in serving order and the next cursor: the last key served,
-- or the last key scanned when none gave a row.
CREATE FUNCTION pgconductor._pick_fair(p_queue text, p_task_keys text[], p_blocked text[], p_blocked_keys text[],
                                       p_max_attempts jsonb, p_exclude uuid[], p_limit integer, p_now timestamptz,
                                       p_cursor text,
                                       OUT ids uuid[], OUT cursor text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_keys  text[];
    v_first record;
    v_wrap  record;
    v_base  integer;
    v_got   uuid[];
    v_full  text[];
    v_pass1 boolean := false;
    -- Keys served by one claim: a batch of 100 or more serves half as many keys, two rows a
    -- key per round (half the probes, the costly part; the cursor keeps the round-robin
    -- across claims); a smaller one serves a key a row.
    v_serve integer := CASE WHEN p_limit >= 100 THEN (p_limit + 1) / 2 ELSE p_limit END;
BEGIN
    -- The next keys with claimable rows after the cursor, then from the first key up to it.
    SELECT * INTO v_first FROM pgconductor._fair_firsts(
        p_queue, coalesce(p_cursor || chr(1), ''), NULL, v_serve,
        p_task_keys, p_blocked, p_blocked_keys, p_max_attempts, p_exclude, p_now);
    IF cardinality(v_first.keys) < v_serve AND p_cursor IS NOT NULL THEN
        SELECT * INTO v_wrap FROM pgconductor._fair_firsts(
            p_queue, '', p_cursor, v_serve - cardinality(v_first.keys),
            p_task_keys, p_blocked, p_blocked_keys, p_max_attempts, p_exclude, p_now);
        v_first.keys := v_first.keys || v_wrap.keys;
        v_first.ids := v_first.ids || v_wrap.ids;
    END IF;
    v_keys := v_first.keys;
    IF cardinality(v_keys) = 0 THEN
        ids := '{}';
        RETURN;
    END IF;
    -- Keys whose rows are not due yet, of tasks this worker does not serve, or at a limit give
    -- nothing: when no key gives anything the cursor still moves past the keys scanned, so
    -- the next round (or claim) reaches the keys after them.
    cursor := v_keys[cardinality(v_keys)];
    -- Passes: each gives every key still in play its share of what is left (rows per weight
    -- unit, enough when every key has rows to give); a key that gave its whole share stays in
    -- play for the next pass, so keys with nothing to give do not leave the batch short.
    ids := '{}';
    -- As many keys as rows wanted, none weighted: the first pass is one row of each, the first
    -- rows the probes found (locking them by primary key costs less than a probe per key).
    IF cardinality(v_keys) >= p_limit AND NOT EXISTS (SELECT 1 FROM pgconductor.key_weights AS w WHERE w.queue = p_queue) THEN
        SELECT coalesce(array_agg(x.id ORDER BY x.ord), '{}'), coalesce(array_agg(x.k ORDER BY x.ord), '{}')
          INTO ids, v_keys
          FROM (SELECT c.id, f.k, f.ord
                  FROM unnest(v_first.ids, v_first.keys) WITH ORDINALITY AS f(id, k, ord)
                  JOIN pgconductor.executions AS c ON c.queue = p_queue AND c.id = f.id
                 WHERE pgconductor._claimable(c, p_now, p_task_keys, p_blocked, p_blocked_keys, p_max_attempts)
                 ORDER BY f.ord
                   FOR UPDATE OF c SKIP LOCKED) AS x;
        v_pass1 := true;
        IF cardinality(ids) >= p_limit OR cardinality(v_keys) = 0 THEN
            RETURN;
        END IF;
    END IF;
    FOR v_pass IN 1..3 LOOP
        CONTINUE WHEN v_pass1 AND v_pass = 1;
        SELECT ceil((p_limit - cardinality(ids))::numeric / sum(coalesce(w.weight, 1)))::integer INTO v_base
          FROM unnest(v_keys) AS k(k)
          LEFT JOIN pgconductor.key_weights AS w ON w.queue = p_queue AND w.key = k.k;
        SELECT coalesce(array_agg(r.id ORDER BY r.pos), '{}'),
               coalesce((array_agg(r.k ORDER BY r.pos DESC))[1], cursor),
               coalesce(array_agg(DISTINCT r.k) FILTER (WHERE r.full_share), '{}')
          INTO v_got, cursor, v_full
          FROM (SELECT x.id, k.k, x.rn = v_base * coalesce(w.weight, 1) AS full_share,
                       row_number() OVER (ORDER BY ceil(x.rn::numeric / coalesce(w.weight, 1)), k.ord, x.rn) AS pos
                  FROM unnest(v_keys) WITH ORDINALITY AS k(k, ord)
                  LEFT JOIN pgconductor.key_weights AS w ON w.queue = p_queue AND w.key = k.k
                 CROSS JOIN LATERAL (
                    SELECT c.id, row_number() OVER () AS rn
                      FROM (SELECT c.id FROM pgconductor.executions AS c
                             WHERE c.queue = p_queue AND coalesce(c.concurrency_key, '') COLLATE "C" = k.k
                               AND pgconductor._claimable(c, p_now, p_task_keys, p_blocked, p_blocked_keys, p_max_attempts)
                               AND NOT (c.id = ANY (p_exclude || ids))
                             ORDER BY coalesce(c.concurrency_key, '') COLLATE "C", c.priority, c.run_at, c.id
                             LIMIT v_base * coalesce(w.weight, 1)
                               FOR UPDATE SKIP LOCKED) AS c) AS x) AS r
         WHERE r.pos <= p_limit - cardinality(ids);
        ids := ids || v_got;
        EXIT WHEN cardinality(ids) >= p_limit OR cardinality(v_full) = 0;
        -- Keep the serving order of v_keys for the keys still in play (a join: = ANY over
        -- a thousand keys for each of a thousand keys cost more than the pass).
        v_keys := ARRAY(SELECT k.k FROM unnest(v_keys) WITH ORDINALITY AS k(k, ord)
                          JOIN unnest(v_full) AS f(k) ON f.k = k.k ORDER BY k.ord);
    END LOOP;
END
$$;

-- Claims up to p_batch_size executions of queue p_queue, restricted to p_task_keys unless
-- NULL (the worker passes the tasks it has handlers for), for orchestrator p_orchestrator_id.
-- Stages: validate; wake the parked ones whose time came; gate (_claim_gate: windows,
-- pauses, limits); pick (_claimable rows in key order from the claim position, or
-- round-robin over keys in a fair-share queue); trim to what the limits admit
-- (_claim_trim); lease; remember the position; revive the orchestrator. When the trim
-- dropped rows or a fair pick came up short, the pick runs again for the rest of the batch
-- (four rounds at most) with what was leased taken off the limits (the trim says what is
-- left), so keys
-- at their limit do not keep the others waiting. Row locks: the picked rows,
-- the advisory locks of limited tasks, their rate buckets, then the orchestrator's row.
-- Returns the claimed executions, with their stored steps. A paused queue returns nothing.
CREATE FUNCTION pgconductor.get_executions(
    p_task_keys text[], p_orchestrator_id uuid, p_batch_size integer, p_queue text DEFAULT 'default')
RETURNS SETOF pgconductor.claimed_execution
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- Never a sequential scan of the queue: the cost model prefers one to probing the primary
-- key for a few hundred picked ids, which is far slower in practice (a backlog is cached).
-- The penalty that this puts on the tasks scans must not trigger JIT (70 ms a call).
SET enable_seqscan = off
SET jit = off
SET DateStyle = 'ISO, YMD'
AS $$
DECLARE
    v_now       timestamptz := pgconductor._now();
    v_gated     boolean;
    v_attempts  jsonb;
    v_queue     record;
    v_gate      record;
    v_picked    uuid[];
    v_ids       uuid[] := '{}';
    v_taken     uuid[] := '{}';
    v_claimed   integer := 0;
    v_want      integer := p_batch_size;
    v_cont      uuid[] := '{}';
    v_head      uuid[] := '{}';
    v_fair      record;
    v_trim      record;
    v_after_id  uuid;
    v_after     record;
    v_keys_left boolean := false;
    v_setting   text := 'pgconductor.claim_position_' || replace(p_queue, '-', '$');
    v_filter    text := md5(coalesce(p_task_keys::text, '*'));
    v_position  text[];
    v_head_at   timestamptz := v_now;
    v_last      record;
    v_stamp     text := '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?[+-][0-9]{2}(:[0-9]{2}){0,2}$';
BEGIN
    IF p_orchestrator_id IS NULL THEN
        RAISE EXCEPTION 'orchestrator id must not be NULL'
            USING ERRCODE = '22023', HINT = 'Pass the uuid the worker process uses for heartbeat().';
    END IF;
    IF p_batch_size IS NULL OR p_batch_size < 0 OR p_batch_size > 10000 THEN
        RAISE EXCEPTION 'batch size must be between 0 and 10000, got %', coalesce(p_batch_size::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Claim at most as many executions as the worker has free slots.';
    END IF;
    IF NOT pgconductor._valid_queue_name(p_queue) THEN
        PERFORM pgconductor._assert_queue_name(p_queue);
    END IF;
    IF p_batch_size = 0 THEN
        RETURN;
    END IF;

    -- Parked executions whose time came (a sleep ended, a deadline passed) become claimable.
    -- The probe reads the timers index of this queue; only a due one makes it write.
    IF EXISTS (SELECT 1 FROM pgconductor.executions AS e
                WHERE e.queue = p_queue AND e.waiting IS NOT NULL AND e.run_at <= v_now) THEN
        PERFORM pgconductor._wake_due(p_queue, v_now);
    END IF;

    SELECT q.paused, q.fair_share INTO v_queue FROM pgconductor.queues AS q WHERE q.name = p_queue;
    IF v_queue.paused THEN
        RETURN;
    END IF;
    -- One read of the small tasks table: whether any wanted task has a rule of the gate, and
    -- the attempts each may spend.
    SELECT coalesce(bool_or(pgconductor._gated(t)), false), coalesce(jsonb_object_agg(t.key, t.max_attempts), '{}')
      INTO v_gated, v_attempts
      FROM pgconductor.tasks AS t WHERE p_task_keys IS NULL OR t.key = ANY (p_task_keys);
    SELECT '{}'::text[] AS blocked, '{}'::text[] AS blocked_keys, NULL::jsonb AS limits INTO v_gate;

    FOR v_round IN 1..4 LOOP
        IF v_gated AND v_round = 1 THEN
            SELECT * INTO v_gate FROM pgconductor._claim_gate(p_task_keys, v_now);
        END IF;

        IF v_queue.fair_share THEN
            -- The round-robin cursor lives in the session, like the claim position.
            SELECT * INTO v_fair FROM pgconductor._pick_fair(
                p_queue, p_task_keys, v_gate.blocked, v_gate.blocked_keys, v_attempts, v_taken, v_want, v_now,
                nullif(current_setting(v_setting || '$fair', true), ''));
            v_picked := v_fair.ids;
            v_keys_left := v_fair.cursor IS NOT NULL;
            PERFORM set_config(v_setting || '$fair', coalesce(v_fair.cursor, ''), false);
        ELSE
            -- The position is "priority|run_at|id|head pass at|filter". A continued claim that
            -- comes up short runs the head pass too, so only claims that fill their batch skip
            -- it (a drain). Later rounds go on after the last row the round before picked:
            -- every row before it was picked, is locked elsewhere, is not claimable or is
            -- blocked (the blocked lists only grow), so starting from the head again would
            -- step over all of them (a round of a few rows cost as much as the first).
            v_cont := '{}';
            v_head := '{}';
            IF v_round > 1 THEN
                SELECT e.priority, e.run_at, e.id INTO v_after
                  FROM pgconductor.executions AS e WHERE e.queue = p_queue AND e.id = v_after_id;
                v_head := ARRAY(
                    SELECT c.id FROM pgconductor.executions AS c
                     WHERE c.queue = p_queue AND (c.priority, c.run_at, c.id) > (v_after.priority, v_after.run_at, v_after.id)
                       AND NOT (c.id = ANY (v_taken))  -- the rows after the claim position that the first round took
                       AND pgconductor._claimable(c, v_now, p_task_keys, v_gate.blocked, v_gate.blocked_keys, v_attempts)
                     ORDER BY c.priority, c.run_at, c.id
                     LIMIT v_want
                       FOR UPDATE SKIP LOCKED);
            ELSE
                v_position := string_to_array(nullif(current_setting(v_setting, true), ''), '|');
                IF cardinality(v_position) <> 5 OR v_position[1] !~ '^-?[0-9]{1,10}$'
                   OR v_position[2] !~ v_stamp OR v_position[4] !~ v_stamp
                   OR v_position[3] !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
                    v_position := NULL;  -- not one this function wrote (or from an older release): start from the head
                END IF;
                IF v_position[5] = v_filter AND v_position[4]::timestamptz > v_now - interval '1 second' THEN
                    v_head_at := v_position[4]::timestamptz;
                    v_cont := ARRAY(
                        SELECT c.id FROM pgconductor.executions AS c
                         WHERE c.queue = p_queue AND c.priority < v_position[1]::integer
                           AND pgconductor._claimable(c, v_now, p_task_keys, v_gate.blocked, v_gate.blocked_keys, v_attempts)
                         ORDER BY c.priority, c.run_at, c.id
                         LIMIT v_want
                           FOR UPDATE SKIP LOCKED);
                    IF cardinality(v_cont) < v_want THEN
                        v_cont := v_cont || ARRAY(
                            SELECT c.id FROM pgconductor.executions AS c
                             WHERE c.queue = p_queue
                               AND (c.priority, c.run_at, c.id) > (v_position[1]::integer, v_position[2]::timestamptz, v_position[3]::uuid)
                               AND pgconductor._claimable(c, v_now, p_task_keys, v_gate.blocked, v_gate.blocked_keys, v_attempts)
                             ORDER BY c.priority, c.run_at, c.id
                             LIMIT v_want - cardinality(v_cont)
                               FOR UPDATE SKIP LOCKED);
                    END IF;
                END IF;
            END IF;
            IF v_round = 1 AND cardinality(v_cont) < v_want THEN
                v_head_at := v_now;
                v_head := ARRAY(
                    SELECT c.id FROM pgconductor.executions AS c
                     WHERE c.queue = p_queue
                       AND NOT (c.id = ANY (v_cont || v_taken))  -- locked by this transaction already: SKIP LOCKED would not skip them
                       AND pgconductor._claimable(c, v_now, p_task_keys, v_gate.blocked, v_gate.blocked_keys, v_attempts)
                     ORDER BY c.priority, c.run_at, c.id
                     LIMIT v_want - cardinality(v_cont)
                       FOR UPDATE SKIP LOCKED);
            END IF;
            v_picked := v_cont || v_head;
            -- Where the next round goes on: after the head pass when there was one (the
            -- position's region after it was taken up to its end), else after the continuation.
            v_after_id := coalesce(v_head[cardinality(v_head)], v_cont[cardinality(v_cont)]);
        END IF;
        v_taken := v_taken || v_picked;
        IF v_gate.limits IS NULL THEN
            v_ids := v_picked;
        ELSE
            -- What this round leases comes off the limits for the next round (the advisory
            -- locks are held, so nobody else changes the counts meanwhile).
            SELECT * INTO v_trim FROM pgconductor._claim_trim(p_queue, v_picked, v_gate.limits);
            v_ids := v_trim.ids;
            v_gate.limits := v_trim.limits;
            v_gate.blocked := v_gate.blocked || v_trim.blocked;
            v_gate.blocked_keys := v_gate.blocked_keys || v_trim.blocked_keys;
        END IF;

        IF cardinality(v_ids) > 0 THEN
            -- The UPDATE finds the picked rows by primary key in one partition: a join with the
            -- picked rows instead let the planner hash-join a scan of the whole partition, which
            -- made every claim cost O(backlog).
            RETURN QUERY
            WITH claimed AS (
                UPDATE pgconductor.executions AS e
                   SET locked_by = p_orchestrator_id, locked_at = v_now, attempts = e.attempts + 1,
                       lease = e.lease + 1, start_by = NULL
                 WHERE e.queue = p_queue AND e.id = ANY (v_ids)
                RETURNING e.id, e.task_key, e.queue, e.payload, e.attempts, e.priority, e.run_at, e.lease, e.has_steps
            )
            SELECT c.id, c.task_key, c.queue, c.payload, c.attempts,
                   coalesce(t.max_attempts, 3), c.priority, c.run_at,
                   (extract(epoch FROM t.timeout) * 1000)::bigint, c.lease,
                   CASE WHEN c.has_steps THEN pgconductor._steps_by_key(c.id) END
              FROM claimed AS c
              LEFT JOIN pgconductor.tasks AS t ON t.key = c.task_key
             ORDER BY c.priority, c.run_at, c.id;
            IF (v_gate.limits->>'rated')::boolean THEN
                PERFORM pgconductor._spend_tokens(p_queue, v_ids, v_now);
            END IF;
            v_claimed := v_claimed + cardinality(v_ids);
        END IF;

        -- A claim that filled its batch (a backlog is draining) leaves the position where it
        -- ended: the greater of the last rows of the two lists (each is in key order). One
        -- that did not forgets it, so the next claim is one pass from the head.
        IF v_round = 1 AND NOT v_queue.fair_share THEN
            IF cardinality(v_picked) = p_batch_size THEN
                SELECT e.priority, e.run_at, e.id INTO v_last
                  FROM pgconductor.executions AS e
                 WHERE e.queue = p_queue AND e.id IN (v_cont[cardinality(v_cont)], v_head[cardinality(v_head)])
                 ORDER BY e.priority DESC, e.run_at DESC, e.id DESC
                 LIMIT 1;
                PERFORM set_config(v_setting, concat_ws('|', v_last.priority, v_last.run_at, v_last.id, v_head_at, v_filter), false);
            ELSIF v_position IS NOT NULL THEN
                PERFORM set_config(v_setting, '', false);
            END IF;
        END IF;

        -- Another round when the limits trimmed rows, or when a fair pick came up short
        -- (a key had fewer rows than its share). A pick in key order that came up short
        -- scanned to the end: nothing more is claimable.
        EXIT WHEN (NOT v_queue.fair_share AND (cardinality(v_picked) < v_want OR v_gate.limits IS NULL
                                               OR cardinality(v_ids) = cardinality(v_picked)));
        v_want := p_batch_size - v_claimed;
        EXIT WHEN v_want = 0 OR (v_queue.fair_share AND NOT v_keys_left);
    END LOOP;
    IF v_claimed = 0 THEN
        RETURN;
    END IF;

    -- Whoever holds executions must be an orchestrator recovery can see. A claim by one marked
    -- expired or stopped proves it alive again: revive it, so that recovery watches its
    -- heartbeat once more (written only in that case). This comes after the claim, and only
    -- when it took something: recovery cannot see the rows claimed here before this commits,
    -- and if it expired this orchestrator meanwhile, the row lock below waits for it and the
    -- revival then applies.
    INSERT INTO pgconductor.orchestrators AS o (id, started_at, last_heartbeat_at)
    VALUES (p_orchestrator_id, v_now, v_now)
    ON CONFLICT (id) DO UPDATE
       SET last_heartbeat_at = v_now, expired_at = NULL, stopped_at = NULL, drained = false
     WHERE o.expired_at IS NOT NULL OR o.stopped_at IS NOT NULL;
END
$$;

-- Claims up to p_batch_size executions of one task (in the task's registered queue, else
-- 'default') for p_orchestrator_id. Row locks: the claimed rows. Returns them.
CREATE FUNCTION pgconductor.get_executions(p_task_key text, p_orchestrator_id uuid, p_batch_size integer)
RETURNS SETOF pgconductor.claimed_execution
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT pgconductor._valid_task_key(p_task_key) THEN
        PERFORM pgconductor._assert_task_key(p_task_key);
    END IF;
    RETURN QUERY SELECT * FROM pgconductor.get_executions(
        ARRAY[p_task_key], p_orchestrator_id, p_batch_size,
        coalesce((SELECT t.queue FROM pgconductor.tasks AS t WHERE t.key = p_task_key), 'default'));
END
$$;

-- source: extension/src/42_complete.sql
-- Completing: return_executions() applies a whole batch of results in one statement.
-- A result is applied only while its lease holds (locked_by = orchestrator AND lease = the
-- lease the claim returned): a late or repeated result from an orchestrator whose execution
-- was recovered, released, re-claimed or finished is reported 'stale' and changes nothing
-- (fencing). Leases never repeat, so even a result flushed twice cannot hit a newer claim.

-- p_errors with one more entry for attempt p_attempt ({attempt, at, outcome, error}, the
-- error cut at 4000 characters), keeping the last 50 entries. Locks nothing. Inlined.
CREATE FUNCTION pgconductor._with_error(p_errors jsonb, p_attempt integer, p_outcome text, p_error text, p_at timestamptz)
RETURNS jsonb
LANGUAGE sql STABLE
RETURN jsonb_path_query_array(
    coalesce(p_errors, '[]') || jsonb_build_array(jsonb_build_object(
        'attempt', p_attempt, 'at', p_at, 'outcome', p_outcome, 'error', left(p_error, 4000))),
    '$[last - 49 to last]');

-- Ends live execution p_id of queue p_queue: moves it to finished_executions with p_state
-- ('completed', 'failed' or 'cancelled') and p_error. The caller holds the row lock.
-- Returns true when the row was still live.
CREATE FUNCTION pgconductor._finish(p_id uuid, p_queue text, p_state text, p_error text)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH ended AS (
        DELETE FROM pgconductor.executions AS e WHERE e.id = p_id AND e.queue = p_queue RETURNING e.*
    ), archived AS (
        INSERT INTO pgconductor.finished_executions
            (id, task_key, queue, payload, state, attempts, lease, priority, run_at, created_at, finished_at,
             orchestrator_id, last_error, errors, parent_id, parent_step)
        SELECT x.id, x.task_key, x.queue, x.payload, p_state, x.attempts, x.lease, x.priority, x.run_at, x.created_at,
               pgconductor._now(), x.locked_by, coalesce(p_error, x.last_error), x.errors, x.parent_id, x.parent_step
          FROM ended AS x
        ON CONFLICT ON CONSTRAINT finished_executions_pkey DO NOTHING
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM ended)
$$;

-- Applies a batch of results for orchestrator p_orchestrator_id. Statuses: completed, failed
-- (retry with the task's backoff until attempts are exhausted), fatal (fail now), released
-- (back to pending after p_delays_ms, attempt not counted), retry_after (the handler asked to
-- run again after p_delays_ms: attempt not counted, at most the task's max_retry_after times,
-- then failed), suspend (a durable workflow parks as the plan in p_results says: _suspend). A
-- cancelled execution ends cancelled whatever its result (a completed result is kept). Failed
-- attempts are added to the execution's errors. Row locks: the executions named. Returns one
-- (id, outcome, run_at) per input, in order: completed | retry_scheduled | failed | released |
-- rescheduled | suspended | resumed | cancelled | stale, with run_at the next run of those
-- back to pending (NULL for a wait without deadline).
-- Raises 22023 for bad arrays, P0002 for an unknown orchestrator.
CREATE FUNCTION pgconductor.return_executions(
    p_orchestrator_id uuid,
    p_ids             uuid[],
    p_leases          integer[],
    p_statuses        text[],
    p_errors          text[] DEFAULT NULL,
    p_results         jsonb[] DEFAULT NULL,
    p_delays_ms       integer[] DEFAULT NULL
)
RETURNS TABLE (id uuid, outcome text, run_at timestamptz)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now          timestamptz := pgconductor._now();
    v_n            integer := coalesce(cardinality(p_ids), 0);
    v_bad          text;
    v_sus          record;
    v_queue        text;
    v_parked       record;
    v_sus_ords     integer[] := '{}';
    v_sus_outcomes text[] := '{}';
    v_sus_run_ats  timestamptz[] := '{}';
BEGIN
    IF coalesce(cardinality(p_leases), 0) <> v_n OR coalesce(cardinality(p_statuses), 0) <> v_n
       OR (p_errors IS NOT NULL AND cardinality(p_errors) <> v_n)
       OR (p_results IS NOT NULL AND cardinality(p_results) <> v_n)
       OR (p_delays_ms IS NOT NULL AND cardinality(p_delays_ms) <> v_n) THEN
        RAISE EXCEPTION 'return_executions arrays have different lengths'
            USING ERRCODE = '22023', HINT = 'Pass one element per result in every array (or NULL for a whole optional array).';
    END IF;
    IF greatest(array_ndims(p_ids), array_ndims(p_leases), array_ndims(p_statuses), array_ndims(p_errors),
                array_ndims(p_results), array_ndims(p_delays_ms)) > 1 THEN
        RAISE EXCEPTION 'return_executions takes one-dimensional arrays'
            USING ERRCODE = '22023', HINT = 'Pass a flat array with one element per result.';
    END IF;
    SELECT s INTO v_bad FROM unnest(p_statuses) AS s
     WHERE s IS NULL OR s NOT IN ('completed', 'failed', 'fatal', 'released', 'retry_after', 'suspend') LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'invalid result status %', pgconductor._show(v_bad)
            USING ERRCODE = '22023', HINT = 'Use completed, failed, fatal, released, retry_after or suspend.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pgconductor.orchestrators AS o WHERE o.id = p_orchestrator_id) THEN
        RAISE EXCEPTION 'unknown orchestrator %', coalesce(p_orchestrator_id::text, 'NULL')
            USING ERRCODE = 'P0002', HINT = 'Results come from the orchestrator that claimed the executions (get_executions or heartbeat registers it).';
    END IF;
    IF v_n = 0 THEN
        RETURN;
    END IF;

    -- Suspensions first, one by one (each parks its execution as its plan says, see
    -- _suspend); a bad plan turns into a fatal result for that execution alone. The statement
    -- below then finds them unlocked and leaves them to the outcomes collected here.
    IF 'suspend' = ANY (p_statuses) THEN
        IF array_lower(p_statuses, 1) <> 1 THEN p_statuses := ARRAY(SELECT unnest(p_statuses)); END IF;
        IF array_lower(p_errors, 1) <> 1 THEN p_errors := ARRAY(SELECT unnest(p_errors)); END IF;
        p_errors := coalesce(p_errors, array_fill(NULL::text, ARRAY[v_n]));
        FOR v_sus IN
            SELECT DISTINCT ON (u.id) u.id, u.lease, u.status, u.plan, u.ord
              FROM unnest(p_ids, p_leases, p_statuses, p_results) WITH ORDINALITY AS u(id, lease, status, plan, ord)
             ORDER BY u.id, u.ord
        LOOP
            CONTINUE WHEN v_sus.status <> 'suspend';
            SELECT e.queue INTO v_queue FROM pgconductor.executions AS e
             WHERE e.id = v_sus.id AND e.locked_by = p_orchestrator_id AND e.lease = v_sus.lease AND e.cancel_reason IS NULL
               FOR UPDATE;
            CONTINUE WHEN NOT FOUND;  -- stale, or cancelled: the statement below reports it
            SELECT * INTO v_parked FROM pgconductor._suspend(v_sus.id, v_queue, v_sus.plan);
            IF v_parked.outcome = 'failed' THEN
                p_statuses[v_sus.ord] := 'fatal';
                p_errors[v_sus.ord] := v_parked.error;
            ELSE
                v_sus_ords := v_sus_ords || v_sus.ord::integer;
                v_sus_outcomes := v_sus_outcomes || v_parked.outcome;
                v_sus_run_ats := v_sus_run_ats || v_parked.run_at;
            END IF;
        END LOOP;
    END IF;

    RETURN QUERY
    WITH input AS (
        SELECT u.id, u.lease, u.status, u.error, u.result, u.delay_ms, u.ord
          -- A NULL optional array unnests as all NULL (unnest pads the shorter arrays).
          FROM unnest(p_ids, p_leases, p_statuses, p_errors, p_results, p_delays_ms)
               WITH ORDINALITY AS u(id, lease, status, error, result, delay_ms, ord)
    ), first_of_id AS (
        -- A repeated id is applied once: its first occurrence; the others report 'stale'.
        SELECT DISTINCT ON (i.id) i.* FROM input AS i ORDER BY i.id, i.ord
    ), live AS MATERIALIZED (
        -- The lease check: only rows this orchestrator still holds under this lease.
        SELECT e.id, e.queue, e.attempts, e.cancel_reason, e.retry_afters, i.ord, i.status, i.error, i.result,
               i.delay_ms, coalesce(t.max_attempts, 3) AS max_attempts,
               coalesce(t.backoff_base, interval '1 second') AS backoff_base,
               coalesce(t.backoff_cap, interval '10 minutes') AS backoff_cap,
               coalesce(t.max_retry_after, 20) AS max_retry_after
          FROM first_of_id AS i
          JOIN pgconductor.executions AS e
            ON e.id = i.id AND e.locked_by = p_orchestrator_id AND e.lease = i.lease
          LEFT JOIN pgconductor.tasks AS t ON t.key = e.task_key
           FOR UPDATE OF e
    ), decided AS MATERIALIZED (
        SELECT l.*, o.outcome,
               CASE o.outcome
                   WHEN 'retry_scheduled' THEN v_now + pgconductor._backoff(l.attempts, l.backoff_base, l.backoff_cap)
                   WHEN 'released' THEN v_now + make_interval(secs => greatest(coalesce(l.delay_ms, 0), 0) / 1000.0)
                   WHEN 'rescheduled' THEN v_now + make_interval(secs => greatest(coalesce(l.delay_ms, 0), 0) / 1000.0)
               END AS next_run_at,
               CASE WHEN l.status = 'retry_after' AND o.outcome = 'failed'
                    THEN format('rescheduled more than %s times: %s', l.max_retry_after,
                                coalesce(l.error, 'no reason given'))
                    ELSE coalesce(l.error, 'failed without an error message') END AS error_text
          FROM live AS l
          CROSS JOIN LATERAL (SELECT CASE
                   WHEN l.cancel_reason IS NOT NULL THEN 'cancelled'  -- a cancel wins, even over a late completion
                   WHEN l.status = 'completed' THEN 'completed'
                   WHEN l.status = 'released' THEN 'released'
                   WHEN l.status = 'retry_after' AND l.retry_afters < l.max_retry_after THEN 'rescheduled'
                   WHEN l.status = 'retry_after' THEN 'failed'
                   WHEN l.status = 'fatal' OR l.attempts >= l.max_attempts THEN 'failed'
                   ELSE 'retry_scheduled'
               END AS outcome) AS o
    ), ended AS (
        DELETE FROM pgconductor.executions AS e
         USING decided AS d
         WHERE e.id = d.id AND e.queue = d.queue AND d.outcome IN ('completed', 'failed', 'cancelled')
        RETURNING e.*, d.outcome AS state,
                  CASE d.outcome WHEN 'completed' THEN e.last_error
                                 WHEN 'cancelled' THEN e.cancel_reason
                                 ELSE d.error_text END AS new_error,
                  CASE WHEN d.status = 'completed' THEN d.result END AS new_result,
                  CASE WHEN d.outcome = 'failed' OR (d.outcome = 'cancelled' AND d.status IN ('failed', 'fatal'))
                       THEN pgconductor._with_error(e.errors, e.attempts, d.outcome, d.error_text, v_now)
                       ELSE e.errors END AS new_errors
    ), archived AS (
        INSERT INTO pgconductor.finished_executions
            (id, task_key, queue, payload, state, attempts, lease, priority, run_at, created_at, finished_at,
             orchestrator_id, last_error, result, errors, parent_id, parent_step)
        SELECT x.id, x.task_key, x.queue, x.payload, x.state, x.attempts, x.lease, x.priority, x.run_at, x.created_at,
               v_now, x.locked_by, x.new_error, x.new_result, x.new_errors, x.parent_id, x.parent_step
          FROM ended AS x
        ON CONFLICT ON CONSTRAINT finished_executions_pkey DO NOTHING
    ), requeued AS (
        UPDATE pgconductor.executions AS e
           SET locked_by = NULL, locked_at = NULL,
               attempts = CASE WHEN d.outcome = 'retry_scheduled' THEN e.attempts ELSE greatest(e.attempts - 1, 0) END,
               retry_afters = e.retry_afters + CASE WHEN d.outcome = 'rescheduled' THEN 1 ELSE 0 END,
               run_at = d.next_run_at,
               last_error = CASE WHEN d.outcome = 'retry_scheduled' THEN d.error_text ELSE e.last_error END,
               errors = CASE d.outcome
                            WHEN 'retry_scheduled' THEN pgconductor._with_error(e.errors, e.attempts, d.outcome, d.error_text, v_now)
                            WHEN 'rescheduled' THEN pgconductor._with_error(e.errors, e.attempts, 'retry_after',
                                                                            coalesce(d.error, 'no reason given'), v_now)
                            ELSE e.errors END
          FROM decided AS d
         WHERE e.id = d.id AND e.queue = d.queue AND d.outcome IN ('retry_scheduled', 'released', 'rescheduled')
    )
    SELECT i.id, coalesce(d.outcome, p.outcome, 'stale'), coalesce(d.next_run_at, p.run_at)
      FROM input AS i
      LEFT JOIN decided AS d ON d.id = i.id AND d.ord = i.ord
      LEFT JOIN unnest(v_sus_ords, v_sus_outcomes, v_sus_run_ats) AS p(ord, outcome, run_at) ON p.ord = i.ord
     ORDER BY i.ord;
END
$$;

-- source: extension/src/43_heartbeat.sql
-- Liveness: heartbeat() keeps an orchestrator alive and hands it its signals; recover_stale()
-- gives the work of orchestrators whose heartbeat lapsed back to the queue. No leader is
-- needed: every heartbeat runs recovery, and row locks (SKIP LOCKED) settle the races.

-- Signals orchestrator p_orchestrator_id (NOTIFY pgconductor_signal) that a signal waits.
CREATE FUNCTION pgconductor._signal(p_orchestrator_id uuid, p_kind text, p_execution_id uuid)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO pgconductor.signals (orchestrator_id, kind, execution_id)
    VALUES (p_orchestrator_id, p_kind, p_execution_id)
    ON CONFLICT ON CONSTRAINT signals_unique DO NOTHING;
    SELECT pg_notify('pgconductor_signal', p_orchestrator_id::text);
$$;

-- Expires orchestrators whose last heartbeat is older than their stale_after, then releases
-- up to p_limit executions they held: back to pending (the lost attempt counts), failed when
-- attempts are exhausted, cancelled when a cancel was pending; the lost attempt is added to
-- its errors. Row locks: those executions (SKIP LOCKED). Returns (id, outcome) per execution
-- touched.
CREATE FUNCTION pgconductor.recover_stale(p_limit integer DEFAULT 1000)
RETURNS TABLE (id uuid, outcome text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now   timestamptz := pgconductor._now();
    v_dead  uuid[];
    v_row   record;
    v_error text;
BEGIN
    UPDATE pgconductor.orchestrators AS o SET expired_at = v_now
     WHERE o.expired_at IS NULL AND o.stopped_at IS NULL AND o.last_heartbeat_at < v_now - o.stale_after;

    SELECT array_agg(o.id) INTO v_dead FROM pgconductor.orchestrators AS o
     WHERE o.expired_at IS NOT NULL AND NOT o.drained;
    IF v_dead IS NULL THEN
        RETURN;
    END IF;

    FOR v_row IN
        SELECT e.id, e.queue, e.attempts, e.locked_by, e.cancel_reason, o.last_heartbeat_at,
               coalesce(t.max_attempts, 3) AS max_attempts
          FROM pgconductor.executions AS e
          JOIN pgconductor.orchestrators AS o ON o.id = e.locked_by
          LEFT JOIN pgconductor.tasks AS t ON t.key = e.task_key
         WHERE e.locked_by = ANY (v_dead)
         LIMIT greatest(coalesce(p_limit, 1000), 1)
           FOR UPDATE OF e SKIP LOCKED
    LOOP
        id := v_row.id;
        IF v_row.cancel_reason IS NOT NULL THEN
            outcome := 'cancelled';
            PERFORM pgconductor._finish(v_row.id, v_row.queue, 'cancelled', v_row.cancel_reason);
        ELSE
            outcome := CASE WHEN v_row.attempts >= v_row.max_attempts THEN 'failed' ELSE 'released' END;
            v_error := format('attempt %s of %s lost: orchestrator %s stopped sending heartbeats (last at %s)',
                              v_row.attempts, v_row.max_attempts, v_row.locked_by, v_row.last_heartbeat_at);
            UPDATE pgconductor.executions AS e
               SET last_error = v_error, errors = pgconductor._with_error(e.errors, v_row.attempts, 'lost', v_error, v_now)
             WHERE e.id = v_row.id AND e.queue = v_row.queue;
            IF outcome = 'failed' THEN
                PERFORM pgconductor._finish(v_row.id, v_row.queue, 'failed', NULL);
            ELSE
                UPDATE pgconductor.executions AS e SET locked_by = NULL, locked_at = NULL, run_at = v_now
                 WHERE e.id = v_row.id AND e.queue = v_row.queue;
                PERFORM pg_notify('pgconductor_invoke', v_row.queue);
            END IF;
        END IF;
        PERFORM pgconductor._signal(v_row.locked_by, 'lease_lost', v_row.id);
        RETURN NEXT;
    END LOOP;

    -- An expired orchestrator that holds nothing any more needs no further visits.
    UPDATE pgconductor.orchestrators AS o SET drained = true
     WHERE o.id = ANY (v_dead)
       AND NOT EXISTS (SELECT 1 FROM pgconductor.executions AS e WHERE e.locked_by = o.id);
END
$$;

-- Registers or refreshes orchestrator p_orchestrator_id (a lapsed one comes back to life).
-- With p_held (the executions its workers hold: running or with results not yet flushed), it
-- also gives back what it holds unlisted since its previous heartbeat: claims whose reply was
-- lost. Runs recover_stale(), then deletes and returns its pending signals (kind: shutdown |
-- cancel | lease_lost) in the order they were raised.
CREATE FUNCTION pgconductor.heartbeat(
    p_orchestrator_id uuid,
    p_version         text DEFAULT NULL,
    p_stale_after     interval DEFAULT '30 seconds',
    p_info            jsonb DEFAULT '{}',
    p_held            uuid[] DEFAULT NULL
)
RETURNS TABLE (kind text, execution_id uuid)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now  timestamptz := pgconductor._now();
    v_prev timestamptz;
BEGIN
    IF p_orchestrator_id IS NULL THEN
        RAISE EXCEPTION 'orchestrator id must not be NULL'
            USING ERRCODE = '22023', HINT = 'Each worker process picks one uuid and uses it for every call.';
    END IF;
    IF p_stale_after IS NULL OR p_stale_after <= interval '0' OR p_stale_after > interval '1 day' THEN
        RAISE EXCEPTION 'stale_after must be positive and at most 1 day, got %', coalesce(p_stale_after::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Use several heartbeat intervals, e.g. 30 seconds for a 5 second heartbeat.';
    END IF;
    SELECT o.last_heartbeat_at INTO v_prev FROM pgconductor.orchestrators AS o
     WHERE o.id = p_orchestrator_id AND o.stopped_at IS NULL AND o.expired_at IS NULL;
    INSERT INTO pgconductor.orchestrators AS o (id, started_at, last_heartbeat_at, stale_after, version, info)
    VALUES (p_orchestrator_id, v_now, v_now, p_stale_after, p_version, coalesce(p_info, '{}'))
    ON CONFLICT (id) DO UPDATE
       SET last_heartbeat_at = v_now, stale_after = excluded.stale_after,
           version = coalesce(excluded.version, o.version), info = excluded.info,
           expired_at = NULL, drained = false, stopped_at = NULL;

    -- Claimed before the previous beat and still not listed: the claim's reply never arrived.
    IF p_held IS NOT NULL AND v_prev IS NOT NULL THEN
        PERFORM pgconductor._release_held(p_orchestrator_id, p_held, v_prev);
    END IF;
    PERFORM pgconductor.recover_stale(1000);

    RETURN QUERY
    WITH taken AS (
        DELETE FROM pgconductor.signals AS s WHERE s.orchestrator_id = p_orchestrator_id
        RETURNING s.id, s.kind, s.execution_id
    )
    SELECT t.kind, t.execution_id FROM taken AS t ORDER BY t.id;
END
$$;

-- Gives back what orchestrator p_orchestrator_id holds but does not list in p_keep and
-- claimed before p_before (NULL: any time): pending again, attempt not counted (its handler
-- never ran or was stopped); pending cancels end cancelled. Row locks: those executions
-- (SKIP LOCKED). Returns how many executions it let go.
CREATE FUNCTION pgconductor._release_held(p_orchestrator_id uuid, p_keep uuid[], p_before timestamptz)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count  integer := 0;
    v_row    record;
    v_queues text[] := '{}';
BEGIN
    FOR v_row IN
        SELECT e.id, e.queue, e.cancel_reason FROM pgconductor.executions AS e
         WHERE e.locked_by = p_orchestrator_id
           AND NOT (e.id = ANY (coalesce(p_keep, '{}')))
           AND (p_before IS NULL OR e.locked_at < p_before)
           FOR UPDATE SKIP LOCKED
    LOOP
        IF v_row.cancel_reason IS NOT NULL THEN
            PERFORM pgconductor._finish(v_row.id, v_row.queue, 'cancelled', v_row.cancel_reason);
        ELSE
            UPDATE pgconductor.executions AS e
               SET locked_by = NULL, locked_at = NULL, attempts = greatest(e.attempts - 1, 0)
             WHERE e.id = v_row.id AND e.queue = v_row.queue;
            v_queues := array_append(v_queues, v_row.queue);
        END IF;
        v_count := v_count + 1;
    END LOOP;
    PERFORM pg_notify('pgconductor_invoke', q) FROM (SELECT DISTINCT unnest(v_queues) AS q) AS d;
    RETURN v_count;
END
$$;

-- A clean stop of orchestrator p_orchestrator_id: gives back every execution it holds except
-- those in p_keep (handlers that would not stop: their attempt runs out through recovery) and,
-- when it keeps none, marks it stopped. Row locks: its executions. Returns how many it let go.
CREATE FUNCTION pgconductor.release_orchestrator(p_orchestrator_id uuid, p_keep uuid[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    v_count := pgconductor._release_held(p_orchestrator_id, p_keep, NULL);
    IF coalesce(cardinality(p_keep), 0) = 0 THEN
        UPDATE pgconductor.orchestrators SET stopped_at = pgconductor._now(), drained = true
         WHERE id = p_orchestrator_id;
        DELETE FROM pgconductor.signals WHERE orchestrator_id = p_orchestrator_id;
    END IF;
    RETURN v_count;
END
$$;

-- Asks orchestrator p_orchestrator_id (NULL: every live one) to shut down gracefully.
-- Returns how many orchestrators were signalled.
CREATE FUNCTION pgconductor.request_shutdown(p_orchestrator_id uuid DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer := 0;
    v_id    uuid;
BEGIN
    FOR v_id IN
        SELECT o.id FROM pgconductor.orchestrators AS o
         WHERE (p_orchestrator_id IS NULL OR o.id = p_orchestrator_id)
           AND o.stopped_at IS NULL AND o.expired_at IS NULL
    LOOP
        PERFORM pgconductor._signal(v_id, 'shutdown', NULL);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;

-- source: extension/src/44_operations.sql
-- Operations on single executions and queues: cancel, retry, inspect, stats, retention.

-- Cancels execution p_execution_id and, recursively, its live children. Pending or parked: it
-- ends now as cancelled ('cancelled'). Running: the cancel is recorded and its orchestrator
-- signalled ('cancelling'); its result then ends it as cancelled. Row locks: that execution
-- and its children. Also returns 'already_finished' or 'not_found'.
CREATE FUNCTION pgconductor.cancel(p_execution_id uuid, p_reason text DEFAULT 'cancelled by user')
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row record;
BEGIN
    SELECT e.id, e.queue, e.locked_by, e.cancel_reason INTO v_row
      FROM pgconductor.executions AS e WHERE e.id = p_execution_id FOR UPDATE;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM pgconductor.finished_executions AS f WHERE f.id = p_execution_id) THEN
            RETURN 'already_finished';
        END IF;
        RETURN 'not_found';
    END IF;
    IF v_row.locked_by IS NULL THEN
        PERFORM pgconductor._finish(v_row.id, v_row.queue, 'cancelled', coalesce(p_reason, 'cancelled by user'));
        RETURN 'cancelled';
    END IF;
    IF v_row.cancel_reason IS NULL THEN
        UPDATE pgconductor.executions AS e SET cancel_reason = coalesce(p_reason, 'cancelled by user')
         WHERE e.id = v_row.id AND e.queue = v_row.queue;
        PERFORM pgconductor._signal(v_row.locked_by, 'cancel', v_row.id);
        -- Its children go now, not when its handler stops (a pending or parked parent's go with
        -- its end: see _on_finished).
        PERFORM pgconductor.cancel(c.id, format('its parent was cancelled: %s', coalesce(p_reason, 'cancelled by user')))
           FROM pgconductor.executions AS c WHERE c.parent_id = v_row.id;
    END IF;
    RETURN 'cancelling';
END
$$;

-- Puts failed or cancelled execution p_execution_id back to pending, due now, with attempts
-- reset (its errors and stored steps are kept: a workflow resumes where it stopped). Raises
-- P0002 when unknown, 55000 when it is live or completed. Returns its id.
CREATE FUNCTION pgconductor.retry(p_execution_id uuid)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row pgconductor.finished_executions;
BEGIN
    SELECT * INTO v_row FROM pgconductor.finished_executions AS f WHERE f.id = p_execution_id FOR UPDATE;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM pgconductor.executions AS e WHERE e.id = p_execution_id) THEN
            RAISE EXCEPTION 'execution % has not finished', p_execution_id
                USING ERRCODE = '55000', HINT = 'Only failed or cancelled executions can be retried.';
        END IF;
        RAISE EXCEPTION 'unknown execution %', coalesce(p_execution_id::text, 'NULL')
            USING ERRCODE = 'P0002', HINT = 'Finished executions are kept until prune_finished() removes them.';
    END IF;
    IF v_row.state = 'completed' THEN
        RAISE EXCEPTION 'execution % completed', p_execution_id
            USING ERRCODE = '55000', HINT = 'Only failed or cancelled executions can be retried; invoke the task again instead.';
    END IF;
    PERFORM pgconductor.create_queue(v_row.queue);
    DELETE FROM pgconductor.finished_executions AS f WHERE f.id = p_execution_id;
    INSERT INTO pgconductor.executions (id, task_key, queue, payload, run_at, priority, attempts, lease, last_error,
                                        created_at, errors, parent_id, parent_step, has_steps)
    VALUES (v_row.id, v_row.task_key, v_row.queue, v_row.payload, pgconductor._now(), v_row.priority, 0,
            v_row.lease, v_row.last_error, v_row.created_at, v_row.errors, v_row.parent_id, v_row.parent_step,
            EXISTS (SELECT 1 FROM pgconductor.steps AS s WHERE s.execution_id = v_row.id));
    PERFORM pg_notify('pgconductor_invoke', v_row.queue);
    RETURN v_row.id;
END
$$;

-- Puts up to p_limit finished executions in state p_state ('failed' or 'cancelled') of task
-- p_task_key and queue p_queue (NULL: any) back to pending, newest first, as retry() does for
-- one. Row locks: those executions. Raises 22023 for another state or a limit outside
-- 1..10000. Returns how many it put back.
CREATE FUNCTION pgconductor.retry_executions(
    p_state    text DEFAULT 'failed',
    p_task_key text DEFAULT NULL,
    p_queue    text DEFAULT NULL,
    p_limit    integer DEFAULT 1000
)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer := 0;
    v_id    uuid;
BEGIN
    IF p_state IS NULL OR p_state NOT IN ('failed', 'cancelled') THEN
        RAISE EXCEPTION 'cannot retry executions in state %', pgconductor._show(p_state)
            USING ERRCODE = '22023', HINT = 'Retry failed or cancelled executions; invoke the task again for a completed one.';
    END IF;
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'limit must be between 1 and 10000, got %', coalesce(p_limit::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Retry in pages: call again until it returns 0.';
    END IF;
    FOR v_id IN
        SELECT f.id FROM pgconductor.finished_executions AS f
         WHERE f.state = p_state AND f.state <> 'completed'
           AND (p_task_key IS NULL OR f.task_key = p_task_key) AND (p_queue IS NULL OR f.queue = p_queue)
         ORDER BY f.id DESC
         LIMIT p_limit
    LOOP
        PERFORM pgconductor.retry(v_id);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;

-- Counts per queue: pending (due now or later), due, running, and finished by state.
-- Locks nothing; reads every live row and the finished ones (an operator's query).
CREATE FUNCTION pgconductor.queue_stats()
RETURNS TABLE (queue text, pending bigint, due bigint, running bigint, completed bigint, failed bigint, cancelled bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH live AS (
        SELECT e.queue,
               count(*) FILTER (WHERE e.locked_by IS NULL) AS pending,
               count(*) FILTER (WHERE e.locked_by IS NULL AND e.run_at <= pgconductor._now()) AS due,
               count(*) FILTER (WHERE e.locked_by IS NOT NULL) AS running
          FROM pgconductor.executions AS e GROUP BY e.queue
    ), done AS (
        SELECT f.queue,
               count(*) FILTER (WHERE f.state = 'completed') AS completed,
               count(*) FILTER (WHERE f.state = 'failed') AS failed,
               count(*) FILTER (WHERE f.state = 'cancelled') AS cancelled
          FROM pgconductor.finished_executions AS f GROUP BY f.queue
    )
    SELECT q.name, coalesce(l.pending, 0), coalesce(l.due, 0), coalesce(l.running, 0),
           coalesce(d.completed, 0), coalesce(d.failed, 0), coalesce(d.cancelled, 0)
      FROM pgconductor.queues AS q
      LEFT JOIN live AS l ON l.queue = q.name
      LEFT JOIN done AS d ON d.queue = q.name
     ORDER BY q.name
$$;

-- Retention: deletes up to p_limit finished executions that ended before now - p_older_than
-- (with their steps), as many events emitted before then, and orchestrators gone (stopped or
-- drained) that long. Returns the executions deleted.
CREATE FUNCTION pgconductor.prune_finished(p_older_than interval, p_limit integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cutoff timestamptz;
    v_count  integer;
BEGIN
    PERFORM pgconductor._assert_interval('older_than', p_older_than, interval '0', false, interval '1000 years');
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'prune_finished needs a positive limit, got %', coalesce(p_limit::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'For example prune_finished(interval ''7 days'', 10000).';
    END IF;
    v_cutoff := pgconductor._now() - p_older_than;
    WITH pruned AS (
        DELETE FROM pgconductor.finished_executions AS f
         WHERE f.id IN (SELECT x.id FROM pgconductor.finished_executions AS x
                         WHERE x.finished_at < v_cutoff ORDER BY x.finished_at LIMIT p_limit)
        RETURNING f.id
    ), steps_gone AS (
        DELETE FROM pgconductor.steps AS s USING pruned AS p WHERE s.execution_id = p.id
    )
    SELECT count(*) INTO v_count FROM pruned;
    DELETE FROM pgconductor.events AS ev
     WHERE ev.id IN (SELECT x.id FROM pgconductor.events AS x WHERE x.created_at < v_cutoff ORDER BY x.created_at LIMIT p_limit);
    DELETE FROM pgconductor.orchestrators AS o
     WHERE o.drained AND coalesce(o.stopped_at, o.expired_at) < v_cutoff
       AND NOT EXISTS (SELECT 1 FROM pgconductor.executions AS e WHERE e.locked_by = o.id);
    RETURN v_count;
END
$$;

-- The installed version: the extension's, or, when the scripts were run as plain SQL (managed
-- Postgres without the extension's files: `pgconductor schema install --sql-only`), the newest
-- version recorded in pgconductor.sql_install by that installer. Locks nothing; NULL when
-- neither says.
CREATE FUNCTION pgconductor.version()
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_version text;
BEGIN
    SELECT e.extversion INTO v_version FROM pg_catalog.pg_extension AS e WHERE e.extname = 'pgconductor';
    IF v_version IS NULL AND to_regclass('pgconductor.sql_install') IS NOT NULL THEN
        EXECUTE 'SELECT s.version FROM pgconductor.sql_install AS s ORDER BY s.applied_at DESC LIMIT 1' INTO v_version;
    END IF;
    RETURN v_version;
END
$$;

-- Orchestrators and what they hold: state live | expired | stopped, the running executions
-- they hold, their last heartbeat. Locks nothing. Gone ones stay listed until prune_finished().
CREATE FUNCTION pgconductor.orchestrator_stats()
RETURNS TABLE (id uuid, state text, version text, started_at timestamptz, last_heartbeat_at timestamptz,
               running bigint, info jsonb)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.id,
           CASE WHEN o.stopped_at IS NOT NULL THEN 'stopped'
                WHEN o.expired_at IS NOT NULL THEN 'expired'
                ELSE 'live' END,
           o.version, o.started_at, o.last_heartbeat_at,
           (SELECT count(*) FROM pgconductor.executions AS e WHERE e.locked_by = o.id),
           o.info
      FROM pgconductor.orchestrators AS o
     ORDER BY (o.stopped_at IS NULL AND o.expired_at IS NULL) DESC, o.last_heartbeat_at DESC
$$;

-- source: extension/src/45_inspect.sql
-- Looking at work: one execution with its history, pages of executions by state, task and
-- queue, and which tasks have work that no live worker serves. Read-only; locks nothing.

-- One execution wherever it is: state pending | running | sleeping | waiting_for_children |
-- waiting_for_event (live) or completed | failed | cancelled (finished), with its errors
-- ([{attempt, at, outcome, error}], oldest first), its parent and its steps (in the order the
-- run reached them). Locks nothing. Returns no row for an unknown id.
CREATE FUNCTION pgconductor.get_execution(p_id uuid)
RETURNS TABLE (id uuid, task_key text, queue text, state text, attempts integer, max_attempts integer,
               priority integer, payload jsonb, run_at timestamptz, created_at timestamptz,
               locked_at timestamptz, finished_at timestamptz, locked_by uuid, last_error text,
               result jsonb, errors jsonb, cancel_reason text, parent_id uuid, steps jsonb)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT x.id, x.task_key, x.queue, x.state, x.attempts,
           coalesce((SELECT t.max_attempts FROM pgconductor.tasks AS t WHERE t.key = x.task_key), 3),
           x.priority, x.payload, x.run_at, x.created_at, x.locked_at, x.finished_at, x.locked_by,
           x.last_error, x.result, x.errors, x.cancel_reason, x.parent_id,
           (SELECT jsonb_agg(jsonb_build_object('key', s.key, 'seq', s.seq, 'kind', s.kind, 'state', s.state,
                                                'result', s.result, 'error', s.error, 'child_id', s.child_id,
                                                'until', s.until, 'created_at', s.created_at, 'done_at', s.done_at)
                             ORDER BY s.seq, s.key)
              FROM pgconductor.steps AS s WHERE s.execution_id = x.id)
      FROM (SELECT e.id, e.task_key, e.queue,
                   CASE WHEN e.locked_by IS NOT NULL THEN 'running'
                        WHEN e.waiting = 'sleep' THEN 'sleeping'
                        WHEN e.waiting = 'children' THEN 'waiting_for_children'
                        WHEN e.waiting = 'event' THEN 'waiting_for_event'
                        ELSE 'pending' END AS state,
                   e.attempts, e.priority, e.payload, e.run_at, e.created_at, e.locked_at, NULL::timestamptz AS finished_at,
                   e.locked_by, e.last_error, NULL::jsonb AS result, e.errors, e.cancel_reason, e.parent_id
              FROM pgconductor.executions AS e WHERE e.id = p_id
            UNION ALL
            SELECT f.id, f.task_key, f.queue, f.state, f.attempts, f.priority, f.payload, f.run_at, f.created_at,
                   NULL, f.finished_at, NULL, f.last_error, f.result, f.errors,
                   CASE WHEN f.state = 'cancelled' THEN f.last_error END, f.parent_id
              FROM pgconductor.finished_executions AS f WHERE f.id = p_id
            LIMIT 1) AS x
$$;

-- A page of executions, newest first (ids are time-ordered): state p_state (pending, running,
-- completed, failed, cancelled; NULL: all), task p_task_key and queue p_queue (NULL: any), at
-- most p_limit (1..1000) with ids below p_before (NULL: from the newest). Each part reads an
-- index in id order. Locks nothing. Raises 22023 for a bad state or limit.
CREATE FUNCTION pgconductor.list_executions(
    p_state    text DEFAULT NULL,
    p_task_key text DEFAULT NULL,
    p_queue    text DEFAULT NULL,
    p_limit    integer DEFAULT 50,
    p_before   uuid DEFAULT NULL
)
RETURNS TABLE (id uuid, task_key text, queue text, state text, attempts integer, max_attempts integer,
               priority integer, run_at timestamptz, created_at timestamptz, finished_at timestamptz,
               last_error text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_state IS NOT NULL AND p_state NOT IN ('pending', 'running', 'completed', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'unknown state %', pgconductor._show(p_state)
            USING ERRCODE = '22023', HINT = 'Use pending, running, completed, failed or cancelled (or NULL for all).';
    END IF;
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'limit must be between 1 and 1000, got %', coalesce(p_limit::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Page with p_before => the last id of the previous page.';
    END IF;
    RETURN QUERY
    SELECT x.id, x.task_key, x.queue, x.state, x.attempts,
           coalesce((SELECT t.max_attempts FROM pgconductor.tasks AS t WHERE t.key = x.task_key), 3),
           x.priority, x.run_at, x.created_at, x.finished_at, x.last_error
      FROM ((SELECT e.id, e.task_key, e.queue, CASE WHEN e.locked_by IS NULL THEN 'pending' ELSE 'running' END AS state,
                    e.attempts, e.priority, e.run_at, e.created_at, NULL::timestamptz AS finished_at, e.last_error
               FROM pgconductor.executions AS e
              WHERE (p_state IS NULL OR p_state IN ('pending', 'running'))
                AND (p_state IS NULL OR (e.locked_by IS NOT NULL) = (p_state = 'running'))
                AND (p_task_key IS NULL OR e.task_key = p_task_key) AND (p_queue IS NULL OR e.queue = p_queue)
                AND (p_before IS NULL OR e.id < p_before)
              ORDER BY e.id DESC LIMIT p_limit)
            UNION ALL
            (SELECT f.id, f.task_key, f.queue, f.state, f.attempts, f.priority, f.run_at, f.created_at, f.finished_at,
                    f.last_error
               FROM pgconductor.finished_executions AS f
              WHERE (p_state IS NULL OR f.state = p_state)
                AND (p_task_key IS NULL OR f.task_key = p_task_key) AND (p_queue IS NULL OR f.queue = p_queue)
                AND (p_before IS NULL OR f.id < p_before)
              ORDER BY f.id DESC LIMIT p_limit)) AS x
     ORDER BY x.id DESC
     LIMIT p_limit;
END
$$;

-- Every task that is registered or has live executions: its queue, whether it is registered,
-- whether a live orchestrator serves it (lists it under that queue in its heartbeat info:
-- {"queues": {"<queue>": {"tasks": [...]}}}), and its pending and running counts. Locks
-- nothing; reads every live execution (an operator's query).
CREATE FUNCTION pgconductor.task_overview()
RETURNS TABLE (task_key text, queue text, registered boolean, served boolean, pending bigint, running bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH served AS (
        SELECT DISTINCT q.key AS queue, k.task_key
          FROM pgconductor.orchestrators AS o
         CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(o.info->'queues') = 'object' THEN o.info->'queues' ELSE '{}' END) AS q
         CROSS JOIN LATERAL jsonb_array_elements_text(CASE WHEN jsonb_typeof(q.value->'tasks') = 'array' THEN q.value->'tasks' ELSE '[]' END) AS k(task_key)
         WHERE o.stopped_at IS NULL AND o.expired_at IS NULL
    ), live AS (
        SELECT e.task_key, e.queue,
               count(*) FILTER (WHERE e.locked_by IS NULL) AS pending,
               count(*) FILTER (WHERE e.locked_by IS NOT NULL) AS running
          FROM pgconductor.executions AS e GROUP BY e.task_key, e.queue
    ), keys AS (
        SELECT t.key AS task_key, t.queue FROM pgconductor.tasks AS t
        UNION
        SELECT l.task_key, l.queue FROM live AS l
    )
    SELECT k.task_key, k.queue,
           EXISTS (SELECT 1 FROM pgconductor.tasks AS t WHERE t.key = k.task_key),
           EXISTS (SELECT 1 FROM served AS s WHERE s.task_key = k.task_key AND s.queue = k.queue),
           coalesce(l.pending, 0), coalesce(l.running, 0)
      FROM keys AS k
      LEFT JOIN live AS l ON l.task_key = k.task_key AND l.queue = k.queue
     ORDER BY k.queue, k.task_key
$$;

-- source: extension/src/46_workflow_steps.sql
-- Durable workflows: suspend and replay. A handler stores step results (save_steps), parks
-- its execution to sleep, to wait for children or for an event (return_executions status
-- 'suspend', applied by _suspend), and is re-run from the top when woken; stored steps come
-- back with the claim. Wake-ups happen in SQL: due timers in the claim (_wake_due), a child's
-- end in the trigger on finished_executions (_on_finished), events in emit_event().

-- The stored steps of execution p_execution_id as one object keyed by step key (what a
-- replay needs); NULL when there are none. Locks nothing.
CREATE FUNCTION pgconductor._steps_by_key(p_execution_id uuid)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_object_agg(s.key, jsonb_strip_nulls(jsonb_build_object(
               'seq', s.seq, 'kind', s.kind, 'state', s.state, 'result', s.result, 'error', s.error,
               'child_id', s.child_id, 'until', s.until)) || jsonb_build_object('result', s.result))
      FROM pgconductor.steps AS s WHERE s.execution_id = p_execution_id
$$;

-- The lookup pair of an event wait's match: its first top-level key whose value is a scalar,
-- as 'key=value' (numbers without trailing zeros); NULL when there is none. An emit looks the
-- waits up by its payload's own pairs. Locks nothing.
CREATE FUNCTION pgconductor._match_key(p_match jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.key || '=' || CASE jsonb_typeof(m.value) WHEN 'number' THEN trim_scale((m.value #>> '{}')::numeric)::text
                                                    ELSE m.value::text END
      FROM jsonb_each(CASE WHEN jsonb_typeof(p_match) = 'object' THEN p_match ELSE '{}' END) AS m
     WHERE jsonb_typeof(m.value) IN ('string', 'number', 'boolean', 'null')
     ORDER BY m.key
     LIMIT 1
$$;

-- The advisory lock key of event name p_name (emits share it; registering a wait takes it
-- alone). Inlined.
CREATE FUNCTION pgconductor._event_lock(p_name text)
RETURNS bigint
LANGUAGE sql IMMUTABLE
RETURN hashtextextended('pgconductor.event:' || p_name, 0);

-- Stores step results for the executions orchestrator p_orchestrator_id holds under the
-- given leases (parallel arrays: id, lease, key, seq, result). A key already stored keeps its
-- first result. Row locks: those executions (shared). Returns (id, key, outcome) per input:
-- saved | stale (the lease no longer holds: nothing written). Raises 22023 for bad arrays or keys.
CREATE FUNCTION pgconductor.save_steps(
    p_orchestrator_id uuid,
    p_ids             uuid[],
    p_leases          integer[],
    p_keys            text[],
    p_seqs            integer[],
    p_results         jsonb[]
)
RETURNS TABLE (id uuid, key text, outcome text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n   integer := coalesce(cardinality(p_ids), 0);
    v_bad text;
BEGIN
    IF coalesce(cardinality(p_leases), 0) <> v_n OR coalesce(cardinality(p_keys), 0) <> v_n
       OR coalesce(cardinality(p_seqs), 0) <> v_n OR coalesce(cardinality(p_results), 0) <> v_n THEN
        RAISE EXCEPTION 'save_steps arrays have different lengths'
            USING ERRCODE = '22023', HINT = 'Pass one element per step in every array.';
    END IF;
    IF greatest(array_ndims(p_ids), array_ndims(p_leases), array_ndims(p_keys), array_ndims(p_seqs),
                array_ndims(p_results)) > 1 THEN
        RAISE EXCEPTION 'save_steps takes one-dimensional arrays'
            USING ERRCODE = '22023', HINT = 'Pass a flat array with one element per step.';
    END IF;
    SELECT k INTO v_bad FROM unnest(p_keys) AS k
     WHERE k IS NULL OR char_length(k) NOT BETWEEN 1 AND 200 OR k ~ '[[:cntrl:]]' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'invalid step key %', pgconductor._show(v_bad)
            USING ERRCODE = '22023', HINT = 'A step key is 1-200 characters without control characters.';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_seqs) AS q WHERE q IS NULL OR q < 0) THEN
        RAISE EXCEPTION 'step seq must be 0 or more'
            USING ERRCODE = '22023', HINT = 'seq counts the steps a run reached, from 0.';
    END IF;
    IF v_n = 0 THEN
        RETURN;
    END IF;

    RETURN QUERY
    WITH input AS (
        SELECT u.id, u.lease, u.key, u.seq, u.result, u.ord
          FROM unnest(p_ids, p_leases, p_keys, p_seqs, p_results) WITH ORDINALITY AS u(id, lease, key, seq, result, ord)
    ), live AS MATERIALIZED (
        SELECT e.id, e.queue FROM pgconductor.executions AS e
         WHERE e.id = ANY (p_ids) AND e.locked_by = p_orchestrator_id
           AND EXISTS (SELECT 1 FROM input AS i WHERE i.id = e.id AND i.lease = e.lease)
           FOR SHARE OF e
    ), flagged AS (
        UPDATE pgconductor.executions AS e SET has_steps = true
          FROM live AS l WHERE e.id = l.id AND e.queue = l.queue AND NOT e.has_steps
    ), stored AS (
        INSERT INTO pgconductor.steps (execution_id, key, seq, kind, state, result, done_at)
        SELECT i.id, i.key, i.seq, 'step', 'done', i.result, pgconductor._now()
          FROM input AS i WHERE i.id IN (SELECT l.id FROM live AS l)
        ON CONFLICT ON CONSTRAINT steps_pkey DO NOTHING
    )
    SELECT i.id, i.key, CASE WHEN i.id IN (SELECT l.id FROM live AS l) THEN 'saved' ELSE 'stale' END
      FROM input AS i ORDER BY i.ord;
END
$$;

-- Parks live execution p_id (queue p_queue; the caller holds its row lock and lease) as plan
-- p_plan says: {"sleep": {key, seq, until}}, {"children": {create: [{key, seq, task, payload,
-- queue, priority}], deadline}} or {"event": {key, seq, name, match, deadline}}. Stores the
-- step, creates the children or the wait, and unlocks the row without counting the attempt.
-- Returns outcome suspended (parked; run_at: wake time or deadline, NULL = none), resumed
-- (nothing left to wait for: pending now) or failed with error (a bad plan: the caller fails
-- this execution alone, never the whole batch).
CREATE FUNCTION pgconductor._suspend(p_id uuid, p_queue text, p_plan jsonb, OUT outcome text, OUT run_at timestamptz,
                                     OUT error text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now     timestamptz := pgconductor._now();
    v_kind    text := CASE WHEN jsonb_typeof(p_plan) = 'object' AND (SELECT count(*) FROM jsonb_object_keys(p_plan)) = 1
                           THEN (SELECT k FROM jsonb_object_keys(p_plan) AS k) END;
    v_step    jsonb := p_plan -> v_kind;
    v_key     text := v_step ->> 'key';
    v_seq     integer;
    v_waiting text;
    v_wake    timestamptz;
    v_created timestamptz;
    v_event   record;
    v_queues  text[];
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    IF v_kind IS NULL OR v_kind NOT IN ('sleep', 'children', 'event') OR jsonb_typeof(v_step) <> 'object' THEN
        outcome := 'failed';
        error := format('invalid suspension plan %s', pgconductor._show(p_plan::text));
        RETURN;
    END IF;
    BEGIN
        v_seq := coalesce((v_step ->> 'seq')::integer, 0);
        IF v_kind = 'sleep' THEN
            IF v_key IS NULL THEN RAISE invalid_parameter_value; END IF;
            INSERT INTO pgconductor.steps (execution_id, key, seq, kind, state, until, done_at)
            VALUES (p_id, v_key, v_seq, 'sleep', 'done', (v_step ->> 'until')::timestamptz, v_now)
            ON CONFLICT ON CONSTRAINT steps_pkey DO NOTHING;
            SELECT s.until INTO v_wake FROM pgconductor.steps AS s WHERE s.execution_id = p_id AND s.key = v_key;
            v_waiting := CASE WHEN v_wake > v_now THEN 'sleep' END;
        ELSIF v_kind = 'children' THEN
            v_wake := (v_step ->> 'deadline')::timestamptz;
            IF jsonb_typeof(coalesce(v_step -> 'create', '[]')) <> 'array' OR EXISTS (
                SELECT 1 FROM jsonb_to_recordset(coalesce(v_step -> 'create', '[]')) AS c(key text, task text, queue text)
                 WHERE c.key IS NULL OR NOT pgconductor._valid_task_key(c.task)
                    OR (c.queue IS NOT NULL AND NOT pgconductor._valid_queue_name(c.queue))) THEN
                RAISE invalid_parameter_value;
            END IF;
            -- Queues first (a child's partition must exist), then the steps and the children in
            -- one statement; keys stored already (a replay) are not created twice.
            v_queues := ARRAY(
                SELECT DISTINCT coalesce(c.queue, (SELECT t.queue FROM pgconductor.tasks AS t WHERE t.key = c.task), 'default')
                  FROM jsonb_to_recordset(coalesce(v_step -> 'create', '[]')) AS c(task text, queue text));
            IF (SELECT count(*) FROM unnest(v_queues) AS q
                 WHERE NOT EXISTS (SELECT 1 FROM pgconductor.queues AS x WHERE x.name = q)) > pgconductor._max_new_queues_per_call() THEN
                RAISE program_limit_exceeded;
            END IF;
            PERFORM pgconductor.create_queue(q) FROM unnest(v_queues) AS q;
            WITH input AS MATERIALIZED (
                SELECT c.key, coalesce(c.seq, 0) AS seq, c.task, coalesce(c.payload, '{}') AS payload,
                       coalesce(c.queue, (SELECT t.queue FROM pgconductor.tasks AS t WHERE t.key = c.task), 'default') AS queue,
                       coalesce(c.priority, 0) AS priority, pgconductor._uuid7() AS child_id
                  FROM jsonb_to_recordset(coalesce(v_step -> 'create', '[]'))
                       AS c(key text, seq integer, task text, payload jsonb, queue text, priority integer)
                 WHERE NOT EXISTS (SELECT 1 FROM pgconductor.steps AS s WHERE s.execution_id = p_id AND s.key = c.key)
            ), stored AS (
                INSERT INTO pgconductor.steps (execution_id, key, seq, kind, state, child_id, until)
                SELECT p_id, i.key, i.seq, 'child', 'waiting', i.child_id, v_wake FROM input AS i
            )
            INSERT INTO pgconductor.executions (id, task_key, queue, payload, run_at, priority, parent_id, parent_step)
            SELECT i.child_id, i.task, i.queue, i.payload, v_now, i.priority, p_id, i.key FROM input AS i;
            PERFORM pg_notify('pgconductor_invoke', q) FROM unnest(v_queues) AS q;
            -- The deadline stored when the children were first awaited holds: a replay's new
            -- plan (its own now + timeout) does not push it back.
            SELECT CASE WHEN count(*) > 0 THEN 'children' END, min(s.until) INTO v_waiting, v_wake
              FROM pgconductor.steps AS s WHERE s.execution_id = p_id AND s.kind = 'child' AND s.state = 'waiting';
        ELSE
            IF v_key IS NULL OR NOT coalesce(pgconductor._valid_event_name(v_step ->> 'name'), false)
               OR jsonb_typeof(coalesce(v_step -> 'match', '{}')) <> 'object' THEN
                RAISE invalid_parameter_value;
            END IF;
            v_wake := (v_step ->> 'deadline')::timestamptz;
            IF NOT EXISTS (SELECT 1 FROM pgconductor.steps AS s WHERE s.execution_id = p_id AND s.key = v_key) THEN
                -- The name's event lock, exclusive: an emit still in flight commits first and the
                -- look-up below sees it. Waited for at most 1 s (an emitter's transaction can be
                -- long); past that the wait is registered without it, as before.
                BEGIN
                    PERFORM set_config('lock_timeout', '1s', true);
                    PERFORM pg_advisory_xact_lock(pgconductor._event_lock(v_step ->> 'name'));
                EXCEPTION WHEN lock_not_available THEN
                    NULL;
                END;
                PERFORM set_config('lock_timeout', v_lock_timeout, true);
                -- No lost wake-up: an event emitted since the execution was created, and not given
                -- to an earlier wait of it, is taken now.
                SELECT e.created_at INTO v_created FROM pgconductor.executions AS e WHERE e.id = p_id AND e.queue = p_queue;
                SELECT ev.id, ev.payload INTO v_event FROM pgconductor.events AS ev
                 WHERE ev.name = v_step ->> 'name' AND ev.created_at >= v_created
                   AND ev.payload @> coalesce(v_step -> 'match', '{}')
                   AND NOT EXISTS (SELECT 1 FROM pgconductor.steps AS s WHERE s.execution_id = p_id AND s.event_id = ev.id)
                 ORDER BY ev.id LIMIT 1;
                IF v_event.id IS NOT NULL THEN
                    INSERT INTO pgconductor.steps (execution_id, key, seq, kind, state, result, event_id, done_at)
                    VALUES (p_id, v_key, v_seq, 'event', 'done', v_event.payload, v_event.id, v_now);
                ELSE
                    INSERT INTO pgconductor.steps (execution_id, key, seq, kind, state, until)
                    VALUES (p_id, v_key, v_seq, 'event', 'waiting', v_wake);
                    INSERT INTO pgconductor.event_waits (execution_id, step_key, event_name, match, match_key)
                    VALUES (p_id, v_key, v_step ->> 'name', coalesce(v_step -> 'match', '{}'),
                            pgconductor._match_key(coalesce(v_step -> 'match', '{}')));
                END IF;
            END IF;
            SELECT 'event', s.until INTO v_waiting, v_wake  -- the stored deadline holds (see above)
              FROM pgconductor.steps AS s WHERE s.execution_id = p_id AND s.key = v_key AND s.state = 'waiting';
        END IF;
    EXCEPTION WHEN invalid_parameter_value OR data_exception OR check_violation OR program_limit_exceeded THEN
        outcome := 'failed';
        error := format('invalid %s step in suspension plan %s', v_kind, pgconductor._show(p_plan::text));
        RETURN;
    END;

    UPDATE pgconductor.executions AS e
       SET locked_by = NULL, locked_at = NULL, attempts = greatest(e.attempts - 1, 0), has_steps = true,
           waiting = v_waiting,
           run_at = CASE WHEN v_waiting IS NULL THEN v_now ELSE coalesce(v_wake, 'infinity') END
     WHERE e.id = p_id AND e.queue = p_queue;
    IF v_waiting IS NULL THEN
        outcome := 'resumed';
        run_at := v_now;
        PERFORM pg_notify('pgconductor_invoke', p_queue);
    ELSE
        outcome := 'suspended';
        run_at := v_wake;
    END IF;
END
$$;

-- source: extension/src/47_workflow_wakeups.sql
-- Durable workflows, waking: due timers in the claim (_wake_due), a child's end in the
-- trigger on finished_executions (_on_finished), and events (emit_event).

-- Wakes the parked executions of queue p_queue whose run_at has passed (at most 1000): a
-- sleep is over; a child wait's deadline marks its waiting children timed_out and cancels
-- them; an event wait's deadline marks it timed_out. Row locks: those executions (SKIP
-- LOCKED). Returns how many it woke. Called by the claim, only when a due one exists.
CREATE FUNCTION pgconductor._wake_due(p_queue text, p_now timestamptz)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row      record;
    v_count    integer := 0;
    v_children uuid[];
BEGIN
    FOR v_row IN
        SELECT e.id, e.waiting FROM pgconductor.executions AS e
         WHERE e.queue = p_queue AND e.waiting IS NOT NULL AND e.run_at <= p_now
         ORDER BY e.run_at
         LIMIT 1000
           FOR UPDATE SKIP LOCKED
    LOOP
        IF v_row.waiting = 'children' THEN
            -- Steps first: the children's cancellation must not fill them as 'cancelled'.
            WITH timed_out AS (
                UPDATE pgconductor.steps AS s SET state = 'timed_out', done_at = p_now
                 WHERE s.execution_id = v_row.id AND s.kind = 'child' AND s.state = 'waiting'
                RETURNING s.child_id
            )
            SELECT array_agg(t.child_id) INTO v_children FROM timed_out AS t;
            PERFORM pgconductor.cancel(c, 'the parent stopped waiting: its deadline passed') FROM unnest(v_children) AS c;
        ELSIF v_row.waiting = 'event' THEN
            UPDATE pgconductor.steps AS s SET state = 'timed_out', done_at = p_now
             WHERE s.execution_id = v_row.id AND s.kind = 'event' AND s.state = 'waiting';
            DELETE FROM pgconductor.event_waits AS w WHERE w.execution_id = v_row.id;
        END IF;
        UPDATE pgconductor.executions AS e SET waiting = NULL, run_at = p_now
         WHERE e.id = v_row.id AND e.queue = p_queue;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;

-- Statement trigger on finished_executions: executions just ended (transition table
-- "ended"). A child's end fills its parent's step (done with its result, failed or
-- cancelled with its error) and wakes the parent once none of its children is awaited; a
-- parent that failed or was cancelled takes its live children with it; a cancelled execution's
-- event waits go. One NOTIFY pgconductor_finished per statement for conductor.wait().
CREATE FUNCTION pgconductor._on_finished()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_parents uuid[];
    v_queues  text[];
BEGIN
    PERFORM pg_notify('pgconductor_finished', '');
    IF NOT EXISTS (SELECT 1 FROM ended AS x WHERE x.parent_id IS NOT NULL OR x.state <> 'completed') THEN
        RETURN NULL;  -- the common case: plain executions completed
    END IF;

    -- Parents first, locked in id order: two statements ending the last two children of one
    -- parent would each see the other's step still waiting and neither would wake it. With
    -- the lock the second waits for the first to commit; its next statements see that.
    PERFORM 1 FROM pgconductor.executions AS p
     WHERE p.id IN (SELECT x.parent_id FROM ended AS x WHERE x.parent_id IS NOT NULL)
     ORDER BY p.id
       FOR UPDATE;
    WITH children AS (
        SELECT x.id, x.state, x.result, x.last_error FROM ended AS x WHERE x.parent_id IS NOT NULL
    ), filled AS (
        UPDATE pgconductor.steps AS s
           SET state = CASE c.state WHEN 'completed' THEN 'done' WHEN 'expired' THEN 'failed' ELSE c.state END,
               result = c.result, error = CASE WHEN c.state <> 'completed' THEN c.last_error END,
               done_at = pgconductor._now()
          FROM children AS c
         WHERE s.child_id = c.id AND s.kind = 'child' AND s.state = 'waiting'
        RETURNING s.execution_id
    )
    SELECT array_agg(DISTINCT f.execution_id) INTO v_parents FROM filled AS f;
    IF v_parents IS NOT NULL THEN
        WITH woken AS (
            UPDATE pgconductor.executions AS p SET waiting = NULL, run_at = pgconductor._now()
             WHERE p.id = ANY (v_parents) AND p.waiting = 'children'
               AND NOT EXISTS (SELECT 1 FROM pgconductor.steps AS s
                                WHERE s.execution_id = p.id AND s.kind = 'child' AND s.state = 'waiting')
            RETURNING p.queue
        )
        SELECT array_agg(DISTINCT w.queue) INTO v_queues FROM woken AS w;
        PERFORM pg_notify('pgconductor_invoke', q) FROM unnest(v_queues) AS q;
    END IF;

    PERFORM pgconductor.cancel(c.id, format('its parent %s', x.state))
       FROM ended AS x
       JOIN pgconductor.executions AS c ON c.parent_id = x.id
      WHERE x.state <> 'completed';
    DELETE FROM pgconductor.event_waits AS w
     WHERE w.execution_id IN (SELECT x.id FROM ended AS x WHERE x.state = 'cancelled');
    RETURN NULL;
END
$$;

CREATE TRIGGER finished_executions_ended AFTER INSERT ON pgconductor.finished_executions
    REFERENCING NEW TABLE AS ended
    FOR EACH STATEMENT EXECUTE FUNCTION pgconductor._on_finished();

-- Emits event p_name with payload p_payload (a JSON object) in the caller's transaction:
-- every execution waiting for p_name whose match the payload contains gets it as its step's
-- result and wakes. The event is kept (prune_finished) for waits registered later. Locks: the
-- name's event lock (shared), the matching waits and their executions. Raises 22023 for a bad name or payload. Returns
-- the event's id.
CREATE FUNCTION pgconductor.emit_event(p_name text, p_payload jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id      bigint;
    v_payload jsonb := coalesce(p_payload, '{}');
    v_pairs   text[];
    v_queues  text[];
BEGIN
    IF NOT coalesce(pgconductor._valid_event_name(p_name), false) THEN
        RAISE EXCEPTION 'invalid event name %', pgconductor._show(p_name)
            USING ERRCODE = '22023', HINT = 'An event name is 1-200 characters without control characters, e.g. order.paid.';
    END IF;
    IF jsonb_typeof(v_payload) <> 'object' THEN
        RAISE EXCEPTION 'an event payload must be a JSON object, got %', pgconductor._show(v_payload::text)
            USING ERRCODE = '22023', HINT = 'For example {"order_id": 7}.';
    END IF;
    -- Shared with other emits of this name, exclusive against a wait being registered for
    -- it (_suspend): a wait and an event committing at the same moment would not see each other.
    PERFORM pg_advisory_xact_lock_shared(pgconductor._event_lock(p_name));
    INSERT INTO pgconductor.events (name, payload) VALUES (p_name, v_payload) RETURNING id INTO v_id;
    -- Subscribed tasks get their executions in this transaction: an event rolled back makes none.
    PERFORM pgconductor._fan_out_event(v_id, p_name, v_payload);

    v_pairs := ARRAY(SELECT pgconductor._match_key(jsonb_build_object(m.key, m.value)) FROM jsonb_each(v_payload) AS m);
    WITH matched AS (
        SELECT w.execution_id, w.step_key FROM pgconductor.event_waits AS w
         WHERE w.event_name = p_name AND (w.match_key IS NULL OR w.match_key = ANY (v_pairs))
           AND v_payload @> w.match
         ORDER BY w.execution_id, w.step_key
           FOR UPDATE
    ), gone AS (
        DELETE FROM pgconductor.event_waits AS w USING matched AS m
         WHERE w.execution_id = m.execution_id AND w.step_key = m.step_key
    ), filled AS (
        UPDATE pgconductor.steps AS s SET state = 'done', result = v_payload, event_id = v_id, done_at = pgconductor._now()
          FROM matched AS m
         WHERE s.execution_id = m.execution_id AND s.key = m.step_key AND s.state = 'waiting'
        RETURNING s.execution_id
    ), woken AS (
        UPDATE pgconductor.executions AS e SET waiting = NULL, run_at = pgconductor._now()
          FROM filled AS f WHERE e.id = f.execution_id AND e.waiting = 'event'
        RETURNING e.queue
    )
    SELECT array_agg(DISTINCT w.queue) INTO v_queues FROM woken AS w;
    PERFORM pg_notify('pgconductor_invoke', q) FROM unnest(v_queues) AS q;
    RETURN v_id;
END
$$;

-- source: extension/src/48_flow.sql
-- Flow control operations: pause and resume queues and tasks, fair share and key weights,
-- cancel by key, and what the limits hold now. The rules themselves live in the claim
-- (38_claim_rules.sql) and in submit (40_invoke.sql).

-- Pauses (p_paused true) or resumes queue p_queue: claims of a paused queue return nothing;
-- its running executions go on and invokes still enqueue. Row lock: the queue's row. Raises
-- P0002 for an unknown queue. Returns true when this changed it.
CREATE FUNCTION pgconductor._set_queue_paused(p_queue text, p_paused boolean)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_was boolean;
BEGIN
    PERFORM pgconductor._assert_queue_name(p_queue);
    SELECT q.paused INTO v_was FROM pgconductor.queues AS q WHERE q.name = p_queue FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown queue %', pgconductor._show(p_queue)
            USING ERRCODE = 'P0002', HINT = 'queue_stats() lists the queues; create_queue() makes one.';
    END IF;
    UPDATE pgconductor.queues AS q SET paused = p_paused WHERE q.name = p_queue AND q.paused <> p_paused;
    RETURN v_was <> p_paused;
END
$$;

-- Pauses queue p_queue (see _set_queue_paused). Returns true when it was running.
CREATE FUNCTION pgconductor.pause_queue(p_queue text)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgconductor._set_queue_paused(p_queue, true)
$$;

-- Resumes queue p_queue (see _set_queue_paused). Returns true when it was paused.
CREATE FUNCTION pgconductor.resume_queue(p_queue text)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgconductor._set_queue_paused(p_queue, false)
$$;

-- Pauses (p_paused true) or resumes task p_task_key in every queue: claims skip it, its
-- running executions go on. A task without a row gets one with the defaults, so executions
-- invoked before any worker declared it wait too. Row lock: the task's row. Returns true
-- when this changed it.
CREATE FUNCTION pgconductor._set_task_paused(p_task_key text, p_paused boolean)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_was boolean;
BEGIN
    PERFORM pgconductor._assert_task_key(p_task_key);
    SELECT t.paused INTO v_was FROM pgconductor.tasks AS t WHERE t.key = p_task_key FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM pgconductor.declare_task(p_task_key, '{}');
        v_was := false;
    END IF;
    UPDATE pgconductor.tasks AS t SET paused = p_paused, updated_at = pgconductor._now()
     WHERE t.key = p_task_key AND t.paused <> p_paused;
    IF v_was AND NOT p_paused THEN
        PERFORM pg_notify('pgconductor_invoke', t.queue) FROM pgconductor.tasks AS t WHERE t.key = p_task_key;
    END IF;
    RETURN v_was <> p_paused;
END
$$;

-- Pauses task p_task_key (see _set_task_paused). Returns true when it was running.
CREATE FUNCTION pgconductor.pause_task(p_task_key text)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgconductor._set_task_paused(p_task_key, true)
$$;

-- Resumes task p_task_key (see _set_task_paused). Returns true when it was paused.
CREATE FUNCTION pgconductor.resume_task(p_task_key text)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgconductor._set_task_paused(p_task_key, false)
$$;

-- Turns fair share on or off for queue p_queue (created if missing): on, its concurrency
-- keys share the claim round-robin, weighted by key_weights. Creates (or drops) the index
-- the round-robin reads on the queue's partition, which locks the partition against writes
-- while it is built. Returns nothing.
CREATE FUNCTION pgconductor.set_fair_share(p_queue text, p_enabled boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_index text := 'executions_' || p_queue || '$f';
BEGIN
    IF p_enabled IS NULL THEN
        RAISE EXCEPTION 'set_fair_share needs true or false'
            USING ERRCODE = '22023', HINT = 'Pass true to share the queue among its concurrency keys, false to stop.';
    END IF;
    PERFORM pgconductor.create_queue(p_queue);
    UPDATE pgconductor.queues AS q SET fair_share = p_enabled WHERE q.name = p_queue;
    IF p_enabled THEN
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgconductor.%I ((coalesce(concurrency_key, %L) COLLATE "C"), priority, run_at, id) WHERE locked_by IS NULL AND waiting IS NULL',
                       v_index, pgconductor._partition_name(p_queue), '');
    ELSE
        EXECUTE format('DROP INDEX IF EXISTS pgconductor.%I', v_index);
    END IF;
END
$$;

-- Sets the fair-share weight of concurrency key p_key in queue p_queue (1-100; NULL: back to
-- 1): while keys wait, one of weight w is served w rows for each row of a key of weight 1.
-- Raises 22023 for a bad weight, P0002 for an unknown queue. Returns nothing.
CREATE FUNCTION pgconductor.set_key_weight(p_queue text, p_key text, p_weight integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgconductor._assert_concurrency_key(p_key);
    IF p_key IS NULL THEN
        RAISE EXCEPTION 'set_key_weight needs a concurrency key'
            USING ERRCODE = '22023', HINT = 'Executions without a key share one key, which keeps weight 1.';
    END IF;
    IF p_weight NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'weight must be between 1 and 100, got %', p_weight
            USING ERRCODE = '22023', HINT = 'A key of weight 3 gets three rows for each row of a key of weight 1; NULL resets it to 1.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pgconductor.queues AS q WHERE q.name = p_queue) THEN
        RAISE EXCEPTION 'unknown queue %', pgconductor._show(p_queue)
            USING ERRCODE = 'P0002', HINT = 'Weights belong to a queue with fair share: set_fair_share(queue, true).';
    END IF;
    IF p_weight IS NULL OR p_weight = 1 THEN
        DELETE FROM pgconductor.key_weights AS w WHERE w.queue = p_queue AND w.key = p_key;
    ELSE
        INSERT INTO pgconductor.key_weights AS w (queue, key, weight) VALUES (p_queue, p_key, p_weight)
        ON CONFLICT (queue, key) DO UPDATE SET weight = excluded.weight;
    END IF;
END
$$;

-- Cancels the live executions of task p_task_key holding dedupe key p_dedupe_key, or with
-- concurrency key p_concurrency_key (exactly one of the two), as cancel() does each: pending
-- and parked ones end now, running ones are signalled. Row locks: those executions. Raises
-- 22023 unless exactly one key is given. Returns how many it cancelled or signalled.
CREATE FUNCTION pgconductor.cancel_by_key(p_task_key text, p_dedupe_key text DEFAULT NULL,
                                          p_concurrency_key text DEFAULT NULL,
                                          p_reason text DEFAULT 'cancelled by user')
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id    uuid;
    v_count integer := 0;
BEGIN
    PERFORM pgconductor._assert_task_key(p_task_key);
    IF (p_dedupe_key IS NULL) = (p_concurrency_key IS NULL) THEN
        RAISE EXCEPTION 'cancel_by_key needs exactly one of dedupe key and concurrency key'
            USING ERRCODE = '22023', HINT = 'For example cancel_by_key(''report'', p_concurrency_key => ''tenant-7'').';
    END IF;
    FOR v_id IN
        SELECT e.id FROM pgconductor.executions AS e
         WHERE e.task_key = p_task_key
           AND (e.dedupe_key = p_dedupe_key OR e.concurrency_key = p_concurrency_key)
         ORDER BY e.id
    LOOP
        IF pgconductor.cancel(v_id, coalesce(p_reason, 'cancelled by user')) IN ('cancelled', 'cancelling') THEN
            v_count := v_count + 1;
        END IF;
    END LOOP;
    RETURN v_count;
END
$$;

-- True when queue p_queue holds due executions of the tasks p_task_keys (NULL: all) that a
-- claim would take but for a concurrency or rate limit, or that a claim could take now: the
-- queue and the task are not paused, the window is open, attempts are left, start_by has not
-- passed. A worker draining the queue keeps going while this holds, even when its claims come
-- back empty because other workers hold the slots. Locks nothing.
CREATE FUNCTION pgconductor.has_due_work(p_queue text, p_task_keys text[] DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET jit = off
AS $$
DECLARE
    v_now      timestamptz := pgconductor._now();
    v_held     text[];
    v_attempts jsonb;
BEGIN
    PERFORM pgconductor._assert_queue_name(p_queue);
    IF coalesce((SELECT q.paused FROM pgconductor.queues AS q WHERE q.name = p_queue), true) THEN
        RETURN false;
    END IF;
    v_held := pgconductor._held_tasks(p_task_keys, v_now);
    SELECT coalesce(jsonb_object_agg(t.key, t.max_attempts), '{}') INTO v_attempts
      FROM pgconductor.tasks AS t WHERE p_task_keys IS NULL OR t.key = ANY (p_task_keys);
    RETURN EXISTS (SELECT 1 FROM pgconductor.executions AS c
                    WHERE c.queue = p_queue AND pgconductor._claimable(c, v_now, p_task_keys, v_held, '{}', v_attempts));
END
$$;

-- What flow control sees now, per task and concurrency key of the live executions (of queue
-- p_queue, or all): running, pending (claimable when due), parked, the task's limits and
-- whether the task or its queue is paused. Locks nothing; reads every live row (an
-- operator's query).
CREATE FUNCTION pgconductor.flow_status(p_queue text DEFAULT NULL)
RETURNS TABLE (queue text, task_key text, concurrency_key text, running bigint, pending bigint, parked bigint,
               max_running integer, max_running_per_key integer, paused boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT e.queue, e.task_key, e.concurrency_key,
           count(*) FILTER (WHERE e.locked_by IS NOT NULL),
           count(*) FILTER (WHERE e.locked_by IS NULL AND e.waiting IS NULL),
           count(*) FILTER (WHERE e.waiting IS NOT NULL),
           t.max_running, t.max_running_per_key, coalesce(t.paused, false) OR coalesce(q.paused, false)
      FROM pgconductor.executions AS e
      LEFT JOIN pgconductor.tasks AS t ON t.key = e.task_key
      LEFT JOIN pgconductor.queues AS q ON q.name = e.queue
     WHERE p_queue IS NULL OR e.queue = p_queue
     GROUP BY e.queue, e.task_key, e.concurrency_key, t.max_running, t.max_running_per_key, t.paused, q.paused
     ORDER BY e.queue, e.task_key, e.concurrency_key
$$;

-- source: extension/src/49_maintain.sql
-- Maintenance: the periodic chores the orchestrators' maintenance service runs through
-- maintain(): start-by expiry, retention per task policy, and the clean-up of events,
-- throttle periods, rate buckets and orchestrators that are gone.

-- How long emitted events are kept for waits registered after the emit. Inlined.
CREATE FUNCTION pgconductor._keep_events()
RETURNS interval
LANGUAGE sql IMMUTABLE
RETURN interval '7 days';

-- How long an orchestrator that stopped or expired, and holds nothing, stays listed. Inlined.
CREATE FUNCTION pgconductor._keep_orchestrators()
RETURNS interval
LANGUAGE sql IMMUTABLE
RETURN interval '1 day';

-- The partition of finished_executions that holds day p_day (UTC). Inlined.
CREATE FUNCTION pgconductor._finished_partition_name(p_day date)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN 'finished_executions_' || to_char(p_day, 'YYYYMMDD');

-- Makes the daily partitions of finished_executions for the UTC day of p_now and the two
-- after it, where missing; a day whose rows already went to the default partition (no
-- maintenance ran ahead) keeps them there. Takes the locks CREATE TABLE ... PARTITION OF takes.
-- Returns how many it made.
CREATE FUNCTION pgconductor._add_finished_partitions(p_now timestamptz)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_day   date;
    v_from  timestamptz;
    v_count integer := 0;
BEGIN
    FOR v_day IN SELECT (p_now AT TIME ZONE 'UTC')::date + d FROM generate_series(0, 2) AS d LOOP
        CONTINUE WHEN to_regclass('pgconductor.' || pgconductor._finished_partition_name(v_day)) IS NOT NULL;
        v_from := v_day::timestamp AT TIME ZONE 'UTC';
        CONTINUE WHEN EXISTS (SELECT 1 FROM pgconductor.finished_executions_default AS f
                               WHERE f.finished_at >= v_from AND f.finished_at < v_from + interval '1 day');
        EXECUTE format('CREATE TABLE pgconductor.%I PARTITION OF pgconductor.finished_executions FOR VALUES FROM (%L) TO (%L)',
                       pgconductor._finished_partition_name(v_day), v_from, v_from + interval '1 day');
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;

-- Drops the daily partitions of finished_executions whose every row is past its task's keep
-- at p_now: the day ended longer ago than the longest keep of any task (and the defaults),
-- deleting the steps of their executions first. Returns the executions dropped.
CREATE FUNCTION pgconductor._drop_finished_partitions(p_now timestamptz)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_def   pgconductor.tasks := pgconductor._task_defaults();
    v_keep  interval;
    v_part  record;
    v_rows  integer;
    v_count integer := 0;
BEGIN
    SELECT greatest(max(t.keep_completed), max(t.keep_failed), v_def.keep_completed, v_def.keep_failed) INTO v_keep
      FROM pgconductor.tasks AS t;
    FOR v_part IN
        SELECT c.relname FROM pg_catalog.pg_inherits AS i
          JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'pgconductor.finished_executions'::regclass
           AND c.relname ~ '^finished_executions_[0-9]{8}$'
           AND to_date(right(c.relname, 8), 'YYYYMMDD') + 1 <= ((p_now - v_keep) AT TIME ZONE 'UTC')::date
         ORDER BY c.relname
    LOOP
        EXECUTE format('DELETE FROM pgconductor.steps AS s USING pgconductor.%I AS f WHERE s.execution_id = f.id', v_part.relname);
        EXECUTE format('SELECT count(*) FROM pgconductor.%I', v_part.relname) INTO v_rows;
        EXECUTE format('DROP TABLE pgconductor.%I', v_part.relname);
        v_count := v_count + v_rows;
    END LOOP;
    RETURN v_count;
END
$$;

-- One maintenance pass, each chore bounded by p_limit rows: creates the due schedule
-- occurrences (_tick_schedules; tick() does only that, for second-granular schedules) and
-- deletes old occurrence records; ends 'expired' the pending
-- executions whose start-by deadline passed (a parent waiting for one hears it failed);
-- makes the coming days' partitions of finished_executions and drops the days past every
-- keep (_add_finished_partitions, _drop_finished_partitions); deletes the other finished
-- executions (with their steps) older than their task's keep_completed or keep_failed
-- (failed, cancelled, expired); events older than _keep_events(); ended throttle
-- periods; full rate buckets; orchestrators gone for _keep_orchestrators(). One pass at a time
-- per database: a call while another runs returns {"skipped": true} at once (transaction
-- advisory lock). Row locks: what it changes (SKIP LOCKED for live executions). Returns the
-- counts as jsonb. Raises 22023 for a limit outside 1..100000.
CREATE FUNCTION pgconductor.maintain(p_limit integer DEFAULT 10000)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now     timestamptz := pgconductor._now();
    v_def     pgconductor.tasks;
    v_row     record;
    v_expired integer := 0;
    v_done    boolean;
    v_pruned  integer;
    v_events  integer;
    v_slots   integer;
    v_buckets integer;
    v_orchs   integer;
    v_dropped integer;
    v_ticked  integer;
    v_occurs  integer;
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'maintain needs a limit between 1 and 100000, got %', coalesce(p_limit::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'The limit bounds each chore of one pass; run passes until they report 0.';
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtextextended('pgconductor.maintain', 0)) THEN
        RETURN jsonb_build_object('skipped', true);
    END IF;
    v_def := pgconductor._task_defaults();
    v_ticked := pgconductor._tick_schedules(v_now, p_limit);
    PERFORM pgconductor._add_finished_partitions(v_now);
    v_dropped := pgconductor._drop_finished_partitions(v_now);

    FOR v_row IN
        SELECT e.id, e.queue, e.start_by FROM pgconductor.executions AS e
         WHERE e.start_by <= v_now AND e.locked_by IS NULL
         ORDER BY e.start_by
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    LOOP
        -- A query, not an expression: a SQL function in a PL/pgSQL expression keeps its plans
        -- for the transaction and would miss a partition created meanwhile.
        SELECT pgconductor._finish(v_row.id, v_row.queue, 'expired',
                                   format('expired: not started by its start-by deadline %s', v_row.start_by)) INTO v_done;
        v_expired := v_expired + v_done::integer;
    END LOOP;

    WITH doomed AS (
        SELECT f.id FROM pgconductor.finished_executions AS f
          LEFT JOIN pgconductor.tasks AS t ON t.key = f.task_key
         WHERE f.finished_at < v_now - CASE WHEN f.state = 'completed' THEN coalesce(t.keep_completed, v_def.keep_completed)
                                            ELSE coalesce(t.keep_failed, v_def.keep_failed) END
         ORDER BY f.finished_at
         LIMIT p_limit
    ), pruned AS (
        DELETE FROM pgconductor.finished_executions AS f USING doomed AS d WHERE f.id = d.id RETURNING f.id
    ), steps_gone AS (
        DELETE FROM pgconductor.steps AS s USING pruned AS p WHERE s.execution_id = p.id
    )
    SELECT count(*) + v_dropped INTO v_pruned FROM pruned;

    DELETE FROM pgconductor.events AS ev
     WHERE ev.id IN (SELECT x.id FROM pgconductor.events AS x WHERE x.created_at < v_now - pgconductor._keep_events()
                      ORDER BY x.created_at LIMIT p_limit);
    GET DIAGNOSTICS v_events = ROW_COUNT;
    DELETE FROM pgconductor.throttle_slots AS s
     WHERE (s.task_key, s.key) IN (SELECT x.task_key, x.key FROM pgconductor.throttle_slots AS x
                                    WHERE x.until <= v_now LIMIT p_limit);
    GET DIAGNOSTICS v_slots = ROW_COUNT;
    -- A full bucket is the same as none; so is one of a task that no longer has the limit.
    DELETE FROM pgconductor.rate_buckets AS b
     WHERE (b.task_key, b.per_key, b.key) IN (
        SELECT x.task_key, x.per_key, x.key FROM pgconductor.rate_buckets AS x
          LEFT JOIN pgconductor.tasks AS t ON t.key = x.task_key
         WHERE CASE WHEN x.per_key THEN t.rate_limit_per_key ELSE t.rate_limit END IS NULL
            OR pgconductor._refilled(x.tokens, x.at, CASE WHEN x.per_key THEN t.rate_limit_per_key ELSE t.rate_limit END,
                                     t.rate_period, v_now)
               >= CASE WHEN x.per_key THEN t.rate_limit_per_key ELSE t.rate_limit END
         LIMIT p_limit);
    GET DIAGNOSTICS v_buckets = ROW_COUNT;
    DELETE FROM pgconductor.orchestrators AS o
     WHERE o.drained AND coalesce(o.stopped_at, o.expired_at) < v_now - pgconductor._keep_orchestrators()
       AND NOT EXISTS (SELECT 1 FROM pgconductor.executions AS e WHERE e.locked_by = o.id);
    GET DIAGNOSTICS v_orchs = ROW_COUNT;
    v_occurs := pgconductor._prune_schedule_occurrences(v_now, p_limit);

    RETURN jsonb_build_object('expired', v_expired, 'pruned', v_pruned, 'events', v_events,
                              'throttle_slots', v_slots, 'rate_buckets', v_buckets, 'orchestrators', v_orchs,
                              'schedules', v_ticked, 'occurrences', v_occurs);
END
$$;

-- The first days' partitions of finished_executions.
SELECT pgconductor._add_finished_partitions(pgconductor._now());

-- source: extension/src/60_cron.sql
-- Cron expressions: parsing into a compact form, and the next occurrence in a time zone's
-- wall-clock time, correct across daylight-saving changes. Used by the schedules
-- (61_schedules.sql); the tick never parses again.

-- A parsed cron expression: the sorted values each field allows (seconds 0-59, {0} for a
-- 5-field expression; minutes 0-59; hours 0-23; days 1-31; months 1-12; weekdays 0-6, Sunday
-- = 0) and day_or: true when neither the day-of-month nor the day-of-week field starts with
-- "*", so that a day matches when either field does (the rule of Vixie cron); otherwise a
-- day must match both, a "*" field allowing every value.
CREATE TYPE pgconductor.cron_spec AS (
    seconds  integer[],
    minutes  integer[],
    hours    integer[],
    days     integer[],
    months   integer[],
    weekdays integer[],
    day_or   boolean
);

-- The smallest value of the sorted array p_values that is at least p_value, NULL when none.
-- Locks nothing.
CREATE FUNCTION pgconductor._cron_ge(p_values integer[], p_value integer)
RETURNS integer
LANGUAGE sql IMMUTABLE
RETURN (SELECT min(v) FROM unnest(p_values) AS v WHERE v >= p_value);

-- The sorted values one cron field allows. p_field names it in messages; values lie in
-- [p_min, p_max]; p_names (month or day names, lower case) stand for p_names_from,
-- p_names_from + 1, ... An element is "*", a value, a range a-b, either with a step /n, or a
-- list of these; "a/n" means a-p_max/n. Raises 22023 naming the field, with a hint.
CREATE FUNCTION pgconductor._cron_field(p_field text, p_text text, p_min integer, p_max integer,
                                        p_names text[] DEFAULT NULL, p_names_from integer DEFAULT 0)
RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_values integer[] := '{}';
    v_part   text;
    v_m      text[];
    v_bound  integer[];
    v_tok    text;
    v_lo     integer;
    v_hi     integer;
    v_step   integer;
    v_error  text;
BEGIN
    FOREACH v_part IN ARRAY string_to_array(lower(p_text), ',') LOOP
        v_m := regexp_match(v_part, '^(\*|([a-z0-9]+)(-([a-z0-9]+))?)(/([0-9]{1,4}))?$');
        IF v_m IS NULL THEN
            v_error := format('%s is not *, a value, a range or a step', pgconductor._show(v_part));
            EXIT;
        END IF;
        v_bound := '{}';
        FOREACH v_tok IN ARRAY ARRAY[v_m[2], v_m[4]] LOOP
            CONTINUE WHEN v_tok IS NULL;
            IF v_tok ~ '^[0-9]{1,4}$' THEN
                v_bound := v_bound || v_tok::integer;
            ELSIF array_position(p_names, v_tok) IS NOT NULL THEN
                v_bound := v_bound || (array_position(p_names, v_tok) - 1 + p_names_from);
            ELSE
                v_error := format('%s is not a number%s', pgconductor._show(v_tok), CASE WHEN p_names IS NULL THEN '' ELSE ' or a name' END);
                EXIT;
            END IF;
            IF v_bound[cardinality(v_bound)] NOT BETWEEN p_min AND p_max THEN
                v_error := format('%s is outside %s-%s', v_tok, p_min, p_max);
                EXIT;
            END IF;
        END LOOP;
        EXIT WHEN v_error IS NOT NULL;
        v_lo := coalesce(v_bound[1], p_min);
        v_hi := coalesce(v_bound[2], CASE WHEN v_m[1] = '*' OR v_m[6] IS NOT NULL THEN p_max ELSE v_lo END);
        v_step := coalesce(v_m[6]::integer, 1);
        IF v_lo > v_hi THEN
            v_error := format('range %s runs backwards', pgconductor._show(v_m[1]));
            EXIT;
        ELSIF v_step NOT BETWEEN 1 AND p_max - p_min + 1 THEN
            v_error := format('step %s is outside 1-%s', v_step, p_max - p_min + 1);
            EXIT;
        END IF;
        v_values := v_values || ARRAY(SELECT generate_series(v_lo, v_hi, v_step));
    END LOOP;
    IF v_error IS NOT NULL THEN
        RAISE EXCEPTION 'invalid cron % field %: %', p_field, pgconductor._show(p_text), v_error
            USING ERRCODE = '22023',
                  HINT = format('The %s field takes %s-%s%s: *, a value, a range a-b, a step */n or a-b/n, or a list of these.',
                                p_field, p_min, p_max,
                                CASE p_field WHEN 'month' THEN ' or JAN-DEC'
                                             WHEN 'day-of-week' THEN ' (0 and 7 are Sunday) or SUN-SAT' ELSE '' END);
    END IF;
    RETURN ARRAY(SELECT DISTINCT v FROM unnest(v_values) AS v ORDER BY v);
END
$$;

-- Parses a cron expression: 5 fields (minute hour day-of-month month day-of-week), 6 with a
-- leading seconds field, or @yearly, @annually, @monthly, @weekly, @daily, @midnight,
-- @hourly; names (JAN, mon...) in any case. Raises 22023 naming the field, with a hint, for
-- a bad field, a wrong field count, or days that no chosen month has (31 in February).
CREATE FUNCTION pgconductor._cron_parse(p_cron text)
RETURNS pgconductor.cron_spec
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_text   text := lower(btrim(coalesce(p_cron, '')));
    v_fields text[];
    v_spec   pgconductor.cron_spec;
BEGIN
    v_text := CASE v_text WHEN '@yearly' THEN '0 0 1 1 *' WHEN '@annually' THEN '0 0 1 1 *'
                          WHEN '@monthly' THEN '0 0 1 * *' WHEN '@weekly' THEN '0 0 * * 0'
                          WHEN '@daily' THEN '0 0 * * *' WHEN '@midnight' THEN '0 0 * * *'
                          WHEN '@hourly' THEN '0 * * * *' ELSE v_text END;
    v_fields := regexp_split_to_array(v_text, '\s+');
    IF v_text = '' OR cardinality(v_fields) NOT IN (5, 6) THEN
        RAISE EXCEPTION 'invalid cron expression %: % fields, not 5 or 6', pgconductor._show(p_cron),
                        CASE WHEN v_text = '' THEN 0 ELSE cardinality(v_fields) END
            USING ERRCODE = '22023',
                  HINT = 'Write minute hour day-of-month month day-of-week, such as ''*/5 * * * *'', with an optional leading seconds field, or @hourly, @daily, @weekly, @monthly, @yearly.';
    END IF;
    IF cardinality(v_fields) = 5 THEN
        v_fields := '0'::text || v_fields;
    END IF;
    v_spec.seconds := pgconductor._cron_field('second', v_fields[1], 0, 59);
    v_spec.minutes := pgconductor._cron_field('minute', v_fields[2], 0, 59);
    v_spec.hours := pgconductor._cron_field('hour', v_fields[3], 0, 23);
    v_spec.days := pgconductor._cron_field('day-of-month', v_fields[4], 1, 31);
    v_spec.months := pgconductor._cron_field('month', v_fields[5], 1, 12,
        '{jan,feb,mar,apr,may,jun,jul,aug,sep,oct,nov,dec}', 1);
    -- 7 is Sunday too.
    v_spec.weekdays := ARRAY(SELECT DISTINCT v % 7 FROM unnest(pgconductor._cron_field('day-of-week', v_fields[6], 0, 7,
        '{sun,mon,tue,wed,thu,fri,sat}', 0)) AS v ORDER BY 1);
    v_spec.day_or := left(v_fields[4], 1) <> '*' AND left(v_fields[6], 1) <> '*';
    -- A day of month that no chosen month has never comes (February has 29 days in leap years).
    IF NOT v_spec.day_or AND v_spec.days[1] > (SELECT max(CASE WHEN m = 2 THEN 29 WHEN m IN (4, 6, 9, 11) THEN 30 ELSE 31 END)
                                               FROM unnest(v_spec.months) AS m) THEN
        RAISE EXCEPTION 'invalid cron day-of-month field %: no chosen month has day %', pgconductor._show(v_fields[4]), v_spec.days[1]
            USING ERRCODE = '22023', HINT = 'February has 29 days at most; April, June, September and November 30.';
    END IF;
    RETURN v_spec;
END
$$;

-- The first wall-clock time at or after p_from (whole seconds) that p_spec matches, NULL if
-- none within the loop's bound (_cron_parse refuses expressions that never match). Skips
-- whole months, days, hours and minutes that cannot match. Locks nothing.
CREATE FUNCTION pgconductor._cron_next_local(p_spec pgconductor.cron_spec, p_from timestamp)
RETURNS timestamp
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_t    timestamp := date_trunc('second', p_from) + CASE WHEN p_from > date_trunc('second', p_from) THEN interval '1 second' ELSE interval '0' END;
    v_day  date;
    v_mon  integer;
    v_dom  integer;
    v_dow  integer;
    v_v    integer;
BEGIN
    FOR v_i IN 1..2000 LOOP
        v_day := v_t::date;
        v_mon := extract(month FROM v_day)::integer;
        IF NOT v_mon = ANY (p_spec.months) THEN
            v_v := pgconductor._cron_ge(p_spec.months, v_mon);
            v_t := CASE WHEN v_v IS NULL THEN make_timestamp(extract(year FROM v_day)::integer + 1, p_spec.months[1], 1, 0, 0, 0)
                        ELSE make_timestamp(extract(year FROM v_day)::integer, v_v, 1, 0, 0, 0) END;
            CONTINUE;
        END IF;
        v_dom := extract(day FROM v_day)::integer;
        v_dow := extract(dow FROM v_day)::integer;
        IF (p_spec.day_or AND NOT (v_dom = ANY (p_spec.days) OR v_dow = ANY (p_spec.weekdays)))
           OR (NOT p_spec.day_or AND NOT (v_dom = ANY (p_spec.days) AND v_dow = ANY (p_spec.weekdays))) THEN
            IF p_spec.day_or THEN
                v_t := v_day + 1;  -- a weekday match is at most 6 days away
            ELSE
                -- Both must match, so the day is one of p_spec.days: jump to the next, or the next month.
                v_v := pgconductor._cron_ge(p_spec.days, v_dom + 1);
                v_t := CASE WHEN v_v IS NULL OR v_v > extract(day FROM date_trunc('month', v_day::timestamp) + interval '1 month - 1 day')
                            THEN date_trunc('month', v_day::timestamp) + interval '1 month'
                            ELSE make_timestamp(extract(year FROM v_day)::integer, v_mon, v_v, 0, 0, 0) END;
            END IF;
            CONTINUE;
        END IF;
        v_v := pgconductor._cron_ge(p_spec.hours, extract(hour FROM v_t)::integer);
        IF v_v IS NULL THEN
            v_t := v_day + 1;
            CONTINUE;
        ELSIF v_v > extract(hour FROM v_t) THEN
            v_t := v_day + make_interval(hours => v_v);
        END IF;
        v_v := pgconductor._cron_ge(p_spec.minutes, extract(minute FROM v_t)::integer);
        IF v_v IS NULL THEN
            v_t := date_trunc('hour', v_t) + interval '1 hour';
            CONTINUE;
        ELSIF v_v > extract(minute FROM v_t) THEN
            v_t := date_trunc('hour', v_t) + make_interval(mins => v_v);
        END IF;
        v_v := pgconductor._cron_ge(p_spec.seconds, extract(second FROM v_t)::integer);
        IF v_v IS NULL THEN
            v_t := date_trunc('minute', v_t) + interval '1 minute';
            CONTINUE;
        END IF;
        RETURN date_trunc('minute', v_t) + make_interval(secs => v_v);
    END LOOP;
    RETURN NULL;
END
$$;

-- The UTC offset of time zone p_tz at p_at (local wall-clock time minus UTC). Locks nothing.
CREATE FUNCTION pgconductor._tz_offset(p_tz text, p_at timestamptz)
RETURNS interval
LANGUAGE sql STABLE
RETURN (p_at AT TIME ZONE p_tz) - (p_at AT TIME ZONE 'UTC');

-- The first whole second in (p_lo, p_hi] at which p_tz's UTC offset differs from its offset at
-- p_lo: the instant of a daylight-saving change, found by halving (12 steps for an hour).
-- The offset at p_hi must differ. Locks nothing.
CREATE FUNCTION pgconductor._tz_change(p_tz text, p_lo timestamptz, p_hi timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_lo     double precision := floor(extract(epoch FROM p_lo));
    v_hi     double precision := ceil(extract(epoch FROM p_hi));
    v_offset interval := pgconductor._tz_offset(p_tz, p_lo);
    v_mid    double precision;
BEGIN
    WHILE v_hi - v_lo > 1 LOOP
        v_mid := floor((v_lo + v_hi) / 2);
        IF pgconductor._tz_offset(p_tz, to_timestamp(v_mid)) = v_offset THEN
            v_lo := v_mid;
        ELSE
            v_hi := v_mid;
        END IF;
    END LOOP;
    RETURN to_timestamp(v_hi);
END
$$;

-- The instant at which wall-clock time p_local happens in time zone p_tz, by the schedules'
-- rule for daylight-saving changes: a time the clocks skip (02:30 when they jump from 02:00
-- to 03:00) happens at the first instant after the gap, when the clocks read 03:00; a time
-- they show twice (02:30 when they fall back from 03:00 to 02:00) happens the first time
-- only. Locks nothing.
CREATE FUNCTION pgconductor._cron_instant(p_tz text, p_local timestamp)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_at      timestamptz := p_local AT TIME ZONE p_tz;
    v_earlier interval;
    v_first   timestamptz;
BEGIN
    IF (v_at AT TIME ZONE p_tz) <> p_local THEN
        -- Skipped: PostgreSQL read p_local with the offset before the gap, which lands after it;
        -- the change lies between p_local read with the offset after the gap and that.
        RETURN pgconductor._tz_change(p_tz, (p_local - pgconductor._tz_offset(p_tz, v_at)) AT TIME ZONE 'UTC', v_at);
    END IF;
    -- Shown twice: PostgreSQL took the later instant. The earlier one would use the offset in
    -- force before the change (a day before: changes are months apart).
    v_earlier := pgconductor._tz_offset(p_tz, v_at - interval '1 day');
    v_first := (p_local - v_earlier) AT TIME ZONE 'UTC';
    IF v_first < v_at AND (v_first AT TIME ZONE p_tz) = p_local THEN
        RETURN v_first;
    END IF;
    RETURN v_at;
END
$$;

-- The first occurrence of p_spec strictly after p_after, in the wall-clock time of time zone
-- p_tz (a valid zone: the schedules check it once), with _cron_instant's rule across
-- daylight-saving changes, except that a schedule whose hour field allows every hour runs in
-- both passes of a repeated hour (an hourly job runs 25 times that day). NULL when there is none (never, for a parsed expression, before
-- the year 294276). Locks nothing.
CREATE FUNCTION pgconductor._cron_next(p_spec pgconductor.cron_spec, p_tz text, p_after timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_from  timestamp := date_trunc('second', p_after AT TIME ZONE p_tz) + interval '1 second';
    v_local  timestamp;
    v_at     timestamptz;
    v_change timestamptz;
    v_again  timestamp;
BEGIN
    FOR v_try IN 1..3 LOOP
        v_local := pgconductor._cron_next_local(p_spec, v_from);
        IF v_local IS NULL THEN
            RETURN NULL;
        END IF;
        v_at := pgconductor._cron_instant(p_tz, v_local);
        IF v_at > p_after AND cardinality(p_spec.hours) = 24
           AND pgconductor._tz_offset(p_tz, v_at) < pgconductor._tz_offset(p_tz, p_after) THEN
            -- Every hour, and the clocks fall back before v_at: the second pass of the repeated
            -- hour may come first (its wall-clock times were passed over above).
            v_change := pgconductor._tz_change(p_tz, p_after, v_at);
            v_again := pgconductor._cron_next_local(p_spec, v_change AT TIME ZONE p_tz);
            IF v_again IS NOT NULL AND (v_again AT TIME ZONE p_tz) > p_after AND (v_again AT TIME ZONE p_tz) < v_at THEN
                RETURN v_again AT TIME ZONE p_tz;  -- PostgreSQL reads a time shown twice as the later one
            END IF;
        END IF;
        IF v_at > p_after THEN
            RETURN v_at;
        END IF;
        -- p_after is in the second pass of a time shown twice and v_local's first pass is over.
        -- A schedule of every hour keeps its pace through the repeated hour (its second pass
        -- runs too: an every-minute job must not stop for an hour):
        IF cardinality(p_spec.hours) = 24 AND (v_local AT TIME ZONE p_tz) > p_after THEN
            RETURN v_local AT TIME ZONE p_tz;  -- PostgreSQL reads a time shown twice as the later one
        END IF;
        -- other schedules go on from the wall-clock time at which that second pass ends.
        v_from := (pgconductor._tz_change(p_tz, v_at, p_after) AT TIME ZONE 'UTC') + pgconductor._tz_offset(p_tz, v_at);
    END LOOP;
    RETURN NULL;
END
$$;

-- source: extension/src/61_schedules.sql
-- Schedules: cron expressions (60_cron.sql) that enqueue executions of a task. maintain()'s
-- tick (_tick_schedules) creates the due occurrences; the primary key of schedule_occurrences
-- makes each occurrence happen once, however many orchestrators tick.

-- One schedule per name. parsed: the cron expression parsed once; next_run_at: its next
-- occurrence, read by the tick through schedules_due_idx; missed: what the tick does with
-- occurrences that passed while nothing ticked (skip: the latest one only; catch_up: each, the
-- latest catch_up_max of them); overlap: skip creates none while the execution of the last
-- occurrence the tick created is live (last_execution_id); static: declared by a worker's code
-- (sync_static_schedules removes those the code no longer declares), false for dynamic ones.
CREATE TABLE pgconductor.schedules (
    name              text PRIMARY KEY CONSTRAINT schedules_name_valid
                          CHECK (char_length(name) BETWEEN 1 AND 200 AND name !~ '[[:cntrl:]]' AND name = btrim(name)),
    task_key          text NOT NULL CONSTRAINT schedules_task_key_valid
                          CHECK (char_length(task_key) BETWEEN 1 AND 200 AND task_key !~ '[[:cntrl:]]' AND task_key = btrim(task_key)),
    cron              text NOT NULL,
    parsed            pgconductor.cron_spec NOT NULL,
    tz                text NOT NULL DEFAULT 'UTC',
    payload           jsonb NOT NULL DEFAULT '{}',
    queue             text CONSTRAINT schedules_queue_valid CHECK (queue ~ '^[a-z0-9][a-z0-9_-]{0,47}$'),
    priority          integer NOT NULL DEFAULT 0,
    missed            text NOT NULL DEFAULT 'skip' CONSTRAINT schedules_missed_valid CHECK (missed IN ('skip', 'catch_up')),
    catch_up_max      integer NOT NULL DEFAULT 100 CONSTRAINT schedules_catch_up_max_bounded CHECK (catch_up_max BETWEEN 1 AND 1000),
    overlap           text NOT NULL DEFAULT 'allow' CONSTRAINT schedules_overlap_valid CHECK (overlap IN ('allow', 'skip')),
    paused            boolean NOT NULL DEFAULT false,
    static            boolean NOT NULL DEFAULT false,
    next_run_at       timestamptz NOT NULL,
    last_run_at       timestamptz,
    last_execution_id uuid,
    created_at        timestamptz NOT NULL DEFAULT pgconductor._now(),
    updated_at        timestamptz NOT NULL DEFAULT pgconductor._now()
);
-- The tick's only way in: due schedules, earliest first.
CREATE INDEX schedules_due_idx ON pgconductor.schedules (next_run_at) WHERE NOT paused;

-- Occurrences made, one row each: the primary key is what makes an occurrence exactly-once.
-- execution_id: the execution it enqueued (_occurrence_of reads it back).
CREATE TABLE pgconductor.schedule_occurrences (
    schedule     text NOT NULL REFERENCES pgconductor.schedules (name) ON DELETE CASCADE,
    occurs_at    timestamptz NOT NULL,
    execution_id uuid,
    created_at   timestamptz NOT NULL DEFAULT pgconductor._now(),
    CONSTRAINT schedule_occurrences_pkey PRIMARY KEY (schedule, occurs_at)
);
CREATE INDEX schedule_occurrences_execution_idx ON pgconductor.schedule_occurrences (execution_id);
CREATE INDEX schedule_occurrences_created_at_idx ON pgconductor.schedule_occurrences (created_at);

-- The latest p_max occurrences of p_spec in [p_first, p_now], oldest first; p_first is an
-- occurrence (a schedule's next_run_at). Walks forward when few are due; otherwise halves the
-- time since p_first to find where the last p_max begin, so the cost is about
-- p_max * log2(seconds missed) steps of _cron_next, not one per occurrence missed.
CREATE FUNCTION pgconductor._cron_due(p_spec pgconductor.cron_spec, p_tz text, p_first timestamptz,
                                      p_now timestamptz, p_max integer)
RETURNS timestamptz[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_due timestamptz[] := '{}';
    v_at  timestamptz := p_first;
    v_lo  double precision;
    v_hi  double precision;
    v_mid double precision;
BEGIN
    WHILE v_at <= p_now AND cardinality(v_due) <= p_max LOOP
        v_due := v_due || v_at;
        v_at := pgconductor._cron_next(p_spec, p_tz, v_at);
    END LOOP;
    IF cardinality(v_due) <= p_max THEN
        RETURN v_due;
    END IF;
    -- More than p_max are due: find the largest whole second x with at least p_max
    -- occurrences in (x, p_now]; exactly p_max lie there (occurrences are whole seconds).
    v_lo := extract(epoch FROM p_first) - 1;
    v_hi := floor(extract(epoch FROM p_now));
    WHILE v_hi - v_lo > 1 LOOP
        v_mid := floor((v_lo + v_hi) / 2);
        v_at := to_timestamp(v_mid);
        FOR v_i IN 1..p_max LOOP
            v_at := pgconductor._cron_next(p_spec, p_tz, v_at);
            EXIT WHEN v_at > p_now;
        END LOOP;
        IF v_at <= p_now THEN
            v_lo := v_mid;
        ELSE
            v_hi := v_mid;
        END IF;
    END LOOP;
    v_due := '{}';
    v_at := to_timestamp(v_lo);
    FOR v_i IN 1..p_max LOOP
        v_at := pgconductor._cron_next(p_spec, p_tz, v_at);
        v_due := v_due || v_at;
    END LOOP;
    RETURN v_due;
END
$$;

-- Creates occurrence p_at of schedule p_schedule unless it exists: a row in
-- schedule_occurrences, then an execution of its task with the schedule's payload, queue and
-- priority, run_at = p_at, dedupe key 'schedule:<name>:<epoch seconds>'. The caller holds the
-- schedule's row lock. Returns the execution's id, NULL when the occurrence existed.
CREATE FUNCTION pgconductor._create_occurrence(p_schedule pgconductor.schedules, p_at timestamptz)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id uuid;
BEGIN
    INSERT INTO pgconductor.schedule_occurrences (schedule, occurs_at) VALUES (p_schedule.name, p_at)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT s.id INTO v_id FROM pgconductor._submit_one(
        p_schedule.task_key, p_schedule.payload, p_schedule.queue, p_at, p_schedule.priority,
        format('schedule:%s:%s', p_schedule.name, extract(epoch FROM p_at)::bigint), NULL, 'keep',
        NULL, NULL, NULL, NULL) AS s;
    UPDATE pgconductor.schedule_occurrences AS o SET execution_id = v_id
     WHERE o.schedule = p_schedule.name AND o.occurs_at = p_at;
    RETURN v_id;
END
$$;

-- The schedules' tick, called by maintain(): takes up to p_limit schedules due at p_now (not
-- paused), earliest first, through schedules_due_idx (cost grows with the due ones, not with
-- all schedules), each row locked FOR UPDATE SKIP LOCKED so concurrent ticks share them out.
-- For each it creates the latest due occurrence (missed = skip) or each due one, the latest
-- catch_up_max (catch_up), none while the last one's execution is live (overlap = skip, which
-- also creates one at most), then moves next_run_at past p_now. Returns the occurrences made.
CREATE FUNCTION pgconductor._tick_schedules(p_now timestamptz, p_limit integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_s     pgconductor.schedules;
    v_at    timestamptz;
    v_id    uuid;
    v_last  uuid;
    v_ran   timestamptz;
    v_count integer := 0;
BEGIN
    FOR v_s IN
        SELECT s.* FROM pgconductor.schedules AS s
         WHERE s.next_run_at <= p_now AND NOT s.paused
         ORDER BY s.next_run_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    LOOP
        v_last := NULL;
        v_ran := NULL;
        IF v_s.overlap = 'allow' OR v_s.last_execution_id IS NULL
           OR NOT EXISTS (SELECT 1 FROM pgconductor.executions AS e WHERE e.id = v_s.last_execution_id) THEN
            FOREACH v_at IN ARRAY pgconductor._cron_due(
                v_s.parsed, v_s.tz, v_s.next_run_at, p_now,
                CASE WHEN v_s.missed = 'catch_up' AND v_s.overlap = 'allow' THEN v_s.catch_up_max ELSE 1 END)
            LOOP
                v_id := pgconductor._create_occurrence(v_s, v_at);
                IF v_id IS NOT NULL THEN
                    v_count := v_count + 1;
                    v_last := v_id;
                    v_ran := v_at;
                END IF;
            END LOOP;
        END IF;
        UPDATE pgconductor.schedules AS s
           SET next_run_at = pgconductor._cron_next(v_s.parsed, v_s.tz, p_now),
               last_run_at = coalesce(v_ran, s.last_run_at),
               last_execution_id = coalesce(v_last, s.last_execution_id)
         WHERE s.name = v_s.name;
    END LOOP;
    RETURN v_count;
END
$$;

-- The schedules' tick alone, for workers that tick every second (maintain() ticks too, every
-- pass): creates the occurrences due now of up to p_limit schedules (_tick_schedules). Row
-- locks: those schedules (SKIP LOCKED). Returns how many occurrences it made. Raises 22023
-- for a limit outside 1..100000.
CREATE FUNCTION pgconductor.tick(p_limit integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'tick needs a limit between 1 and 100000, got %', coalesce(p_limit::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'The limit bounds the schedules one tick serves; the rest wait for the next.';
    END IF;
    RETURN pgconductor._tick_schedules(pgconductor._now(), p_limit);
END
$$;

-- Deletes up to p_limit occurrence records made more than _keep_events() before p_now (their
-- executions stay; the tick never goes back past next_run_at, but a backfill of a period that
-- old makes its occurrences again). Returns how many. Called by maintain().
CREATE FUNCTION pgconductor._prune_schedule_occurrences(p_now timestamptz, p_limit integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    DELETE FROM pgconductor.schedule_occurrences AS o
     WHERE (o.schedule, o.occurs_at) IN (
        SELECT x.schedule, x.occurs_at FROM pgconductor.schedule_occurrences AS x
         WHERE x.created_at < p_now - pgconductor._keep_events()
         ORDER BY x.created_at LIMIT p_limit);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Raises 22023 unless p_name is a usable schedule name (the rule of task keys). Returns nothing.
CREATE FUNCTION pgconductor._assert_schedule_name(p_name text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT coalesce(pgconductor._valid_task_key(p_name), false) THEN
        RAISE EXCEPTION 'invalid schedule name %', pgconductor._show(p_name)
            USING ERRCODE = '22023',
                  HINT = 'A schedule name is 1-200 characters, without control characters or surrounding spaces.';
    END IF;
END
$$;

-- The row of schedule p_name, locked FOR UPDATE; raises P0002 when there is none.
CREATE FUNCTION pgconductor._lock_schedule(p_name text)
RETURNS pgconductor.schedules
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_s pgconductor.schedules;
BEGIN
    SELECT s.* INTO v_s FROM pgconductor.schedules AS s WHERE s.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown schedule %', pgconductor._show(p_name)
            USING ERRCODE = 'P0002', HINT = 'pgconductor.schedules() lists the schedules.';
    END IF;
    RETURN v_s;
END
$$;

-- Creates schedule p_name, or updates it (its next run is computed again, from now, only when
-- the cron expression or the time zone changed; a paused one stays paused): executions of
-- p_task_key with p_payload at each occurrence of p_cron in time zone p_tz (see
-- _cron_instant for daylight-saving changes). Locks the schedule's row. Returns its next run.
-- Raises 22023 for a bad name, task key, cron field, time zone, queue or option.
CREATE FUNCTION pgconductor.schedule(
    p_name         text,
    p_task_key     text,
    p_cron         text,
    p_payload      jsonb DEFAULT '{}',
    p_tz           text DEFAULT 'UTC',
    p_queue        text DEFAULT NULL,
    p_missed       text DEFAULT 'skip',
    p_overlap      text DEFAULT 'allow',
    p_priority     integer DEFAULT 0,
    p_static       boolean DEFAULT false,
    p_catch_up_max integer DEFAULT 100
)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_spec pgconductor.cron_spec;
    v_next timestamptz;
BEGIN
    PERFORM pgconductor._assert_schedule_name(p_name);
    PERFORM pgconductor._assert_task_key(p_task_key);
    v_spec := pgconductor._cron_parse(p_cron);
    PERFORM pgconductor._assert_timezone(p_tz);
    IF p_queue IS NOT NULL THEN
        PERFORM pgconductor._assert_queue_name(p_queue);
    END IF;
    IF p_missed IS NULL OR p_missed NOT IN ('skip', 'catch_up') THEN
        RAISE EXCEPTION 'invalid missed policy %', pgconductor._show(p_missed)
            USING ERRCODE = '22023', HINT = 'missed is ''skip'' (run the latest missed occurrence once) or ''catch_up'' (run each, up to catch_up_max).';
    END IF;
    IF p_overlap IS NULL OR p_overlap NOT IN ('allow', 'skip') THEN
        RAISE EXCEPTION 'invalid overlap policy %', pgconductor._show(p_overlap)
            USING ERRCODE = '22023', HINT = 'overlap is ''allow'' or ''skip'' (no new occurrence while the last one runs).';
    END IF;
    IF p_catch_up_max IS NULL OR p_catch_up_max NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'catch_up_max must be between 1 and 1000, got %', coalesce(p_catch_up_max::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'backfill() makes more occurrences of a past period.';
    END IF;
    IF p_priority IS NULL OR p_static IS NULL THEN
        RAISE EXCEPTION 'priority and static must not be NULL'
            USING ERRCODE = '22023', HINT = 'Leave them out for the defaults (priority 0, static false).';
    END IF;
    v_next := pgconductor._cron_next(v_spec, p_tz, pgconductor._now());
    INSERT INTO pgconductor.schedules AS s
        (name, task_key, cron, parsed, tz, payload, queue, priority, missed, catch_up_max, overlap, static, next_run_at)
    VALUES (p_name, p_task_key, p_cron, v_spec, p_tz, coalesce(p_payload, '{}'), p_queue, p_priority, p_missed,
            p_catch_up_max, p_overlap, p_static, v_next)
    ON CONFLICT (name) DO UPDATE
       SET task_key = excluded.task_key, cron = excluded.cron, parsed = excluded.parsed, tz = excluded.tz,
           payload = excluded.payload, queue = excluded.queue, priority = excluded.priority, missed = excluded.missed,
           catch_up_max = excluded.catch_up_max, overlap = excluded.overlap, static = excluded.static,
           next_run_at = CASE WHEN s.parsed IS NOT DISTINCT FROM excluded.parsed AND s.tz = excluded.tz
                              THEN s.next_run_at ELSE excluded.next_run_at END,
           updated_at = pgconductor._now()
    RETURNING s.next_run_at INTO v_next;
    RETURN v_next;
END
$$;

-- Deletes schedule p_name and its occurrence records; executions it already made stay.
-- Returns true, or false when there was no such schedule (so a clean-up may run twice).
CREATE FUNCTION pgconductor.unschedule(p_name text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM pgconductor.schedules AS s WHERE s.name = p_name;
    RETURN FOUND;
END
$$;

-- Pauses schedule p_name: the tick skips it until resume_schedule(). Locks its row. Returns
-- nothing; raises P0002 for an unknown name.
CREATE FUNCTION pgconductor.pause_schedule(p_name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgconductor._lock_schedule(p_name);
    UPDATE pgconductor.schedules AS s SET paused = true, updated_at = pgconductor._now() WHERE s.name = p_name;
END
$$;

-- Resumes schedule p_name. With missed = skip the occurrences of the pause are dropped: its
-- next run is the first occurrence after now; with catch_up its next run stays, so the tick
-- makes the occurrences of the pause (the latest catch_up_max). Locks its row. Returns its
-- next run; raises P0002 for an unknown name.
CREATE FUNCTION pgconductor.resume_schedule(p_name text)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_s pgconductor.schedules := pgconductor._lock_schedule(p_name);
BEGIN
    UPDATE pgconductor.schedules AS s
       SET paused = false, updated_at = pgconductor._now(),
           next_run_at = CASE WHEN s.paused AND s.missed = 'skip'
                              THEN pgconductor._cron_next(s.parsed, s.tz, pgconductor._now()) ELSE s.next_run_at END
     WHERE s.name = p_name
    RETURNING s.next_run_at INTO v_s.next_run_at;
    RETURN v_s.next_run_at;
END
$$;

-- Creates each occurrence of schedule p_name in [p_from, p_to) not made yet (paused or not;
-- overlap does not apply), with executions run_at = the occurrence. Locks the schedule's row.
-- Returns how many it made. Raises P0002 for an unknown name, 22023 for a bad period or one
-- with more than 10,000 occurrences (nothing is made then).
CREATE FUNCTION pgconductor.backfill(p_name text, p_from timestamptz, p_to timestamptz)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_s     pgconductor.schedules;
    v_at    timestamptz;
    v_due   timestamptz[] := '{}';
    v_count integer := 0;
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR NOT isfinite(p_from) OR NOT isfinite(p_to) OR p_from > p_to THEN
        RAISE EXCEPTION 'invalid backfill period [%, %)', coalesce(p_from::text, 'NULL'), coalesce(p_to::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Pass two finite times, the first not after the second.';
    END IF;
    v_s := pgconductor._lock_schedule(p_name);
    v_at := pgconductor._cron_next(v_s.parsed, v_s.tz, p_from - interval '1 microsecond');
    WHILE v_at < p_to LOOP
        IF cardinality(v_due) = 10000 THEN
            RAISE EXCEPTION 'backfill of % from % to % has more than 10000 occurrences', pgconductor._show(p_name), p_from, p_to
                USING ERRCODE = '22023', HINT = 'Backfill a shorter period at a time.';
        END IF;
        v_due := v_due || v_at;
        v_at := pgconductor._cron_next(v_s.parsed, v_s.tz, v_at);
    END LOOP;
    FOREACH v_at IN ARRAY v_due LOOP
        IF pgconductor._create_occurrence(v_s, v_at) IS NOT NULL THEN
            v_count := v_count + 1;
        END IF;
    END LOOP;
    RETURN v_count;
END
$$;

-- The schedules, by name, with their next and last runs. Locks nothing.
CREATE FUNCTION pgconductor.schedules()
RETURNS TABLE (name text, task_key text, cron text, tz text, next_run_at timestamptz, last_run_at timestamptz,
               paused boolean, static boolean, missed text, overlap text, queue text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.name, s.task_key, s.cron, s.tz, s.next_run_at, s.last_run_at, s.paused, s.static, s.missed, s.overlap, s.queue
      FROM pgconductor.schedules AS s
     ORDER BY s.name
$$;

-- Called at worker start with the static schedules its code declares: deletes the other
-- static schedules (of the tasks p_task_keys when given, so a worker serving some tasks
-- leaves the others' alone). Dynamic schedules are never deleted. Returns how many it deleted.
CREATE FUNCTION pgconductor.sync_static_schedules(p_names text[], p_task_keys text[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    DELETE FROM pgconductor.schedules AS s
     WHERE s.static AND s.name <> ALL (coalesce(p_names, '{}'))
       AND (p_task_keys IS NULL OR s.task_key = ANY (p_task_keys));
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- The occurrence time of the schedule occurrence that enqueued execution p_execution_id, NULL
-- for an execution no schedule made (or whose record retention pruned). Locks nothing.
CREATE FUNCTION pgconductor.occurrence_of(p_execution_id uuid)
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.occurs_at FROM pgconductor.schedule_occurrences AS o WHERE o.execution_id = p_execution_id
$$;

-- source: extension/src/62_subscriptions.sql
-- Event subscriptions: a task subscribes to an event name, with a containment filter and a
-- projection of the payload's top-level fields. emit_event() fans an event out to every
-- matching subscription in the emitter's transaction (_fan_out_event): one execution each,
-- whose payload is the projection (the event's id is in its dedupe key, 'event:<id>:<sub>').

-- One row per (task, event name). match: the payload must contain it ('{}': every event of
-- the name); fields: the top-level payload fields the handler gets (NULL: the whole payload);
-- queue NULL: the task's queue at emit time; static: declared in code and removed by the
-- worker's sync when no longer declared (a dynamic one is removed only by unsubscribe()).
CREATE TABLE pgconductor.subscriptions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_key   text NOT NULL CONSTRAINT subscriptions_task_key_valid
                   CHECK (char_length(task_key) BETWEEN 1 AND 200 AND task_key !~ '[[:cntrl:]]' AND task_key = btrim(task_key)),
    event      text NOT NULL CONSTRAINT subscriptions_event_valid
                   CHECK (char_length(event) BETWEEN 1 AND 200 AND event !~ '[[:cntrl:]]'),
    match      jsonb NOT NULL DEFAULT '{}' CONSTRAINT subscriptions_match_object CHECK (jsonb_typeof(match) = 'object'),
    fields     text[] CONSTRAINT subscriptions_fields_not_empty CHECK (cardinality(fields) >= 1),
    queue      text CONSTRAINT subscriptions_queue_valid CHECK (queue ~ '^[a-z0-9][a-z0-9_-]{0,47}$'),
    priority   integer NOT NULL DEFAULT 0,
    static     boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT pgconductor._now(),
    -- Event first: the fan-out reads the subscriptions of one name through this index.
    CONSTRAINT subscriptions_event_task_key UNIQUE (event, task_key)
);

-- p_object keeping only the top-level keys in p_keys (all of it for NULL keys); keys it
-- lacks are left out. Locks nothing.
CREATE FUNCTION pgconductor._project(p_object jsonb, p_keys text[])
RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN CASE WHEN p_keys IS NULL THEN p_object
            ELSE (SELECT coalesce(jsonb_object_agg(o.key, o.value), '{}') FROM jsonb_each(p_object) AS o
                   WHERE o.key = ANY (p_keys)) END;

-- Subscribes task p_task_key to event p_event (upsert: an existing subscription of the pair
-- takes the new settings). Creates p_queue when given and missing. Row lock: the
-- subscription. Raises 22023 for a bad task key, event name, match (a JSON object), fields
-- (non-empty, no NULL or empty name) or queue. Returns the subscription's id.
CREATE FUNCTION pgconductor.subscribe(
    p_task_key text,
    p_event    text,
    p_match    jsonb DEFAULT '{}',
    p_fields   text[] DEFAULT NULL,
    p_queue    text DEFAULT NULL,
    p_static   boolean DEFAULT false,
    p_priority integer DEFAULT 0
)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    PERFORM pgconductor._assert_task_key(p_task_key);
    IF NOT coalesce(pgconductor._valid_event_name(p_event), false) THEN
        RAISE EXCEPTION 'invalid event name %', pgconductor._show(p_event)
            USING ERRCODE = '22023', HINT = 'An event name is 1-200 characters without control characters, e.g. order.paid.';
    END IF;
    IF jsonb_typeof(coalesce(p_match, '{}')) <> 'object' THEN
        RAISE EXCEPTION 'a subscription''s match must be a JSON object, got %', pgconductor._show(p_match::text)
            USING ERRCODE = '22023', HINT = 'For example {"status": "paid"}; {} matches every event of the name.';
    END IF;
    IF p_fields IS NOT NULL AND (cardinality(p_fields) = 0 OR array_ndims(p_fields) > 1
                                 OR EXISTS (SELECT 1 FROM unnest(p_fields) AS f WHERE coalesce(f, '') = '')) THEN
        RAISE EXCEPTION 'invalid fields %', pgconductor._show(p_fields::text)
            USING ERRCODE = '22023', HINT = 'List the top-level payload fields the handler gets, e.g. {order_id,amount}; NULL for the whole payload.';
    END IF;
    IF p_queue IS NOT NULL THEN
        PERFORM pgconductor.create_queue(p_queue);
    END IF;
    INSERT INTO pgconductor.subscriptions AS s (task_key, event, match, fields, queue, priority, static)
    VALUES (p_task_key, p_event, coalesce(p_match, '{}'), p_fields, p_queue, coalesce(p_priority, 0), coalesce(p_static, false))
    ON CONFLICT (event, task_key) DO UPDATE
       SET match = excluded.match, fields = excluded.fields, queue = excluded.queue,
           priority = excluded.priority, static = excluded.static
    RETURNING s.id INTO v_id;
    RETURN v_id;
END
$$;

-- Removes the subscription of task p_task_key to event p_event, static or dynamic. Row
-- lock: the subscription. Returns false when there was none.
CREATE FUNCTION pgconductor.unsubscribe(p_task_key text, p_event text)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM pgconductor.subscriptions AS s WHERE s.event = p_event AND s.task_key = p_task_key RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM gone)
$$;

-- Every subscription, by event name then task. Locks nothing.
CREATE FUNCTION pgconductor.subscriptions()
RETURNS TABLE (id bigint, task_key text, event text, match jsonb, fields text[], queue text, priority integer,
               static boolean, created_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.id, s.task_key, s.event, s.match, s.fields, s.queue, s.priority, s.static, s.created_at
      FROM pgconductor.subscriptions AS s
     ORDER BY s.event, s.task_key
$$;

-- Worker start: deletes the static subscriptions of the tasks p_task_keys (the tasks the
-- worker serves) that are not among the declared pairs (p_events[i] of p_declared_tasks[i]);
-- the worker subscribed those with p_static => true just before. Subscriptions of other tasks
-- and dynamic ones stay. Row locks: the deleted rows. Returns how many it deleted.
CREATE FUNCTION pgconductor.sync_static_subscriptions(p_task_keys text[], p_declared_tasks text[], p_events text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    IF coalesce(cardinality(p_declared_tasks), 0) <> coalesce(cardinality(p_events), 0) THEN
        RAISE EXCEPTION 'declared tasks and events have different lengths'
            USING ERRCODE = '22023', HINT = 'Pass one task key per declared event.';
    END IF;
    DELETE FROM pgconductor.subscriptions AS s
     WHERE s.static AND s.task_key = ANY (p_task_keys)
       AND (s.task_key, s.event) NOT IN (SELECT d.t, d.e FROM unnest(p_declared_tasks, p_events) AS d(t, e)
                                          WHERE d.t IS NOT NULL AND d.e IS NOT NULL);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Fans event p_event_id (name p_name, payload p_payload, a JSON object) out: one execution
-- per subscription of p_name whose match p_payload contains, payload the subscription's
-- projection, in the subscription's queue (else the task's, else 'default'; created when
-- missing) with its priority, run now. One INSERT for all of them. Dedupe key
-- 'event:<event id>:<subscription id>': a second fan-out of the same event while the first
-- execution lives makes none. Called by emit_event() in the emitter's transaction; cost
-- O(subscriptions of the name). Notifies pgconductor_invoke per queue. Returns how many it made.
CREATE FUNCTION pgconductor._fan_out_event(p_event_id bigint, p_name text, p_payload jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now    timestamptz := pgconductor._now();
    v_count  integer;
    v_queues text[];
BEGIN
    -- Usually no row: the queues exist (subscribe() and register_task() make them).
    PERFORM pgconductor.create_queue(m.queue)
       FROM (SELECT DISTINCT coalesce(s.queue, t.queue, 'default') AS queue
               FROM pgconductor.subscriptions AS s
               LEFT JOIN pgconductor.tasks AS t ON t.key = s.task_key
              WHERE s.event = p_name AND p_payload @> s.match) AS m
      WHERE NOT EXISTS (SELECT 1 FROM pgconductor.queues AS q WHERE q.name = m.queue);

    WITH made AS (
        INSERT INTO pgconductor.executions AS e (task_key, queue, payload, run_at, priority, dedupe_key, start_by)
        SELECT s.task_key, coalesce(s.queue, t.queue, 'default'), pgconductor._project(p_payload, s.fields), v_now,
               s.priority, 'event:' || p_event_id || ':' || s.id, v_now + t.start_within
          FROM pgconductor.subscriptions AS s
          LEFT JOIN pgconductor.tasks AS t ON t.key = s.task_key
         WHERE s.event = p_name AND p_payload @> s.match
         ORDER BY s.id
        ON CONFLICT (queue, task_key, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
        RETURNING e.queue
    )
    SELECT count(*), array_agg(DISTINCT m.queue) INTO v_count, v_queues FROM made AS m;
    PERFORM pg_notify('pgconductor_invoke', q) FROM unnest(v_queues) AS q;
    RETURN v_count;
END
$$;

-- source: extension/src/63_table_triggers.sql
-- Database-change triggers: subscribe_table() puts an AFTER ROW trigger on a user's table whose
-- every insert, update or delete (the chosen ones) enqueues an execution of a task, in the
-- changing transaction (a rollback makes none), with payload {op, table, old, new}.

-- One row per (task, table). table_name: the table (regclass: dump and restore keep it by
-- name); ops: some of insert, update, delete; columns: the columns old and new carry (NULL:
-- all); when_clause: the trigger's WHEN condition, the subscriber's own SQL; queue NULL: the
-- task's queue; trigger_name: the trigger on the table; static: declared in code (see
-- sync_static_table_subscriptions).
CREATE TABLE pgconductor.table_subscriptions (
    task_key     text NOT NULL CONSTRAINT table_subscriptions_task_key_valid
                     CHECK (char_length(task_key) BETWEEN 1 AND 200 AND task_key !~ '[[:cntrl:]]' AND task_key = btrim(task_key)),
    table_name   regclass NOT NULL,
    ops          text[] NOT NULL CONSTRAINT table_subscriptions_ops_valid
                     CHECK (cardinality(ops) >= 1 AND ops <@ ARRAY['insert', 'update', 'delete']),
    columns      text[],
    when_clause  text,
    queue        text CONSTRAINT table_subscriptions_queue_valid CHECK (queue ~ '^[a-z0-9][a-z0-9_-]{0,47}$'),
    trigger_name text NOT NULL,
    static       boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT pgconductor._now(),
    CONSTRAINT table_subscriptions_pkey PRIMARY KEY (task_key, table_name)
);

-- The name of task p_task_key's trigger on any table: 'pgconductor_' and 20 hex digits of
-- the key's md5 (task keys may hold any character; trigger names are at most 63 bytes).
CREATE FUNCTION pgconductor._table_trigger_name(p_task_key text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN 'pgconductor_' || left(md5(p_task_key), 20);

-- The table or other relation p_table names, NULL when none does or the name is not one
-- (to_regclass raises for some malformed names). Locks nothing.
CREATE FUNCTION pgconductor._regclass(p_table text)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN to_regclass(p_table);
EXCEPTION WHEN invalid_name OR syntax_error OR feature_not_supported OR name_too_long THEN
    RETURN NULL;
END
$$;

-- The table p_table names ('schema.table', quoted as SQL quotes identifiers, e.g.
-- '"My Schema"."Orders"'; unqualified names are looked up in pg_catalog only). Raises 42P01
-- for an unknown table or a bad name, 42809 for a view or other non-table or a partition (its
-- partitioned table is subscribed), 22023 for a table of pgconductor or of the system. Locks nothing.
CREATE FUNCTION pgconductor._user_table(p_table text)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table regclass;
    v_kind  "char";
    v_part  boolean;
    v_nsp   text;
BEGIN
    v_table := pgconductor._regclass(p_table);
    IF v_table IS NULL THEN
        RAISE EXCEPTION 'unknown table %', pgconductor._show(p_table)
            USING ERRCODE = '42P01', HINT = 'Name it with its schema, quoted as in SQL: public.orders, "My Schema"."Orders".';
    END IF;
    SELECT c.relkind, c.relispartition, n.nspname INTO v_kind, v_part, v_nsp
      FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace WHERE c.oid = v_table;
    IF v_part THEN
        RAISE EXCEPTION '% is a partition', pgconductor._show(p_table)
            USING ERRCODE = '42809', HINT = 'Subscribe to its partitioned table: the trigger reaches every partition.';
    END IF;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', pgconductor._show(p_table)
            USING ERRCODE = '42809', HINT = 'Subscribe to a table (plain or partitioned), not a view, sequence or index.';
    END IF;
    IF v_nsp IN ('pgconductor', 'pg_catalog', 'information_schema') OR v_nsp LIKE 'pg\_toast%' THEN
        RAISE EXCEPTION 'cannot subscribe to % of schema %', pgconductor._show(p_table), quote_ident(v_nsp)
            USING ERRCODE = '22023', HINT = 'Subscribe to the tables of your own schemas.';
    END IF;
    RETURN v_table;
END
$$;

-- Raises 22023 unless p_when is NULL or can only be one expression inside the trigger's
-- WHEN (...): parentheses balanced, no ";", comment, dollar quote or backslash outside or
-- (backslash) inside quotes, no quote left open. This keeps a WHEN clause from closing the
-- CREATE TRIGGER statement; what the expression does is the subscriber's own SQL. Returns nothing.
CREATE FUNCTION pgconductor._assert_when_clause(p_when text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n     integer := char_length(p_when);
    v_i     integer := 1;
    v_c     text;
    v_quote text;  -- the quote character we are inside of, NULL outside
    v_depth integer := 0;
    v_why   text;
BEGIN
    IF p_when IS NULL THEN
        RETURN;
    END IF;
    IF btrim(p_when) = '' OR v_n > 2000 THEN
        v_why := 'it is empty or longer than 2000 characters';
    ELSIF strpos(p_when, '\') > 0 THEN
        v_why := 'it holds a backslash';
    END IF;
    WHILE v_why IS NULL AND v_i <= v_n LOOP
        v_c := substr(p_when, v_i, 1);
        IF v_quote IS NOT NULL THEN
            IF v_c = v_quote AND substr(p_when, v_i + 1, 1) = v_quote THEN
                v_i := v_i + 1;  -- a doubled quote stays inside
            ELSIF v_c = v_quote THEN
                v_quote := NULL;
            END IF;
        ELSIF v_c IN ('''', '"') THEN
            v_quote := v_c;
        ELSIF v_c = '(' THEN
            v_depth := v_depth + 1;
        ELSIF v_c = ')' THEN
            v_depth := v_depth - 1;
            IF v_depth < 0 THEN
                v_why := 'it closes a parenthesis it did not open';
            END IF;
        ELSIF v_c IN (';', '$') OR substr(p_when, v_i, 2) IN ('--', '/*') THEN
            v_why := format('it holds %s outside quotes', quote_literal(CASE WHEN v_c IN (';', '$') THEN v_c ELSE substr(p_when, v_i, 2) END));
        END IF;
        v_i := v_i + 1;
    END LOOP;
    IF v_why IS NULL AND (v_quote IS NOT NULL OR v_depth <> 0) THEN
        v_why := 'a quote or parenthesis is left open';
    END IF;
    IF v_why IS NOT NULL THEN
        RAISE EXCEPTION 'invalid when clause %: %', pgconductor._show(p_when), v_why
            USING ERRCODE = '22023', HINT = 'Pass one boolean SQL expression over OLD and NEW, e.g. NEW.status = ''paid'', without ";", comments, "$" or backslashes.';
    END IF;
END
$$;

-- The trigger function of every table subscription (AFTER ROW). TG_ARGV: task key, queue
-- ('' for the task's), then the chosen columns (none: all). Enqueues one execution (one
-- INSERT, _submit_one) with payload {op: insert|update|delete, table: "schema.name" (a
-- partition's row names its partitioned table), old, new}, old and new holding only the
-- chosen columns (NULL where the op has none). An update that changed none of them enqueues
-- nothing. SECURITY DEFINER: whoever may change the table enqueues through it, with no
-- privilege on pgconductor's tables. Returns NULL.
CREATE FUNCTION pgconductor._table_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_columns text[] := CASE WHEN TG_NARGS > 2 THEN TG_ARGV[2:TG_NARGS - 1] END;
    v_old     jsonb;
    v_new     jsonb;
    v_root    regclass;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        v_old := pgconductor._project(to_jsonb(OLD), v_columns);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        v_new := pgconductor._project(to_jsonb(NEW), v_columns);
    END IF;
    IF TG_OP = 'UPDATE' AND v_old = v_new THEN
        RETURN NULL;
    END IF;
    -- A row of a partition fired the trigger cloned from the subscribed partitioned table.
    v_root := pg_partition_root(TG_RELID);
    PERFORM pgconductor._submit_one(
        TG_ARGV[0], jsonb_build_object('op', lower(TG_OP),
                                       'table', coalesce(v_root::text, format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME)),
                                       'old', v_old, 'new', v_new),
        nullif(TG_ARGV[1], ''), NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    RETURN NULL;
END
$$;

-- Subscribes task p_task_key to changes of table p_table (see _user_table for the name): an
-- AFTER ROW trigger for the ops p_ops (some of insert, update, delete), payload columns
-- p_columns (NULL: all; with columns, an UPDATE fires only when one of them changed), WHEN
-- condition p_when (trusted SQL: the subscriber's own boolean expression over OLD and NEW, run
-- as the role that changes the table), queue p_queue (NULL: the task's). Upsert: the trigger
-- is replaced when a setting differs, left alone when none does. Locks: the table (SHARE ROW
-- EXCLUSIVE, to create the trigger). Raises 42P01 unknown table, 42703 unknown column, 22023
-- bad op, when clause or queue, 42501 when the session user may not create triggers on the
-- table. Returns the trigger's name.
CREATE FUNCTION pgconductor.subscribe_table(
    p_task_key text,
    p_table    text,
    p_ops      text[] DEFAULT '{insert,update,delete}',
    p_columns  text[] DEFAULT NULL,
    p_when     text DEFAULT NULL,
    p_queue    text DEFAULT NULL,
    p_static   boolean DEFAULT false
)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
AS $$
DECLARE
    v_table   regclass;
    v_ops     text[];
    v_columns text[];
    v_bad     text;
    v_trigger text := pgconductor._table_trigger_name(p_task_key);
    v_old     pgconductor.table_subscriptions;
BEGIN
    PERFORM pgconductor._assert_task_key(p_task_key);
    v_table := pgconductor._user_table(p_table);
    IF p_ops IS NULL OR cardinality(p_ops) = 0
       OR EXISTS (SELECT 1 FROM unnest(p_ops) AS o WHERE o IS NULL OR lower(o) NOT IN ('insert', 'update', 'delete')) THEN
        RAISE EXCEPTION 'invalid ops %', pgconductor._show(p_ops::text)
            USING ERRCODE = '22023', HINT = 'Pass some of insert, update and delete, e.g. {insert,update}.';
    END IF;
    v_ops := ARRAY(SELECT o FROM unnest(ARRAY['insert', 'update', 'delete']) AS o
                    WHERE o IN (SELECT lower(x) FROM unnest(p_ops) AS x));
    IF p_columns IS NOT NULL AND coalesce(cardinality(p_columns), 0) = 0 THEN
        RAISE EXCEPTION 'an empty column list'
            USING ERRCODE = '22023', HINT = 'List the columns old and new carry, e.g. {id,status}; NULL for all.';
    ELSIF p_columns IS NOT NULL THEN
        SELECT c INTO v_bad FROM unnest(p_columns) WITH ORDINALITY AS u(c, ord)
         WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute AS a
                            WHERE a.attrelid = v_table AND a.attname = u.c AND a.attnum > 0 AND NOT a.attisdropped)
         ORDER BY u.ord LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'table % has no column %', v_table, pgconductor._show(v_bad)
                USING ERRCODE = '42703', HINT = 'List columns of the table by their exact names (case counts); NULL for all.';
        END IF;
        v_columns := ARRAY(SELECT u.c FROM unnest(p_columns) WITH ORDINALITY AS u(c, ord) GROUP BY u.c ORDER BY min(u.ord));
    END IF;
    PERFORM pgconductor._assert_when_clause(p_when);
    IF p_queue IS NOT NULL THEN
        PERFORM pgconductor.create_queue(p_queue);
    END IF;
    IF NOT has_table_privilege(session_user, v_table, 'TRIGGER') THEN
        RAISE EXCEPTION 'role % may not create triggers on %', quote_ident(session_user), v_table
            USING ERRCODE = '42501', HINT = 'The table''s owner grants it: GRANT TRIGGER ON <table> TO <role>.';
    END IF;

    DELETE FROM pgconductor.table_subscriptions AS s  -- tables dropped since took their triggers
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class AS c WHERE c.oid = s.table_name);
    -- Worker start declares its subscriptions again: the same settings change nothing, and
    -- take no lock on the table.
    SELECT * INTO v_old FROM pgconductor.table_subscriptions AS s
     WHERE s.task_key = p_task_key AND s.table_name = v_table;
    IF v_old.ops = v_ops AND v_old.columns IS NOT DISTINCT FROM v_columns
       AND v_old.when_clause IS NOT DISTINCT FROM p_when AND v_old.queue IS NOT DISTINCT FROM p_queue
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = v_table AND t.tgname = v_trigger) THEN
        UPDATE pgconductor.table_subscriptions AS s SET static = coalesce(p_static, false)
         WHERE s.task_key = p_task_key AND s.table_name = v_table;
        RETURN v_trigger;
    END IF;

    -- The lock CREATE TRIGGER takes, taken first: a concurrent call for the same table waits
    -- here, then sees the trigger this one made.
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', v_table);
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = v_table AND t.tgname = v_trigger) THEN
        EXECUTE format('DROP TRIGGER %I ON %s', v_trigger, v_table);
    END IF;
    BEGIN
        EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s FOR EACH ROW %s EXECUTE FUNCTION pgconductor._table_changed(%s)',
                       v_trigger,
                       (SELECT string_agg(CASE WHEN o = 'update' AND v_columns IS NOT NULL
                                               THEN 'UPDATE OF ' || (SELECT string_agg(quote_ident(c), ', ') FROM unnest(v_columns) AS c)
                                               ELSE upper(o) END, ' OR ') FROM unnest(v_ops) AS o),
                       v_table,
                       CASE WHEN p_when IS NOT NULL THEN format(E'WHEN (%s\n)', p_when) ELSE '' END,
                       (SELECT string_agg(quote_literal(a), ', ')
                          FROM unnest(ARRAY[p_task_key, coalesce(p_queue, '')] || v_columns) AS a));
    EXCEPTION WHEN syntax_error OR undefined_column OR undefined_function OR datatype_mismatch
                   OR invalid_object_definition OR undefined_table OR feature_not_supported THEN
        IF p_when IS NULL THEN
            RAISE;
        END IF;
        RAISE EXCEPTION 'invalid when clause %: %', pgconductor._show(p_when), SQLERRM
            USING ERRCODE = SQLSTATE, HINT = 'Pass one boolean SQL expression over OLD and NEW (no OLD with insert, no NEW with delete).';
    END;
    INSERT INTO pgconductor.table_subscriptions AS s
        (task_key, table_name, ops, columns, when_clause, queue, trigger_name, static)
    VALUES (p_task_key, v_table, v_ops, v_columns, p_when, p_queue, v_trigger, coalesce(p_static, false))
    ON CONFLICT (task_key, table_name) DO UPDATE
       SET ops = excluded.ops, columns = excluded.columns, when_clause = excluded.when_clause,
           queue = excluded.queue, trigger_name = excluded.trigger_name, static = excluded.static;
    RETURN v_trigger;
END
$$;

-- Drops task p_task_key's trigger on table p_table and its row. A table that does not exist
-- (any more) removes nothing, but rows of dropped tables go. Locks: the table (SHARE ROW
-- EXCLUSIVE). Returns false when there was no such subscription.
CREATE FUNCTION pgconductor.unsubscribe_table(p_task_key text, p_table text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table regclass;
BEGIN
    DELETE FROM pgconductor.table_subscriptions AS s
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class AS c WHERE c.oid = s.table_name);
    v_table := pgconductor._regclass(p_table);
    IF NOT EXISTS (SELECT 1 FROM pgconductor.table_subscriptions AS s WHERE s.task_key = p_task_key AND s.table_name = v_table) THEN
        RETURN false;
    END IF;
    -- Table first, then the row: the order subscribe_table() takes them in.
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', v_table);
    DELETE FROM pgconductor.table_subscriptions AS s WHERE s.task_key = p_task_key AND s.table_name = v_table;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t
                WHERE t.tgrelid = v_table AND t.tgname = pgconductor._table_trigger_name(p_task_key)) THEN
        EXECUTE format('DROP TRIGGER %I ON %s', pgconductor._table_trigger_name(p_task_key), v_table);
    END IF;
    RETURN true;
END
$$;

-- Every table subscription, by table then task (table as "schema.name"). Locks nothing.
CREATE FUNCTION pgconductor.table_subscriptions()
RETURNS TABLE (task_key text, table_name text, ops text[], columns text[], when_clause text, queue text,
               trigger_name text, static boolean, created_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.task_key, format('%I.%I', n.nspname, c.relname), s.ops, s.columns, s.when_clause, s.queue,
           s.trigger_name, s.static, s.created_at
      FROM pgconductor.table_subscriptions AS s
      JOIN pg_catalog.pg_class AS c ON c.oid = s.table_name
      JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
     ORDER BY 2, 1
$$;

-- Worker start: drops the static table subscriptions (trigger and row) of the tasks
-- p_task_keys that are not among the declared pairs (p_tables[i] of p_declared_tasks[i]; a
-- declared table that does not exist matches nothing). Dynamic ones and other tasks' stay.
-- Locks: the tables whose triggers it drops. Returns how many it dropped.
CREATE FUNCTION pgconductor.sync_static_table_subscriptions(p_task_keys text[], p_declared_tasks text[], p_tables text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row   record;
    v_count integer := 0;
BEGIN
    IF coalesce(cardinality(p_declared_tasks), 0) <> coalesce(cardinality(p_tables), 0) THEN
        RAISE EXCEPTION 'declared tasks and tables have different lengths'
            USING ERRCODE = '22023', HINT = 'Pass one task key per declared table.';
    END IF;
    FOR v_row IN
        SELECT s.task_key, s.table_name FROM pgconductor.table_subscriptions AS s
         WHERE s.static AND s.task_key = ANY (p_task_keys)
           AND NOT EXISTS (SELECT 1 FROM unnest(p_declared_tasks, p_tables) AS d(t, n)
                            WHERE d.t = s.task_key AND pgconductor._regclass(d.n) = s.table_name)
    LOOP
        v_count := v_count + pgconductor.unsubscribe_table(v_row.task_key, v_row.table_name::text)::integer;
    END LOOP;
    RETURN v_count;
END
$$;

-- source: extension/src/90_grants.sql
-- Privileges: least privilege through three group roles and SECURITY DEFINER.
-- pgconductor_client (invoke, cancel, read executions) is granted to pgconductor_worker (also
-- claim, complete, heartbeat, declare its tasks), which is granted to pgconductor_admin (also
-- queues, task settings, retries, retention). The public API runs with its owner's rights and a
-- pinned search_path, so members need no privilege on any table; PUBLIC may execute only the
-- helpers that column defaults call. Grant a login role one of the three:
--   GRANT pgconductor_worker TO my_app_worker;

-- The role each public function is granted to, one row per function name (every overload).
-- _apply_privileges() refuses a public function missing here, so none is forgotten.
CREATE FUNCTION pgconductor._api_roles()
RETURNS TABLE (fn text, role text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('invoke', 'pgconductor_client'), ('invoke_batch', 'pgconductor_client'),
           ('cancel', 'pgconductor_client'), ('get_execution', 'pgconductor_client'),
           ('list_executions', 'pgconductor_client'), ('task_overview', 'pgconductor_client'),
           ('queue_stats', 'pgconductor_client'), ('orchestrator_stats', 'pgconductor_client'),
           ('version', 'pgconductor_client'), ('emit_event', 'pgconductor_client'),
           ('submit', 'pgconductor_client'), ('submit_batch', 'pgconductor_client'),
           ('cancel_by_key', 'pgconductor_client'), ('flow_status', 'pgconductor_client'),
           ('get_executions', 'pgconductor_worker'), ('return_executions', 'pgconductor_worker'),
           ('heartbeat', 'pgconductor_worker'), ('recover_stale', 'pgconductor_worker'),
           ('release_orchestrator', 'pgconductor_worker'), ('declare_task', 'pgconductor_worker'),
           ('save_steps', 'pgconductor_worker'), ('maintain', 'pgconductor_worker'),
           ('has_due_work', 'pgconductor_worker'),
           ('register_task', 'pgconductor_admin'), ('create_queue', 'pgconductor_admin'),
           ('drop_queue', 'pgconductor_admin'), ('retry', 'pgconductor_admin'),
           ('retry_executions', 'pgconductor_admin'), ('prune_finished', 'pgconductor_admin'),
           ('request_shutdown', 'pgconductor_admin'), ('pause_queue', 'pgconductor_admin'),
           ('resume_queue', 'pgconductor_admin'), ('pause_task', 'pgconductor_admin'),
           ('resume_task', 'pgconductor_admin'), ('set_fair_share', 'pgconductor_admin'),
           ('set_key_weight', 'pgconductor_admin'),
           ('schedule', 'pgconductor_client'), ('unschedule', 'pgconductor_client'),
           ('schedules', 'pgconductor_client'), ('occurrence_of', 'pgconductor_client'),
           ('subscriptions', 'pgconductor_client'), ('table_subscriptions', 'pgconductor_client'),
           ('tick', 'pgconductor_worker'), ('sync_static_schedules', 'pgconductor_worker'),
           ('subscribe', 'pgconductor_worker'), ('unsubscribe', 'pgconductor_worker'),
           ('sync_static_subscriptions', 'pgconductor_worker'),
           ('subscribe_table', 'pgconductor_worker'), ('unsubscribe_table', 'pgconductor_worker'),
           ('sync_static_table_subscriptions', 'pgconductor_worker'),
           ('pause_schedule', 'pgconductor_admin'), ('resume_schedule', 'pgconductor_admin'),
           ('backfill', 'pgconductor_admin')
$$;

-- Creates the three group roles when missing (they are cluster-wide: another database's
-- install may have made them) and when the installing role may create roles; otherwise says
-- so in a NOTICE. Then makes every public function SECURITY DEFINER, executable only by its
-- role (and the owner), and every internal helper not executable by PUBLIC except _now,
-- _uuid7 and _test_clock (column defaults). Run by the install script and every update
-- script, so new functions get their grants. Raises 42883 for a public function without a role.
CREATE FUNCTION pgconductor._apply_privileges()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_fn      record;
    v_role    text;
    v_missing text;
    v_roles   boolean;
BEGIN
    SELECT string_agg(DISTINCT p.proname, ', ') INTO v_missing
      FROM pg_catalog.pg_proc AS p
     WHERE p.pronamespace = 'pgconductor'::regnamespace AND p.proname NOT LIKE '\_%' AND p.prokind = 'f'
       AND p.proname NOT IN (SELECT a.fn FROM pgconductor._api_roles() AS a);
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'public function(s) % have no role in _api_roles()', v_missing
            USING ERRCODE = '42883', HINT = 'Add each to pgconductor._api_roles() in 90_grants.sql.';
    END IF;

    FOREACH v_role IN ARRAY ARRAY['pgconductor_client', 'pgconductor_worker', 'pgconductor_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles AS r WHERE r.rolname = v_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE NOTICE 'pgconductor: could not create role % (no CREATEROLE); grant EXECUTE on the API functions yourself', v_role;
            END;
        END IF;
    END LOOP;
    v_roles := (SELECT count(*) = 3 FROM pg_catalog.pg_roles AS r
                 WHERE r.rolname IN ('pgconductor_client', 'pgconductor_worker', 'pgconductor_admin'));
    IF v_roles THEN
        IF NOT pg_catalog.pg_has_role('pgconductor_worker', 'pgconductor_client', 'MEMBER') THEN
            GRANT pgconductor_client TO pgconductor_worker;
        END IF;
        IF NOT pg_catalog.pg_has_role('pgconductor_admin', 'pgconductor_worker', 'MEMBER') THEN
            GRANT pgconductor_worker TO pgconductor_admin;
        END IF;
        GRANT USAGE ON SCHEMA pgconductor TO pgconductor_client;
    END IF;

    FOR v_fn IN
        SELECT p.oid::regprocedure AS sig, p.proname, a.role
          FROM pg_catalog.pg_proc AS p
          LEFT JOIN pgconductor._api_roles() AS a ON a.fn = p.proname
         WHERE p.pronamespace = 'pgconductor'::regnamespace AND p.prokind = 'f'
           AND p.prorettype <> 'trigger'::regtype
           AND p.proname NOT IN ('_now', '_uuid7', '_test_clock')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', v_fn.sig);
        IF v_fn.role IS NOT NULL THEN
            EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER', v_fn.sig);
            IF v_roles THEN
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', v_fn.sig, v_fn.role);
            END IF;
        END IF;
    END LOOP;
END
$$;

SELECT pgconductor._apply_privileges();
