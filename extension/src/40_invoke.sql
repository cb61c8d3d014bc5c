-- Enqueueing: invoke() for one execution, invoke_batch() for many in one statement. Both
-- callable from plain SQL and from triggers.

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

-- Enqueues one execution of p_task_key and returns its id. The queue is p_queue, else the
-- task's registered queue, else 'default' (created on demand). With p_dedupe_key: a pending
-- execution holding the key is updated in place (same id); a running one lets go of the key
-- and a new execution is inserted. Notifies pgconductor_invoke when the row is due now.
CREATE FUNCTION pgconductor.invoke(
    p_task_key   text,
    p_payload    jsonb DEFAULT '{}',
    p_queue      text DEFAULT NULL,
    p_run_at     timestamptz DEFAULT NULL,
    p_priority   integer DEFAULT 0,
    p_dedupe_key text DEFAULT NULL
)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now    timestamptz := pgconductor._now();
    v_queue  text;
    v_exists boolean;
    v_id     uuid;
BEGIN
    -- The common case costs one lookup: the queue and whether it exists, in one statement.
    IF NOT pgconductor._valid_task_key(p_task_key) THEN
        PERFORM pgconductor._assert_task_key(p_task_key);
    END IF;
    IF p_dedupe_key IS NOT NULL THEN
        PERFORM pgconductor._assert_dedupe_key(p_dedupe_key);
    END IF;
    IF NOT isfinite(p_run_at) THEN
        PERFORM pgconductor._assert_run_at(p_run_at);
    END IF;
    SELECT r.name, EXISTS (SELECT 1 FROM pgconductor.queues AS q WHERE q.name = r.name)
      INTO v_queue, v_exists
      FROM (SELECT coalesce(p_queue, (SELECT t.queue FROM pgconductor.tasks AS t WHERE t.key = p_task_key),
                            'default') AS name) AS r;
    IF NOT v_exists THEN
        PERFORM pgconductor.create_queue(v_queue);
    END IF;

    IF p_dedupe_key IS NULL THEN
        INSERT INTO pgconductor.executions (task_key, queue, payload, run_at, priority)
        VALUES (p_task_key, v_queue, coalesce(p_payload, '{}'), coalesce(p_run_at, v_now), coalesce(p_priority, 0))
        RETURNING id INTO v_id;
    ELSE
        -- A claim may take the pending row between our statements: then detach and try again.
        FOR v_try IN 1..5 LOOP
            UPDATE pgconductor.executions AS e SET dedupe_key = NULL
             WHERE e.queue = v_queue AND e.task_key = p_task_key AND e.dedupe_key = p_dedupe_key
               AND e.locked_by IS NOT NULL;
            INSERT INTO pgconductor.executions AS e (task_key, queue, payload, run_at, priority, dedupe_key)
            VALUES (p_task_key, v_queue, coalesce(p_payload, '{}'), coalesce(p_run_at, v_now), coalesce(p_priority, 0), p_dedupe_key)
            ON CONFLICT (queue, task_key, dedupe_key) WHERE dedupe_key IS NOT NULL
            DO UPDATE SET payload = excluded.payload, run_at = excluded.run_at, priority = excluded.priority
                    WHERE e.locked_by IS NULL
            RETURNING e.id INTO v_id;
            EXIT WHEN v_id IS NOT NULL;
        END LOOP;
        IF v_id IS NULL THEN
            RAISE EXCEPTION 'could not enqueue % with dedupe key %: the execution holding it keeps changing',
                            pgconductor._show(p_task_key), pgconductor._show(p_dedupe_key)
                USING ERRCODE = '40001', HINT = 'Retry the call.';
        END IF;
    END IF;

    IF coalesce(p_run_at, v_now) <= v_now THEN
        PERFORM pg_notify('pgconductor_invoke', v_queue);
    END IF;
    RETURN v_id;
END
$$;

-- Enqueues many executions in one statement (parallel arrays; NULL elements take the
-- defaults; duplicate dedupe keys in one batch: the last wins). Returns ids in input order.
CREATE FUNCTION pgconductor.invoke_batch(
    p_task_keys   text[],
    p_payloads    jsonb[],
    p_queues      text[] DEFAULT NULL,
    p_run_ats     timestamptz[] DEFAULT NULL,
    p_priorities  integer[] DEFAULT NULL,
    p_dedupe_keys text[] DEFAULT NULL
)
RETURNS SETOF uuid
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
       OR (p_dedupe_keys IS NOT NULL AND cardinality(p_dedupe_keys) <> v_n) THEN
        RAISE EXCEPTION 'invoke_batch arrays have different lengths'
            USING ERRCODE = '22023', HINT = 'Pass one element per execution in every array (or NULL for a whole optional array).';
    END IF;
    IF greatest(array_ndims(p_task_keys), array_ndims(p_payloads), array_ndims(p_queues), array_ndims(p_run_ats),
                array_ndims(p_priorities), array_ndims(p_dedupe_keys)) > 1 THEN
        RAISE EXCEPTION 'invoke_batch takes one-dimensional arrays'
            USING ERRCODE = '22023', HINT = 'Pass a flat array with one element per execution.';
    END IF;
    IF v_n = 0 THEN
        RETURN;
    END IF;
    -- Elements pair by position whatever each array's lower bound ('[0:1]={...}'): the keyed
    -- path below subscripts, so every array is rebased to start at 1.
    IF array_lower(p_task_keys, 1) <> 1 THEN p_task_keys := ARRAY(SELECT unnest(p_task_keys)); END IF;
    IF array_lower(p_payloads, 1) <> 1 THEN p_payloads := ARRAY(SELECT unnest(p_payloads)); END IF;
    IF array_lower(p_queues, 1) <> 1 THEN p_queues := ARRAY(SELECT unnest(p_queues)); END IF;
    IF array_lower(p_run_ats, 1) <> 1 THEN p_run_ats := ARRAY(SELECT unnest(p_run_ats)); END IF;
    IF array_lower(p_priorities, 1) <> 1 THEN p_priorities := ARRAY(SELECT unnest(p_priorities)); END IF;
    IF array_lower(p_dedupe_keys, 1) <> 1 THEN p_dedupe_keys := ARRAY(SELECT unnest(p_dedupe_keys)); END IF;

    SELECT min(u.ord) INTO v_bad FROM unnest(p_task_keys) WITH ORDINALITY AS u(k, ord)
     WHERE NOT pgconductor._valid_task_key(u.k);
    IF v_bad IS NOT NULL THEN
        PERFORM pgconductor._assert_task_key(p_task_keys[v_bad]);
    END IF;
    PERFORM pgconductor._assert_run_at(r) FROM unnest(p_run_ats) AS r WHERE NOT isfinite(r);
    PERFORM pgconductor._assert_dedupe_key(d) FROM unnest(p_dedupe_keys) AS d WHERE d IS NOT NULL;
    SELECT count(*) INTO v_bad
      FROM (SELECT DISTINCT q FROM unnest(p_queues) AS q) AS d
     WHERE d.q IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pgconductor.queues AS x WHERE x.name = d.q);
    IF v_bad > pgconductor._max_new_queues_per_call() THEN
        RAISE EXCEPTION 'invoke_batch would create % new queues; one call creates at most %', v_bad, pgconductor._max_new_queues_per_call()
            USING ERRCODE = '54000', HINT = 'Create the queues first with create_queue(), or split the batch.';
    END IF;

    IF p_dedupe_keys IS NOT NULL AND EXISTS (SELECT 1 FROM unnest(p_dedupe_keys) AS d WHERE d IS NOT NULL) THEN
        -- Keyed batches are rare: one invoke() per element, in input order, so a key that
        -- repeats in the batch updates the same execution and the last payload wins.
        FOR v_bad IN 1..v_n LOOP
            RETURN NEXT pgconductor.invoke(p_task_keys[v_bad], p_payloads[v_bad], p_queues[v_bad],
                                           p_run_ats[v_bad], p_priorities[v_bad], p_dedupe_keys[v_bad]);
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
               coalesce(u.p, '{}') AS payload, coalesce(u.r, v_now) AS run_at, coalesce(u.pr, 0) AS priority
          FROM unnest(p_task_keys, p_payloads,
                      coalesce(p_queues, array_fill(NULL::text, ARRAY[v_n])),
                      coalesce(p_run_ats, array_fill(NULL::timestamptz, ARRAY[v_n])),
                      coalesce(p_priorities, array_fill(NULL::integer, ARRAY[v_n])))
               WITH ORDINALITY AS u(k, p, q, r, pr, ord)
          LEFT JOIN pgconductor.tasks AS t ON t.key = u.k
    ), inserted AS (
        INSERT INTO pgconductor.executions (id, task_key, queue, payload, run_at, priority)
        SELECT i.id, i.task_key, i.queue, i.payload, i.run_at, i.priority FROM input AS i
    )
    SELECT i.id FROM input AS i ORDER BY i.ord;
END
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
