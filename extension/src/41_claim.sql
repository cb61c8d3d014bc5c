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

-- Claims up to p_batch_size executions of queue p_queue, restricted to p_task_keys unless
-- NULL (the worker passes the tasks it has handlers for), for orchestrator p_orchestrator_id.
-- Skips tasks outside their window, parked executions and executions whose attempts are
-- exhausted; first wakes the parked ones whose time came. Row locks: the claimed rows, then
-- the orchestrator's row. Returns the claimed executions, with their stored steps.
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
