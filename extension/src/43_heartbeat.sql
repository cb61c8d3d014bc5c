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
