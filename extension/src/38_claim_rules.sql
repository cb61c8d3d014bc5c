-- The claim's rules, each written once (41_claim.sql runs them in stages): _claimable is
-- the per-row rule every pick shares; _claim_gate decides per task (windows, pauses,
-- concurrency and rate limits) before the pick; _claim_trim admits the part of a pick that
-- the limits allow (and says what that leaves of them); _spend_tokens charges rate limits for what was admitted; _pick_fair is
-- the round-robin pick of fair-share queues.

-- The separator of task key and concurrency key in the gate's key lists (neither contains
-- control characters). Inlined.
CREATE FUNCTION pgconductor._key_sep()
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN chr(31);

-- True when task p_task has a limit the claim must count (running or rate). Inlined.
CREATE FUNCTION pgconductor._limited(p_task pgconductor.tasks)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN p_task.max_running IS NOT NULL OR p_task.max_running_per_key IS NOT NULL
    OR p_task.rate_limit IS NOT NULL OR p_task.rate_limit_per_key IS NOT NULL;

-- True when task p_task has any rule of the gate (a window, a pause, a limit). Inlined.
CREATE FUNCTION pgconductor._gated(p_task pgconductor.tasks)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN p_task.window_start IS NOT NULL OR p_task.paused OR pgconductor._limited(p_task);

-- The per-row rule of every pick: pending, not parked, due, of a wanted task that the gate
-- did not block, whose key the gate did not block, not past its start-by deadline, with an
-- attempt left (p_max_attempts: task key -> max_attempts of the tasks with a row; the others
-- have the default 3). Inlined into each pick, so the partial claim index still applies
-- (a sub-select here would stop the inlining: hence the map).
CREATE FUNCTION pgconductor._claimable(p_row pgconductor.executions, p_now timestamptz, p_task_keys text[],
                                       p_blocked text[], p_blocked_keys text[], p_max_attempts jsonb)
RETURNS boolean
LANGUAGE sql STABLE
RETURN p_row.locked_by IS NULL AND p_row.waiting IS NULL AND p_row.run_at <= p_now
   AND (p_task_keys IS NULL OR p_row.task_key = ANY (p_task_keys))
   AND NOT (p_row.task_key = ANY (p_blocked))
   AND (cardinality(p_blocked_keys) = 0
        OR NOT (p_row.task_key || pgconductor._key_sep() || coalesce(p_row.concurrency_key, '') = ANY (p_blocked_keys)))
   AND (p_row.start_by IS NULL OR p_row.start_by > p_now)
   AND (p_row.attempts = 0 OR p_row.attempts < coalesce((p_max_attempts->>p_row.task_key)::integer, 3));

-- Tokens in a bucket of p_capacity that held p_tokens at p_at and refills p_capacity per
-- p_period, as of p_now (never more than p_capacity). Inlined.
CREATE FUNCTION pgconductor._refilled(p_tokens double precision, p_at timestamptz, p_capacity integer,
                                      p_period interval, p_now timestamptz)
RETURNS double precision
LANGUAGE sql IMMUTABLE
RETURN least(p_capacity::double precision,
             p_tokens + p_capacity * greatest(extract(epoch FROM p_now - p_at), 0)::double precision
                                   / greatest(extract(epoch FROM p_period), 0.001)::double precision);

-- Of the tasks p_task_keys (NULL: all), those held back whatever their limits: paused, or
-- outside their daily window at p_now. Locks nothing. Returns their keys.
CREATE FUNCTION pgconductor._held_tasks(p_task_keys text[], p_now timestamptz)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_held    text[];
    v_windows boolean;
BEGIN
    SELECT coalesce(array_agg(t.key) FILTER (WHERE t.paused), '{}'), coalesce(bool_or(t.window_start IS NOT NULL), false)
      INTO v_held, v_windows
      FROM pgconductor.tasks AS t
     WHERE (t.paused OR t.window_start IS NOT NULL) AND (p_task_keys IS NULL OR t.key = ANY (p_task_keys));
    IF v_windows THEN
        v_held := v_held || pgconductor._closed_tasks(p_now);
    END IF;
    RETURN v_held;
END
$$;

-- The gate: which of the tasks p_task_keys (NULL: all) may start executions now. blocked:
-- tasks paused, outside their window, or at a limit; blocked_keys: task-and-key pairs
-- (_key_sep) at a per-key limit; limits: what is left of each limit for _claim_trim, NULL
-- when no limited task is wanted. For limited tasks it takes a transaction advisory lock per
-- task, in key order (claims of tasks whose limits interact cannot deadlock), and then counts
-- running executions: a concurrent claim's leases are counted once it commits, so limits are
-- never over-admitted. Raises 25000 outside READ COMMITTED, where a claim could count from
-- an older snapshot.
CREATE FUNCTION pgconductor._claim_gate(p_task_keys text[], p_now timestamptz,
                                        OUT blocked text[], OUT blocked_keys text[], OUT limits jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_limited text[];
BEGIN
    blocked_keys := '{}';
    blocked := pgconductor._held_tasks(p_task_keys, p_now);
    v_limited := ARRAY(SELECT t.key FROM pgconductor.tasks AS t
                        WHERE pgconductor._limited(t) AND (p_task_keys IS NULL OR t.key = ANY (p_task_keys))
                          AND NOT (t.key = ANY (blocked))
                        ORDER BY t.key);
    IF cardinality(v_limited) = 0 THEN
        RETURN;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'claims of tasks with limits must run in READ COMMITTED, not %', current_setting('transaction_isolation')
            USING ERRCODE = '25000', HINT = 'Call get_executions() in its own READ COMMITTED transaction (autocommit).';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('pgconductor.limit ' || k, 0))
       FROM unnest(v_limited) AS k ORDER BY k;

    WITH lim AS (
        SELECT t.* FROM pgconductor.tasks AS t WHERE t.key = ANY (v_limited)
    ), running AS (
        SELECT e.task_key, coalesce(e.concurrency_key, '') AS k, count(*)::integer AS n
          FROM pgconductor.executions AS e
         WHERE e.locked_by IS NOT NULL AND e.task_key = ANY (v_limited)
         GROUP BY 1, 2
    ), buckets AS (
        SELECT b.task_key, b.per_key, b.key,
               floor(pgconductor._refilled(b.tokens, b.at, CASE WHEN b.per_key THEN l.rate_limit_per_key ELSE l.rate_limit END,
                                           l.rate_period, p_now))::integer AS tokens
          FROM pgconductor.rate_buckets AS b
          JOIN lim AS l ON l.key = b.task_key
         WHERE CASE WHEN b.per_key THEN l.rate_limit_per_key ELSE l.rate_limit END IS NOT NULL
    ), task_allow AS (
        SELECT l.key,
               least(l.max_running - coalesce((SELECT sum(r.n) FROM running AS r WHERE r.task_key = l.key), 0),
                     CASE WHEN l.rate_limit IS NOT NULL
                          THEN coalesce((SELECT b.tokens FROM buckets AS b WHERE b.task_key = l.key AND NOT b.per_key),
                                        l.rate_limit) END)::integer AS allow,
               least(l.max_running_per_key, l.rate_limit_per_key) AS key_default
          FROM lim AS l
    ), key_allow AS (
        SELECT l.key AS task_key, k.k,
               least(l.max_running_per_key - coalesce(r.n, 0),
                     CASE WHEN l.rate_limit_per_key IS NOT NULL THEN coalesce(b.tokens, l.rate_limit_per_key) END) AS allow
          FROM lim AS l
          JOIN (SELECT r.task_key, r.k FROM running AS r
                UNION SELECT b.task_key, b.key FROM buckets AS b WHERE b.per_key) AS k ON k.task_key = l.key
          LEFT JOIN running AS r ON r.task_key = l.key AND r.k = k.k
          LEFT JOIN buckets AS b ON b.task_key = l.key AND b.per_key AND b.key = k.k
         WHERE l.max_running_per_key IS NOT NULL OR l.rate_limit_per_key IS NOT NULL
    )
    SELECT blocked || ARRAY(SELECT a.key FROM task_allow AS a WHERE a.allow <= 0),
           ARRAY(SELECT a.task_key || pgconductor._key_sep() || a.k FROM key_allow AS a WHERE a.allow <= 0),
           jsonb_build_object(
               'task', (SELECT coalesce(jsonb_object_agg(a.key, a.allow), '{}') FROM task_allow AS a WHERE a.allow IS NOT NULL),
               'key', (SELECT coalesce(jsonb_object_agg(a.task_key || pgconductor._key_sep() || a.k, a.allow), '{}')
                         FROM key_allow AS a WHERE a.allow IS NOT NULL),
               'key_default', (SELECT coalesce(jsonb_object_agg(a.key, a.key_default), '{}')
                                 FROM task_allow AS a WHERE a.key_default IS NOT NULL),
               'rated', (SELECT coalesce(bool_or(l.rate_limit IS NOT NULL OR l.rate_limit_per_key IS NOT NULL), false) FROM lim AS l))
      INTO blocked, blocked_keys, limits;
END
$$;

-- The trim: of the rows p_ids picked in queue p_queue (in pick order), those the limits
-- p_limits (from _claim_gate) admit: per task and per key, the first ones up to what is
-- left. Also what the admitted rows leave of the limits, for the claim's next round (one
-- read of the picked rows serves both): limits, and the tasks and task-and-key pairs that
-- reached theirs. Locks nothing more. Returns ids in pick order, limits, blocked,
-- blocked_keys. PL/pgSQL, not SQL: a SQL function called in a PL/pgSQL expression keeps its
-- plans for the whole transaction, and so missed the partition of a queue created meanwhile.
CREATE FUNCTION pgconductor._claim_trim(p_queue text, p_ids uuid[], p_limits jsonb,
                                        OUT ids uuid[], OUT limits jsonb, OUT blocked text[], OUT blocked_keys text[])
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- Taken apart once: an arrow into p_limits in the query copied the whole object per row.
    v_task    jsonb := p_limits->'task';
    v_key     jsonb := p_limits->'key';
    v_default jsonb := p_limits->'key_default';
BEGIN
    WITH picked AS (
        SELECT p.id, p.ord, e.task_key, coalesce(e.concurrency_key, '') AS k,
               row_number() OVER (PARTITION BY e.task_key ORDER BY p.ord) AS rn_task,
               row_number() OVER (PARTITION BY e.task_key, coalesce(e.concurrency_key, '') ORDER BY p.ord) AS rn_key
          FROM unnest(p_ids) WITH ORDINALITY AS p(id, ord)
          JOIN pgconductor.executions AS e ON e.queue = p_queue AND e.id = p.id
    ), admitted AS (
        SELECT x.id, x.ord, x.task_key, x.k FROM picked AS x
         WHERE x.rn_task <= coalesce((v_task->>x.task_key)::integer, 2147483647)
           AND x.rn_key <= coalesce((v_key->>(x.task_key || pgconductor._key_sep() || x.k))::integer,
                                    (v_default->>x.task_key)::integer, 2147483647)
    ), tasks_left AS (
        SELECT t.key AS task_key, t.value::integer - (SELECT count(*) FROM admitted AS a WHERE a.task_key = t.key)::integer AS allow
          FROM jsonb_each_text(v_task) AS t
    ), keys_left AS (
        SELECT a.task_key || pgconductor._key_sep() || a.k AS key,
               coalesce((v_key->>(a.task_key || pgconductor._key_sep() || a.k))::integer,
                        (v_default->>a.task_key)::integer) - count(*)::integer AS allow
          FROM admitted AS a
         WHERE v_default ? a.task_key OR v_key ? (a.task_key || pgconductor._key_sep() || a.k)
         GROUP BY a.task_key, a.k
    )
    SELECT (SELECT coalesce(array_agg(a.id ORDER BY a.ord), '{}') FROM admitted AS a),
           jsonb_set(jsonb_set(p_limits, '{task}', (SELECT coalesce(jsonb_object_agg(t.task_key, t.allow), '{}') FROM tasks_left AS t)),
                     '{key}', v_key || (SELECT coalesce(jsonb_object_agg(k.key, k.allow), '{}') FROM keys_left AS k)),
           ARRAY(SELECT t.task_key FROM tasks_left AS t WHERE t.allow <= 0),
           ARRAY(SELECT k.key FROM keys_left AS k WHERE k.allow <= 0)
      INTO ids, limits, blocked, blocked_keys;
END
$$;

-- Charges the rate limits of the executions p_ids of queue p_queue just claimed: one token
-- each from their task's bucket and their key's. Row locks: those buckets. Returns nothing.
CREATE FUNCTION pgconductor._spend_tokens(p_queue text, p_ids uuid[], p_now timestamptz)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO pgconductor.rate_buckets AS b (task_key, per_key, key, tokens, at)
    SELECT u.task_key, u.per_key, u.key, u.capacity - u.n, p_now
      FROM (SELECT e.task_key, s.per_key, CASE WHEN s.per_key THEN coalesce(e.concurrency_key, '') ELSE '' END AS key,
                   CASE WHEN s.per_key THEN t.rate_limit_per_key ELSE t.rate_limit END AS capacity, count(*) AS n
              FROM pgconductor.executions AS e
              JOIN pgconductor.tasks AS t ON t.key = e.task_key
             CROSS JOIN (VALUES (false), (true)) AS s(per_key)
             WHERE e.queue = p_queue AND e.id = ANY (p_ids)
               AND CASE WHEN s.per_key THEN t.rate_limit_per_key ELSE t.rate_limit END IS NOT NULL
             GROUP BY 1, 2, 3, 4) AS u
    ON CONFLICT (task_key, per_key, key) DO UPDATE
       SET tokens = (SELECT pgconductor._refilled(b.tokens, b.at, c.capacity, t.rate_period, p_now) - (c.capacity - excluded.tokens)
                       FROM pgconductor.tasks AS t
                      CROSS JOIN LATERAL (SELECT CASE WHEN b.per_key THEN t.rate_limit_per_key ELSE t.rate_limit END AS capacity) AS c
                      WHERE t.key = b.task_key),
           at = greatest(b.at, p_now)  -- a claim that waited for the lock must not credit the wait twice
$$;
