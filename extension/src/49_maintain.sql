-- Maintenance: the periodic chores the orchestrators' maintenance service runs through
-- maintain(): start-by expiry, retention per task policy, and the clean-up of events,
-- throttle periods, rate buckets and orchestrators that are gone.

-- How long emitted events are kept for waits registered after the emit. Inlined.
CREATE FUNCTION pgconductor._keep_events()
RETURNS interval
LANGUAGE sql IMMUTABLE
RETURN interval '7 days';

-- How long an orchestrator that stopped or expired, and holds nothing, stays listed. Inlined.
CREATE FUNCTION pgconductor._keep_orchestrators()
RETURNS interval
LANGUAGE sql IMMUTABLE
RETURN interval '1 day';

-- The partition of finished_executions that holds day p_day (UTC). Inlined.
CREATE FUNCTION pgconductor._finished_partition_name(p_day date)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN 'finished_executions_' || to_char(p_day, 'YYYYMMDD');

-- Makes the daily partitions of finished_executions for the UTC day of p_now and the two
-- after it, where missing; a day whose rows already went to the default partition (no
-- maintenance ran ahead) keeps them there. Takes the locks CREATE TABLE ... PARTITION OF takes.
-- Returns how many it made.
CREATE FUNCTION pgconductor._add_finished_partitions(p_now timestamptz)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_day   date;
    v_from  timestamptz;
    v_count integer := 0;
BEGIN
    FOR v_day IN SELECT (p_now AT TIME ZONE 'UTC')::date + d FROM generate_series(0, 2) AS d LOOP
        CONTINUE WHEN to_regclass('pgconductor.' || pgconductor._finished_partition_name(v_day)) IS NOT NULL;
        v_from := v_day::timestamp AT TIME ZONE 'UTC';
        CONTINUE WHEN EXISTS (SELECT 1 FROM pgconductor.finished_executions_default AS f
                               WHERE f.finished_at >= v_from AND f.finished_at < v_from + interval '1 day');
        EXECUTE format('CREATE TABLE pgconductor.%I PARTITION OF pgconductor.finished_executions FOR VALUES FROM (%L) TO (%L)',
                       pgconductor._finished_partition_name(v_day), v_from, v_from + interval '1 day');
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;

-- Drops the daily partitions of finished_executions whose every row is past its task's keep
-- at p_now: the day ended longer ago than the longest keep of any task (and the defaults),
-- deleting the steps of their executions first. Returns the executions dropped.
CREATE FUNCTION pgconductor._drop_finished_partitions(p_now timestamptz)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_def   pgconductor.tasks := pgconductor._task_defaults();
    v_keep  interval;
    v_part  record;
    v_rows  integer;
    v_count integer := 0;
BEGIN
    SELECT greatest(max(t.keep_completed), max(t.keep_failed), v_def.keep_completed, v_def.keep_failed) INTO v_keep
      FROM pgconductor.tasks AS t;
    FOR v_part IN
        SELECT c.relname FROM pg_catalog.pg_inherits AS i
          JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'pgconductor.finished_executions'::regclass
           AND c.relname ~ '^finished_executions_[0-9]{8}$'
           AND to_date(right(c.relname, 8), 'YYYYMMDD') + 1 <= ((p_now - v_keep) AT TIME ZONE 'UTC')::date
         ORDER BY c.relname
    LOOP
        EXECUTE format('DELETE FROM pgconductor.steps AS s USING pgconductor.%I AS f WHERE s.execution_id = f.id', v_part.relname);
        EXECUTE format('SELECT count(*) FROM pgconductor.%I', v_part.relname) INTO v_rows;
        EXECUTE format('DROP TABLE pgconductor.%I', v_part.relname);
        v_count := v_count + v_rows;
    END LOOP;
    RETURN v_count;
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
CREATE FUNCTION pgconductor.maintain(p_limit integer DEFAULT 10000)
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

-- The first days' partitions of finished_executions.
SELECT pgconductor._add_finished_partitions(pgconductor._now());
