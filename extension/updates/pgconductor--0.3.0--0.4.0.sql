-- pgconductor 0.3.0 -> 0.4.0: the first hour as a user (issue 14).
-- * Every attempt's error is kept: executions.errors and finished_executions.errors, a JSON
--   array of {attempt, at, outcome, error} (the last 50), written by return_executions() and
--   recover_stale() ('lost'); retry() keeps it.
-- * return_executions() takes status retry_after (back to pending after the delay, attempt not
--   counted, at most the task's new max_retry_after times, outcome 'rescheduled'), returns the
--   next run time as a third column, and a cancel now wins over a late completion (the
--   execution ends cancelled, its result kept).
-- * register_task(): every setting DEFAULT NULL = the column default, and p_max_retry_after;
--   declare_task(key, jsonb) sets only the settings it is given.
-- * get_execution() returns payload, max_attempts, created/locked times, errors and the cancel
--   reason; new list_executions() (paged, newest first), retry_executions() (bulk) and
--   task_overview() (registered and served tasks, pending work nobody serves).
\echo Use "ALTER EXTENSION pgconductor UPDATE TO '0.4.0'" to load this file. \quit

ALTER TABLE pgconductor.tasks
    ADD COLUMN max_retry_after integer NOT NULL DEFAULT 20
        CONSTRAINT tasks_max_retry_after_nonnegative CHECK (max_retry_after >= 0);
ALTER TABLE pgconductor.executions
    ADD COLUMN errors jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN retry_afters integer NOT NULL DEFAULT 0;
ALTER TABLE pgconductor.finished_executions
    ADD COLUMN errors jsonb NOT NULL DEFAULT '[]';
CREATE INDEX finished_executions_unsuccessful_idx ON pgconductor.finished_executions (state, task_key, id)
    WHERE state <> 'completed';

-- Signatures or result columns that change: dropped, then created below.
DROP FUNCTION pgconductor.register_task(text, text, integer, time, time, text, interval, interval, interval);
DROP FUNCTION pgconductor.return_executions(uuid, uuid[], integer[], text[], text[], jsonb[], integer[]);
DROP FUNCTION pgconductor.get_execution(uuid);

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
-- exists and upserts it. Row lock: the task's row. Returns nothing.
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
    PERFORM pgconductor.create_queue(p_task.queue);
    INSERT INTO pgconductor.tasks AS t (key, queue, max_attempts, window_start, window_end, timezone,
                                        backoff_base, backoff_cap, timeout, max_retry_after)
    VALUES (p_task.key, p_task.queue, p_task.max_attempts, p_task.window_start, p_task.window_end,
            p_task.timezone, p_task.backoff_base, p_task.backoff_cap, p_task.timeout, p_task.max_retry_after)
    ON CONFLICT (key) DO UPDATE
       SET queue = excluded.queue, max_attempts = excluded.max_attempts,
           window_start = excluded.window_start, window_end = excluded.window_end,
           timezone = excluded.timezone, backoff_base = excluded.backoff_base,
           backoff_cap = excluded.backoff_cap, timeout = excluded.timeout,
           max_retry_after = excluded.max_retry_after, updated_at = pgconductor._now();
END
$$;

-- Task p_key's settings as jsonb (the keys declare_task() takes; intervals in milliseconds).
-- Locks nothing. NULL for a task without a row.
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
               'max_retry_after', t.max_retry_after)
      FROM pgconductor.tasks AS t WHERE t.key = p_key
$$;

-- Creates or updates task p_key with every setting: one left NULL takes the column default
-- (no window, no timeout). Windows are daily [start, end) in p_timezone (a zone name) and may
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
    p_max_retry_after integer DEFAULT NULL
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
    PERFORM pgconductor._save_task(v_task);
END
$$;

-- Sets only the settings present in p_settings (a JSON object: queue, max_attempts,
-- window_start, window_end, timezone, backoff_base_ms, backoff_cap_ms, timeout_ms,
-- max_retry_after); the others keep their stored value, or the default for a new task; a JSON
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
     WHERE k NOT IN ('queue', 'max_attempts', 'window_start', 'window_end', 'timezone',
                     'backoff_base_ms', 'backoff_cap_ms', 'timeout_ms', 'max_retry_after');
    IF v_unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown task setting(s) %', pgconductor._show(v_unknown)
            USING ERRCODE = '22023', HINT = 'Known: queue, max_attempts, window_start, window_end, timezone, backoff_base_ms, backoff_cap_ms, timeout_ms, max_retry_after.';
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
    EXCEPTION WHEN data_exception THEN  -- a value of the wrong type or out of range
        RAISE EXCEPTION 'invalid task settings %', pgconductor._show(v_s::text)
            USING ERRCODE = '22023', HINT = 'Integers for max_attempts, max_retry_after and the *_ms keys; "HH:MM" for window ends; strings for queue and timezone.';
    END;
    PERFORM pgconductor._save_task(v_task);
    RETURN pgconductor._task_settings(p_key);
END
$$;

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
             orchestrator_id, last_error, errors)
        SELECT x.id, x.task_key, x.queue, x.payload, p_state, x.attempts, x.lease, x.priority, x.run_at, x.created_at,
               pgconductor._now(), x.locked_by, coalesce(p_error, x.last_error), x.errors
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
-- then failed). A cancelled execution ends cancelled whatever its result (a completed result is
-- kept). Failed attempts are added to the execution's errors. Row locks: the executions named.
-- Returns one (id, outcome, run_at) per input, in order: completed | retry_scheduled | failed |
-- released | rescheduled | cancelled | stale, with run_at the next run of those back to pending.
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
    v_now timestamptz := pgconductor._now();
    v_n   integer := coalesce(cardinality(p_ids), 0);
    v_bad text;
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
     WHERE s IS NULL OR s NOT IN ('completed', 'failed', 'fatal', 'released', 'retry_after') LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'invalid result status %', pgconductor._show(v_bad)
            USING ERRCODE = '22023', HINT = 'Use completed, failed, fatal, released or retry_after.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pgconductor.orchestrators AS o WHERE o.id = p_orchestrator_id) THEN
        RAISE EXCEPTION 'unknown orchestrator %', coalesce(p_orchestrator_id::text, 'NULL')
            USING ERRCODE = 'P0002', HINT = 'Results come from the orchestrator that claimed the executions (get_executions or heartbeat registers it).';
    END IF;
    IF v_n = 0 THEN
        RETURN;
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
             orchestrator_id, last_error, result, errors)
        SELECT x.id, x.task_key, x.queue, x.payload, x.state, x.attempts, x.lease, x.priority, x.run_at, x.created_at,
               v_now, x.locked_by, x.new_error, x.new_result, x.new_errors
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
    SELECT i.id, coalesce(d.outcome, 'stale'), d.next_run_at
      FROM input AS i
      LEFT JOIN decided AS d ON d.id = i.id AND d.ord = i.ord
     ORDER BY i.ord;
END
$$;

-- Expires orchestrators whose last heartbeat is older than their stale_after, then releases
-- up to p_limit executions they held: back to pending (the lost attempt counts), failed when
-- attempts are exhausted, cancelled when a cancel was pending; the lost attempt is added to
-- its errors. Row locks: those executions (SKIP LOCKED). Returns (id, outcome) per execution
-- touched.
CREATE OR REPLACE FUNCTION pgconductor.recover_stale(p_limit integer DEFAULT 1000)
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

-- Puts failed or cancelled execution p_execution_id back to pending, due now, with attempts
-- reset (its errors are kept). Raises P0002 when unknown, 55000 when it is live or completed.
-- Returns its id.
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
                                        created_at, errors)
    VALUES (v_row.id, v_row.task_key, v_row.queue, v_row.payload, pgconductor._now(), v_row.priority, 0,
            v_row.lease, v_row.last_error, v_row.created_at, v_row.errors);
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

-- One execution wherever it is: state pending | running (live) or completed | failed |
-- cancelled (finished), with its errors ([{attempt, at, outcome, error}], oldest first).
-- Locks nothing. Returns no row for an unknown id.
CREATE OR REPLACE FUNCTION pgconductor.get_execution(p_id uuid)
RETURNS TABLE (id uuid, task_key text, queue text, state text, attempts integer, max_attempts integer,
               priority integer, payload jsonb, run_at timestamptz, created_at timestamptz,
               locked_at timestamptz, finished_at timestamptz, locked_by uuid, last_error text,
               result jsonb, errors jsonb, cancel_reason text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT x.id, x.task_key, x.queue, x.state, x.attempts,
           coalesce((SELECT t.max_attempts FROM pgconductor.tasks AS t WHERE t.key = x.task_key), 3),
           x.priority, x.payload, x.run_at, x.created_at, x.locked_at, x.finished_at, x.locked_by,
           x.last_error, x.result, x.errors, x.cancel_reason
      FROM (SELECT e.id, e.task_key, e.queue, CASE WHEN e.locked_by IS NULL THEN 'pending' ELSE 'running' END AS state,
                   e.attempts, e.priority, e.payload, e.run_at, e.created_at, e.locked_at, NULL::timestamptz AS finished_at,
                   e.locked_by, e.last_error, NULL::jsonb AS result, e.errors, e.cancel_reason
              FROM pgconductor.executions AS e WHERE e.id = p_id
            UNION ALL
            SELECT f.id, f.task_key, f.queue, f.state, f.attempts, f.priority, f.payload, f.run_at, f.created_at,
                   NULL, f.finished_at, NULL, f.last_error, f.result, f.errors,
                   CASE WHEN f.state = 'cancelled' THEN f.last_error END
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

-- The new internal helpers are not callable by PUBLIC (as in 90_grants.sql).
DO $$
DECLARE
    v_fn regprocedure;
BEGIN
    FOR v_fn IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'pgconductor'::regnamespace AND p.proname LIKE '\_%'
           AND p.prokind = 'f' AND p.prorettype <> 'trigger'::regtype
           AND p.proname NOT IN ('_now', '_uuid7', '_test_clock')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', v_fn);
    END LOOP;
END
$$;
