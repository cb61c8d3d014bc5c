-- Internal helpers: the one clock, input validation, windows and backoff.
-- Names start with "_" and are not granted to PUBLIC (see 90_grants.sql).

-- The one clock: pgconductor.fake_now when set (tests), else the transaction's start time.
-- Locks nothing; returns timestamptz. Every time-dependent rule calls this and nothing else.
-- Hot helpers such as this one use a SQL-standard body (RETURN ...): its names are bound when
-- the function is created, so there is no search_path to pin, and without a SET clause the
-- planner inlines the call (a pinned SQL function is planned anew in every statement).
CREATE FUNCTION pgconductor._now()
RETURNS timestamptz
LANGUAGE sql STABLE
RETURN coalesce(nullif(current_setting('pgconductor.fake_now', true), '')::timestamptz, now());

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

-- Raises 22023 with a hint unless p_key is a valid task key; returns nothing.
CREATE FUNCTION pgconductor._assert_task_key(p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT pgconductor._valid_task_key(p_key) THEN
        RAISE EXCEPTION 'invalid task key %', coalesce(quote_literal(left(p_key, 60)), 'NULL')
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
        RAISE EXCEPTION 'invalid queue name %', coalesce(quote_literal(left(p_queue, 60)), 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'A queue name is 1-48 characters of a-z, 0-9, "_" and "-", starting with a letter or digit.';
    END IF;
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

-- Delay before retry number p_attempt + 1: min(cap, base * 2^(attempt-1)), with "equal
-- jitter" (uniform in [d/2, d]) so retry storms spread out. Never exceeds p_cap.
CREATE FUNCTION pgconductor._backoff(p_attempt integer, p_base interval, p_cap interval)
RETURNS interval
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d / 2 + d / 2 * random()
    FROM (SELECT least(p_cap, p_base * power(2, least(greatest(p_attempt, 1) - 1, 40))::double precision) AS d) AS b
$$;
