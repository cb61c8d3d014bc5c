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
