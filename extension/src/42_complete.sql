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
