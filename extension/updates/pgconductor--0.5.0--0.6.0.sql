-- pgconductor 0.5.0 -> 0.6.0: durable workflows (issue 10), suspend and replay.
-- * Steps (pgconductor.steps) stored by save_steps() and handed back with the claim
--   (claimed_execution.steps); a replay returns them without running them again.
-- * return_executions() status 'suspend' parks an execution to sleep, to wait for children
--   (created in the same statement) or for an event; a parked execution holds no worker slot,
--   spends no attempt and is not in the claim index (executions.waiting).
-- * Wake-ups in SQL: due timers in the claim, a child's end in a trigger on
--   finished_executions (same statement), events in emit_event(); deadlines cancel the
--   children a parent still awaits; cancelling or failing a parent cancels its live children.
-- * get_execution() returns the parent and the steps, and the parked states.
-- * Found by the fuzz layer: a time zone with a digit must be in pg_timezone_names (the POSIX
--   string 'UTC+2', meaning UTC-2, was accepted); messages no longer echo U+2028/U+2029.
\echo Use "ALTER EXTENSION pgconductor UPDATE TO '0.6.0'" to load this file. \quit

ALTER TYPE pgconductor.claimed_execution ADD ATTRIBUTE steps jsonb;
ALTER TABLE pgconductor.executions
    ADD COLUMN parent_id uuid,
    ADD COLUMN parent_step text,
    ADD COLUMN waiting text CONSTRAINT executions_waiting_valid CHECK (waiting IN ('sleep', 'children', 'event')),
    ADD COLUMN has_steps boolean NOT NULL DEFAULT false;
ALTER TABLE pgconductor.finished_executions
    ADD COLUMN parent_id uuid,
    ADD COLUMN parent_step text;

-- The claim index leaves parked rows out.
DROP INDEX pgconductor.executions_claim_idx;
CREATE INDEX executions_claim_idx ON pgconductor.executions (priority, run_at, id)
    INCLUDE (task_key, attempts) WHERE locked_by IS NULL AND waiting IS NULL;
CREATE INDEX executions_timers_idx ON pgconductor.executions (run_at) WHERE waiting IS NOT NULL;
CREATE INDEX executions_parent_idx ON pgconductor.executions (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX finished_executions_parent_idx ON pgconductor.finished_executions (parent_id)
    WHERE parent_id IS NOT NULL;

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

DROP FUNCTION pgconductor.get_execution(uuid);

-- p_value made safe for an error message: quoted, control characters and the Unicode line and
-- paragraph separators (U+2028, U+2029) shown as "?", cut after 60 characters, 'NULL' for
-- NULL. One line, whatever the caller sent. Locks nothing.
CREATE OR REPLACE FUNCTION pgconductor._show(p_value text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN CASE WHEN p_value IS NULL THEN 'NULL'
            ELSE quote_literal(regexp_replace(left(p_value, 60), '[[:cntrl:]' || chr(8232) || chr(8233) || ']', '?', 'g'))
                 || CASE WHEN char_length(p_value) > 60 THEN '...' ELSE '' END END;


-- Raises 22023 unless p_tz names a time zone the server knows as a zone (an IANA name such
-- as Europe/Berlin, or UTC), whatever the session's timezone_abbreviations: an abbreviation
-- valid only in the registering session made every later claim of other sessions fail. A
-- name with a digit must be listed in pg_timezone_names (Etc/GMT+3 is, the POSIX string
-- UTC+2, which means UTC-2, is not); the others need no such look-up (150 ms). The SET
-- clause restores the session's TimeZone when the function returns.
CREATE OR REPLACE FUNCTION pgconductor._assert_timezone(p_tz text)
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

-- Claims up to p_batch_size executions of queue p_queue, restricted to p_task_keys unless
-- NULL (the worker passes the tasks it has handlers for), for orchestrator p_orchestrator_id.
-- Skips tasks outside their window, parked executions and executions whose attempts are
-- exhausted; first wakes the parked ones whose time came. Row locks: the claimed rows, then
-- the orchestrator's row. Returns the claimed executions, with their stored steps.
CREATE OR REPLACE FUNCTION pgconductor.get_executions(
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
    v_now      timestamptz := pgconductor._now();
    v_blocked  text[] := '{}';
    v_ids      uuid[];
    v_cont     uuid[] := '{}';
    v_head     uuid[] := '{}';
    v_setting  text := 'pgconductor.claim_position_' || replace(p_queue, '-', '$');
    v_filter   text := md5(coalesce(p_task_keys::text, '*'));
    v_position text[];
    v_head_at  timestamptz := v_now;
    v_last     record;
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

    -- Tasks outside their daily window right now (decided here, from the small tasks table).
    IF EXISTS (SELECT 1 FROM pgconductor.tasks AS t WHERE t.window_start IS NOT NULL) THEN
        v_blocked := pgconductor._closed_tasks(v_now);
    END IF;

    -- Pick: the three passes share one candidate predicate (keep them in step); each locks
    -- what it picks (SKIP LOCKED) and lists it in key order. The position is
    -- "priority|run_at|id|head pass at|filter". A continued claim that comes up short runs the
    -- head pass too, so only claims that fill their batch skip it (a drain).
    v_position := string_to_array(nullif(current_setting(v_setting, true), ''), '|');
    IF cardinality(v_position) <> 5 OR v_position[1] !~ '^-?[0-9]{1,10}$'
       OR v_position[2] !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?[+-][0-9]{2}(:[0-9]{2}){0,2}$'
       OR v_position[4] !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?[+-][0-9]{2}(:[0-9]{2}){0,2}$'
       OR v_position[3] !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        v_position := NULL;  -- not one this function wrote (or from an older release): start from the head
    END IF;
    IF v_position[5] = v_filter AND v_position[4]::timestamptz > v_now - interval '1 second' THEN
        v_head_at := v_position[4]::timestamptz;
        v_cont := ARRAY(
            SELECT c.id FROM pgconductor.executions AS c
             WHERE c.queue = p_queue AND c.locked_by IS NULL AND c.waiting IS NULL AND c.run_at <= v_now
               AND c.priority < v_position[1]::integer
               AND (p_task_keys IS NULL OR c.task_key = ANY (p_task_keys)) AND NOT (c.task_key = ANY (v_blocked))
               AND (c.attempts = 0
                    OR c.attempts < coalesce((SELECT t.max_attempts FROM pgconductor.tasks AS t WHERE t.key = c.task_key), 3))
             ORDER BY c.priority, c.run_at, c.id
             LIMIT p_batch_size
               FOR UPDATE SKIP LOCKED);
        IF cardinality(v_cont) < p_batch_size THEN
            v_cont := v_cont || ARRAY(
                SELECT c.id FROM pgconductor.executions AS c
                 WHERE c.queue = p_queue AND c.locked_by IS NULL AND c.waiting IS NULL AND c.run_at <= v_now
                   AND (c.priority, c.run_at, c.id) > (v_position[1]::integer, v_position[2]::timestamptz, v_position[3]::uuid)
                   AND (p_task_keys IS NULL OR c.task_key = ANY (p_task_keys)) AND NOT (c.task_key = ANY (v_blocked))
                   AND (c.attempts = 0
                        OR c.attempts < coalesce((SELECT t.max_attempts FROM pgconductor.tasks AS t WHERE t.key = c.task_key), 3))
                 ORDER BY c.priority, c.run_at, c.id
                 LIMIT p_batch_size - cardinality(v_cont)
                   FOR UPDATE SKIP LOCKED);
        END IF;
    END IF;
    IF cardinality(v_cont) < p_batch_size THEN
        v_head_at := v_now;
        v_head := ARRAY(
            SELECT c.id FROM pgconductor.executions AS c
             WHERE c.queue = p_queue AND c.locked_by IS NULL AND c.waiting IS NULL AND c.run_at <= v_now
               AND NOT (c.id = ANY (v_cont))  -- locked by this transaction already: SKIP LOCKED would not skip them
               AND (p_task_keys IS NULL OR c.task_key = ANY (p_task_keys)) AND NOT (c.task_key = ANY (v_blocked))
               AND (c.attempts = 0
                    OR c.attempts < coalesce((SELECT t.max_attempts FROM pgconductor.tasks AS t WHERE t.key = c.task_key), 3))
             ORDER BY c.priority, c.run_at, c.id
             LIMIT p_batch_size - cardinality(v_cont)
               FOR UPDATE SKIP LOCKED);
    END IF;
    v_ids := v_cont || v_head;
    IF cardinality(v_ids) = 0 THEN
        IF v_position IS NOT NULL THEN
            PERFORM set_config(v_setting, '', false);
        END IF;
        RETURN;
    END IF;

    -- The UPDATE finds the picked rows by primary key in one partition: a join with the
    -- picked rows instead let the planner hash-join a scan of the whole partition, which made
    -- every claim cost O(backlog).
    RETURN QUERY
    WITH claimed AS (
        UPDATE pgconductor.executions AS e
           SET locked_by = p_orchestrator_id, locked_at = v_now, attempts = e.attempts + 1, lease = e.lease + 1
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

    -- A claim that filled its batch (a backlog is draining) leaves the position where it
    -- ended: the greater of the last rows of the two lists (each is in key order). One that
    -- did not forgets it, so the next claim is one pass from the head.
    IF cardinality(v_ids) = p_batch_size THEN
        SELECT e.priority, e.run_at, e.id INTO v_last
          FROM pgconductor.executions AS e
         WHERE e.queue = p_queue AND e.id IN (v_cont[cardinality(v_cont)], v_head[cardinality(v_head)])
         ORDER BY e.priority DESC, e.run_at DESC, e.id DESC
         LIMIT 1;
        PERFORM set_config(v_setting, concat_ws('|', v_last.priority, v_last.run_at, v_last.id, v_head_at, v_filter), false);
    ELSIF v_position IS NOT NULL THEN
        PERFORM set_config(v_setting, '', false);
    END IF;

    -- Whoever holds executions must be an orchestrator recovery can see. A claim by one marked
    -- expired or stopped proves it alive again: revive it, so that recovery watches its
    -- heartbeat once more (written only in that case). This comes after the claim, and only
    -- when it took something: recovery cannot see the rows claimed here before this commits,
    -- and if it expired this orchestrator meanwhile, the row lock below waits for it and the
    -- revival then applies. (A claim that took nothing returned above.)
    INSERT INTO pgconductor.orchestrators AS o (id, started_at, last_heartbeat_at)
    VALUES (p_orchestrator_id, v_now, v_now)
    ON CONFLICT (id) DO UPDATE
       SET last_heartbeat_at = v_now, expired_at = NULL, stopped_at = NULL, drained = false
     WHERE o.expired_at IS NOT NULL OR o.stopped_at IS NOT NULL;
END
$$;

-- Ends live execution p_id of queue p_queue: moves it to finished_executions with p_state
-- ('completed', 'failed' or 'cancelled') and p_error. The caller holds the row lock.
-- Returns true when the row was still live.
CREATE OR REPLACE FUNCTION pgconductor._finish(p_id uuid, p_queue text, p_state text, p_error text)
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
CREATE OR REPLACE FUNCTION pgconductor.return_executions(
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

-- Cancels execution p_execution_id and, recursively, its live children. Pending or parked: it
-- ends now as cancelled ('cancelled'). Running: the cancel is recorded and its orchestrator
-- signalled ('cancelling'); its result then ends it as cancelled. Row locks: that execution
-- and its children. Also returns 'already_finished' or 'not_found'.
CREATE OR REPLACE FUNCTION pgconductor.cancel(p_execution_id uuid, p_reason text DEFAULT 'cancelled by user')
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
CREATE OR REPLACE FUNCTION pgconductor.retry(p_execution_id uuid)
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

-- Retention: deletes up to p_limit finished executions that ended before now - p_older_than
-- (with their steps), as many events emitted before then, and orchestrators gone (stopped or
-- drained) that long. Returns the executions deleted.
CREATE OR REPLACE FUNCTION pgconductor.prune_finished(p_older_than interval, p_limit integer DEFAULT 10000)
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

-- One execution wherever it is: state pending | running | sleeping | waiting_for_children |
-- waiting_for_event (live) or completed | failed | cancelled (finished), with its errors
-- ([{attempt, at, outcome, error}], oldest first), its parent and its steps (in the order the
-- run reached them). Locks nothing. Returns no row for an unknown id.
CREATE OR REPLACE FUNCTION pgconductor.get_execution(p_id uuid)
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
            IF v_key IS NULL OR char_length(v_step ->> 'name') NOT BETWEEN 1 AND 200
               OR jsonb_typeof(coalesce(v_step -> 'match', '{}')) <> 'object' THEN
                RAISE invalid_parameter_value;
            END IF;
            v_wake := (v_step ->> 'deadline')::timestamptz;
            IF NOT EXISTS (SELECT 1 FROM pgconductor.steps AS s WHERE s.execution_id = p_id AND s.key = v_key) THEN
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

    WITH children AS (
        SELECT x.id, x.state, x.result, x.last_error FROM ended AS x WHERE x.parent_id IS NOT NULL
    ), filled AS (
        UPDATE pgconductor.steps AS s
           SET state = CASE c.state WHEN 'completed' THEN 'done' ELSE c.state END,
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

-- Emits event p_name with payload p_payload (a JSON object) in the caller's transaction:
-- every execution waiting for p_name whose match the payload contains gets it as its step's
-- result and wakes. The event is kept (prune_finished) for waits registered later. Row locks:
-- the matching waits and their executions. Raises 22023 for a bad name or payload. Returns
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
    IF p_name IS NULL OR char_length(p_name) NOT BETWEEN 1 AND 200 OR p_name ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid event name %', pgconductor._show(p_name)
            USING ERRCODE = '22023', HINT = 'An event name is 1-200 characters without control characters, e.g. order.paid.';
    END IF;
    IF jsonb_typeof(v_payload) <> 'object' THEN
        RAISE EXCEPTION 'an event payload must be a JSON object, got %', pgconductor._show(v_payload::text)
            USING ERRCODE = '22023', HINT = 'For example {"order_id": 7}.';
    END IF;
    INSERT INTO pgconductor.events (name, payload) VALUES (p_name, v_payload) RETURNING id INTO v_id;

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

-- The role each public function is granted to, one row per function name (every overload).
-- _apply_privileges() refuses a public function missing here, so none is forgotten.
CREATE OR REPLACE FUNCTION pgconductor._api_roles()
RETURNS TABLE (fn text, role text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('invoke', 'pgconductor_client'), ('invoke_batch', 'pgconductor_client'),
           ('cancel', 'pgconductor_client'), ('get_execution', 'pgconductor_client'),
           ('list_executions', 'pgconductor_client'), ('task_overview', 'pgconductor_client'),
           ('queue_stats', 'pgconductor_client'), ('orchestrator_stats', 'pgconductor_client'),
           ('version', 'pgconductor_client'), ('emit_event', 'pgconductor_client'),
           ('get_executions', 'pgconductor_worker'), ('return_executions', 'pgconductor_worker'),
           ('heartbeat', 'pgconductor_worker'), ('recover_stale', 'pgconductor_worker'),
           ('release_orchestrator', 'pgconductor_worker'), ('declare_task', 'pgconductor_worker'),
           ('save_steps', 'pgconductor_worker'),
           ('register_task', 'pgconductor_admin'), ('create_queue', 'pgconductor_admin'),
           ('drop_queue', 'pgconductor_admin'), ('retry', 'pgconductor_admin'),
           ('retry_executions', 'pgconductor_admin'), ('prune_finished', 'pgconductor_admin'),
           ('request_shutdown', 'pgconductor_admin')
$$;

CREATE TRIGGER finished_executions_ended AFTER INSERT ON pgconductor.finished_executions
    REFERENCING NEW TABLE AS ended
    FOR EACH STATEMENT EXECUTE FUNCTION pgconductor._on_finished();

-- Grants for the new functions, SECURITY DEFINER again for the replaced ones.
SELECT pgconductor._apply_privileges();
