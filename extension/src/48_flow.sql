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
