-- The schedules' tick costs O(due schedules), not O(schedules).
-- Cases: with 10,000 schedules, a tick that makes 5 occurrences reads about as many buffers as
-- with 100 schedules; a tick with none due among 10,000 reads a handful.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(2);
SET pgconductor.fake_now = '2025-08-01 10:00:00';

-- Buffers read by one tick at p_now (the function's own work included).
CREATE FUNCTION pg_temp.tick_buffers(p_now timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE v_plan json;
BEGIN
    EXECUTE format('EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT pgconductor._tick_schedules(%L, 1000)', p_now) INTO v_plan;
    RETURN (v_plan->0->'Plan'->>'Shared Hit Blocks')::bigint + (v_plan->0->'Plan'->>'Shared Read Blocks')::bigint;
END $$;

-- p_n schedules named p_prefix1..n, yearly (so a tick moves the due ones out of the way, to
-- 2026), their next run at p_next for the first p_due, in 2030 for the others.
CREATE FUNCTION pg_temp.make(p_prefix text, p_n integer, p_due integer, p_next timestamptz) RETURNS void LANGUAGE sql AS $$
    INSERT INTO pgconductor.schedules (name, task_key, cron, parsed, next_run_at)
    SELECT p_prefix || g, 'cost', '0 3 1 1 *', pgconductor._cron_parse('0 3 1 1 *'),
           CASE WHEN g <= p_due THEN p_next ELSE '2030-01-01 03:00+00' END
      FROM generate_series(1, p_n) AS g $$;

-- Warm up (the queue, plans, catalog), then 5 due among 100.
SELECT pg_temp.make('warm', 5, 5, '2025-08-01 03:00+00');
SELECT pg_temp.tick_buffers('2025-08-01 04:00+00');
SELECT pg_temp.make('small', 100, 5, '2025-08-02 03:00+00');
ANALYZE pgconductor.schedules;
SELECT pg_temp.tick_buffers('2025-08-02 04:00+00') AS small_buffers \gset
-- 9,900 more, and 5 of them due.
SELECT pg_temp.make('big', 9900, 5, '2025-08-03 03:00+00');
ANALYZE pgconductor.schedules;
SELECT pg_temp.tick_buffers('2025-08-03 04:00+00') AS big_buffers \gset
SELECT pg_temp.tick_buffers('2025-08-03 04:00+00') AS idle_buffers \gset

-- A scan of the 10,000 rows would read about 700 more pages.
SELECT cmp_ok(:big_buffers::bigint, '<=', :small_buffers::bigint + 100,
              format('5 due: %s buffers among 10,000 schedules vs %s among 100', :big_buffers, :small_buffers));
SELECT cmp_ok(:idle_buffers::bigint, '<=', 10::bigint,
              format('none due among 10,000 schedules: %s buffers', :idle_buffers));

SELECT * FROM finish();
ROLLBACK;
