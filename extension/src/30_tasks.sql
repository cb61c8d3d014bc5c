-- Task settings: register_task() sets all of them, declare_task() only the ones it is given.
-- The defaults live in one place, the columns of pgconductor.tasks: both read them from there.

-- A tasks row holding nothing but the column defaults (key NULL). Inserts a probe row and
-- rolls it back in a subtransaction, so the table definition stays the defaults' only home.
-- Locks nothing that outlives the call.
CREATE FUNCTION pgconductor._task_defaults()
RETURNS pgconductor.tasks
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row pgconductor.tasks;
BEGIN
    BEGIN
        INSERT INTO pgconductor.tasks (key) VALUES ('pgconductor defaults probe ' || gen_random_uuid())
        RETURNING * INTO v_row;
        RAISE EXCEPTION USING ERRCODE = 'P0004';  -- undo the probe; the variable keeps the row
    EXCEPTION WHEN assert_failure THEN
        NULL;
    END;
    v_row.key := NULL;
    RETURN v_row;
END
$$;

-- Validates p_task (every setting; 22023 with a hint for a bad one), makes sure its queue
-- exists and upserts it (paused is set only for a new row: pause_task() owns it). Row lock:
-- the task's row. Returns nothing.
CREATE FUNCTION pgconductor._save_task(p_task pgconductor.tasks)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgconductor._assert_task_key(p_task.key);
    PERFORM pgconductor._assert_queue_name(p_task.queue);
    IF p_task.max_attempts IS NULL OR p_task.max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, got %', coalesce(p_task.max_attempts::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Use 1 for "never retry".';
    END IF;
    IF (p_task.window_start IS NULL) <> (p_task.window_end IS NULL) OR p_task.window_start = p_task.window_end THEN
        RAISE EXCEPTION 'invalid window % - %', coalesce(p_task.window_start::text, 'NULL'), coalesce(p_task.window_end::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Give both ends and make them differ; a window ending before it starts crosses midnight.';
    END IF;
    PERFORM pgconductor._assert_timezone(p_task.timezone);
    PERFORM pgconductor._assert_interval('backoff_base', p_task.backoff_base, interval '0', false);
    PERFORM pgconductor._assert_interval('backoff_cap', p_task.backoff_cap, interval '0', false);
    IF p_task.backoff_cap < p_task.backoff_base THEN
        RAISE EXCEPTION 'backoff_cap % is below backoff_base %', p_task.backoff_cap, p_task.backoff_base
            USING ERRCODE = '22023', HINT = 'The cap bounds the doubling delays: 0 <= base <= cap.';
    END IF;
    PERFORM pgconductor._assert_interval('timeout', p_task.timeout, interval '1 millisecond', true);
    IF p_task.max_retry_after IS NULL OR p_task.max_retry_after < 0 THEN
        RAISE EXCEPTION 'max_retry_after must be 0 or more, got %', coalesce(p_task.max_retry_after::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'How often a handler may put its execution back with RetryAfter; 0 forbids it.';
    END IF;
    PERFORM pgconductor._assert_limit('max_running', p_task.max_running);
    PERFORM pgconductor._assert_limit('max_running_per_key', p_task.max_running_per_key);
    PERFORM pgconductor._assert_limit('rate_limit', p_task.rate_limit);
    PERFORM pgconductor._assert_limit('rate_limit_per_key', p_task.rate_limit_per_key);
    PERFORM pgconductor._assert_interval('rate_period', p_task.rate_period, interval '1 millisecond', false);
    PERFORM pgconductor._assert_interval('start_within', p_task.start_within, interval '1 millisecond', true);
    PERFORM pgconductor._assert_interval('keep_completed', p_task.keep_completed, interval '0', false);
    PERFORM pgconductor._assert_interval('keep_failed', p_task.keep_failed, interval '0', false);
    PERFORM pgconductor.create_queue(p_task.queue);
    INSERT INTO pgconductor.tasks AS t (key, queue, max_attempts, window_start, window_end, timezone,
                                        backoff_base, backoff_cap, timeout, max_retry_after, max_running,
                                        max_running_per_key, rate_limit, rate_limit_per_key, rate_period,
                                        start_within, paused, keep_completed, keep_failed)
    VALUES (p_task.key, p_task.queue, p_task.max_attempts, p_task.window_start, p_task.window_end,
            p_task.timezone, p_task.backoff_base, p_task.backoff_cap, p_task.timeout, p_task.max_retry_after,
            p_task.max_running, p_task.max_running_per_key, p_task.rate_limit, p_task.rate_limit_per_key,
            p_task.rate_period, p_task.start_within, coalesce(p_task.paused, false), p_task.keep_completed,
            p_task.keep_failed)
    ON CONFLICT (key) DO UPDATE
       SET queue = excluded.queue, max_attempts = excluded.max_attempts,
           window_start = excluded.window_start, window_end = excluded.window_end,
           timezone = excluded.timezone, backoff_base = excluded.backoff_base,
           backoff_cap = excluded.backoff_cap, timeout = excluded.timeout,
           max_retry_after = excluded.max_retry_after, max_running = excluded.max_running,
           max_running_per_key = excluded.max_running_per_key, rate_limit = excluded.rate_limit,
           rate_limit_per_key = excluded.rate_limit_per_key, rate_period = excluded.rate_period,
           start_within = excluded.start_within, keep_completed = excluded.keep_completed,
           keep_failed = excluded.keep_failed, updated_at = pgconductor._now();
END
$$;

-- The settings declare_task() takes and _task_settings() returns: their one list. Inlined.
CREATE FUNCTION pgconductor._task_setting_keys()
RETURNS text[]
LANGUAGE sql IMMUTABLE
RETURN ARRAY['queue', 'max_attempts', 'window_start', 'window_end', 'timezone', 'backoff_base_ms',
             'backoff_cap_ms', 'timeout_ms', 'max_retry_after', 'max_running', 'max_running_per_key',
             'rate_limit', 'rate_limit_per_key', 'rate_period_ms', 'start_within_ms', 'keep_completed_ms',
             'keep_failed_ms'];

-- Task p_key's settings as jsonb (the keys declare_task() takes, _task_setting_keys();
-- intervals in milliseconds). Locks nothing. NULL for a task without a row.
CREATE FUNCTION pgconductor._task_settings(p_key text)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
               'queue', t.queue, 'max_attempts', t.max_attempts,
               'window_start', t.window_start::text, 'window_end', t.window_end::text, 'timezone', t.timezone,
               'backoff_base_ms', round(extract(epoch FROM t.backoff_base) * 1000)::bigint,
               'backoff_cap_ms', round(extract(epoch FROM t.backoff_cap) * 1000)::bigint,
               'timeout_ms', round(extract(epoch FROM t.timeout) * 1000)::bigint,
               'max_retry_after', t.max_retry_after,
               'max_running', t.max_running, 'max_running_per_key', t.max_running_per_key,
               'rate_limit', t.rate_limit, 'rate_limit_per_key', t.rate_limit_per_key,
               'rate_period_ms', round(extract(epoch FROM t.rate_period) * 1000)::bigint,
               'start_within_ms', round(extract(epoch FROM t.start_within) * 1000)::bigint,
               'keep_completed_ms', round(extract(epoch FROM t.keep_completed) * 1000)::bigint,
               'keep_failed_ms', round(extract(epoch FROM t.keep_failed) * 1000)::bigint)
      FROM pgconductor.tasks AS t WHERE t.key = p_key
$$;

-- Creates or updates task p_key with every setting: one left NULL takes the column default
-- (no window, no timeout, no limits; a paused task stays paused). Windows are daily [start, end) in p_timezone (a zone name) and may
-- cross midnight; intervals are at most _max_interval(). Raises 22023 for bad input.
CREATE FUNCTION pgconductor.register_task(
    p_key             text,
    p_queue           text DEFAULT NULL,
    p_max_attempts    integer DEFAULT NULL,
    p_window_start    time DEFAULT NULL,
    p_window_end      time DEFAULT NULL,
    p_timezone        text DEFAULT NULL,
    p_backoff_base    interval DEFAULT NULL,
    p_backoff_cap     interval DEFAULT NULL,
    p_timeout         interval DEFAULT NULL,
    p_max_retry_after integer DEFAULT NULL,
    p_max_running     integer DEFAULT NULL,
    p_max_running_per_key integer DEFAULT NULL,
    p_rate_limit      integer DEFAULT NULL,
    p_rate_limit_per_key integer DEFAULT NULL,
    p_rate_period     interval DEFAULT NULL,
    p_start_within    interval DEFAULT NULL,
    p_keep_completed  interval DEFAULT NULL,
    p_keep_failed     interval DEFAULT NULL
)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_task pgconductor.tasks := pgconductor._task_defaults();
BEGIN
    v_task.key := p_key;
    v_task.queue := coalesce(p_queue, v_task.queue);
    v_task.max_attempts := coalesce(p_max_attempts, v_task.max_attempts);
    v_task.window_start := p_window_start;
    v_task.window_end := p_window_end;
    v_task.timezone := coalesce(p_timezone, v_task.timezone);
    v_task.backoff_base := coalesce(p_backoff_base, v_task.backoff_base);
    v_task.backoff_cap := coalesce(p_backoff_cap, v_task.backoff_cap);
    v_task.timeout := p_timeout;
    v_task.max_retry_after := coalesce(p_max_retry_after, v_task.max_retry_after);
    v_task.max_running := p_max_running;
    v_task.max_running_per_key := p_max_running_per_key;
    v_task.rate_limit := p_rate_limit;
    v_task.rate_limit_per_key := p_rate_limit_per_key;
    v_task.rate_period := coalesce(p_rate_period, v_task.rate_period);
    v_task.start_within := p_start_within;
    v_task.keep_completed := coalesce(p_keep_completed, v_task.keep_completed);
    v_task.keep_failed := coalesce(p_keep_failed, v_task.keep_failed);
    PERFORM pgconductor._save_task(v_task);
END
$$;

-- Sets only the settings present in p_settings (a JSON object with _task_setting_keys());
-- the others keep their stored value, or the default for a new task; a JSON
-- null resets one to its default. So a worker declaring its tasks at start keeps what an
-- operator set in SQL. Raises 22023 for unknown keys or bad values. Returns the settings.
CREATE FUNCTION pgconductor.declare_task(p_key text, p_settings jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_def     pgconductor.tasks := pgconductor._task_defaults();
    v_task    pgconductor.tasks;
    v_s       jsonb := coalesce(p_settings, '{}');
    v_unknown text;
BEGIN
    PERFORM pgconductor._assert_task_key(p_key);
    IF jsonb_typeof(v_s) <> 'object' THEN
        RAISE EXCEPTION 'task settings must be a JSON object, got %', pgconductor._show(v_s::text)
            USING ERRCODE = '22023', HINT = 'For example {"max_attempts": 5, "timeout_ms": 30000}.';
    END IF;
    SELECT string_agg(quote_literal(left(k, 40)), ', ') INTO v_unknown FROM jsonb_object_keys(v_s) AS k
     WHERE NOT (k = ANY (pgconductor._task_setting_keys()));
    IF v_unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown task setting(s) %', pgconductor._show(v_unknown)
            USING ERRCODE = '22023', HINT = 'Known: ' || array_to_string(pgconductor._task_setting_keys(), ', ') || '.';
    END IF;
    SELECT * INTO v_task FROM pgconductor.tasks AS t WHERE t.key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        v_task := v_def;
        v_task.key := p_key;
    END IF;
    BEGIN
        IF v_s ? 'queue' THEN v_task.queue := coalesce(v_s->>'queue', v_def.queue); END IF;
        IF v_s ? 'max_attempts' THEN v_task.max_attempts := coalesce((v_s->>'max_attempts')::integer, v_def.max_attempts); END IF;
        IF v_s ? 'window_start' THEN v_task.window_start := (v_s->>'window_start')::time; END IF;
        IF v_s ? 'window_end' THEN v_task.window_end := (v_s->>'window_end')::time; END IF;
        IF v_s ? 'timezone' THEN v_task.timezone := coalesce(v_s->>'timezone', v_def.timezone); END IF;
        IF v_s ? 'backoff_base_ms' THEN
            v_task.backoff_base := coalesce(make_interval(secs => (v_s->>'backoff_base_ms')::numeric / 1000), v_def.backoff_base);
        END IF;
        IF v_s ? 'backoff_cap_ms' THEN
            v_task.backoff_cap := coalesce(make_interval(secs => (v_s->>'backoff_cap_ms')::numeric / 1000), v_def.backoff_cap);
        END IF;
        IF v_s ? 'timeout_ms' THEN v_task.timeout := make_interval(secs => (v_s->>'timeout_ms')::numeric / 1000); END IF;
        IF v_s ? 'max_retry_after' THEN
            v_task.max_retry_after := coalesce((v_s->>'max_retry_after')::integer, v_def.max_retry_after);
        END IF;
        IF v_s ? 'max_running' THEN v_task.max_running := (v_s->>'max_running')::integer; END IF;
        IF v_s ? 'max_running_per_key' THEN v_task.max_running_per_key := (v_s->>'max_running_per_key')::integer; END IF;
        IF v_s ? 'rate_limit' THEN v_task.rate_limit := (v_s->>'rate_limit')::integer; END IF;
        IF v_s ? 'rate_limit_per_key' THEN v_task.rate_limit_per_key := (v_s->>'rate_limit_per_key')::integer; END IF;
        IF v_s ? 'rate_period_ms' THEN
            v_task.rate_period := coalesce(make_interval(secs => (v_s->>'rate_period_ms')::numeric / 1000), v_def.rate_period);
        END IF;
        IF v_s ? 'start_within_ms' THEN
            v_task.start_within := make_interval(secs => (v_s->>'start_within_ms')::numeric / 1000);
        END IF;
        IF v_s ? 'keep_completed_ms' THEN
            v_task.keep_completed := coalesce(make_interval(secs => (v_s->>'keep_completed_ms')::numeric / 1000), v_def.keep_completed);
        END IF;
        IF v_s ? 'keep_failed_ms' THEN
            v_task.keep_failed := coalesce(make_interval(secs => (v_s->>'keep_failed_ms')::numeric / 1000), v_def.keep_failed);
        END IF;
    EXCEPTION WHEN data_exception THEN  -- a value of the wrong type or out of range
        RAISE EXCEPTION 'invalid task settings %', pgconductor._show(v_s::text)
            USING ERRCODE = '22023', HINT = 'Integers for the limits, max_attempts, max_retry_after and the *_ms keys; "HH:MM" for window ends; strings for queue and timezone.';
    END;
    PERFORM pgconductor._save_task(v_task);
    RETURN pgconductor._task_settings(p_key);
END
$$;
