-- Internal helpers: the one clock, input validation, windows and backoff.
-- Names start with "_" and are not granted to PUBLIC (see 90_grants.sql).

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
CREATE FUNCTION pgconductor._now()
RETURNS timestamptz
LANGUAGE sql STABLE
RETURN CASE WHEN coalesce(current_setting('pgconductor.fake_now', true), '') = '' THEN now()
            ELSE pgconductor._test_clock(current_setting('pgconductor.fake_now', true)) END;

-- A time-ordered uuid (version 7 layout): 48 bits of milliseconds from _now(), then random
-- bits. New executions get one, so rows invoked together sit together in the heap and
-- claims in (priority, run_at, id) order read few pages. Locks nothing. Inlined (see _now).
CREATE FUNCTION pgconductor._uuid7()
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
CREATE FUNCTION pgconductor._valid_task_key(p_key text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN p_key IS NOT NULL
   AND char_length(p_key) BETWEEN 1 AND 200
   AND p_key !~ '[[:cntrl:]]'
   AND p_key = btrim(p_key);

-- True when p_queue is a valid queue name: 1-48 characters of [a-z0-9_-], starting with a
-- letter or digit. The partition is named "executions_<queue>", so names map 1:1 to tables.
CREATE FUNCTION pgconductor._valid_queue_name(p_queue text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN p_queue IS NOT NULL AND p_queue ~ '^[a-z0-9][a-z0-9_-]{0,47}$';

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

-- p_value made safe for an error message: quoted, control characters and the Unicode line and
-- paragraph separators (U+2028, U+2029) shown as "?", cut after 60 characters, 'NULL' for
-- NULL. One line, whatever the caller sent. Locks nothing.
CREATE FUNCTION pgconductor._show(p_value text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN CASE WHEN p_value IS NULL THEN 'NULL'
            ELSE quote_literal(regexp_replace(left(p_value, 60), '[[:cntrl:]' || chr(8232) || chr(8233) || ']', '?', 'g'))
                 || CASE WHEN char_length(p_value) > 60 THEN '...' ELSE '' END END;

-- Raises 22023 with a hint unless p_key is a valid task key; returns nothing.
CREATE FUNCTION pgconductor._assert_task_key(p_key text)
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
CREATE FUNCTION pgconductor._assert_queue_name(p_queue text)
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

-- True when p_name is a usable event name: 1-200 characters without control characters. The
-- one rule for emit_event() and for the event waits of durable workflows. Inlined.
CREATE FUNCTION pgconductor._valid_event_name(p_name text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN char_length(p_name) BETWEEN 1 AND 200 AND p_name !~ '[[:cntrl:]]';

-- Raises 22023 unless p_key is NULL (none) or a usable concurrency key: 1-250 characters
-- without control characters (the claim joins task and key with one). Returns nothing.
CREATE FUNCTION pgconductor._assert_concurrency_key(p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_key IS NOT NULL AND (char_length(p_key) NOT BETWEEN 1 AND 250 OR p_key ~ '[[:cntrl:]]') THEN
        RAISE EXCEPTION 'invalid concurrency key % (% characters)', pgconductor._show(p_key), char_length(p_key)
            USING ERRCODE = '22023', HINT = 'A concurrency key (a tenant, a user...) is 1-250 characters without control characters, or NULL for none.';
    END IF;
END
$$;

-- Raises 22023 unless p_value is NULL (no limit) or at least 1 (p_what names the setting).
-- Returns nothing.
CREATE FUNCTION pgconductor._assert_limit(p_what text, p_value integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value < 1 THEN
        RAISE EXCEPTION '% must be at least 1, got %', p_what, p_value
            USING ERRCODE = '22023', HINT = 'Pass NULL for no limit.';
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
-- valid only in the registering session made every later claim of other sessions fail. A
-- name with a digit must be listed in pg_timezone_names (Etc/GMT+3 is, the POSIX string
-- UTC+2, which means UTC-2, is not); the others need no such look-up (150 ms). The SET
-- clause restores the session's TimeZone when the function returns.
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
    IF p_tz ~ '[0-9]' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names AS z WHERE z.name = p_tz) THEN
        RAISE invalid_parameter_value;
    END IF;
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE EXCEPTION 'unknown time zone %', pgconductor._show(p_tz)
        USING ERRCODE = '22023', HINT = 'Use a zone name such as Europe/Berlin or UTC (see pg_timezone_names); abbreviations such as CEST are not zones.';
END
$$;

-- True when p_at falls inside the daily window [p_start, p_end) read in time zone p_tz.
-- A window whose end is before its start crosses midnight (22:00-06:00). No window = always.
CREATE FUNCTION pgconductor._in_window(p_start time, p_end time, p_tz text, p_at timestamptz)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN p_start IS NULL OR p_end IS NULL THEN true
        WHEN p_start < p_end THEN l.t >= p_start AND l.t < p_end
        ELSE l.t >= p_start OR l.t < p_end
    END
    FROM (SELECT (p_at AT TIME ZONE coalesce(p_tz, 'UTC'))::time AS t) AS l
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
CREATE FUNCTION pgconductor._backoff(p_attempt integer, p_base interval, p_cap interval)
RETURNS interval
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT make_interval(secs => d / 2 + d / 2 * random())
    FROM (SELECT least(extract(epoch FROM least(p_cap, pgconductor._max_interval()))::double precision,
                       greatest(extract(epoch FROM p_base)::double precision, 0)
                       * power(2::double precision, least(greatest(coalesce(p_attempt, 1), 1) - 1, 60))) AS d) AS b
$$;
