-- Cron expressions: parsing into a compact form, and the next occurrence in a time zone's
-- wall-clock time, correct across daylight-saving changes. Used by the schedules
-- (61_schedules.sql); the tick never parses again.

-- A parsed cron expression: the sorted values each field allows (seconds 0-59, {0} for a
-- 5-field expression; minutes 0-59; hours 0-23; days 1-31; months 1-12; weekdays 0-6, Sunday
-- = 0) and day_or: true when neither the day-of-month nor the day-of-week field starts with
-- "*", so that a day matches when either field does (the rule of Vixie cron); otherwise a
-- day must match both, a "*" field allowing every value.
CREATE TYPE pgconductor.cron_spec AS (
    seconds  integer[],
    minutes  integer[],
    hours    integer[],
    days     integer[],
    months   integer[],
    weekdays integer[],
    day_or   boolean
);

-- The smallest value of the sorted array p_values that is at least p_value, NULL when none.
-- Locks nothing.
CREATE FUNCTION pgconductor._cron_ge(p_values integer[], p_value integer)
RETURNS integer
LANGUAGE sql IMMUTABLE
RETURN (SELECT min(v) FROM unnest(p_values) AS v WHERE v >= p_value);

-- The sorted values one cron field allows. p_field names it in messages; values lie in
-- [p_min, p_max]; p_names (month or day names, lower case) stand for p_names_from,
-- p_names_from + 1, ... An element is "*", a value, a range a-b, either with a step /n, or a
-- list of these; "a/n" means a-p_max/n. Raises 22023 naming the field, with a hint.
CREATE FUNCTION pgconductor._cron_field(p_field text, p_text text, p_min integer, p_max integer,
                                        p_names text[] DEFAULT NULL, p_names_from integer DEFAULT 0)
RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_values integer[] := '{}';
    v_part   text;
    v_m      text[];
    v_bound  integer[];
    v_tok    text;
    v_lo     integer;
    v_hi     integer;
    v_step   integer;
    v_error  text;
BEGIN
    FOREACH v_part IN ARRAY string_to_array(lower(p_text), ',') LOOP
        v_m := regexp_match(v_part, '^(\*|([a-z0-9]+)(-([a-z0-9]+))?)(/([0-9]{1,4}))?$');
        IF v_m IS NULL THEN
            v_error := format('%s is not *, a value, a range or a step', pgconductor._show(v_part));
            EXIT;
        END IF;
        v_bound := '{}';
        FOREACH v_tok IN ARRAY ARRAY[v_m[2], v_m[4]] LOOP
            CONTINUE WHEN v_tok IS NULL;
            IF v_tok ~ '^[0-9]{1,4}$' THEN
                v_bound := v_bound || v_tok::integer;
            ELSIF array_position(p_names, v_tok) IS NOT NULL THEN
                v_bound := v_bound || (array_position(p_names, v_tok) - 1 + p_names_from);
            ELSE
                v_error := format('%s is not a number%s', pgconductor._show(v_tok), CASE WHEN p_names IS NULL THEN '' ELSE ' or a name' END);
                EXIT;
            END IF;
            IF v_bound[cardinality(v_bound)] NOT BETWEEN p_min AND p_max THEN
                v_error := format('%s is outside %s-%s', v_tok, p_min, p_max);
                EXIT;
            END IF;
        END LOOP;
        EXIT WHEN v_error IS NOT NULL;
        v_lo := coalesce(v_bound[1], p_min);
        v_hi := coalesce(v_bound[2], CASE WHEN v_m[1] = '*' OR v_m[6] IS NOT NULL THEN p_max ELSE v_lo END);
        v_step := coalesce(v_m[6]::integer, 1);
        IF v_lo > v_hi THEN
            v_error := format('range %s runs backwards', pgconductor._show(v_m[1]));
            EXIT;
        ELSIF v_step NOT BETWEEN 1 AND p_max - p_min + 1 THEN
            v_error := format('step %s is outside 1-%s', v_step, p_max - p_min + 1);
            EXIT;
        END IF;
        v_values := v_values || ARRAY(SELECT generate_series(v_lo, v_hi, v_step));
    END LOOP;
    IF v_error IS NOT NULL THEN
        RAISE EXCEPTION 'invalid cron % field %: %', p_field, pgconductor._show(p_text), v_error
            USING ERRCODE = '22023',
                  HINT = format('The %s field takes %s-%s%s: *, a value, a range a-b, a step */n or a-b/n, or a list of these.',
                                p_field, p_min, p_max,
                                CASE p_field WHEN 'month' THEN ' or JAN-DEC'
                                             WHEN 'day-of-week' THEN ' (0 and 7 are Sunday) or SUN-SAT' ELSE '' END);
    END IF;
    RETURN ARRAY(SELECT DISTINCT v FROM unnest(v_values) AS v ORDER BY v);
END
$$;

-- Parses a cron expression: 5 fields (minute hour day-of-month month day-of-week), 6 with a
-- leading seconds field, or @yearly, @annually, @monthly, @weekly, @daily, @midnight,
-- @hourly; names (JAN, mon...) in any case. Raises 22023 naming the field, with a hint, for
-- a bad field, a wrong field count, or days that no chosen month has (31 in February).
CREATE FUNCTION pgconductor._cron_parse(p_cron text)
RETURNS pgconductor.cron_spec
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_text   text := lower(btrim(coalesce(p_cron, '')));
    v_fields text[];
    v_spec   pgconductor.cron_spec;
BEGIN
    v_text := CASE v_text WHEN '@yearly' THEN '0 0 1 1 *' WHEN '@annually' THEN '0 0 1 1 *'
                          WHEN '@monthly' THEN '0 0 1 * *' WHEN '@weekly' THEN '0 0 * * 0'
                          WHEN '@daily' THEN '0 0 * * *' WHEN '@midnight' THEN '0 0 * * *'
                          WHEN '@hourly' THEN '0 * * * *' ELSE v_text END;
    v_fields := regexp_split_to_array(v_text, '\s+');
    IF v_text = '' OR cardinality(v_fields) NOT IN (5, 6) THEN
        RAISE EXCEPTION 'invalid cron expression %: % fields, not 5 or 6', pgconductor._show(p_cron),
                        CASE WHEN v_text = '' THEN 0 ELSE cardinality(v_fields) END
            USING ERRCODE = '22023',
                  HINT = 'Write minute hour day-of-month month day-of-week, such as ''*/5 * * * *'', with an optional leading seconds field, or @hourly, @daily, @weekly, @monthly, @yearly.';
    END IF;
    IF cardinality(v_fields) = 5 THEN
        v_fields := '0'::text || v_fields;
    END IF;
    v_spec.seconds := pgconductor._cron_field('second', v_fields[1], 0, 59);
    v_spec.minutes := pgconductor._cron_field('minute', v_fields[2], 0, 59);
    v_spec.hours := pgconductor._cron_field('hour', v_fields[3], 0, 23);
    v_spec.days := pgconductor._cron_field('day-of-month', v_fields[4], 1, 31);
    v_spec.months := pgconductor._cron_field('month', v_fields[5], 1, 12,
        '{jan,feb,mar,apr,may,jun,jul,aug,sep,oct,nov,dec}', 1);
    -- 7 is Sunday too.
    v_spec.weekdays := ARRAY(SELECT DISTINCT v % 7 FROM unnest(pgconductor._cron_field('day-of-week', v_fields[6], 0, 7,
        '{sun,mon,tue,wed,thu,fri,sat}', 0)) AS v ORDER BY 1);
    v_spec.day_or := left(v_fields[4], 1) <> '*' AND left(v_fields[6], 1) <> '*';
    -- A day of month that no chosen month has never comes (February has 29 days in leap years).
    IF NOT v_spec.day_or AND v_spec.days[1] > (SELECT max(CASE WHEN m = 2 THEN 29 WHEN m IN (4, 6, 9, 11) THEN 30 ELSE 31 END)
                                               FROM unnest(v_spec.months) AS m) THEN
        RAISE EXCEPTION 'invalid cron day-of-month field %: no chosen month has day %', pgconductor._show(v_fields[4]), v_spec.days[1]
            USING ERRCODE = '22023', HINT = 'February has 29 days at most; April, June, September and November 30.';
    END IF;
    RETURN v_spec;
END
$$;

-- The first wall-clock time at or after p_from (whole seconds) that p_spec matches, NULL if
-- none within the loop's bound (_cron_parse refuses expressions that never match). Skips
-- whole months, days, hours and minutes that cannot match. Locks nothing.
CREATE FUNCTION pgconductor._cron_next_local(p_spec pgconductor.cron_spec, p_from timestamp)
RETURNS timestamp
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_t    timestamp := date_trunc('second', p_from) + CASE WHEN p_from > date_trunc('second', p_from) THEN interval '1 second' ELSE interval '0' END;
    v_day  date;
    v_mon  integer;
    v_dom  integer;
    v_dow  integer;
    v_v    integer;
BEGIN
    FOR v_i IN 1..2000 LOOP
        v_day := v_t::date;
        v_mon := extract(month FROM v_day)::integer;
        IF NOT v_mon = ANY (p_spec.months) THEN
            v_v := pgconductor._cron_ge(p_spec.months, v_mon);
            v_t := CASE WHEN v_v IS NULL THEN make_timestamp(extract(year FROM v_day)::integer + 1, p_spec.months[1], 1, 0, 0, 0)
                        ELSE make_timestamp(extract(year FROM v_day)::integer, v_v, 1, 0, 0, 0) END;
            CONTINUE;
        END IF;
        v_dom := extract(day FROM v_day)::integer;
        v_dow := extract(dow FROM v_day)::integer;
        IF (p_spec.day_or AND NOT (v_dom = ANY (p_spec.days) OR v_dow = ANY (p_spec.weekdays)))
           OR (NOT p_spec.day_or AND NOT (v_dom = ANY (p_spec.days) AND v_dow = ANY (p_spec.weekdays))) THEN
            IF p_spec.day_or THEN
                v_t := v_day + 1;  -- a weekday match is at most 6 days away
            ELSE
                -- Both must match, so the day is one of p_spec.days: jump to the next, or the next month.
                v_v := pgconductor._cron_ge(p_spec.days, v_dom + 1);
                v_t := CASE WHEN v_v IS NULL OR v_v > extract(day FROM date_trunc('month', v_day::timestamp) + interval '1 month - 1 day')
                            THEN date_trunc('month', v_day::timestamp) + interval '1 month'
                            ELSE make_timestamp(extract(year FROM v_day)::integer, v_mon, v_v, 0, 0, 0) END;
            END IF;
            CONTINUE;
        END IF;
        v_v := pgconductor._cron_ge(p_spec.hours, extract(hour FROM v_t)::integer);
        IF v_v IS NULL THEN
            v_t := v_day + 1;
            CONTINUE;
        ELSIF v_v > extract(hour FROM v_t) THEN
            v_t := v_day + make_interval(hours => v_v);
        END IF;
        v_v := pgconductor._cron_ge(p_spec.minutes, extract(minute FROM v_t)::integer);
        IF v_v IS NULL THEN
            v_t := date_trunc('hour', v_t) + interval '1 hour';
            CONTINUE;
        ELSIF v_v > extract(minute FROM v_t) THEN
            v_t := date_trunc('hour', v_t) + make_interval(mins => v_v);
        END IF;
        v_v := pgconductor._cron_ge(p_spec.seconds, extract(second FROM v_t)::integer);
        IF v_v IS NULL THEN
            v_t := date_trunc('minute', v_t) + interval '1 minute';
            CONTINUE;
        END IF;
        RETURN date_trunc('minute', v_t) + make_interval(secs => v_v);
    END LOOP;
    RETURN NULL;
END
$$;

-- The UTC offset of time zone p_tz at p_at (local wall-clock time minus UTC). Locks nothing.
CREATE FUNCTION pgconductor._tz_offset(p_tz text, p_at timestamptz)
RETURNS interval
LANGUAGE sql STABLE
RETURN (p_at AT TIME ZONE p_tz) - (p_at AT TIME ZONE 'UTC');

-- The first whole second in (p_lo, p_hi] at which p_tz's UTC offset differs from its offset at
-- p_lo: the instant of a daylight-saving change, found by halving (12 steps for an hour).
-- The offset at p_hi must differ. Locks nothing.
CREATE FUNCTION pgconductor._tz_change(p_tz text, p_lo timestamptz, p_hi timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_lo     double precision := floor(extract(epoch FROM p_lo));
    v_hi     double precision := ceil(extract(epoch FROM p_hi));
    v_offset interval := pgconductor._tz_offset(p_tz, p_lo);
    v_mid    double precision;
BEGIN
    WHILE v_hi - v_lo > 1 LOOP
        v_mid := floor((v_lo + v_hi) / 2);
        IF pgconductor._tz_offset(p_tz, to_timestamp(v_mid)) = v_offset THEN
            v_lo := v_mid;
        ELSE
            v_hi := v_mid;
        END IF;
    END LOOP;
    RETURN to_timestamp(v_hi);
END
$$;

-- The instant at which wall-clock time p_local happens in time zone p_tz, by the schedules'
-- rule for daylight-saving changes: a time the clocks skip (02:30 when they jump from 02:00
-- to 03:00) happens at the first instant after the gap, when the clocks read 03:00; a time
-- they show twice (02:30 when they fall back from 03:00 to 02:00) happens the first time
-- only. Locks nothing.
CREATE FUNCTION pgconductor._cron_instant(p_tz text, p_local timestamp)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_at      timestamptz := p_local AT TIME ZONE p_tz;
    v_earlier interval;
    v_first   timestamptz;
BEGIN
    IF (v_at AT TIME ZONE p_tz) <> p_local THEN
        -- Skipped: PostgreSQL read p_local with the offset before the gap, which lands after it;
        -- the change lies between p_local read with the offset after the gap and that.
        RETURN pgconductor._tz_change(p_tz, (p_local - pgconductor._tz_offset(p_tz, v_at)) AT TIME ZONE 'UTC', v_at);
    END IF;
    -- Shown twice: PostgreSQL took the later instant. The earlier one would use the offset in
    -- force before the change (a day before: changes are months apart).
    v_earlier := pgconductor._tz_offset(p_tz, v_at - interval '1 day');
    v_first := (p_local - v_earlier) AT TIME ZONE 'UTC';
    IF v_first < v_at AND (v_first AT TIME ZONE p_tz) = p_local THEN
        RETURN v_first;
    END IF;
    RETURN v_at;
END
$$;

-- The first occurrence of p_spec strictly after p_after, in the wall-clock time of time zone
-- p_tz (a valid zone: the schedules check it once), with _cron_instant's rule across
-- daylight-saving changes, except that a schedule whose hour field allows every hour runs in
-- both passes of a repeated hour (an hourly job runs 25 times that day). NULL when there is none (never, for a parsed expression, before
-- the year 294276). Locks nothing.
CREATE FUNCTION pgconductor._cron_next(p_spec pgconductor.cron_spec, p_tz text, p_after timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_from  timestamp := date_trunc('second', p_after AT TIME ZONE p_tz) + interval '1 second';
    v_local  timestamp;
    v_at     timestamptz;
    v_change timestamptz;
    v_again  timestamp;
BEGIN
    FOR v_try IN 1..3 LOOP
        v_local := pgconductor._cron_next_local(p_spec, v_from);
        IF v_local IS NULL THEN
            RETURN NULL;
        END IF;
        v_at := pgconductor._cron_instant(p_tz, v_local);
        IF v_at > p_after AND cardinality(p_spec.hours) = 24
           AND pgconductor._tz_offset(p_tz, v_at) < pgconductor._tz_offset(p_tz, p_after) THEN
            -- Every hour, and the clocks fall back before v_at: the second pass of the repeated
            -- hour may come first (its wall-clock times were passed over above).
            v_change := pgconductor._tz_change(p_tz, p_after, v_at);
            v_again := pgconductor._cron_next_local(p_spec, v_change AT TIME ZONE p_tz);
            IF v_again IS NOT NULL AND (v_again AT TIME ZONE p_tz) > p_after AND (v_again AT TIME ZONE p_tz) < v_at THEN
                RETURN v_again AT TIME ZONE p_tz;  -- PostgreSQL reads a time shown twice as the later one
            END IF;
        END IF;
        IF v_at > p_after THEN
            RETURN v_at;
        END IF;
        -- p_after is in the second pass of a time shown twice and v_local's first pass is over.
        -- A schedule of every hour keeps its pace through the repeated hour (its second pass
        -- runs too: an every-minute job must not stop for an hour):
        IF cardinality(p_spec.hours) = 24 AND (v_local AT TIME ZONE p_tz) > p_after THEN
            RETURN v_local AT TIME ZONE p_tz;  -- PostgreSQL reads a time shown twice as the later one
        END IF;
        -- other schedules go on from the wall-clock time at which that second pass ends.
        v_from := (pgconductor._tz_change(p_tz, v_at, p_after) AT TIME ZONE 'UTC') + pgconductor._tz_offset(p_tz, v_at);
    END LOOP;
    RETURN NULL;
END
$$;
