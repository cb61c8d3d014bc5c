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
