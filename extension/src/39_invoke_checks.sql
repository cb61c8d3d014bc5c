-- Enqueue input checks shared by submit(), submit_batch() and their invoke forms.

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

-- Raises 22023 unless the enqueue options are usable together: on_conflict replace | keep |
-- supersede; throttle and debounce between 1 ms and _max_interval(), not both; debounce_max
-- only with debounce and not below it; debounce only with replace. Returns nothing.
CREATE FUNCTION pgconductor._assert_invoke_options(p_on_conflict text, p_throttle interval, p_debounce interval,
                                                   p_debounce_max interval)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_on_conflict IS NOT NULL AND p_on_conflict NOT IN ('replace', 'keep', 'supersede') THEN
        RAISE EXCEPTION 'invalid on_conflict %', pgconductor._show(p_on_conflict)
            USING ERRCODE = '22023', HINT = 'Use replace (update a pending one), keep (return the live one) or supersede (cancel it, make a new one).';
    END IF;
    PERFORM pgconductor._assert_interval('throttle', p_throttle, interval '1 millisecond', true);
    PERFORM pgconductor._assert_interval('debounce', p_debounce, interval '1 millisecond', true);
    PERFORM pgconductor._assert_interval('debounce_max', p_debounce_max, interval '1 millisecond', true);
    IF p_throttle IS NOT NULL AND p_debounce IS NOT NULL THEN
        RAISE EXCEPTION 'throttle and debounce exclude each other'
            USING ERRCODE = '22023', HINT = 'Throttle runs the first call of a period, debounce the last: pick one.';
    END IF;
    IF p_debounce_max IS NOT NULL AND (p_debounce IS NULL OR p_debounce_max < p_debounce) THEN
        RAISE EXCEPTION 'debounce_max % needs a debounce no longer than it', p_debounce_max
            USING ERRCODE = '22023', HINT = 'debounce_max bounds how long repeated calls may delay the run: pass debounce too.';
    END IF;
    IF p_debounce IS NOT NULL AND coalesce(p_on_conflict, 'replace') <> 'replace' THEN
        RAISE EXCEPTION 'debounce takes no on_conflict (got %)', p_on_conflict
            USING ERRCODE = '22023', HINT = 'Debounced calls always replace the pending execution''s payload.';
    END IF;
END
$$;

-- Raises 22023 for a start-by deadline that is not finite or not after the run time
-- p_run_at (it could never start). NULL passes. Returns nothing.
CREATE FUNCTION pgconductor._assert_start_by(p_start_by timestamptz, p_run_at timestamptz)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT isfinite(p_start_by) OR p_start_by <= p_run_at THEN
        RAISE EXCEPTION 'start_by % is not after run_at %', p_start_by, p_run_at
            USING ERRCODE = '22023', HINT = 'start_by is the latest time the execution may start: later than its run_at.';
    END IF;
END
$$;

-- p_array with its first element at subscript 1 ('[0:1]={...}' arrays pair by position). Locks nothing.
CREATE FUNCTION pgconductor._from_one(p_array anyarray)
RETURNS anyarray
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_array IS NULL OR array_lower(p_array, 1) = 1 THEN p_array ELSE ARRAY(SELECT unnest(p_array)) END
$$;

