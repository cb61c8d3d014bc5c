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
