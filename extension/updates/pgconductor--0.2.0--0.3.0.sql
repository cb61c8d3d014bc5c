-- pgconductor 0.2.0 -> 0.3.0: hardening. Bad input is refused with one-line errors and
-- changes nothing; no input of one caller can lose executions, poison a batch of results or
-- stop other sessions' claims.
-- * The test clock: pgconductor.fake_now is honoured only in a database whose owner set
--   pgconductor.test_clock = on (ALTER DATABASE); elsewhere setting it raises 55000.
-- * drop_queue(q, NULL) no longer drops a queue that holds executions; a forced drop ends its
--   live executions cancelled (kept in finished_executions) instead of deleting them.
-- * Backoff is computed without overflow; task intervals (backoff, timeout) are at most
--   365 days (existing tasks are clamped), heartbeat's stale_after at most 1 day,
--   prune_finished's age at most 1000 years.
-- * Time zones must be zone names the server knows, whatever the session's abbreviations; a
--   task whose zone the server does not know counts as outside its window instead of failing
--   every claim.
-- * invoke_batch pairs elements by position whatever the arrays' lower bounds and refuses
--   multi-dimensional arrays (so does return_executions); it creates at most 10 new queues per
--   call, and a database holds at most 100 queues (54000).
-- * Partitions are named "executions_<queue>$", so no queue name collides with an index
--   (queue "pkey" used to fail with 42P07); existing partitions and their indexes are renamed.
-- * Dedupe keys are 1-250 characters; run_at must be finite; messages quote and cut what the
--   caller sent (one line, at most 60 characters of it).
-- * The claim position is written under a pinned DateStyle and ignored when it does not parse.
\echo Use "ALTER EXTENSION pgconductor UPDATE TO '0.3.0'" to load this file. \quit

-- The test clock's gate: returns p_fake as a timestamptz when the database's owner turned the
-- test clock on for this database (ALTER DATABASE ... SET pgconductor.test_clock = on), else
-- raises 55000. A role's own or a session's setting does not count: any caller could move time
-- for everyone (expire live orchestrators, write heartbeats dated far ahead). Locks nothing.
CREATE FUNCTION pgconductor._test_clock(p_fake text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_db_role_setting AS s
         WHERE s.setrole = 0
           AND s.setdatabase = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = current_database())
           AND s.setconfig && ARRAY['pgconductor.test_clock=on', 'pgconductor.test_clock=true',
                                    'pgconductor.test_clock=1', 'pgconductor.test_clock=yes']) THEN
        RAISE EXCEPTION 'pgconductor.fake_now is set, but the test clock is off in database %', quote_ident(current_database())
            USING ERRCODE = '55000',
                  HINT = 'RESET pgconductor.fake_now. In a test database its owner turns the test clock on: ALTER DATABASE <db> SET pgconductor.test_clock = on.';
    END IF;
    RETURN p_fake::timestamptz;
END
$$;

-- The one clock: pgconductor.fake_now when set and the test clock is on (tests), else the
-- transaction's start time. Locks nothing; returns timestamptz. Every time-dependent rule calls
-- this and nothing else.
-- Hot helpers such as this one use a SQL-standard body (RETURN ...): its names are bound when
-- the function is created, so there is no search_path to pin, and without a SET clause the
-- planner inlines the call (a pinned SQL function is planned anew in every statement).
CREATE OR REPLACE FUNCTION pgconductor._now()
RETURNS timestamptz
LANGUAGE sql STABLE
RETURN CASE WHEN coalesce(current_setting('pgconductor.fake_now', true), '') = '' THEN now()
            ELSE pgconductor._test_clock(current_setting('pgconductor.fake_now', true)) END;


-- The longest interval a task or orchestrator setting may hold (backoff, timeout, start-by...):
-- larger ones overflowed the time arithmetic of every later result of that task. Inlined.
CREATE FUNCTION pgconductor._max_interval()
RETURNS interval
LANGUAGE sql IMMUTABLE
RETURN interval '365 days';


-- The most queues a database may hold: each is a partition with its indexes, and a statement
-- that reads every partition locks them all (thousands exhaust the lock table: 53200). Inlined.
CREATE FUNCTION pgconductor._max_queues()
RETURNS integer
LANGUAGE sql IMMUTABLE
RETURN 100;


-- p_value made safe for an error message: quoted, control characters shown as "?", cut after
-- 60 characters, 'NULL' for NULL. One line, whatever the caller sent. Locks nothing.
CREATE FUNCTION pgconductor._show(p_value text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN CASE WHEN p_value IS NULL THEN 'NULL'
            ELSE quote_literal(regexp_replace(left(p_value, 60), '[[:cntrl:]]', '?', 'g'))
                 || CASE WHEN char_length(p_value) > 60 THEN '...' ELSE '' END END;


-- Raises 22023 with a hint unless p_key is a valid task key; returns nothing.
CREATE OR REPLACE FUNCTION pgconductor._assert_task_key(p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT pgconductor._valid_task_key(p_key) THEN
        RAISE EXCEPTION 'invalid task key %', pgconductor._show(p_key)
            USING ERRCODE = '22023',
                  HINT = 'A task key is 1-200 characters, without control characters or surrounding spaces.';
    END IF;
END
$$;

-- Raises 22023 with a hint unless p_queue is a valid queue name; returns nothing.
CREATE OR REPLACE FUNCTION pgconductor._assert_queue_name(p_queue text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT pgconductor._valid_queue_name(p_queue) THEN
        RAISE EXCEPTION 'invalid queue name %', pgconductor._show(p_queue)
            USING ERRCODE = '22023',
                  HINT = 'A queue name is 1-48 characters of a-z, 0-9, "_" and "-", starting with a letter or digit.';
    END IF;
END
$$;

-- Raises 22023 unless p_key is NULL (no deduplication) or 1-250 characters: the unique index
-- on (queue, task_key, dedupe_key) refuses entries over about 2.7 kB (54000). Returns nothing.
CREATE FUNCTION pgconductor._assert_dedupe_key(p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_key IS NOT NULL AND char_length(p_key) NOT BETWEEN 1 AND 250 THEN
        RAISE EXCEPTION 'invalid dedupe key % (% characters)', pgconductor._show(p_key), char_length(p_key)
            USING ERRCODE = '22023', HINT = 'A dedupe key is 1-250 characters (hash a longer one), or NULL for none.';
    END IF;
END
$$;

-- Raises 22023 unless p_value lies in [p_min, p_max] (p_what names the setting in the
-- message); NULL passes when p_nullable. Returns nothing.
CREATE FUNCTION pgconductor._assert_interval(p_what text, p_value interval, p_min interval, p_nullable boolean,
                                             p_max interval DEFAULT pgconductor._max_interval())
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NULL AND p_nullable THEN
        RETURN;
    END IF;
    IF p_value IS NULL OR p_value < p_min OR p_value > p_max THEN
        RAISE EXCEPTION '% must be between % and %, got %', p_what, p_min, p_max,
                        coalesce(p_value::text, 'NULL')
            USING ERRCODE = '22023', HINT = format('Pass an interval such as ''30 seconds''%s.',
                                                   CASE WHEN p_nullable THEN ', or NULL for none' ELSE '' END);
    END IF;
END
$$;

-- Raises 22023 unless p_tz names a time zone the server knows as a zone (an IANA name such
-- as Europe/Berlin, or UTC), whatever the session's timezone_abbreviations: an abbreviation
-- valid only in the registering session made every later claim of other sessions fail.
-- The SET clause restores the session's TimeZone when the function returns.
CREATE FUNCTION pgconductor._assert_timezone(p_tz text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
    IF p_tz IS NULL OR p_tz = '' OR char_length(p_tz) > 100 THEN
        RAISE invalid_parameter_value;
    END IF;
    PERFORM set_config('TimeZone', p_tz, true);
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE EXCEPTION 'unknown time zone %', pgconductor._show(p_tz)
        USING ERRCODE = '22023', HINT = 'Use a zone name such as Europe/Berlin or UTC (see pg_timezone_names); abbreviations such as CEST are not zones.';
END
$$;

-- Tasks whose daily window is closed at p_at: the claim skips them. A task whose time zone
-- the server no longer knows counts as closed, so one bad setting never fails the claims of
-- other tasks. Locks nothing; returns the task keys (empty when no task has a window).
CREATE FUNCTION pgconductor._closed_tasks(p_at timestamptz)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_closed text[] := '{}';
    v_task   record;
BEGIN
    FOR v_task IN
        SELECT t.key, t.window_start, t.window_end, t.timezone FROM pgconductor.tasks AS t
         WHERE t.window_start IS NOT NULL
    LOOP
        BEGIN
            IF NOT pgconductor._in_window(v_task.window_start, v_task.window_end, v_task.timezone, p_at) THEN
                v_closed := v_closed || v_task.key;
            END IF;
        EXCEPTION WHEN invalid_parameter_value OR data_exception THEN
            v_closed := v_closed || v_task.key;
        END;
    END LOOP;
    RETURN v_closed;
END
$$;

-- Delay before retry number p_attempt + 1: min(cap, base * 2^(attempt-1)), with "equal
-- jitter" (uniform in [d/2, d]) so retry storms spread out. Never exceeds p_cap, and never
-- overflows: computed in seconds (double precision), capped before it becomes an interval.
CREATE OR REPLACE FUNCTION pgconductor._backoff(p_attempt integer, p_base interval, p_cap interval)
RETURNS interval
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT make_interval(secs => d / 2 + d / 2 * random())
    FROM (SELECT least(extract(epoch FROM least(p_cap, pgconductor._max_interval()))::double precision,
                       greatest(extract(epoch FROM p_base)::double precision, 0)
                       * power(2::double precision, least(greatest(coalesce(p_attempt, 1), 1) - 1, 60))) AS d) AS b
$$;

-- The partition that holds queue p_queue's executions. The "$", which queue names never
-- contain, ends every partition name: index names PostgreSQL makes up end in letters (_pkey,
-- _idx, _key), so no queue's partition can collide with another's index (queue "pkey" or
-- "default_pkey" used to fail with 42P07). Inlined.
CREATE FUNCTION pgconductor._partition_name(p_queue text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN 'executions_' || p_queue || '$';


-- Trigger on queues: INSERT creates the partition, DELETE drops it, UPDATE is refused.
-- Takes the locks CREATE/DROP TABLE take on pgconductor.executions.
CREATE OR REPLACE FUNCTION pgconductor._queues_partition_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('CREATE TABLE pgconductor.%I PARTITION OF pgconductor.executions FOR VALUES IN (%L)',
                       pgconductor._partition_name(NEW.name), NEW.name);
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('DROP TABLE IF EXISTS pgconductor.%I', pgconductor._partition_name(OLD.name));
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'queues cannot be renamed'
        USING ERRCODE = '55000', HINT = 'Create a new queue with create_queue() and drop the old one with drop_queue().';
END
$$;

-- Makes sure queue p_queue exists (validating its name); cheap when it does.
-- Raises 22023 for an invalid name, 54000 when _max_queues() exist already. Returns true when
-- this call created it.
CREATE OR REPLACE FUNCTION pgconductor.create_queue(p_queue text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_created boolean;
BEGIN
    PERFORM pgconductor._assert_queue_name(p_queue);
    IF EXISTS (SELECT 1 FROM pgconductor.queues WHERE name = p_queue) THEN
        RETURN false;
    END IF;
    IF (SELECT count(*) FROM pgconductor.queues) >= pgconductor._max_queues() THEN
        RAISE EXCEPTION 'cannot create queue %: the database holds % queues, the most it may', pgconductor._show(p_queue), pgconductor._max_queues()
            USING ERRCODE = '54000', HINT = 'Drop unused queues with drop_queue(). For many tenants, use one queue and a key per tenant, not a queue each.';
    END IF;
    INSERT INTO pgconductor.queues (name) VALUES (p_queue) ON CONFLICT (name) DO NOTHING;
    GET DIAGNOSTICS v_created = ROW_COUNT;
    RETURN v_created;
END
$$;

-- Drops queue p_queue and its partition. Refuses the default queue (42501) and a queue that
-- still holds executions (55006) unless p_force is true (NULL counts as false: an argument that
-- destroys executions is never implied). Forced, its live executions end cancelled (kept in
-- finished_executions; running ones signalled). Returns false when the queue did not exist.
CREATE OR REPLACE FUNCTION pgconductor.drop_queue(p_queue text, p_force boolean DEFAULT false)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_live bigint;
BEGIN
    PERFORM pgconductor._assert_queue_name(p_queue);
    IF p_queue = 'default' THEN
        RAISE EXCEPTION 'the default queue cannot be dropped'
            USING ERRCODE = '42501', HINT = 'Drop the other queues; "default" always exists.';
    END IF;
    PERFORM 1 FROM pgconductor.queues WHERE name = p_queue FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT count(*) INTO v_live FROM pgconductor.executions WHERE queue = p_queue;
    IF v_live > 0 AND p_force IS NOT TRUE THEN
        RAISE EXCEPTION 'queue % still holds % execution(s)', quote_literal(p_queue), v_live
            USING ERRCODE = '55006', HINT = 'Wait for them to finish, cancel them, or call drop_queue(queue, p_force => true).';
    END IF;
    IF v_live > 0 THEN
        -- Forced: the live executions end cancelled, kept in finished_executions like any other
        -- end; running ones are signalled so their handlers stop.
        PERFORM pgconductor._signal(e.locked_by, 'cancel', e.id)
           FROM pgconductor.executions AS e WHERE e.queue = p_queue AND e.locked_by IS NOT NULL;
        PERFORM pgconductor._finish(e.id, p_queue, 'cancelled', format('queue %s was dropped', quote_literal(p_queue)))
           FROM pgconductor.executions AS e WHERE e.queue = p_queue;
    END IF;
    DELETE FROM pgconductor.queues WHERE name = p_queue;
    RETURN true;
END
$$;

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
CREATE OR REPLACE FUNCTION pgconductor.invoke_batch(
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

-- Creates or updates task p_key's settings (and its queue). Windows are daily [start, end) in
-- p_timezone (a zone name) and may cross midnight; intervals are at most _max_interval().
-- Raises 22023 for bad input. Returns nothing.
CREATE OR REPLACE FUNCTION pgconductor.register_task(
    p_key          text,
    p_queue        text DEFAULT 'default',
    p_max_attempts integer DEFAULT 3,
    p_window_start time DEFAULT NULL,
    p_window_end   time DEFAULT NULL,
    p_timezone     text DEFAULT 'UTC',
    p_backoff_base interval DEFAULT '1 second',
    p_backoff_cap  interval DEFAULT '10 minutes',
    p_timeout      interval DEFAULT NULL
)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgconductor._assert_task_key(p_key);
    PERFORM pgconductor._assert_queue_name(coalesce(p_queue, 'default'));
    IF p_max_attempts IS NULL OR p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, got %', coalesce(p_max_attempts::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Use 1 for "never retry".';
    END IF;
    IF (p_window_start IS NULL) <> (p_window_end IS NULL) OR p_window_start = p_window_end THEN
        RAISE EXCEPTION 'invalid window % - %', coalesce(p_window_start::text, 'NULL'), coalesce(p_window_end::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Give both ends and make them differ; a window ending before it starts crosses midnight.';
    END IF;
    PERFORM pgconductor._assert_timezone(coalesce(p_timezone, 'UTC'));
    PERFORM pgconductor._assert_interval('backoff_base', p_backoff_base, interval '0', false);
    PERFORM pgconductor._assert_interval('backoff_cap', p_backoff_cap, interval '0', false);
    IF p_backoff_cap < p_backoff_base THEN
        RAISE EXCEPTION 'backoff_cap % is below backoff_base %', p_backoff_cap, p_backoff_base
            USING ERRCODE = '22023', HINT = 'The cap bounds the doubling delays: 0 <= base <= cap.';
    END IF;
    PERFORM pgconductor._assert_interval('timeout', p_timeout, interval '1 millisecond', true);
    PERFORM pgconductor.create_queue(coalesce(p_queue, 'default'));
    INSERT INTO pgconductor.tasks AS t (key, queue, max_attempts, window_start, window_end, timezone,
                                        backoff_base, backoff_cap, timeout)
    VALUES (p_key, coalesce(p_queue, 'default'), p_max_attempts, p_window_start, p_window_end,
            coalesce(p_timezone, 'UTC'), p_backoff_base, p_backoff_cap, p_timeout)
    ON CONFLICT (key) DO UPDATE
       SET queue = excluded.queue, max_attempts = excluded.max_attempts,
           window_start = excluded.window_start, window_end = excluded.window_end,
           timezone = excluded.timezone, backoff_base = excluded.backoff_base,
           backoff_cap = excluded.backoff_cap, timeout = excluded.timeout,
           updated_at = pgconductor._now();
END
$$;

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
    IF greatest(array_ndims(p_ids), array_ndims(p_leases), array_ndims(p_statuses), array_ndims(p_errors),
                array_ndims(p_results), array_ndims(p_delays_ms)) > 1 THEN
        RAISE EXCEPTION 'return_executions takes one-dimensional arrays'
            USING ERRCODE = '22023', HINT = 'Pass a flat array with one element per result.';
    END IF;
    SELECT s INTO v_bad FROM unnest(p_statuses) AS s
     WHERE s IS NULL OR s NOT IN ('completed', 'failed', 'fatal', 'released') LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'invalid result status %', pgconductor._show(v_bad)
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

-- Registers or refreshes orchestrator p_orchestrator_id (a lapsed one comes back to life).
-- With p_held (the executions its workers hold: running or with results not yet flushed), it
-- also gives back what it holds unlisted since its previous heartbeat: claims whose reply was
-- lost. Runs recover_stale(), then deletes and returns its pending signals (kind: shutdown |
-- cancel | lease_lost) in the order they were raised.
CREATE OR REPLACE FUNCTION pgconductor.heartbeat(
    p_orchestrator_id uuid,
    p_version         text DEFAULT NULL,
    p_stale_after     interval DEFAULT '30 seconds',
    p_info            jsonb DEFAULT '{}',
    p_held            uuid[] DEFAULT NULL
)
RETURNS TABLE (kind text, execution_id uuid)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now  timestamptz := pgconductor._now();
    v_prev timestamptz;
BEGIN
    IF p_orchestrator_id IS NULL THEN
        RAISE EXCEPTION 'orchestrator id must not be NULL'
            USING ERRCODE = '22023', HINT = 'Each worker process picks one uuid and uses it for every call.';
    END IF;
    IF p_stale_after IS NULL OR p_stale_after <= interval '0' OR p_stale_after > interval '1 day' THEN
        RAISE EXCEPTION 'stale_after must be positive and at most 1 day, got %', coalesce(p_stale_after::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Use several heartbeat intervals, e.g. 30 seconds for a 5 second heartbeat.';
    END IF;
    SELECT o.last_heartbeat_at INTO v_prev FROM pgconductor.orchestrators AS o
     WHERE o.id = p_orchestrator_id AND o.stopped_at IS NULL AND o.expired_at IS NULL;
    INSERT INTO pgconductor.orchestrators AS o (id, started_at, last_heartbeat_at, stale_after, version, info)
    VALUES (p_orchestrator_id, v_now, v_now, p_stale_after, p_version, coalesce(p_info, '{}'))
    ON CONFLICT (id) DO UPDATE
       SET last_heartbeat_at = v_now, stale_after = excluded.stale_after,
           version = coalesce(excluded.version, o.version), info = excluded.info,
           expired_at = NULL, drained = false, stopped_at = NULL;

    -- Claimed before the previous beat and still not listed: the claim's reply never arrived.
    IF p_held IS NOT NULL AND v_prev IS NOT NULL THEN
        PERFORM pgconductor._release_held(p_orchestrator_id, p_held, v_prev);
    END IF;
    PERFORM pgconductor.recover_stale(1000);

    RETURN QUERY
    WITH taken AS (
        DELETE FROM pgconductor.signals AS s WHERE s.orchestrator_id = p_orchestrator_id
        RETURNING s.id, s.kind, s.execution_id
    )
    SELECT t.kind, t.execution_id FROM taken AS t ORDER BY t.id;
END
$$;

-- Retention: deletes up to p_limit finished executions that ended before now - p_older_than,
-- and orchestrators gone (stopped or drained) that long. Returns the executions deleted.
CREATE OR REPLACE FUNCTION pgconductor.prune_finished(p_older_than interval, p_limit integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cutoff timestamptz;
    v_count  integer;
BEGIN
    PERFORM pgconductor._assert_interval('older_than', p_older_than, interval '0', false, interval '1000 years');
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'prune_finished needs a positive limit, got %', coalesce(p_limit::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'For example prune_finished(interval ''7 days'', 10000).';
    END IF;
    v_cutoff := pgconductor._now() - p_older_than;
    DELETE FROM pgconductor.finished_executions AS f
     WHERE f.id IN (SELECT x.id FROM pgconductor.finished_executions AS x
                     WHERE x.finished_at < v_cutoff ORDER BY x.finished_at LIMIT p_limit);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    DELETE FROM pgconductor.orchestrators AS o
     WHERE o.drained AND coalesce(o.stopped_at, o.expired_at) < v_cutoff
       AND NOT EXISTS (SELECT 1 FROM pgconductor.executions AS e WHERE e.locked_by = o.id);
    RETURN v_count;
END
$$;

-- Tasks saved before the bound: clamp their intervals, then enforce it.
UPDATE pgconductor.tasks
   SET backoff_cap  = least(backoff_cap, pgconductor._max_interval()),
       backoff_base = least(backoff_base, pgconductor._max_interval()),
       timeout      = least(timeout, pgconductor._max_interval())
 WHERE backoff_cap > pgconductor._max_interval() OR timeout > pgconductor._max_interval();
ALTER TABLE pgconductor.tasks
    ADD CONSTRAINT tasks_backoff_cap_bounded CHECK (backoff_cap <= pgconductor._max_interval()),
    ADD CONSTRAINT tasks_timeout_bounded CHECK (timeout <= pgconductor._max_interval());

-- Partitions get their new names, and their indexes the names PostgreSQL gives the indexes
-- of a partition created with the new name (its makeObjectName rule: table name, then the
-- column part, then the label, the longer of the first two cut first to fit 63 bytes).
DO $$
DECLARE
    v_queue  text;
    v_index  record;
    v_name1  text;
    v_name2  text;
    v_label  text;
    v_len1   integer;
    v_len2   integer;
    v_avail  integer;
BEGIN
    FOR v_queue IN SELECT q.name FROM pgconductor.queues AS q LOOP
        EXECUTE format('ALTER TABLE pgconductor.%I RENAME TO %I', 'executions_' || v_queue, pgconductor._partition_name(v_queue));
        v_name1 := pgconductor._partition_name(v_queue);
        FOR v_index IN
            SELECT c.relname AS child, p.relname AS parent
              FROM pg_catalog.pg_inherits AS i
              JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
              JOIN pg_catalog.pg_class AS p ON p.oid = i.inhparent
              JOIN pg_catalog.pg_index AS x ON x.indexrelid = c.oid
             WHERE x.indrelid = format('pgconductor.%I', v_name1)::regclass
        LOOP
            v_name2 := CASE v_index.parent
                           WHEN 'executions_pkey' THEN NULL
                           WHEN 'executions_claim_idx' THEN 'priority_run_at_id_task_key_attempts'
                           WHEN 'executions_locked_by_idx' THEN 'locked_by'
                           WHEN 'executions_dedupe_key' THEN 'queue_task_key_dedupe_key'
                       END;
            v_label := CASE WHEN v_index.parent = 'executions_pkey' THEN 'pkey' ELSE 'idx' END;
            v_len1 := char_length(v_name1);
            v_len2 := coalesce(char_length(v_name2), 0);
            v_avail := 63 - (char_length(v_label) + 1) - CASE WHEN v_name2 IS NULL THEN 0 ELSE 1 END;
            WHILE v_len1 + v_len2 > v_avail LOOP
                IF v_len1 > v_len2 THEN v_len1 := v_len1 - 1; ELSE v_len2 := v_len2 - 1; END IF;
            END LOOP;
            v_name2 := concat_ws('_', left(v_name1, v_len1), left(v_name2, v_len2), v_label);
            IF v_name2 <> v_index.child THEN  -- a long name cut short may come out the same
                EXECUTE format('ALTER INDEX pgconductor.%I RENAME TO %I', v_index.child, v_name2);
            END IF;
        END LOOP;
    END LOOP;
END
$$;

-- The new internal helpers are not callable by PUBLIC (as in 90_grants.sql).
DO $$
DECLARE
    v_fn regprocedure;
BEGIN
    FOR v_fn IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'pgconductor'::regnamespace AND p.proname LIKE '\_%'
           AND p.prokind = 'f' AND p.prorettype <> 'trigger'::regtype
           AND p.proname NOT IN ('_now', '_uuid7', '_test_clock')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', v_fn);
    END LOOP;
END
$$;
