-- pgconductor 0.1.0 -> 0.2.0: the hot paths get cheaper; no table, type or signature changes.
-- * The small helpers _now, _uuid7, _valid_task_key and _valid_queue_name get SQL-standard
--   bodies without a SET clause, so the planner inlines them (column defaults included).
-- * invoke() resolves its queue in one statement (_resolve_queue is gone).
-- * get_executions() claims in one PL/pgSQL function (_claim is gone) whose UPDATE finds the
--   picked rows by primary key (the join it replaces could scan the whole partition); an empty claim
--   writes nothing: the orchestrator row is touched only when something was claimed; each
--   session continues a queue's claims from where its last one ended (see 41_claim.sql).
-- * return_executions() unnests NULL optional arrays directly.
\echo Use "ALTER EXTENSION pgconductor UPDATE TO '0.2.0'" to load this file. \quit


-- The one clock: pgconductor.fake_now when set (tests), else the transaction's start time.
-- Locks nothing; returns timestamptz. Every time-dependent rule calls this and nothing else.
-- Hot helpers such as this one use a SQL-standard body (RETURN ...): its names are bound when
-- the function is created, so there is no search_path to pin, and without a SET clause the
-- planner inlines the call (a pinned SQL function is planned anew in every statement).
CREATE OR REPLACE FUNCTION pgconductor._now()
RETURNS timestamptz
LANGUAGE sql STABLE
RETURN coalesce(nullif(current_setting('pgconductor.fake_now', true), '')::timestamptz, now());

-- A time-ordered uuid (version 7 layout): 48 bits of milliseconds from _now(), then random
-- bits. New executions get one, so rows invoked together sit together in the heap and
-- claims in (priority, run_at, id) order read few pages. Locks nothing. Inlined (see _now).
CREATE OR REPLACE FUNCTION pgconductor._uuid7()
RETURNS uuid
LANGUAGE sql VOLATILE
RETURN encode(
    set_bit(set_bit(
        overlay(uuid_send(gen_random_uuid())
                PLACING substring(int8send(floor(extract(epoch FROM pgconductor._now()) * 1000)::bigint) FROM 3)
                FROM 1 FOR 6),
        52, 1), 53, 1),  -- version nibble 0100 (v4) becomes 0111 (v7); the variant bits stay
    'hex')::uuid;

-- True when p_key is a usable task key: 1-200 characters, no control characters, no
-- leading or trailing white space. The tables' CHECK constraints spell the same rule out
-- inline (a function call there costs on every claim): keep the three in step.
CREATE OR REPLACE FUNCTION pgconductor._valid_task_key(p_key text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN p_key IS NOT NULL
   AND char_length(p_key) BETWEEN 1 AND 200
   AND p_key !~ '[[:cntrl:]]'
   AND p_key = btrim(p_key);

-- True when p_queue is a valid queue name: 1-48 characters of [a-z0-9_-], starting with a
-- letter or digit. The partition is named "executions_<queue>", so names map 1:1 to tables.
CREATE OR REPLACE FUNCTION pgconductor._valid_queue_name(p_queue text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN p_queue IS NOT NULL AND p_queue ~ '^[a-z0-9][a-z0-9_-]{0,47}$';

-- Enqueues one execution of p_task_key and returns its id. The queue is p_queue, else the
-- task's registered queue, else 'default' (created on demand). With p_dedupe_key: a pending
-- execution holding the key is updated in place (same id); a running one lets go of the key
-- and a new execution is inserted. Notifies pgconductor_invoke when the row is due now.
CREATE OR REPLACE FUNCTION pgconductor.invoke(
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
            RAISE EXCEPTION 'could not enqueue % with dedupe key %: the execution holding it keeps changing', p_task_key, p_dedupe_key
                USING ERRCODE = '40001', HINT = 'Retry the call.';
        END IF;
    END IF;

    IF coalesce(p_run_at, v_now) <= v_now THEN
        PERFORM pg_notify('pgconductor_invoke', v_queue);
    END IF;
    RETURN v_id;
END
$$;

DROP FUNCTION pgconductor._resolve_queue(text, text);

-- Claims up to p_batch_size executions of queue p_queue, restricted to p_task_keys unless
-- NULL (the worker passes the tasks it has handlers for), for orchestrator p_orchestrator_id.
-- Skips tasks outside their window and executions whose attempts are exhausted. Row locks:
-- the claimed rows, then the orchestrator's row. Returns the claimed executions.
CREATE OR REPLACE FUNCTION pgconductor.get_executions(
    p_task_keys text[], p_orchestrator_id uuid, p_batch_size integer, p_queue text DEFAULT 'default')
RETURNS SETOF pgconductor.claimed_execution
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- Never a sequential scan of the queue: the cost model prefers one to probing the primary
-- key for a few hundred picked ids, which is far slower in practice (a backlog is cached).
-- The penalty that this puts on the tasks scans must not trigger JIT (70 ms a call).
SET enable_seqscan = off
SET jit = off
AS $$
DECLARE
    v_now      timestamptz := pgconductor._now();
    v_blocked  text[];
    v_claimed  bigint;
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

    -- Tasks outside their daily window right now (decided here, from the small tasks table).
    SELECT coalesce(array_agg(t.key), '{}') INTO v_blocked
      FROM pgconductor.tasks AS t
     WHERE t.window_start IS NOT NULL
       AND NOT pgconductor._in_window(t.window_start, t.window_end, t.timezone, v_now);

    -- Pick: the three passes share one candidate predicate (keep them in step); each locks
    -- what it picks (SKIP LOCKED) and lists it in key order. The position is
    -- "priority|run_at|id|head pass at|filter". A continued claim that comes up short runs the
    -- head pass too, so only claims that fill their batch skip it (a drain).
    v_position := string_to_array(nullif(current_setting(v_setting, true), ''), '|');
    IF v_position[5] = v_filter AND v_position[4]::timestamptz > v_now - interval '1 second' THEN
        v_head_at := v_position[4]::timestamptz;
        v_cont := ARRAY(
            SELECT c.id FROM pgconductor.executions AS c
             WHERE c.queue = p_queue AND c.locked_by IS NULL AND c.run_at <= v_now
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
                 WHERE c.queue = p_queue AND c.locked_by IS NULL AND c.run_at <= v_now
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
             WHERE c.queue = p_queue AND c.locked_by IS NULL AND c.run_at <= v_now
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
        RETURNING e.id, e.task_key, e.queue, e.payload, e.attempts, e.priority, e.run_at, e.lease
    )
    SELECT c.id, c.task_key, c.queue, c.payload, c.attempts,
           coalesce(t.max_attempts, 3), c.priority, c.run_at,
           (extract(epoch FROM t.timeout) * 1000)::bigint, c.lease
      FROM claimed AS c
      LEFT JOIN pgconductor.tasks AS t ON t.key = c.task_key
     ORDER BY c.priority, c.run_at, c.id;
    GET DIAGNOSTICS v_claimed = ROW_COUNT;

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
    -- revival then applies.
    IF v_claimed > 0 THEN
        INSERT INTO pgconductor.orchestrators AS o (id, started_at, last_heartbeat_at)
        VALUES (p_orchestrator_id, v_now, v_now)
        ON CONFLICT (id) DO UPDATE
           SET last_heartbeat_at = v_now, expired_at = NULL, stopped_at = NULL, drained = false
         WHERE o.expired_at IS NOT NULL OR o.stopped_at IS NOT NULL;
    END IF;
END
$$;

-- Claims up to p_batch_size executions of one task (in the task's registered queue, else
-- 'default') for p_orchestrator_id. Row locks: the claimed rows. Returns them.
CREATE OR REPLACE FUNCTION pgconductor.get_executions(p_task_key text, p_orchestrator_id uuid, p_batch_size integer)
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

DROP FUNCTION pgconductor._claim(text, text[], uuid, integer);

-- Applies a batch of results for orchestrator p_orchestrator_id. Statuses: completed, failed
-- (retry with the task's backoff until attempts are exhausted), fatal (fail now), released
-- (back to pending after p_delays_ms, attempt not counted). Row locks: the executions named.
-- Returns one (id, outcome) per input, in order: completed | retry_scheduled | failed |
-- released | cancelled | stale. Raises 22023 for bad arrays, P0002 for an unknown orchestrator.
CREATE OR REPLACE FUNCTION pgconductor.return_executions(
    p_orchestrator_id uuid,
    p_ids             uuid[],
    p_leases          integer[],
    p_statuses        text[],
    p_errors          text[] DEFAULT NULL,
    p_results         jsonb[] DEFAULT NULL,
    p_delays_ms       integer[] DEFAULT NULL
)
RETURNS TABLE (id uuid, outcome text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := pgconductor._now();
    v_n   integer := coalesce(cardinality(p_ids), 0);
    v_bad text;
BEGIN
    IF coalesce(cardinality(p_leases), 0) <> v_n OR coalesce(cardinality(p_statuses), 0) <> v_n
       OR (p_errors IS NOT NULL AND cardinality(p_errors) <> v_n)
       OR (p_results IS NOT NULL AND cardinality(p_results) <> v_n)
       OR (p_delays_ms IS NOT NULL AND cardinality(p_delays_ms) <> v_n) THEN
        RAISE EXCEPTION 'return_executions arrays have different lengths'
            USING ERRCODE = '22023', HINT = 'Pass one element per result in every array (or NULL for a whole optional array).';
    END IF;
    SELECT s INTO v_bad FROM unnest(p_statuses) AS s
     WHERE s IS NULL OR s NOT IN ('completed', 'failed', 'fatal', 'released') LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'invalid result status %', coalesce(quote_literal(v_bad), 'NULL')
            USING ERRCODE = '22023', HINT = 'Use completed, failed, fatal or released.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pgconductor.orchestrators AS o WHERE o.id = p_orchestrator_id) THEN
        RAISE EXCEPTION 'unknown orchestrator %', coalesce(p_orchestrator_id::text, 'NULL')
            USING ERRCODE = 'P0002', HINT = 'Results come from the orchestrator that claimed the executions (get_executions or heartbeat registers it).';
    END IF;
    IF v_n = 0 THEN
        RETURN;
    END IF;

    RETURN QUERY
    WITH input AS (
        SELECT u.id, u.lease, u.status, u.error, u.result, u.delay_ms, u.ord
          -- A NULL optional array unnests as all NULL (unnest pads the shorter arrays).
          FROM unnest(p_ids, p_leases, p_statuses, p_errors, p_results, p_delays_ms)
               WITH ORDINALITY AS u(id, lease, status, error, result, delay_ms, ord)
    ), first_of_id AS (
        -- A repeated id is applied once: its first occurrence; the others report 'stale'.
        SELECT DISTINCT ON (i.id) i.* FROM input AS i ORDER BY i.id, i.ord
    ), live AS MATERIALIZED (
        -- The lease check: only rows this orchestrator still holds under this lease.
        SELECT e.id, e.queue, e.attempts, e.cancel_reason, i.ord, i.status, i.error, i.result, i.delay_ms,
               coalesce(t.max_attempts, 3) AS max_attempts,
               coalesce(t.backoff_base, interval '1 second') AS backoff_base,
               coalesce(t.backoff_cap, interval '10 minutes') AS backoff_cap
          FROM first_of_id AS i
          JOIN pgconductor.executions AS e
            ON e.id = i.id AND e.locked_by = p_orchestrator_id AND e.lease = i.lease
          LEFT JOIN pgconductor.tasks AS t ON t.key = e.task_key
           FOR UPDATE OF e
    ), decided AS MATERIALIZED (
        SELECT l.*, CASE
                   WHEN l.status = 'completed' THEN 'completed'
                   WHEN l.cancel_reason IS NOT NULL THEN 'cancelled'
                   WHEN l.status = 'released' THEN 'released'
                   WHEN l.status = 'fatal' OR l.attempts >= l.max_attempts THEN 'failed'
                   ELSE 'retry_scheduled'
               END AS outcome
          FROM live AS l
    ), ended AS (
        DELETE FROM pgconductor.executions AS e
         USING decided AS d
         WHERE e.id = d.id AND e.queue = d.queue AND d.outcome IN ('completed', 'failed', 'cancelled')
        RETURNING e.*, d.outcome AS state,
                  CASE d.outcome WHEN 'completed' THEN e.last_error
                                 WHEN 'cancelled' THEN e.cancel_reason
                                 ELSE coalesce(d.error, 'failed without an error message') END AS new_error,
                  CASE WHEN d.outcome = 'completed' THEN d.result END AS new_result
    ), archived AS (
        INSERT INTO pgconductor.finished_executions
            (id, task_key, queue, payload, state, attempts, lease, priority, run_at, created_at, finished_at,
             orchestrator_id, last_error, result)
        SELECT x.id, x.task_key, x.queue, x.payload, x.state, x.attempts, x.lease, x.priority, x.run_at, x.created_at,
               v_now, x.locked_by, x.new_error, x.new_result
          FROM ended AS x
        ON CONFLICT ON CONSTRAINT finished_executions_pkey DO NOTHING
    ), requeued AS (
        UPDATE pgconductor.executions AS e
           SET locked_by = NULL, locked_at = NULL,
               attempts = CASE WHEN d.outcome = 'released' THEN greatest(e.attempts - 1, 0) ELSE e.attempts END,
               run_at = CASE WHEN d.outcome = 'released'
                             THEN v_now + make_interval(secs => greatest(coalesce(d.delay_ms, 0), 0) / 1000.0)
                             ELSE v_now + pgconductor._backoff(e.attempts, d.backoff_base, d.backoff_cap) END,
               last_error = CASE WHEN d.outcome = 'released' THEN e.last_error
                                 ELSE coalesce(d.error, 'failed without an error message') END
          FROM decided AS d
         WHERE e.id = d.id AND e.queue = d.queue AND d.outcome IN ('retry_scheduled', 'released')
    )
    SELECT i.id, coalesce(d.outcome, 'stale')
      FROM input AS i
      LEFT JOIN decided AS d ON d.id = i.id AND d.ord = i.ord
     ORDER BY i.ord;
END
$$;
