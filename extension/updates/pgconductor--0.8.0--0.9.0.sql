-- pgconductor 0.8.0 -> 0.9.0: fair share serves two rows a key per round when a claim's batch
-- is 100 or more (half the probes per claim; issue 11's fair-share drain bar).
\echo Use "ALTER EXTENSION pgconductor UPDATE TO '0.9.0'" to load this file. \quit

-- The fair-share pick of queue p_queue: up to p_limit claimable rows (_claimable with the
-- other arguments), round-robin over its concurrency keys (rows without one form key ''),
-- starting after key p_cursor and wrapping around; a key of weight w (key_weights) gives w
-- rows a round (2w when the batch is 100 or more: see v_serve). Reads the queue's fair index (set_fair_share): one probe per key served, so
-- the cost follows the batch, not the backlog or the number of keys. Locks what it returns
-- (SKIP LOCKED). Returns the ids in serving order and the next cursor: the last key served,
-- or the last key scanned when none gave a row.
CREATE OR REPLACE FUNCTION pgconductor._pick_fair(p_queue text, p_task_keys text[], p_blocked text[], p_blocked_keys text[],
                                       p_max_attempts jsonb, p_exclude uuid[], p_limit integer, p_now timestamptz,
                                       p_cursor text,
                                       OUT ids uuid[], OUT cursor text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_keys  text[];
    v_first record;
    v_wrap  record;
    v_base  integer;
    v_got   uuid[];
    v_full  text[];
    v_pass1 boolean := false;
    -- Keys served by one claim: a batch of 100 or more serves half as many keys, two rows a
    -- key per round (half the probes, the costly part; the cursor keeps the round-robin
    -- across claims); a smaller one serves a key a row.
    v_serve integer := CASE WHEN p_limit >= 100 THEN (p_limit + 1) / 2 ELSE p_limit END;
BEGIN
    -- The next keys with claimable rows after the cursor, then from the first key up to it.
    SELECT * INTO v_first FROM pgconductor._fair_firsts(
        p_queue, coalesce(p_cursor || chr(1), ''), NULL, v_serve,
        p_task_keys, p_blocked, p_blocked_keys, p_max_attempts, p_exclude, p_now);
    IF cardinality(v_first.keys) < v_serve AND p_cursor IS NOT NULL THEN
        SELECT * INTO v_wrap FROM pgconductor._fair_firsts(
            p_queue, '', p_cursor, v_serve - cardinality(v_first.keys),
            p_task_keys, p_blocked, p_blocked_keys, p_max_attempts, p_exclude, p_now);
        v_first.keys := v_first.keys || v_wrap.keys;
        v_first.ids := v_first.ids || v_wrap.ids;
    END IF;
    v_keys := v_first.keys;
    IF cardinality(v_keys) = 0 THEN
        ids := '{}';
        RETURN;
    END IF;
    -- Keys whose rows are not due yet, of tasks this worker does not serve, or at a limit give
    -- nothing: when no key gives anything the cursor still moves past the keys scanned, so
    -- the next round (or claim) reaches the keys after them.
    cursor := v_keys[cardinality(v_keys)];
    -- Passes: each gives every key still in play its share of what is left (rows per weight
    -- unit, enough when every key has rows to give); a key that gave its whole share stays in
    -- play for the next pass, so keys with nothing to give do not leave the batch short.
    ids := '{}';
    -- As many keys as rows wanted, none weighted: the first pass is one row of each, the first
    -- rows the probes found (locking them by primary key costs less than a probe per key).
    IF cardinality(v_keys) >= p_limit AND NOT EXISTS (SELECT 1 FROM pgconductor.key_weights AS w WHERE w.queue = p_queue) THEN
        SELECT coalesce(array_agg(x.id ORDER BY x.ord), '{}'), coalesce(array_agg(x.k ORDER BY x.ord), '{}')
          INTO ids, v_keys
          FROM (SELECT c.id, f.k, f.ord
                  FROM unnest(v_first.ids, v_first.keys) WITH ORDINALITY AS f(id, k, ord)
                  JOIN pgconductor.executions AS c ON c.queue = p_queue AND c.id = f.id
                 WHERE pgconductor._claimable(c, p_now, p_task_keys, p_blocked, p_blocked_keys, p_max_attempts)
                 ORDER BY f.ord
                   FOR UPDATE OF c SKIP LOCKED) AS x;
        v_pass1 := true;
        IF cardinality(ids) >= p_limit OR cardinality(v_keys) = 0 THEN
            RETURN;
        END IF;
    END IF;
    FOR v_pass IN 1..3 LOOP
        CONTINUE WHEN v_pass1 AND v_pass = 1;
        SELECT ceil((p_limit - cardinality(ids))::numeric / sum(coalesce(w.weight, 1)))::integer INTO v_base
          FROM unnest(v_keys) AS k(k)
          LEFT JOIN pgconductor.key_weights AS w ON w.queue = p_queue AND w.key = k.k;
        SELECT coalesce(array_agg(r.id ORDER BY r.pos), '{}'),
               coalesce((array_agg(r.k ORDER BY r.pos DESC))[1], cursor),
               coalesce(array_agg(DISTINCT r.k) FILTER (WHERE r.full_share), '{}')
          INTO v_got, cursor, v_full
          FROM (SELECT x.id, k.k, x.rn = v_base * coalesce(w.weight, 1) AS full_share,
                       row_number() OVER (ORDER BY ceil(x.rn::numeric / coalesce(w.weight, 1)), k.ord, x.rn) AS pos
                  FROM unnest(v_keys) WITH ORDINALITY AS k(k, ord)
                  LEFT JOIN pgconductor.key_weights AS w ON w.queue = p_queue AND w.key = k.k
                 CROSS JOIN LATERAL (
                    SELECT c.id, row_number() OVER () AS rn
                      FROM (SELECT c.id FROM pgconductor.executions AS c
                             WHERE c.queue = p_queue AND coalesce(c.concurrency_key, '') COLLATE "C" = k.k
                               AND pgconductor._claimable(c, p_now, p_task_keys, p_blocked, p_blocked_keys, p_max_attempts)
                               AND NOT (c.id = ANY (p_exclude || ids))
                             ORDER BY coalesce(c.concurrency_key, '') COLLATE "C", c.priority, c.run_at, c.id
                             LIMIT v_base * coalesce(w.weight, 1)
                               FOR UPDATE SKIP LOCKED) AS c) AS x) AS r
         WHERE r.pos <= p_limit - cardinality(ids);
        ids := ids || v_got;
        EXIT WHEN cardinality(ids) >= p_limit OR cardinality(v_full) = 0;
        -- Keep the serving order of v_keys for the keys still in play (a join: = ANY over
        -- a thousand keys for each of a thousand keys cost more than the pass).
        v_keys := ARRAY(SELECT k.k FROM unnest(v_keys) WITH ORDINALITY AS k(k, ord)
                          JOIN unnest(v_full) AS f(k) ON f.k = k.k ORDER BY k.ord);
    END LOOP;
END
$$;

SELECT pgconductor._apply_privileges();
