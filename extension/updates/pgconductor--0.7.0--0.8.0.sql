-- pgconductor 0.7.0 -> 0.8.0: schedules and event sources (issue 12).
-- * Cron in SQL (5/6 fields, names, DST rule) and schedules: schedule, unschedule,
--   pause_schedule, resume_schedule, backfill, schedules, occurrence_of, tick; maintain()
--   ticks them and prunes old occurrence records; static ones are synced by workers.
-- * Event subscriptions: emit_event fans out to matching subscriptions in one INSERT.
-- * Table-change triggers: subscribe_table / unsubscribe_table.
-- * Claims with limits: later rounds go on after the last row picked; the trim computes what
--   is left of the limits (_claim_spent is gone). A fair pick stops once its batch is full.
\echo Use "ALTER EXTENSION pgconductor UPDATE TO '0.8.0'" to load this file. \quit

-- ==================== 60_cron.sql
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

-- ==================== 61_schedules.sql
-- Schedules: cron expressions (60_cron.sql) that enqueue executions of a task. maintain()'s
-- tick (_tick_schedules) creates the due occurrences; the primary key of schedule_occurrences
-- makes each occurrence happen once, however many orchestrators tick.

-- One schedule per name. parsed: the cron expression parsed once; next_run_at: its next
-- occurrence, read by the tick through schedules_due_idx; missed: what the tick does with
-- occurrences that passed while nothing ticked (skip: the latest one only; catch_up: each, the
-- latest catch_up_max of them); overlap: skip creates none while the execution of the last
-- occurrence the tick created is live (last_execution_id); static: declared by a worker's code
-- (sync_static_schedules removes those the code no longer declares), false for dynamic ones.
CREATE TABLE pgconductor.schedules (
    name              text PRIMARY KEY CONSTRAINT schedules_name_valid
                          CHECK (char_length(name) BETWEEN 1 AND 200 AND name !~ '[[:cntrl:]]' AND name = btrim(name)),
    task_key          text NOT NULL CONSTRAINT schedules_task_key_valid
                          CHECK (char_length(task_key) BETWEEN 1 AND 200 AND task_key !~ '[[:cntrl:]]' AND task_key = btrim(task_key)),
    cron              text NOT NULL,
    parsed            pgconductor.cron_spec NOT NULL,
    tz                text NOT NULL DEFAULT 'UTC',
    payload           jsonb NOT NULL DEFAULT '{}',
    queue             text CONSTRAINT schedules_queue_valid CHECK (queue ~ '^[a-z0-9][a-z0-9_-]{0,47}$'),
    priority          integer NOT NULL DEFAULT 0,
    missed            text NOT NULL DEFAULT 'skip' CONSTRAINT schedules_missed_valid CHECK (missed IN ('skip', 'catch_up')),
    catch_up_max      integer NOT NULL DEFAULT 100 CONSTRAINT schedules_catch_up_max_bounded CHECK (catch_up_max BETWEEN 1 AND 1000),
    overlap           text NOT NULL DEFAULT 'allow' CONSTRAINT schedules_overlap_valid CHECK (overlap IN ('allow', 'skip')),
    paused            boolean NOT NULL DEFAULT false,
    static            boolean NOT NULL DEFAULT false,
    next_run_at       timestamptz NOT NULL,
    last_run_at       timestamptz,
    last_execution_id uuid,
    created_at        timestamptz NOT NULL DEFAULT pgconductor._now(),
    updated_at        timestamptz NOT NULL DEFAULT pgconductor._now()
);
-- The tick's only way in: due schedules, earliest first.
CREATE INDEX schedules_due_idx ON pgconductor.schedules (next_run_at) WHERE NOT paused;

-- Occurrences made, one row each: the primary key is what makes an occurrence exactly-once.
-- execution_id: the execution it enqueued (_occurrence_of reads it back).
CREATE TABLE pgconductor.schedule_occurrences (
    schedule     text NOT NULL REFERENCES pgconductor.schedules (name) ON DELETE CASCADE,
    occurs_at    timestamptz NOT NULL,
    execution_id uuid,
    created_at   timestamptz NOT NULL DEFAULT pgconductor._now(),
    CONSTRAINT schedule_occurrences_pkey PRIMARY KEY (schedule, occurs_at)
);
CREATE INDEX schedule_occurrences_execution_idx ON pgconductor.schedule_occurrences (execution_id);
CREATE INDEX schedule_occurrences_created_at_idx ON pgconductor.schedule_occurrences (created_at);

-- The latest p_max occurrences of p_spec in [p_first, p_now], oldest first; p_first is an
-- occurrence (a schedule's next_run_at). Walks forward when few are due; otherwise halves the
-- time since p_first to find where the last p_max begin, so the cost is about
-- p_max * log2(seconds missed) steps of _cron_next, not one per occurrence missed.
CREATE FUNCTION pgconductor._cron_due(p_spec pgconductor.cron_spec, p_tz text, p_first timestamptz,
                                      p_now timestamptz, p_max integer)
RETURNS timestamptz[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_due timestamptz[] := '{}';
    v_at  timestamptz := p_first;
    v_lo  double precision;
    v_hi  double precision;
    v_mid double precision;
BEGIN
    WHILE v_at <= p_now AND cardinality(v_due) <= p_max LOOP
        v_due := v_due || v_at;
        v_at := pgconductor._cron_next(p_spec, p_tz, v_at);
    END LOOP;
    IF cardinality(v_due) <= p_max THEN
        RETURN v_due;
    END IF;
    -- More than p_max are due: find the largest whole second x with at least p_max
    -- occurrences in (x, p_now]; exactly p_max lie there (occurrences are whole seconds).
    v_lo := extract(epoch FROM p_first) - 1;
    v_hi := floor(extract(epoch FROM p_now));
    WHILE v_hi - v_lo > 1 LOOP
        v_mid := floor((v_lo + v_hi) / 2);
        v_at := to_timestamp(v_mid);
        FOR v_i IN 1..p_max LOOP
            v_at := pgconductor._cron_next(p_spec, p_tz, v_at);
            EXIT WHEN v_at > p_now;
        END LOOP;
        IF v_at <= p_now THEN
            v_lo := v_mid;
        ELSE
            v_hi := v_mid;
        END IF;
    END LOOP;
    v_due := '{}';
    v_at := to_timestamp(v_lo);
    FOR v_i IN 1..p_max LOOP
        v_at := pgconductor._cron_next(p_spec, p_tz, v_at);
        v_due := v_due || v_at;
    END LOOP;
    RETURN v_due;
END
$$;

-- Creates occurrence p_at of schedule p_schedule unless it exists: a row in
-- schedule_occurrences, then an execution of its task with the schedule's payload, queue and
-- priority, run_at = p_at, dedupe key 'schedule:<name>:<epoch seconds>'. The caller holds the
-- schedule's row lock. Returns the execution's id, NULL when the occurrence existed.
CREATE FUNCTION pgconductor._create_occurrence(p_schedule pgconductor.schedules, p_at timestamptz)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id uuid;
BEGIN
    INSERT INTO pgconductor.schedule_occurrences (schedule, occurs_at) VALUES (p_schedule.name, p_at)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT s.id INTO v_id FROM pgconductor._submit_one(
        p_schedule.task_key, p_schedule.payload, p_schedule.queue, p_at, p_schedule.priority,
        format('schedule:%s:%s', p_schedule.name, extract(epoch FROM p_at)::bigint), NULL, 'keep',
        NULL, NULL, NULL, NULL) AS s;
    UPDATE pgconductor.schedule_occurrences AS o SET execution_id = v_id
     WHERE o.schedule = p_schedule.name AND o.occurs_at = p_at;
    RETURN v_id;
END
$$;

-- The schedules' tick, called by maintain(): takes up to p_limit schedules due at p_now (not
-- paused), earliest first, through schedules_due_idx (cost grows with the due ones, not with
-- all schedules), each row locked FOR UPDATE SKIP LOCKED so concurrent ticks share them out.
-- For each it creates the latest due occurrence (missed = skip) or each due one, the latest
-- catch_up_max (catch_up), none while the last one's execution is live (overlap = skip, which
-- also creates one at most), then moves next_run_at past p_now. Returns the occurrences made.
CREATE FUNCTION pgconductor._tick_schedules(p_now timestamptz, p_limit integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_s     pgconductor.schedules;
    v_at    timestamptz;
    v_id    uuid;
    v_last  uuid;
    v_ran   timestamptz;
    v_count integer := 0;
BEGIN
    FOR v_s IN
        SELECT s.* FROM pgconductor.schedules AS s
         WHERE s.next_run_at <= p_now AND NOT s.paused
         ORDER BY s.next_run_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    LOOP
        v_last := NULL;
        v_ran := NULL;
        IF v_s.overlap = 'allow' OR v_s.last_execution_id IS NULL
           OR NOT EXISTS (SELECT 1 FROM pgconductor.executions AS e WHERE e.id = v_s.last_execution_id) THEN
            FOREACH v_at IN ARRAY pgconductor._cron_due(
                v_s.parsed, v_s.tz, v_s.next_run_at, p_now,
                CASE WHEN v_s.missed = 'catch_up' AND v_s.overlap = 'allow' THEN v_s.catch_up_max ELSE 1 END)
            LOOP
                v_id := pgconductor._create_occurrence(v_s, v_at);
                IF v_id IS NOT NULL THEN
                    v_count := v_count + 1;
                    v_last := v_id;
                    v_ran := v_at;
                END IF;
            END LOOP;
        END IF;
        UPDATE pgconductor.schedules AS s
           SET next_run_at = pgconductor._cron_next(v_s.parsed, v_s.tz, p_now),
               last_run_at = coalesce(v_ran, s.last_run_at),
               last_execution_id = coalesce(v_last, s.last_execution_id)
         WHERE s.name = v_s.name;
    END LOOP;
    RETURN v_count;
END
$$;

-- The schedules' tick alone, for workers that tick every second (maintain() ticks too, every
-- pass): creates the occurrences due now of up to p_limit schedules (_tick_schedules). Row
-- locks: those schedules (SKIP LOCKED). Returns how many occurrences it made. Raises 22023
-- for a limit outside 1..100000.
CREATE FUNCTION pgconductor.tick(p_limit integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'tick needs a limit between 1 and 100000, got %', coalesce(p_limit::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'The limit bounds the schedules one tick serves; the rest wait for the next.';
    END IF;
    RETURN pgconductor._tick_schedules(pgconductor._now(), p_limit);
END
$$;

-- Deletes up to p_limit occurrence records made more than _keep_events() before p_now (their
-- executions stay; the tick never goes back past next_run_at, but a backfill of a period that
-- old makes its occurrences again). Returns how many. Called by maintain().
CREATE FUNCTION pgconductor._prune_schedule_occurrences(p_now timestamptz, p_limit integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    DELETE FROM pgconductor.schedule_occurrences AS o
     WHERE (o.schedule, o.occurs_at) IN (
        SELECT x.schedule, x.occurs_at FROM pgconductor.schedule_occurrences AS x
         WHERE x.created_at < p_now - pgconductor._keep_events()
         ORDER BY x.created_at LIMIT p_limit);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Raises 22023 unless p_name is a usable schedule name (the rule of task keys). Returns nothing.
CREATE FUNCTION pgconductor._assert_schedule_name(p_name text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT coalesce(pgconductor._valid_task_key(p_name), false) THEN
        RAISE EXCEPTION 'invalid schedule name %', pgconductor._show(p_name)
            USING ERRCODE = '22023',
                  HINT = 'A schedule name is 1-200 characters, without control characters or surrounding spaces.';
    END IF;
END
$$;

-- The row of schedule p_name, locked FOR UPDATE; raises P0002 when there is none.
CREATE FUNCTION pgconductor._lock_schedule(p_name text)
RETURNS pgconductor.schedules
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_s pgconductor.schedules;
BEGIN
    SELECT s.* INTO v_s FROM pgconductor.schedules AS s WHERE s.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown schedule %', pgconductor._show(p_name)
            USING ERRCODE = 'P0002', HINT = 'pgconductor.schedules() lists the schedules.';
    END IF;
    RETURN v_s;
END
$$;

-- Creates schedule p_name, or updates it (its next run is computed again, from now, only when
-- the cron expression or the time zone changed; a paused one stays paused): executions of
-- p_task_key with p_payload at each occurrence of p_cron in time zone p_tz (see
-- _cron_instant for daylight-saving changes). Locks the schedule's row. Returns its next run.
-- Raises 22023 for a bad name, task key, cron field, time zone, queue or option.
CREATE FUNCTION pgconductor.schedule(
    p_name         text,
    p_task_key     text,
    p_cron         text,
    p_payload      jsonb DEFAULT '{}',
    p_tz           text DEFAULT 'UTC',
    p_queue        text DEFAULT NULL,
    p_missed       text DEFAULT 'skip',
    p_overlap      text DEFAULT 'allow',
    p_priority     integer DEFAULT 0,
    p_static       boolean DEFAULT false,
    p_catch_up_max integer DEFAULT 100
)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_spec pgconductor.cron_spec;
    v_next timestamptz;
BEGIN
    PERFORM pgconductor._assert_schedule_name(p_name);
    PERFORM pgconductor._assert_task_key(p_task_key);
    v_spec := pgconductor._cron_parse(p_cron);
    PERFORM pgconductor._assert_timezone(p_tz);
    IF p_queue IS NOT NULL THEN
        PERFORM pgconductor._assert_queue_name(p_queue);
    END IF;
    IF p_missed IS NULL OR p_missed NOT IN ('skip', 'catch_up') THEN
        RAISE EXCEPTION 'invalid missed policy %', pgconductor._show(p_missed)
            USING ERRCODE = '22023', HINT = 'missed is ''skip'' (run the latest missed occurrence once) or ''catch_up'' (run each, up to catch_up_max).';
    END IF;
    IF p_overlap IS NULL OR p_overlap NOT IN ('allow', 'skip') THEN
        RAISE EXCEPTION 'invalid overlap policy %', pgconductor._show(p_overlap)
            USING ERRCODE = '22023', HINT = 'overlap is ''allow'' or ''skip'' (no new occurrence while the last one runs).';
    END IF;
    IF p_catch_up_max IS NULL OR p_catch_up_max NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'catch_up_max must be between 1 and 1000, got %', coalesce(p_catch_up_max::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'backfill() makes more occurrences of a past period.';
    END IF;
    IF p_priority IS NULL OR p_static IS NULL THEN
        RAISE EXCEPTION 'priority and static must not be NULL'
            USING ERRCODE = '22023', HINT = 'Leave them out for the defaults (priority 0, static false).';
    END IF;
    v_next := pgconductor._cron_next(v_spec, p_tz, pgconductor._now());
    INSERT INTO pgconductor.schedules AS s
        (name, task_key, cron, parsed, tz, payload, queue, priority, missed, catch_up_max, overlap, static, next_run_at)
    VALUES (p_name, p_task_key, p_cron, v_spec, p_tz, coalesce(p_payload, '{}'), p_queue, p_priority, p_missed,
            p_catch_up_max, p_overlap, p_static, v_next)
    ON CONFLICT (name) DO UPDATE
       SET task_key = excluded.task_key, cron = excluded.cron, parsed = excluded.parsed, tz = excluded.tz,
           payload = excluded.payload, queue = excluded.queue, priority = excluded.priority, missed = excluded.missed,
           catch_up_max = excluded.catch_up_max, overlap = excluded.overlap, static = excluded.static,
           next_run_at = CASE WHEN s.parsed IS NOT DISTINCT FROM excluded.parsed AND s.tz = excluded.tz
                              THEN s.next_run_at ELSE excluded.next_run_at END,
           updated_at = pgconductor._now()
    RETURNING s.next_run_at INTO v_next;
    RETURN v_next;
END
$$;

-- Deletes schedule p_name and its occurrence records; executions it already made stay.
-- Returns true, or false when there was no such schedule (so a clean-up may run twice).
CREATE FUNCTION pgconductor.unschedule(p_name text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM pgconductor.schedules AS s WHERE s.name = p_name;
    RETURN FOUND;
END
$$;

-- Pauses schedule p_name: the tick skips it until resume_schedule(). Locks its row. Returns
-- nothing; raises P0002 for an unknown name.
CREATE FUNCTION pgconductor.pause_schedule(p_name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgconductor._lock_schedule(p_name);
    UPDATE pgconductor.schedules AS s SET paused = true, updated_at = pgconductor._now() WHERE s.name = p_name;
END
$$;

-- Resumes schedule p_name. With missed = skip the occurrences of the pause are dropped: its
-- next run is the first occurrence after now; with catch_up its next run stays, so the tick
-- makes the occurrences of the pause (the latest catch_up_max). Locks its row. Returns its
-- next run; raises P0002 for an unknown name.
CREATE FUNCTION pgconductor.resume_schedule(p_name text)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_s pgconductor.schedules := pgconductor._lock_schedule(p_name);
BEGIN
    UPDATE pgconductor.schedules AS s
       SET paused = false, updated_at = pgconductor._now(),
           next_run_at = CASE WHEN s.paused AND s.missed = 'skip'
                              THEN pgconductor._cron_next(s.parsed, s.tz, pgconductor._now()) ELSE s.next_run_at END
     WHERE s.name = p_name
    RETURNING s.next_run_at INTO v_s.next_run_at;
    RETURN v_s.next_run_at;
END
$$;

-- Creates each occurrence of schedule p_name in [p_from, p_to) not made yet (paused or not;
-- overlap does not apply), with executions run_at = the occurrence. Locks the schedule's row.
-- Returns how many it made. Raises P0002 for an unknown name, 22023 for a bad period or one
-- with more than 10,000 occurrences (nothing is made then).
CREATE FUNCTION pgconductor.backfill(p_name text, p_from timestamptz, p_to timestamptz)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_s     pgconductor.schedules;
    v_at    timestamptz;
    v_due   timestamptz[] := '{}';
    v_count integer := 0;
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR NOT isfinite(p_from) OR NOT isfinite(p_to) OR p_from > p_to THEN
        RAISE EXCEPTION 'invalid backfill period [%, %)', coalesce(p_from::text, 'NULL'), coalesce(p_to::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Pass two finite times, the first not after the second.';
    END IF;
    v_s := pgconductor._lock_schedule(p_name);
    v_at := pgconductor._cron_next(v_s.parsed, v_s.tz, p_from - interval '1 microsecond');
    WHILE v_at < p_to LOOP
        IF cardinality(v_due) = 10000 THEN
            RAISE EXCEPTION 'backfill of % from % to % has more than 10000 occurrences', pgconductor._show(p_name), p_from, p_to
                USING ERRCODE = '22023', HINT = 'Backfill a shorter period at a time.';
        END IF;
        v_due := v_due || v_at;
        v_at := pgconductor._cron_next(v_s.parsed, v_s.tz, v_at);
    END LOOP;
    FOREACH v_at IN ARRAY v_due LOOP
        IF pgconductor._create_occurrence(v_s, v_at) IS NOT NULL THEN
            v_count := v_count + 1;
        END IF;
    END LOOP;
    RETURN v_count;
END
$$;

-- The schedules, by name, with their next and last runs. Locks nothing.
CREATE FUNCTION pgconductor.schedules()
RETURNS TABLE (name text, task_key text, cron text, tz text, next_run_at timestamptz, last_run_at timestamptz,
               paused boolean, static boolean, missed text, overlap text, queue text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.name, s.task_key, s.cron, s.tz, s.next_run_at, s.last_run_at, s.paused, s.static, s.missed, s.overlap, s.queue
      FROM pgconductor.schedules AS s
     ORDER BY s.name
$$;

-- Called at worker start with the static schedules its code declares: deletes the other
-- static schedules (of the tasks p_task_keys when given, so a worker serving some tasks
-- leaves the others' alone). Dynamic schedules are never deleted. Returns how many it deleted.
CREATE FUNCTION pgconductor.sync_static_schedules(p_names text[], p_task_keys text[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    DELETE FROM pgconductor.schedules AS s
     WHERE s.static AND s.name <> ALL (coalesce(p_names, '{}'))
       AND (p_task_keys IS NULL OR s.task_key = ANY (p_task_keys));
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- The occurrence time of the schedule occurrence that enqueued execution p_execution_id, NULL
-- for an execution no schedule made (or whose record retention pruned). Locks nothing.
CREATE FUNCTION pgconductor.occurrence_of(p_execution_id uuid)
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.occurs_at FROM pgconductor.schedule_occurrences AS o WHERE o.execution_id = p_execution_id
$$;

-- ==================== 62_subscriptions.sql
-- Event subscriptions: a task subscribes to an event name, with a containment filter and a
-- projection of the payload's top-level fields. emit_event() fans an event out to every
-- matching subscription in the emitter's transaction (_fan_out_event): one execution each,
-- whose payload is the projection (the event's id is in its dedupe key, 'event:<id>:<sub>').

-- One row per (task, event name). match: the payload must contain it ('{}': every event of
-- the name); fields: the top-level payload fields the handler gets (NULL: the whole payload);
-- queue NULL: the task's queue at emit time; static: declared in code and removed by the
-- worker's sync when no longer declared (a dynamic one is removed only by unsubscribe()).
CREATE TABLE pgconductor.subscriptions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_key   text NOT NULL CONSTRAINT subscriptions_task_key_valid
                   CHECK (char_length(task_key) BETWEEN 1 AND 200 AND task_key !~ '[[:cntrl:]]' AND task_key = btrim(task_key)),
    event      text NOT NULL CONSTRAINT subscriptions_event_valid
                   CHECK (char_length(event) BETWEEN 1 AND 200 AND event !~ '[[:cntrl:]]'),
    match      jsonb NOT NULL DEFAULT '{}' CONSTRAINT subscriptions_match_object CHECK (jsonb_typeof(match) = 'object'),
    fields     text[] CONSTRAINT subscriptions_fields_not_empty CHECK (cardinality(fields) >= 1),
    queue      text CONSTRAINT subscriptions_queue_valid CHECK (queue ~ '^[a-z0-9][a-z0-9_-]{0,47}$'),
    priority   integer NOT NULL DEFAULT 0,
    static     boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT pgconductor._now(),
    -- Event first: the fan-out reads the subscriptions of one name through this index.
    CONSTRAINT subscriptions_event_task_key UNIQUE (event, task_key)
);

-- p_object keeping only the top-level keys in p_keys (all of it for NULL keys); keys it
-- lacks are left out. Locks nothing.
CREATE FUNCTION pgconductor._project(p_object jsonb, p_keys text[])
RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN CASE WHEN p_keys IS NULL THEN p_object
            ELSE (SELECT coalesce(jsonb_object_agg(o.key, o.value), '{}') FROM jsonb_each(p_object) AS o
                   WHERE o.key = ANY (p_keys)) END;

-- Subscribes task p_task_key to event p_event (upsert: an existing subscription of the pair
-- takes the new settings). Creates p_queue when given and missing. Row lock: the
-- subscription. Raises 22023 for a bad task key, event name, match (a JSON object), fields
-- (non-empty, no NULL or empty name) or queue. Returns the subscription's id.
CREATE FUNCTION pgconductor.subscribe(
    p_task_key text,
    p_event    text,
    p_match    jsonb DEFAULT '{}',
    p_fields   text[] DEFAULT NULL,
    p_queue    text DEFAULT NULL,
    p_static   boolean DEFAULT false,
    p_priority integer DEFAULT 0
)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    PERFORM pgconductor._assert_task_key(p_task_key);
    IF NOT coalesce(pgconductor._valid_event_name(p_event), false) THEN
        RAISE EXCEPTION 'invalid event name %', pgconductor._show(p_event)
            USING ERRCODE = '22023', HINT = 'An event name is 1-200 characters without control characters, e.g. order.paid.';
    END IF;
    IF jsonb_typeof(coalesce(p_match, '{}')) <> 'object' THEN
        RAISE EXCEPTION 'a subscription''s match must be a JSON object, got %', pgconductor._show(p_match::text)
            USING ERRCODE = '22023', HINT = 'For example {"status": "paid"}; {} matches every event of the name.';
    END IF;
    IF p_fields IS NOT NULL AND (cardinality(p_fields) = 0 OR array_ndims(p_fields) > 1
                                 OR EXISTS (SELECT 1 FROM unnest(p_fields) AS f WHERE coalesce(f, '') = '')) THEN
        RAISE EXCEPTION 'invalid fields %', pgconductor._show(p_fields::text)
            USING ERRCODE = '22023', HINT = 'List the top-level payload fields the handler gets, e.g. {order_id,amount}; NULL for the whole payload.';
    END IF;
    IF p_queue IS NOT NULL THEN
        PERFORM pgconductor.create_queue(p_queue);
    END IF;
    INSERT INTO pgconductor.subscriptions AS s (task_key, event, match, fields, queue, priority, static)
    VALUES (p_task_key, p_event, coalesce(p_match, '{}'), p_fields, p_queue, coalesce(p_priority, 0), coalesce(p_static, false))
    ON CONFLICT (event, task_key) DO UPDATE
       SET match = excluded.match, fields = excluded.fields, queue = excluded.queue,
           priority = excluded.priority, static = excluded.static
    RETURNING s.id INTO v_id;
    RETURN v_id;
END
$$;

-- Removes the subscription of task p_task_key to event p_event, static or dynamic. Row
-- lock: the subscription. Returns false when there was none.
CREATE FUNCTION pgconductor.unsubscribe(p_task_key text, p_event text)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM pgconductor.subscriptions AS s WHERE s.event = p_event AND s.task_key = p_task_key RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM gone)
$$;

-- Every subscription, by event name then task. Locks nothing.
CREATE FUNCTION pgconductor.subscriptions()
RETURNS TABLE (id bigint, task_key text, event text, match jsonb, fields text[], queue text, priority integer,
               static boolean, created_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.id, s.task_key, s.event, s.match, s.fields, s.queue, s.priority, s.static, s.created_at
      FROM pgconductor.subscriptions AS s
     ORDER BY s.event, s.task_key
$$;

-- Worker start: deletes the static subscriptions of the tasks p_task_keys (the tasks the
-- worker serves) that are not among the declared pairs (p_events[i] of p_declared_tasks[i]);
-- the worker subscribed those with p_static => true just before. Subscriptions of other tasks
-- and dynamic ones stay. Row locks: the deleted rows. Returns how many it deleted.
CREATE FUNCTION pgconductor.sync_static_subscriptions(p_task_keys text[], p_declared_tasks text[], p_events text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    IF coalesce(cardinality(p_declared_tasks), 0) <> coalesce(cardinality(p_events), 0) THEN
        RAISE EXCEPTION 'declared tasks and events have different lengths'
            USING ERRCODE = '22023', HINT = 'Pass one task key per declared event.';
    END IF;
    DELETE FROM pgconductor.subscriptions AS s
     WHERE s.static AND s.task_key = ANY (p_task_keys)
       AND (s.task_key, s.event) NOT IN (SELECT d.t, d.e FROM unnest(p_declared_tasks, p_events) AS d(t, e)
                                          WHERE d.t IS NOT NULL AND d.e IS NOT NULL);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Fans event p_event_id (name p_name, payload p_payload, a JSON object) out: one execution
-- per subscription of p_name whose match p_payload contains, payload the subscription's
-- projection, in the subscription's queue (else the task's, else 'default'; created when
-- missing) with its priority, run now. One INSERT for all of them. Dedupe key
-- 'event:<event id>:<subscription id>': a second fan-out of the same event while the first
-- execution lives makes none. Called by emit_event() in the emitter's transaction; cost
-- O(subscriptions of the name). Notifies pgconductor_invoke per queue. Returns how many it made.
CREATE FUNCTION pgconductor._fan_out_event(p_event_id bigint, p_name text, p_payload jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now    timestamptz := pgconductor._now();
    v_count  integer;
    v_queues text[];
BEGIN
    -- Usually no row: the queues exist (subscribe() and register_task() make them).
    PERFORM pgconductor.create_queue(m.queue)
       FROM (SELECT DISTINCT coalesce(s.queue, t.queue, 'default') AS queue
               FROM pgconductor.subscriptions AS s
               LEFT JOIN pgconductor.tasks AS t ON t.key = s.task_key
              WHERE s.event = p_name AND p_payload @> s.match) AS m
      WHERE NOT EXISTS (SELECT 1 FROM pgconductor.queues AS q WHERE q.name = m.queue);

    WITH made AS (
        INSERT INTO pgconductor.executions AS e (task_key, queue, payload, run_at, priority, dedupe_key, start_by)
        SELECT s.task_key, coalesce(s.queue, t.queue, 'default'), pgconductor._project(p_payload, s.fields), v_now,
               s.priority, 'event:' || p_event_id || ':' || s.id, v_now + t.start_within
          FROM pgconductor.subscriptions AS s
          LEFT JOIN pgconductor.tasks AS t ON t.key = s.task_key
         WHERE s.event = p_name AND p_payload @> s.match
         ORDER BY s.id
        ON CONFLICT (queue, task_key, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
        RETURNING e.queue
    )
    SELECT count(*), array_agg(DISTINCT m.queue) INTO v_count, v_queues FROM made AS m;
    PERFORM pg_notify('pgconductor_invoke', q) FROM unnest(v_queues) AS q;
    RETURN v_count;
END
$$;

-- ==================== 63_table_triggers.sql
-- Database-change triggers: subscribe_table() puts an AFTER ROW trigger on a user's table whose
-- every insert, update or delete (the chosen ones) enqueues an execution of a task, in the
-- changing transaction (a rollback makes none), with payload {op, table, old, new}.

-- One row per (task, table). table_name: the table (regclass: dump and restore keep it by
-- name); ops: some of insert, update, delete; columns: the columns old and new carry (NULL:
-- all); when_clause: the trigger's WHEN condition, the subscriber's own SQL; queue NULL: the
-- task's queue; trigger_name: the trigger on the table; static: declared in code (see
-- sync_static_table_subscriptions).
CREATE TABLE pgconductor.table_subscriptions (
    task_key     text NOT NULL CONSTRAINT table_subscriptions_task_key_valid
                     CHECK (char_length(task_key) BETWEEN 1 AND 200 AND task_key !~ '[[:cntrl:]]' AND task_key = btrim(task_key)),
    table_name   regclass NOT NULL,
    ops          text[] NOT NULL CONSTRAINT table_subscriptions_ops_valid
                     CHECK (cardinality(ops) >= 1 AND ops <@ ARRAY['insert', 'update', 'delete']),
    columns      text[],
    when_clause  text,
    queue        text CONSTRAINT table_subscriptions_queue_valid CHECK (queue ~ '^[a-z0-9][a-z0-9_-]{0,47}$'),
    trigger_name text NOT NULL,
    static       boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT pgconductor._now(),
    CONSTRAINT table_subscriptions_pkey PRIMARY KEY (task_key, table_name)
);

-- The name of task p_task_key's trigger on any table: 'pgconductor_' and 20 hex digits of
-- the key's md5 (task keys may hold any character; trigger names are at most 63 bytes).
CREATE FUNCTION pgconductor._table_trigger_name(p_task_key text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN 'pgconductor_' || left(md5(p_task_key), 20);

-- The table or other relation p_table names, NULL when none does or the name is not one
-- (to_regclass raises for some malformed names). Locks nothing.
CREATE FUNCTION pgconductor._regclass(p_table text)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN to_regclass(p_table);
EXCEPTION WHEN invalid_name OR syntax_error OR feature_not_supported OR name_too_long THEN
    RETURN NULL;
END
$$;

-- The table p_table names ('schema.table', quoted as SQL quotes identifiers, e.g.
-- '"My Schema"."Orders"'; unqualified names are looked up in pg_catalog only). Raises 42P01
-- for an unknown table or a bad name, 42809 for a view or other non-table or a partition (its
-- partitioned table is subscribed), 22023 for a table of pgconductor or of the system. Locks nothing.
CREATE FUNCTION pgconductor._user_table(p_table text)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table regclass;
    v_kind  "char";
    v_part  boolean;
    v_nsp   text;
BEGIN
    v_table := pgconductor._regclass(p_table);
    IF v_table IS NULL THEN
        RAISE EXCEPTION 'unknown table %', pgconductor._show(p_table)
            USING ERRCODE = '42P01', HINT = 'Name it with its schema, quoted as in SQL: public.orders, "My Schema"."Orders".';
    END IF;
    SELECT c.relkind, c.relispartition, n.nspname INTO v_kind, v_part, v_nsp
      FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace WHERE c.oid = v_table;
    IF v_part THEN
        RAISE EXCEPTION '% is a partition', pgconductor._show(p_table)
            USING ERRCODE = '42809', HINT = 'Subscribe to its partitioned table: the trigger reaches every partition.';
    END IF;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', pgconductor._show(p_table)
            USING ERRCODE = '42809', HINT = 'Subscribe to a table (plain or partitioned), not a view, sequence or index.';
    END IF;
    IF v_nsp IN ('pgconductor', 'pg_catalog', 'information_schema') OR v_nsp LIKE 'pg\_toast%' THEN
        RAISE EXCEPTION 'cannot subscribe to % of schema %', pgconductor._show(p_table), quote_ident(v_nsp)
            USING ERRCODE = '22023', HINT = 'Subscribe to the tables of your own schemas.';
    END IF;
    RETURN v_table;
END
$$;

-- Raises 22023 unless p_when is NULL or can only be one expression inside the trigger's
-- WHEN (...): parentheses balanced, no ";", comment, dollar quote or backslash outside or
-- (backslash) inside quotes, no quote left open. This keeps a WHEN clause from closing the
-- CREATE TRIGGER statement; what the expression does is the subscriber's own SQL. Returns nothing.
CREATE FUNCTION pgconductor._assert_when_clause(p_when text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n     integer := char_length(p_when);
    v_i     integer := 1;
    v_c     text;
    v_quote text;  -- the quote character we are inside of, NULL outside
    v_depth integer := 0;
    v_why   text;
BEGIN
    IF p_when IS NULL THEN
        RETURN;
    END IF;
    IF btrim(p_when) = '' OR v_n > 2000 THEN
        v_why := 'it is empty or longer than 2000 characters';
    ELSIF strpos(p_when, '\') > 0 THEN
        v_why := 'it holds a backslash';
    END IF;
    WHILE v_why IS NULL AND v_i <= v_n LOOP
        v_c := substr(p_when, v_i, 1);
        IF v_quote IS NOT NULL THEN
            IF v_c = v_quote AND substr(p_when, v_i + 1, 1) = v_quote THEN
                v_i := v_i + 1;  -- a doubled quote stays inside
            ELSIF v_c = v_quote THEN
                v_quote := NULL;
            END IF;
        ELSIF v_c IN ('''', '"') THEN
            v_quote := v_c;
        ELSIF v_c = '(' THEN
            v_depth := v_depth + 1;
        ELSIF v_c = ')' THEN
            v_depth := v_depth - 1;
            IF v_depth < 0 THEN
                v_why := 'it closes a parenthesis it did not open';
            END IF;
        ELSIF v_c IN (';', '$') OR substr(p_when, v_i, 2) IN ('--', '/*') THEN
            v_why := format('it holds %s outside quotes', quote_literal(CASE WHEN v_c IN (';', '$') THEN v_c ELSE substr(p_when, v_i, 2) END));
        END IF;
        v_i := v_i + 1;
    END LOOP;
    IF v_why IS NULL AND (v_quote IS NOT NULL OR v_depth <> 0) THEN
        v_why := 'a quote or parenthesis is left open';
    END IF;
    IF v_why IS NOT NULL THEN
        RAISE EXCEPTION 'invalid when clause %: %', pgconductor._show(p_when), v_why
            USING ERRCODE = '22023', HINT = 'Pass one boolean SQL expression over OLD and NEW, e.g. NEW.status = ''paid'', without ";", comments, "$" or backslashes.';
    END IF;
END
$$;

-- The trigger function of every table subscription (AFTER ROW). TG_ARGV: task key, queue
-- ('' for the task's), then the chosen columns (none: all). Enqueues one execution (one
-- INSERT, _submit_one) with payload {op: insert|update|delete, table: "schema.name" (a
-- partition's row names its partitioned table), old, new}, old and new holding only the
-- chosen columns (NULL where the op has none). An update that changed none of them enqueues
-- nothing. SECURITY DEFINER: whoever may change the table enqueues through it, with no
-- privilege on pgconductor's tables. Returns NULL.
CREATE FUNCTION pgconductor._table_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_columns text[] := CASE WHEN TG_NARGS > 2 THEN TG_ARGV[2:TG_NARGS - 1] END;
    v_old     jsonb;
    v_new     jsonb;
    v_root    regclass;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        v_old := pgconductor._project(to_jsonb(OLD), v_columns);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        v_new := pgconductor._project(to_jsonb(NEW), v_columns);
    END IF;
    IF TG_OP = 'UPDATE' AND v_old = v_new THEN
        RETURN NULL;
    END IF;
    -- A row of a partition fired the trigger cloned from the subscribed partitioned table.
    v_root := pg_partition_root(TG_RELID);
    PERFORM pgconductor._submit_one(
        TG_ARGV[0], jsonb_build_object('op', lower(TG_OP),
                                       'table', coalesce(v_root::text, format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME)),
                                       'old', v_old, 'new', v_new),
        nullif(TG_ARGV[1], ''), NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    RETURN NULL;
END
$$;

-- Subscribes task p_task_key to changes of table p_table (see _user_table for the name): an
-- AFTER ROW trigger for the ops p_ops (some of insert, update, delete), payload columns
-- p_columns (NULL: all; with columns, an UPDATE fires only when one of them changed), WHEN
-- condition p_when (trusted SQL: the subscriber's own boolean expression over OLD and NEW, run
-- as the role that changes the table), queue p_queue (NULL: the task's). Upsert: the trigger
-- is replaced when a setting differs, left alone when none does. Locks: the table (SHARE ROW
-- EXCLUSIVE, to create the trigger). Raises 42P01 unknown table, 42703 unknown column, 22023
-- bad op, when clause or queue, 42501 when the session user may not create triggers on the
-- table. Returns the trigger's name.
CREATE FUNCTION pgconductor.subscribe_table(
    p_task_key text,
    p_table    text,
    p_ops      text[] DEFAULT '{insert,update,delete}',
    p_columns  text[] DEFAULT NULL,
    p_when     text DEFAULT NULL,
    p_queue    text DEFAULT NULL,
    p_static   boolean DEFAULT false
)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
AS $$
DECLARE
    v_table   regclass;
    v_ops     text[];
    v_columns text[];
    v_bad     text;
    v_trigger text := pgconductor._table_trigger_name(p_task_key);
    v_old     pgconductor.table_subscriptions;
BEGIN
    PERFORM pgconductor._assert_task_key(p_task_key);
    v_table := pgconductor._user_table(p_table);
    IF p_ops IS NULL OR cardinality(p_ops) = 0
       OR EXISTS (SELECT 1 FROM unnest(p_ops) AS o WHERE o IS NULL OR lower(o) NOT IN ('insert', 'update', 'delete')) THEN
        RAISE EXCEPTION 'invalid ops %', pgconductor._show(p_ops::text)
            USING ERRCODE = '22023', HINT = 'Pass some of insert, update and delete, e.g. {insert,update}.';
    END IF;
    v_ops := ARRAY(SELECT o FROM unnest(ARRAY['insert', 'update', 'delete']) AS o
                    WHERE o IN (SELECT lower(x) FROM unnest(p_ops) AS x));
    IF p_columns IS NOT NULL AND coalesce(cardinality(p_columns), 0) = 0 THEN
        RAISE EXCEPTION 'an empty column list'
            USING ERRCODE = '22023', HINT = 'List the columns old and new carry, e.g. {id,status}; NULL for all.';
    ELSIF p_columns IS NOT NULL THEN
        SELECT c INTO v_bad FROM unnest(p_columns) WITH ORDINALITY AS u(c, ord)
         WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute AS a
                            WHERE a.attrelid = v_table AND a.attname = u.c AND a.attnum > 0 AND NOT a.attisdropped)
         ORDER BY u.ord LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'table % has no column %', v_table, pgconductor._show(v_bad)
                USING ERRCODE = '42703', HINT = 'List columns of the table by their exact names (case counts); NULL for all.';
        END IF;
        v_columns := ARRAY(SELECT u.c FROM unnest(p_columns) WITH ORDINALITY AS u(c, ord) GROUP BY u.c ORDER BY min(u.ord));
    END IF;
    PERFORM pgconductor._assert_when_clause(p_when);
    IF p_queue IS NOT NULL THEN
        PERFORM pgconductor.create_queue(p_queue);
    END IF;
    IF NOT has_table_privilege(session_user, v_table, 'TRIGGER') THEN
        RAISE EXCEPTION 'role % may not create triggers on %', quote_ident(session_user), v_table
            USING ERRCODE = '42501', HINT = 'The table''s owner grants it: GRANT TRIGGER ON <table> TO <role>.';
    END IF;

    DELETE FROM pgconductor.table_subscriptions AS s  -- tables dropped since took their triggers
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class AS c WHERE c.oid = s.table_name);
    -- Worker start declares its subscriptions again: the same settings change nothing, and
    -- take no lock on the table.
    SELECT * INTO v_old FROM pgconductor.table_subscriptions AS s
     WHERE s.task_key = p_task_key AND s.table_name = v_table;
    IF v_old.ops = v_ops AND v_old.columns IS NOT DISTINCT FROM v_columns
       AND v_old.when_clause IS NOT DISTINCT FROM p_when AND v_old.queue IS NOT DISTINCT FROM p_queue
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = v_table AND t.tgname = v_trigger) THEN
        UPDATE pgconductor.table_subscriptions AS s SET static = coalesce(p_static, false)
         WHERE s.task_key = p_task_key AND s.table_name = v_table;
        RETURN v_trigger;
    END IF;

    -- The lock CREATE TRIGGER takes, taken first: a concurrent call for the same table waits
    -- here, then sees the trigger this one made.
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', v_table);
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = v_table AND t.tgname = v_trigger) THEN
        EXECUTE format('DROP TRIGGER %I ON %s', v_trigger, v_table);
    END IF;
    BEGIN
        EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s FOR EACH ROW %s EXECUTE FUNCTION pgconductor._table_changed(%s)',
                       v_trigger,
                       (SELECT string_agg(CASE WHEN o = 'update' AND v_columns IS NOT NULL
                                               THEN 'UPDATE OF ' || (SELECT string_agg(quote_ident(c), ', ') FROM unnest(v_columns) AS c)
                                               ELSE upper(o) END, ' OR ') FROM unnest(v_ops) AS o),
                       v_table,
                       CASE WHEN p_when IS NOT NULL THEN format(E'WHEN (%s\n)', p_when) ELSE '' END,
                       (SELECT string_agg(quote_literal(a), ', ')
                          FROM unnest(ARRAY[p_task_key, coalesce(p_queue, '')] || v_columns) AS a));
    EXCEPTION WHEN syntax_error OR undefined_column OR undefined_function OR datatype_mismatch
                   OR invalid_object_definition OR undefined_table OR feature_not_supported THEN
        IF p_when IS NULL THEN
            RAISE;
        END IF;
        RAISE EXCEPTION 'invalid when clause %: %', pgconductor._show(p_when), SQLERRM
            USING ERRCODE = SQLSTATE, HINT = 'Pass one boolean SQL expression over OLD and NEW (no OLD with insert, no NEW with delete).';
    END;
    INSERT INTO pgconductor.table_subscriptions AS s
        (task_key, table_name, ops, columns, when_clause, queue, trigger_name, static)
    VALUES (p_task_key, v_table, v_ops, v_columns, p_when, p_queue, v_trigger, coalesce(p_static, false))
    ON CONFLICT (task_key, table_name) DO UPDATE
       SET ops = excluded.ops, columns = excluded.columns, when_clause = excluded.when_clause,
           queue = excluded.queue, trigger_name = excluded.trigger_name, static = excluded.static;
    RETURN v_trigger;
END
$$;

-- Drops task p_task_key's trigger on table p_table and its row. A table that does not exist
-- (any more) removes nothing, but rows of dropped tables go. Locks: the table (SHARE ROW
-- EXCLUSIVE). Returns false when there was no such subscription.
CREATE FUNCTION pgconductor.unsubscribe_table(p_task_key text, p_table text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table regclass;
BEGIN
    DELETE FROM pgconductor.table_subscriptions AS s
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class AS c WHERE c.oid = s.table_name);
    v_table := pgconductor._regclass(p_table);
    IF NOT EXISTS (SELECT 1 FROM pgconductor.table_subscriptions AS s WHERE s.task_key = p_task_key AND s.table_name = v_table) THEN
        RETURN false;
    END IF;
    -- Table first, then the row: the order subscribe_table() takes them in.
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', v_table);
    DELETE FROM pgconductor.table_subscriptions AS s WHERE s.task_key = p_task_key AND s.table_name = v_table;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t
                WHERE t.tgrelid = v_table AND t.tgname = pgconductor._table_trigger_name(p_task_key)) THEN
        EXECUTE format('DROP TRIGGER %I ON %s', pgconductor._table_trigger_name(p_task_key), v_table);
    END IF;
    RETURN true;
END
$$;

-- Every table subscription, by table then task (table as "schema.name"). Locks nothing.
CREATE FUNCTION pgconductor.table_subscriptions()
RETURNS TABLE (task_key text, table_name text, ops text[], columns text[], when_clause text, queue text,
               trigger_name text, static boolean, created_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.task_key, format('%I.%I', n.nspname, c.relname), s.ops, s.columns, s.when_clause, s.queue,
           s.trigger_name, s.static, s.created_at
      FROM pgconductor.table_subscriptions AS s
      JOIN pg_catalog.pg_class AS c ON c.oid = s.table_name
      JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
     ORDER BY 2, 1
$$;

-- Worker start: drops the static table subscriptions (trigger and row) of the tasks
-- p_task_keys that are not among the declared pairs (p_tables[i] of p_declared_tasks[i]; a
-- declared table that does not exist matches nothing). Dynamic ones and other tasks' stay.
-- Locks: the tables whose triggers it drops. Returns how many it dropped.
CREATE FUNCTION pgconductor.sync_static_table_subscriptions(p_task_keys text[], p_declared_tasks text[], p_tables text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row   record;
    v_count integer := 0;
BEGIN
    IF coalesce(cardinality(p_declared_tasks), 0) <> coalesce(cardinality(p_tables), 0) THEN
        RAISE EXCEPTION 'declared tasks and tables have different lengths'
            USING ERRCODE = '22023', HINT = 'Pass one task key per declared table.';
    END IF;
    FOR v_row IN
        SELECT s.task_key, s.table_name FROM pgconductor.table_subscriptions AS s
         WHERE s.static AND s.task_key = ANY (p_task_keys)
           AND NOT EXISTS (SELECT 1 FROM unnest(p_declared_tasks, p_tables) AS d(t, n)
                            WHERE d.t = s.task_key AND pgconductor._regclass(d.n) = s.table_name)
    LOOP
        v_count := v_count + pgconductor.unsubscribe_table(v_row.task_key, v_row.table_name::text)::integer;
    END LOOP;
    RETURN v_count;
END
$$;

-- ==================== changed functions

-- The trim also says what the admitted rows leave of the limits (one read, not two).
DROP FUNCTION pgconductor._claim_spent(text, uuid[], jsonb);
DROP FUNCTION pgconductor._claim_trim(text, uuid[], jsonb);

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

-- The fair pick finds each key with its first claimable row in one probe.
DROP FUNCTION pgconductor._fair_keys(text, text, text, integer);

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
-- rows a round. Reads the queue's fair index (set_fair_share): one probe per key served, so
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
BEGIN
    -- The next keys with claimable rows after the cursor, then from the first key up to it.
    SELECT * INTO v_first FROM pgconductor._fair_firsts(
        p_queue, coalesce(p_cursor || chr(1), ''), NULL, p_limit,
        p_task_keys, p_blocked, p_blocked_keys, p_max_attempts, p_exclude, p_now);
    IF cardinality(v_first.keys) < p_limit AND p_cursor IS NOT NULL THEN
        SELECT * INTO v_wrap FROM pgconductor._fair_firsts(
            p_queue, '', p_cursor, p_limit - cardinality(v_first.keys),
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

-- Emits event p_name with payload p_payload (a JSON object) in the caller's transaction:
-- every execution waiting for p_name whose match the payload contains gets it as its step's
-- result and wakes. The event is kept (prune_finished) for waits registered later. Locks: the
-- name's event lock (shared), the matching waits and their executions. Raises 22023 for a bad name or payload. Returns
-- the event's id.
CREATE OR REPLACE FUNCTION pgconductor.emit_event(p_name text, p_payload jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id      bigint;
    v_payload jsonb := coalesce(p_payload, '{}');
    v_pairs   text[];
    v_queues  text[];
BEGIN
    IF NOT coalesce(pgconductor._valid_event_name(p_name), false) THEN
        RAISE EXCEPTION 'invalid event name %', pgconductor._show(p_name)
            USING ERRCODE = '22023', HINT = 'An event name is 1-200 characters without control characters, e.g. order.paid.';
    END IF;
    IF jsonb_typeof(v_payload) <> 'object' THEN
        RAISE EXCEPTION 'an event payload must be a JSON object, got %', pgconductor._show(v_payload::text)
            USING ERRCODE = '22023', HINT = 'For example {"order_id": 7}.';
    END IF;
    -- Shared with other emits of this name, exclusive against a wait being registered for
    -- it (_suspend): a wait and an event committing at the same moment would not see each other.
    PERFORM pg_advisory_xact_lock_shared(pgconductor._event_lock(p_name));
    INSERT INTO pgconductor.events (name, payload) VALUES (p_name, v_payload) RETURNING id INTO v_id;
    -- Subscribed tasks get their executions in this transaction: an event rolled back makes none.
    PERFORM pgconductor._fan_out_event(v_id, p_name, v_payload);

    v_pairs := ARRAY(SELECT pgconductor._match_key(jsonb_build_object(m.key, m.value)) FROM jsonb_each(v_payload) AS m);
    WITH matched AS (
        SELECT w.execution_id, w.step_key FROM pgconductor.event_waits AS w
         WHERE w.event_name = p_name AND (w.match_key IS NULL OR w.match_key = ANY (v_pairs))
           AND v_payload @> w.match
         ORDER BY w.execution_id, w.step_key
           FOR UPDATE
    ), gone AS (
        DELETE FROM pgconductor.event_waits AS w USING matched AS m
         WHERE w.execution_id = m.execution_id AND w.step_key = m.step_key
    ), filled AS (
        UPDATE pgconductor.steps AS s SET state = 'done', result = v_payload, event_id = v_id, done_at = pgconductor._now()
          FROM matched AS m
         WHERE s.execution_id = m.execution_id AND s.key = m.step_key AND s.state = 'waiting'
        RETURNING s.execution_id
    ), woken AS (
        UPDATE pgconductor.executions AS e SET waiting = NULL, run_at = pgconductor._now()
          FROM filled AS f WHERE e.id = f.execution_id AND e.waiting = 'event'
        RETURNING e.queue
    )
    SELECT array_agg(DISTINCT w.queue) INTO v_queues FROM woken AS w;
    PERFORM pg_notify('pgconductor_invoke', q) FROM unnest(v_queues) AS q;
    RETURN v_id;
END
$$;

-- One maintenance pass, each chore bounded by p_limit rows: creates the due schedule
-- occurrences (_tick_schedules; tick() does only that, for second-granular schedules) and
-- deletes old occurrence records; ends 'expired' the pending
-- executions whose start-by deadline passed (a parent waiting for one hears it failed);
-- makes the coming days' partitions of finished_executions and drops the days past every
-- keep (_add_finished_partitions, _drop_finished_partitions); deletes the other finished
-- executions (with their steps) older than their task's keep_completed or keep_failed
-- (failed, cancelled, expired); events older than _keep_events(); ended throttle
-- periods; full rate buckets; orchestrators gone for _keep_orchestrators(). One pass at a time
-- per database: a call while another runs returns {"skipped": true} at once (transaction
-- advisory lock). Row locks: what it changes (SKIP LOCKED for live executions). Returns the
-- counts as jsonb. Raises 22023 for a limit outside 1..100000.
CREATE OR REPLACE FUNCTION pgconductor.maintain(p_limit integer DEFAULT 10000)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now     timestamptz := pgconductor._now();
    v_def     pgconductor.tasks;
    v_row     record;
    v_expired integer := 0;
    v_done    boolean;
    v_pruned  integer;
    v_events  integer;
    v_slots   integer;
    v_buckets integer;
    v_orchs   integer;
    v_dropped integer;
    v_ticked  integer;
    v_occurs  integer;
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'maintain needs a limit between 1 and 100000, got %', coalesce(p_limit::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'The limit bounds each chore of one pass; run passes until they report 0.';
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtextextended('pgconductor.maintain', 0)) THEN
        RETURN jsonb_build_object('skipped', true);
    END IF;
    v_def := pgconductor._task_defaults();
    v_ticked := pgconductor._tick_schedules(v_now, p_limit);
    PERFORM pgconductor._add_finished_partitions(v_now);
    v_dropped := pgconductor._drop_finished_partitions(v_now);

    FOR v_row IN
        SELECT e.id, e.queue, e.start_by FROM pgconductor.executions AS e
         WHERE e.start_by <= v_now AND e.locked_by IS NULL
         ORDER BY e.start_by
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    LOOP
        -- A query, not an expression: a SQL function in a PL/pgSQL expression keeps its plans
        -- for the transaction and would miss a partition created meanwhile.
        SELECT pgconductor._finish(v_row.id, v_row.queue, 'expired',
                                   format('expired: not started by its start-by deadline %s', v_row.start_by)) INTO v_done;
        v_expired := v_expired + v_done::integer;
    END LOOP;

    WITH doomed AS (
        SELECT f.id FROM pgconductor.finished_executions AS f
          LEFT JOIN pgconductor.tasks AS t ON t.key = f.task_key
         WHERE f.finished_at < v_now - CASE WHEN f.state = 'completed' THEN coalesce(t.keep_completed, v_def.keep_completed)
                                            ELSE coalesce(t.keep_failed, v_def.keep_failed) END
         ORDER BY f.finished_at
         LIMIT p_limit
    ), pruned AS (
        DELETE FROM pgconductor.finished_executions AS f USING doomed AS d WHERE f.id = d.id RETURNING f.id
    ), steps_gone AS (
        DELETE FROM pgconductor.steps AS s USING pruned AS p WHERE s.execution_id = p.id
    )
    SELECT count(*) + v_dropped INTO v_pruned FROM pruned;

    DELETE FROM pgconductor.events AS ev
     WHERE ev.id IN (SELECT x.id FROM pgconductor.events AS x WHERE x.created_at < v_now - pgconductor._keep_events()
                      ORDER BY x.created_at LIMIT p_limit);
    GET DIAGNOSTICS v_events = ROW_COUNT;
    DELETE FROM pgconductor.throttle_slots AS s
     WHERE (s.task_key, s.key) IN (SELECT x.task_key, x.key FROM pgconductor.throttle_slots AS x
                                    WHERE x.until <= v_now LIMIT p_limit);
    GET DIAGNOSTICS v_slots = ROW_COUNT;
    -- A full bucket is the same as none; so is one of a task that no longer has the limit.
    DELETE FROM pgconductor.rate_buckets AS b
     WHERE (b.task_key, b.per_key, b.key) IN (
        SELECT x.task_key, x.per_key, x.key FROM pgconductor.rate_buckets AS x
          LEFT JOIN pgconductor.tasks AS t ON t.key = x.task_key
         WHERE CASE WHEN x.per_key THEN t.rate_limit_per_key ELSE t.rate_limit END IS NULL
            OR pgconductor._refilled(x.tokens, x.at, CASE WHEN x.per_key THEN t.rate_limit_per_key ELSE t.rate_limit END,
                                     t.rate_period, v_now)
               >= CASE WHEN x.per_key THEN t.rate_limit_per_key ELSE t.rate_limit END
         LIMIT p_limit);
    GET DIAGNOSTICS v_buckets = ROW_COUNT;
    DELETE FROM pgconductor.orchestrators AS o
     WHERE o.drained AND coalesce(o.stopped_at, o.expired_at) < v_now - pgconductor._keep_orchestrators()
       AND NOT EXISTS (SELECT 1 FROM pgconductor.executions AS e WHERE e.locked_by = o.id);
    GET DIAGNOSTICS v_orchs = ROW_COUNT;
    v_occurs := pgconductor._prune_schedule_occurrences(v_now, p_limit);

    RETURN jsonb_build_object('expired', v_expired, 'pruned', v_pruned, 'events', v_events,
                              'throttle_slots', v_slots, 'rate_buckets', v_buckets, 'orchestrators', v_orchs,
                              'schedules', v_ticked, 'occurrences', v_occurs);
END
$$;

-- The role each public function is granted to, one row per function name (every overload).
-- _apply_privileges() refuses a public function missing here, so none is forgotten.
CREATE OR REPLACE FUNCTION pgconductor._api_roles()
RETURNS TABLE (fn text, role text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('invoke', 'pgconductor_client'), ('invoke_batch', 'pgconductor_client'),
           ('cancel', 'pgconductor_client'), ('get_execution', 'pgconductor_client'),
           ('list_executions', 'pgconductor_client'), ('task_overview', 'pgconductor_client'),
           ('queue_stats', 'pgconductor_client'), ('orchestrator_stats', 'pgconductor_client'),
           ('version', 'pgconductor_client'), ('emit_event', 'pgconductor_client'),
           ('submit', 'pgconductor_client'), ('submit_batch', 'pgconductor_client'),
           ('cancel_by_key', 'pgconductor_client'), ('flow_status', 'pgconductor_client'),
           ('get_executions', 'pgconductor_worker'), ('return_executions', 'pgconductor_worker'),
           ('heartbeat', 'pgconductor_worker'), ('recover_stale', 'pgconductor_worker'),
           ('release_orchestrator', 'pgconductor_worker'), ('declare_task', 'pgconductor_worker'),
           ('save_steps', 'pgconductor_worker'), ('maintain', 'pgconductor_worker'),
           ('has_due_work', 'pgconductor_worker'),
           ('register_task', 'pgconductor_admin'), ('create_queue', 'pgconductor_admin'),
           ('drop_queue', 'pgconductor_admin'), ('retry', 'pgconductor_admin'),
           ('retry_executions', 'pgconductor_admin'), ('prune_finished', 'pgconductor_admin'),
           ('request_shutdown', 'pgconductor_admin'), ('pause_queue', 'pgconductor_admin'),
           ('resume_queue', 'pgconductor_admin'), ('pause_task', 'pgconductor_admin'),
           ('resume_task', 'pgconductor_admin'), ('set_fair_share', 'pgconductor_admin'),
           ('set_key_weight', 'pgconductor_admin'),
           ('schedule', 'pgconductor_client'), ('unschedule', 'pgconductor_client'),
           ('schedules', 'pgconductor_client'), ('occurrence_of', 'pgconductor_client'),
           ('subscriptions', 'pgconductor_client'), ('table_subscriptions', 'pgconductor_client'),
           ('tick', 'pgconductor_worker'), ('sync_static_schedules', 'pgconductor_worker'),
           ('subscribe', 'pgconductor_worker'), ('unsubscribe', 'pgconductor_worker'),
           ('sync_static_subscriptions', 'pgconductor_worker'),
           ('subscribe_table', 'pgconductor_worker'), ('unsubscribe_table', 'pgconductor_worker'),
           ('sync_static_table_subscriptions', 'pgconductor_worker'),
           ('pause_schedule', 'pgconductor_admin'), ('resume_schedule', 'pgconductor_admin'),
           ('backfill', 'pgconductor_admin')
$$;


SELECT pgconductor._apply_privileges();
