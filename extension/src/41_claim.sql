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

-- Up to p_limit concurrency keys ('' for none) of queue p_queue with a claimable row
-- (_claimable with the other arguments, not among p_exclude), in "C" order, from p_from on
-- and no greater than p_upto (NULL: no bound), each with its first claimable row: a loose
-- scan of the fair index, each step one probe for the next greater key (keys contain no
-- control characters, so in "C" order k || chr(1) is where the keys after k begin). Locks
-- nothing. Returns keys and ids, in key order. PL/pgSQL: a SQL function in a PL/pgSQL
-- expression would keep its plans for the transaction.
CREATE FUNCTION pgconductor._fair_firsts(p_queue text, p_from text, p_upto text, p_limit integer,
                                         p_task_keys text[], p_blocked text[], p_blocked_keys text[],
                                         p_max_attempts jsonb, p_exclude uuid[], p_now timestamptz,
                                         OUT keys text[], OUT ids uuid[])
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH RECURSIVE ks(k, id, n) AS (
        SELECT f.k, f.id, 1 FROM (
            SELECT coalesce(e.concurrency_key, '') COLLATE "C" AS k, e.id FROM pgconductor.executions AS e
             WHERE e.queue = p_queue AND coalesce(e.concurrency_key, '') COLLATE "C" >= p_from
               AND pgconductor._claimable(e, p_now, p_task_keys, p_blocked, p_blocked_keys, p_max_attempts)
               AND NOT (e.id = ANY (p_exclude))
             ORDER BY coalesce(e.concurrency_key, '') COLLATE "C", e.priority, e.run_at, e.id LIMIT 1) AS f
         WHERE p_upto IS NULL OR f.k <= p_upto COLLATE "C"
        UNION ALL
        SELECT f.k, f.id, ks.n + 1 FROM ks CROSS JOIN LATERAL (
            SELECT coalesce(e.concurrency_key, '') COLLATE "C" AS k, e.id FROM pgconductor.executions AS e
             WHERE e.queue = p_queue AND coalesce(e.concurrency_key, '') COLLATE "C" >= ks.k || chr(1)
               AND pgconductor._claimable(e, p_now, p_task_keys, p_blocked, p_blocked_keys, p_max_attempts)
               AND NOT (e.id = ANY (p_exclude))
             ORDER BY coalesce(e.concurrency_key, '') COLLATE "C", e.priority, e.run_at, e.id LIMIT 1) AS f
         WHERE ks.n < p_limit AND (p_upto IS NULL OR f.k <= p_upto COLLATE "C")
    )
    SELECT coalesce(array_agg(ks.k ORDER BY ks.n), '{}'), coalesce(array_agg(ks.id ORDER BY ks.n), '{}')
      INTO keys, ids
      FROM ks;
END
$$;

-- The fair-share pick of queue p_queue: up to p_limit claimable rows (_claimable with the
-- other arguments), round-robin over its concurrency keys (rows without one form key ''),
-- starting after key p_cursor and wrapping around; a key of weight w (key_weights) gives w
-- rows a round (2w when the batch is 100 or more: see v_serve). Reads the queue's fair index (set_fair_share): one probe per key served, so
-- the cost follows the batch, not the backlog or the number of keys. Locks what it returns
-- (SKIP LOCKED). Returns the ids in serving order and the next cursor: the last key served,
-- or the last key scanned when none gave a row.
CREATE FUNCTION pgconductor._pick_fair(p_queue text, p_task_keys text[], p_blocked text[], p_blocked_keys text[],
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

-- Claims up to p_batch_size executions of queue p_queue, restricted to p_task_keys unless
-- NULL (the worker passes the tasks it has handlers for), for orchestrator p_orchestrator_id.
-- Stages: validate; wake the parked ones whose time came; gate (_claim_gate: windows,
-- pauses, limits); pick (_claimable rows in key order from the claim position, or
-- round-robin over keys in a fair-share queue); trim to what the limits admit
-- (_claim_trim); lease; remember the position; revive the orchestrator. When the trim
-- dropped rows or a fair pick came up short, the pick runs again for the rest of the batch
-- (four rounds at most) with what was leased taken off the limits (the trim says what is
-- left), so keys
-- at their limit do not keep the others waiting. Row locks: the picked rows,
-- the advisory locks of limited tasks, their rate buckets, then the orchestrator's row.
-- Returns the claimed executions, with their stored steps. A paused queue returns nothing.
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
    v_now       timestamptz := pgconductor._now();
    v_gated     boolean;
    v_attempts  jsonb;
    v_queue     record;
    v_gate      record;
    v_picked    uuid[];
    v_ids       uuid[] := '{}';
    v_taken     uuid[] := '{}';
    v_claimed   integer := 0;
    v_want      integer := p_batch_size;
    v_cont      uuid[] := '{}';
    v_head      uuid[] := '{}';
    v_fair      record;
    v_trim      record;
    v_after_id  uuid;
    v_after     record;
    v_keys_left boolean := false;
    v_setting   text := 'pgconductor.claim_position_' || replace(p_queue, '-', '$');
    v_filter    text := md5(coalesce(p_task_keys::text, '*'));
    v_position  text[];
    v_head_at   timestamptz := v_now;
    v_last      record;
    v_stamp     text := '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?[+-][0-9]{2}(:[0-9]{2}){0,2}$';
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

    SELECT q.paused, q.fair_share INTO v_queue FROM pgconductor.queues AS q WHERE q.name = p_queue;
    IF v_queue.paused THEN
        RETURN;
    END IF;
    -- One read of the small tasks table: whether any wanted task has a rule of the gate, and
    -- the attempts each may spend.
    SELECT coalesce(bool_or(pgconductor._gated(t)), false), coalesce(jsonb_object_agg(t.key, t.max_attempts), '{}')
      INTO v_gated, v_attempts
      FROM pgconductor.tasks AS t WHERE p_task_keys IS NULL OR t.key = ANY (p_task_keys);
    SELECT '{}'::text[] AS blocked, '{}'::text[] AS blocked_keys, NULL::jsonb AS limits INTO v_gate;

    FOR v_round IN 1..4 LOOP
        IF v_gated AND v_round = 1 THEN
            SELECT * INTO v_gate FROM pgconductor._claim_gate(p_task_keys, v_now);
        END IF;

        IF v_queue.fair_share THEN
            -- The round-robin cursor lives in the session, like the claim position.
            SELECT * INTO v_fair FROM pgconductor._pick_fair(
                p_queue, p_task_keys, v_gate.blocked, v_gate.blocked_keys, v_attempts, v_taken, v_want, v_now,
                nullif(current_setting(v_setting || '$fair', true), ''));
            v_picked := v_fair.ids;
            v_keys_left := v_fair.cursor IS NOT NULL;
            PERFORM set_config(v_setting || '$fair', coalesce(v_fair.cursor, ''), false);
        ELSE
            -- The position is "priority|run_at|id|head pass at|filter". A continued claim that
            -- comes up short runs the head pass too, so only claims that fill their batch skip
            -- it (a drain). Later rounds go on after the last row the round before picked:
            -- every row before it was picked, is locked elsewhere, is not claimable or is
            -- blocked (the blocked lists only grow), so starting from the head again would
            -- step over all of them (a round of a few rows cost as much as the first).
            v_cont := '{}';
            v_head := '{}';
            IF v_round > 1 THEN
                SELECT e.priority, e.run_at, e.id INTO v_after
                  FROM pgconductor.executions AS e WHERE e.queue = p_queue AND e.id = v_after_id;
                v_head := ARRAY(
                    SELECT c.id FROM pgconductor.executions AS c
                     WHERE c.queue = p_queue AND (c.priority, c.run_at, c.id) > (v_after.priority, v_after.run_at, v_after.id)
                       AND NOT (c.id = ANY (v_taken))  -- the rows after the claim position that the first round took
                       AND pgconductor._claimable(c, v_now, p_task_keys, v_gate.blocked, v_gate.blocked_keys, v_attempts)
                     ORDER BY c.priority, c.run_at, c.id
                     LIMIT v_want
                       FOR UPDATE SKIP LOCKED);
            ELSE
                v_position := string_to_array(nullif(current_setting(v_setting, true), ''), '|');
                IF cardinality(v_position) <> 5 OR v_position[1] !~ '^-?[0-9]{1,10}$'
                   OR v_position[2] !~ v_stamp OR v_position[4] !~ v_stamp
                   OR v_position[3] !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
                    v_position := NULL;  -- not one this function wrote (or from an older release): start from the head
                END IF;
                IF v_position[5] = v_filter AND v_position[4]::timestamptz > v_now - interval '1 second' THEN
                    v_head_at := v_position[4]::timestamptz;
                    v_cont := ARRAY(
                        SELECT c.id FROM pgconductor.executions AS c
                         WHERE c.queue = p_queue AND c.priority < v_position[1]::integer
                           AND pgconductor._claimable(c, v_now, p_task_keys, v_gate.blocked, v_gate.blocked_keys, v_attempts)
                         ORDER BY c.priority, c.run_at, c.id
                         LIMIT v_want
                           FOR UPDATE SKIP LOCKED);
                    IF cardinality(v_cont) < v_want THEN
                        v_cont := v_cont || ARRAY(
                            SELECT c.id FROM pgconductor.executions AS c
                             WHERE c.queue = p_queue
                               AND (c.priority, c.run_at, c.id) > (v_position[1]::integer, v_position[2]::timestamptz, v_position[3]::uuid)
                               AND pgconductor._claimable(c, v_now, p_task_keys, v_gate.blocked, v_gate.blocked_keys, v_attempts)
                             ORDER BY c.priority, c.run_at, c.id
                             LIMIT v_want - cardinality(v_cont)
                               FOR UPDATE SKIP LOCKED);
                    END IF;
                END IF;
            END IF;
            IF v_round = 1 AND cardinality(v_cont) < v_want THEN
                v_head_at := v_now;
                v_head := ARRAY(
                    SELECT c.id FROM pgconductor.executions AS c
                     WHERE c.queue = p_queue
                       AND NOT (c.id = ANY (v_cont || v_taken))  -- locked by this transaction already: SKIP LOCKED would not skip them
                       AND pgconductor._claimable(c, v_now, p_task_keys, v_gate.blocked, v_gate.blocked_keys, v_attempts)
                     ORDER BY c.priority, c.run_at, c.id
                     LIMIT v_want - cardinality(v_cont)
                       FOR UPDATE SKIP LOCKED);
            END IF;
            v_picked := v_cont || v_head;
            -- Where the next round goes on: after the head pass when there was one (the
            -- position's region after it was taken up to its end), else after the continuation.
            v_after_id := coalesce(v_head[cardinality(v_head)], v_cont[cardinality(v_cont)]);
        END IF;
        v_taken := v_taken || v_picked;
        IF v_gate.limits IS NULL THEN
            v_ids := v_picked;
        ELSE
            -- What this round leases comes off the limits for the next round (the advisory
            -- locks are held, so nobody else changes the counts meanwhile).
            SELECT * INTO v_trim FROM pgconductor._claim_trim(p_queue, v_picked, v_gate.limits);
            v_ids := v_trim.ids;
            v_gate.limits := v_trim.limits;
            v_gate.blocked := v_gate.blocked || v_trim.blocked;
            v_gate.blocked_keys := v_gate.blocked_keys || v_trim.blocked_keys;
        END IF;

        IF cardinality(v_ids) > 0 THEN
            -- The UPDATE finds the picked rows by primary key in one partition: a join with the
            -- picked rows instead let the planner hash-join a scan of the whole partition, which
            -- made every claim cost O(backlog).
            RETURN QUERY
            WITH claimed AS (
                UPDATE pgconductor.executions AS e
                   SET locked_by = p_orchestrator_id, locked_at = v_now, attempts = e.attempts + 1,
                       lease = e.lease + 1, start_by = NULL
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
            IF (v_gate.limits->>'rated')::boolean THEN
                PERFORM pgconductor._spend_tokens(p_queue, v_ids, v_now);
            END IF;
            v_claimed := v_claimed + cardinality(v_ids);
        END IF;

        -- A claim that filled its batch (a backlog is draining) leaves the position where it
        -- ended: the greater of the last rows of the two lists (each is in key order). One
        -- that did not forgets it, so the next claim is one pass from the head.
        IF v_round = 1 AND NOT v_queue.fair_share THEN
            IF cardinality(v_picked) = p_batch_size THEN
                SELECT e.priority, e.run_at, e.id INTO v_last
                  FROM pgconductor.executions AS e
                 WHERE e.queue = p_queue AND e.id IN (v_cont[cardinality(v_cont)], v_head[cardinality(v_head)])
                 ORDER BY e.priority DESC, e.run_at DESC, e.id DESC
                 LIMIT 1;
                PERFORM set_config(v_setting, concat_ws('|', v_last.priority, v_last.run_at, v_last.id, v_head_at, v_filter), false);
            ELSIF v_position IS NOT NULL THEN
                PERFORM set_config(v_setting, '', false);
            END IF;
        END IF;

        -- Another round when the limits trimmed rows, or when a fair pick came up short
        -- (a key had fewer rows than its share). A pick in key order that came up short
        -- scanned to the end: nothing more is claimable.
        EXIT WHEN (NOT v_queue.fair_share AND (cardinality(v_picked) < v_want OR v_gate.limits IS NULL
                                               OR cardinality(v_ids) = cardinality(v_picked)));
        v_want := p_batch_size - v_claimed;
        EXIT WHEN v_want = 0 OR (v_queue.fair_share AND NOT v_keys_left);
    END LOOP;
    IF v_claimed = 0 THEN
        RETURN;
    END IF;

    -- Whoever holds executions must be an orchestrator recovery can see. A claim by one marked
    -- expired or stopped proves it alive again: revive it, so that recovery watches its
    -- heartbeat once more (written only in that case). This comes after the claim, and only
    -- when it took something: recovery cannot see the rows claimed here before this commits,
    -- and if it expired this orchestrator meanwhile, the row lock below waits for it and the
    -- revival then applies.
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
