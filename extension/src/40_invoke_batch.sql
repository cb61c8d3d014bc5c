-- Enqueueing many executions in one call: submit_batch() and its invoke_batch() forms.

-- Enqueues many executions (parallel arrays; NULL elements take the defaults; the scalar
-- options apply to every element), as submit() does for one. Without dedupe keys, throttle
-- or debounce: one INSERT for the whole batch; with them, element by element in input order,
-- so a key repeated in the batch meets the execution its earlier element made or updated.
-- Raises 22023 for bad input. Returns (id, outcome) per element, in input order.
CREATE FUNCTION pgconductor.submit_batch(
    p_task_keys        text[],
    p_payloads         jsonb[],
    p_queues           text[] DEFAULT NULL,
    p_run_ats          timestamptz[] DEFAULT NULL,
    p_priorities       integer[] DEFAULT NULL,
    p_dedupe_keys      text[] DEFAULT NULL,
    p_concurrency_keys text[] DEFAULT NULL,
    p_on_conflict      text DEFAULT NULL,
    p_throttle         interval DEFAULT NULL,
    p_debounce         interval DEFAULT NULL,
    p_debounce_max     interval DEFAULT NULL,
    p_start_bys        timestamptz[] DEFAULT NULL
)
RETURNS TABLE (id uuid, outcome text)
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
       OR (p_dedupe_keys IS NOT NULL AND cardinality(p_dedupe_keys) <> v_n)
       OR (p_concurrency_keys IS NOT NULL AND cardinality(p_concurrency_keys) <> v_n)
       OR (p_start_bys IS NOT NULL AND cardinality(p_start_bys) <> v_n) THEN
        RAISE EXCEPTION 'invoke_batch arrays have different lengths'
            USING ERRCODE = '22023', HINT = 'Pass one element per execution in every array (or NULL for a whole optional array).';
    END IF;
    IF greatest(array_ndims(p_task_keys), array_ndims(p_payloads), array_ndims(p_queues), array_ndims(p_run_ats),
                array_ndims(p_priorities), array_ndims(p_dedupe_keys), array_ndims(p_concurrency_keys),
                array_ndims(p_start_bys)) > 1 THEN
        RAISE EXCEPTION 'invoke_batch takes one-dimensional arrays'
            USING ERRCODE = '22023', HINT = 'Pass a flat array with one element per execution.';
    END IF;
    PERFORM pgconductor._assert_invoke_options(p_on_conflict, p_throttle, p_debounce, p_debounce_max);
    IF v_n = 0 THEN
        RETURN;
    END IF;
    p_task_keys := pgconductor._from_one(p_task_keys);
    p_payloads := pgconductor._from_one(p_payloads);
    p_queues := pgconductor._from_one(p_queues);
    p_run_ats := pgconductor._from_one(p_run_ats);
    p_priorities := pgconductor._from_one(p_priorities);
    p_dedupe_keys := pgconductor._from_one(p_dedupe_keys);
    p_concurrency_keys := pgconductor._from_one(p_concurrency_keys);
    p_start_bys := pgconductor._from_one(p_start_bys);

    SELECT min(u.ord) INTO v_bad FROM unnest(p_task_keys) WITH ORDINALITY AS u(k, ord)
     WHERE NOT pgconductor._valid_task_key(u.k);
    IF v_bad IS NOT NULL THEN
        PERFORM pgconductor._assert_task_key(p_task_keys[v_bad]);
    END IF;
    PERFORM pgconductor._assert_run_at(r) FROM unnest(p_run_ats) AS r WHERE NOT isfinite(r);
    PERFORM pgconductor._assert_dedupe_key(d) FROM unnest(p_dedupe_keys) AS d WHERE d IS NOT NULL;
    PERFORM pgconductor._assert_concurrency_key(c) FROM unnest(p_concurrency_keys) AS c WHERE c IS NOT NULL;
    PERFORM pgconductor._assert_start_by(u.s, coalesce(u.r, v_now))
       FROM unnest(p_start_bys, coalesce(p_run_ats, array_fill(NULL::timestamptz, ARRAY[v_n]))) AS u(s, r)
      WHERE u.s IS NOT NULL;
    SELECT count(*) INTO v_bad
      FROM (SELECT DISTINCT q FROM unnest(p_queues) AS q) AS d
     WHERE d.q IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pgconductor.queues AS x WHERE x.name = d.q);
    IF v_bad > pgconductor._max_new_queues_per_call() THEN
        RAISE EXCEPTION 'invoke_batch would create % new queues; one call creates at most %', v_bad, pgconductor._max_new_queues_per_call()
            USING ERRCODE = '54000', HINT = 'Create the queues first with create_queue(), or split the batch.';
    END IF;

    IF p_throttle IS NOT NULL OR p_debounce IS NOT NULL
       OR (p_dedupe_keys IS NOT NULL AND EXISTS (SELECT 1 FROM unnest(p_dedupe_keys) AS d WHERE d IS NOT NULL)) THEN
        FOR v_bad IN 1..v_n LOOP
            RETURN QUERY SELECT s.id, s.outcome FROM pgconductor._submit_one(
                p_task_keys[v_bad], p_payloads[v_bad], p_queues[v_bad], p_run_ats[v_bad], p_priorities[v_bad],
                p_dedupe_keys[v_bad], p_concurrency_keys[v_bad], p_on_conflict, p_throttle, p_debounce,
                p_debounce_max, p_start_bys[v_bad]) AS s;
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
               coalesce(u.p, '{}') AS payload, coalesce(u.r, v_now) AS run_at, coalesce(u.pr, 0) AS priority,
               u.ck AS concurrency_key, coalesce(u.sb, coalesce(u.r, v_now) + t.start_within) AS start_by
          -- A NULL optional array unnests as all NULL (unnest pads the shorter arrays).
          FROM unnest(p_task_keys, p_payloads, p_queues, p_run_ats, p_priorities, p_concurrency_keys, p_start_bys)
               WITH ORDINALITY AS u(k, p, q, r, pr, ck, sb, ord)
          LEFT JOIN pgconductor.tasks AS t ON t.key = u.k
    ), inserted AS (
        INSERT INTO pgconductor.executions (id, task_key, queue, payload, run_at, priority, concurrency_key, start_by)
        SELECT i.id, i.task_key, i.queue, i.payload, i.run_at, i.priority, i.concurrency_key, i.start_by FROM input AS i
    )
    SELECT i.id, 'created'::text FROM input AS i ORDER BY i.ord;
END
$$;

-- Enqueues many executions, as submit_batch() does. Returns their ids in input order.
CREATE FUNCTION pgconductor.invoke_batch(
    p_task_keys        text[],
    p_payloads         jsonb[],
    p_queues           text[] DEFAULT NULL,
    p_run_ats          timestamptz[] DEFAULT NULL,
    p_priorities       integer[] DEFAULT NULL,
    p_dedupe_keys      text[] DEFAULT NULL,
    p_concurrency_keys text[] DEFAULT NULL,
    p_on_conflict      text DEFAULT NULL,
    p_throttle         interval DEFAULT NULL,
    p_debounce         interval DEFAULT NULL,
    p_debounce_max     interval DEFAULT NULL,
    p_start_bys        timestamptz[] DEFAULT NULL
)
RETURNS SETOF uuid
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.id FROM pgconductor.submit_batch(p_task_keys, p_payloads, p_queues, p_run_ats, p_priorities, p_dedupe_keys,
                                              p_concurrency_keys, p_on_conflict, p_throttle, p_debounce, p_debounce_max,
                                              p_start_bys) AS s
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
