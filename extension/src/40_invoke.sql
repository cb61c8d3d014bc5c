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
