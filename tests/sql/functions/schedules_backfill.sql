-- backfill(name, from, to).
-- Cases: each occurrence in [from, to) once, with executions run_at = the occurrence; again,
-- nothing; an overlapping period makes only the new ones; an empty period makes none; a paused
-- schedule backfills; across a DST change the rule of _cron_next holds; bad input (period
-- backwards or NULL, unknown schedule, more than 10,000 occurrences) raises in one line and
-- makes nothing; retention (_prune_schedule_occurrences) deletes the records made more than 7
-- days ago, p_limit at a time, and leaves the executions.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(14);
SET pgconductor.fake_now = '2025-06-01 18:00:00+00';

SELECT pgconductor.schedule('hourly', 'h', '0 * * * *', '{"x": true}');
SELECT is(pgconductor.backfill('hourly', '2025-06-01 10:00+00', '2025-06-01 13:00+00'), 3, '10:00, 11:00, 12:00 (the end excluded)');
SELECT is((SELECT array_agg(e.run_at ORDER BY e.run_at) FROM pgconductor.executions AS e WHERE e.payload = '{"x": true}'),
          ARRAY['2025-06-01 10:00+00', '2025-06-01 11:00+00', '2025-06-01 12:00+00']::timestamptz[],
          'their executions run at the occurrences, with the payload');
SELECT is(pgconductor.backfill('hourly', '2025-06-01 10:00+00', '2025-06-01 13:00+00'), 0, 'again: nothing');
SELECT is(pgconductor.backfill('hourly', '2025-06-01 12:00+00', '2025-06-01 15:00+00'), 2, 'overlapping: 13:00 and 14:00 only');
SELECT is(pgconductor.backfill('hourly', '2025-06-01 12:00+00', '2025-06-01 12:00+00'), 0, 'an empty period');

SELECT pgconductor.schedule('berlin', 'b', '30 2 * * *', p_tz => 'Europe/Berlin');
SELECT pgconductor.pause_schedule('berlin');
SELECT is(pgconductor.backfill('berlin', '2025-03-28 00:00+00', '2025-04-01 00:00+00'), 4, 'a paused schedule backfills');
SELECT is((SELECT array_agg(o.occurs_at ORDER BY o.occurs_at) FROM pgconductor.schedule_occurrences AS o WHERE o.schedule = 'berlin'),
          ARRAY['2025-03-28 01:30+00', '2025-03-29 01:30+00', '2025-03-30 01:00+00', '2025-03-31 00:30+00']::timestamptz[],
          'across spring forward: 02:30 CET, then 03:00 CEST on the day, then 02:30 CEST');

-- Bad input: one line, nothing made.
SELECT pgconductor.schedule('every_second', 'e', '* * * * * *');
SELECT throws_ok($$SELECT pgconductor.backfill('every_second', '2025-06-01 00:00+00', '2025-06-01 03:00+00')$$, '22023',
                 'backfill of ''every_second'' from 2025-06-01 00:00:00+00 to 2025-06-01 03:00:00+00 has more than 10000 occurrences',
                 'more than 10,000 occurrences');
SELECT throws_ok($$SELECT pgconductor.backfill('hourly', '2025-06-02', '2025-06-01')$$, '22023',
                 'invalid backfill period [2025-06-02 00:00:00+00, 2025-06-01 00:00:00+00)', 'a backwards period');
SELECT throws_ok($$SELECT pgconductor.backfill('hourly', NULL, '2025-06-01')$$, '22023',
                 'invalid backfill period [NULL, 2025-06-01 00:00:00+00)', 'a NULL bound');
SELECT throws_ok($$SELECT pgconductor.backfill('nope', '2025-06-01', '2025-06-02')$$, 'P0002',
                 'unknown schedule ''nope''', 'an unknown schedule');
SELECT is(ARRAY[(SELECT count(*) FROM pgconductor.schedule_occurrences), (SELECT count(*) FROM pgconductor.executions)],
          ARRAY[9, 9]::bigint[], 'nothing more was made');

SELECT is(ARRAY[pgconductor._prune_schedule_occurrences('2025-06-08 18:00:00+00', 100),
                pgconductor._prune_schedule_occurrences('2025-06-08 18:00:01+00', 5),
                pgconductor._prune_schedule_occurrences('2025-06-08 18:00:01+00', 100)],
          ARRAY[0, 5, 4], 'retention: records made more than 7 days ago, p_limit at a time');
SELECT is((SELECT count(*) FROM pgconductor.executions), 9::bigint, 'retention leaves the executions');

SELECT * FROM finish();
ROLLBACK;
