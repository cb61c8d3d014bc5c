-- get_executions(): the claim position (see extension/src/41_claim.sql).
-- Cases: a claim that fills its batch continues after the last row the session claimed, so a
-- row that became due behind it waits; a higher priority is still served first; a claim that
-- comes up short also runs the head pass and takes the row behind, and forgets the position;
-- a full claim sets it again; after a second the head pass comes first again; another task
-- filter starts from the head.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(9);

SET pgconductor.fake_now = '2025-09-01 12:00:00';
SELECT pgconductor.register_task('p', 'posq');
SELECT pgconductor.register_task('p2', 'posq');
CREATE TEMP TABLE r AS
SELECT n, pgconductor.invoke('p', jsonb_build_object('n', n), p_run_at => '2025-09-01 11:00:00'::timestamptz + n * interval '1 minute') AS id
  FROM generate_series(1, 8) AS n;

-- Claimed rows, as the payloads' n, in claim order.
CREATE FUNCTION pg_temp.claim(p_keys text[], p_n integer) RETURNS integer[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg((payload->>'n')::integer ORDER BY priority, run_at, id), '{}')
      FROM pgconductor.get_executions(p_keys, '00000000-0000-0000-0000-0000000000e1', p_n, 'posq')
$$;

SELECT is(pg_temp.claim(ARRAY['p'], 2), ARRAY[1, 2], 'the first claim starts at the head');
-- n = 0 becomes due behind the position (a past run_at).
SELECT pgconductor.invoke('p', '{"n": 0}', p_run_at => '2025-09-01 10:00:00');
SELECT is(pg_temp.claim(ARRAY['p'], 2), ARRAY[3, 4], 'a full claim continues after the position: the row behind it waits');
SELECT pgconductor.invoke('p', '{"n": 100}', p_priority => -1);
SELECT is(pg_temp.claim(ARRAY['p'], 2), ARRAY[100, 5], 'a higher priority is served first, then the claim continues');
SELECT is(pg_temp.claim(ARRAY['p'], 5), ARRAY[0, 6, 7, 8], 'a claim that comes up short runs the head pass too');

SELECT pgconductor.invoke('p', jsonb_build_object('n', n), p_run_at => '2025-09-01 11:30:00'::timestamptz + n * interval '1 minute')
  FROM generate_series(10, 12) AS n;
SELECT pgconductor.invoke('p', '{"n": 9}', p_run_at => '2025-09-01 10:30:00');
SELECT is(pg_temp.claim(ARRAY['p'], 1), ARRAY[9], 'after a claim that came up short, the next starts at the head');
SELECT is(pg_temp.claim(ARRAY['p'], 1), ARRAY[10], 'a full claim sets the position again');
SELECT pgconductor.invoke('p', '{"n": 8}', p_run_at => '2025-09-01 10:45:00');
SELECT is(pg_temp.claim(ARRAY['p'], 1), ARRAY[11], 'and the next continues after it');
SET pgconductor.fake_now = '2025-09-01 12:00:02';
SELECT is(pg_temp.claim(ARRAY['p'], 1), ARRAY[8], 'a second later the head pass comes first again');

SELECT pgconductor.invoke('p2', '{"n": 20}', p_run_at => '2025-09-01 09:00:00');
SELECT is(pg_temp.claim(ARRAY['p', 'p2'], 1), ARRAY[20], 'another task filter starts from the head');

SELECT * FROM finish();
ROLLBACK;
