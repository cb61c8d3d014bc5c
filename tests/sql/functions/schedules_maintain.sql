-- The schedules' tick as workers drive it: tick() and maintain().
-- Cases: tick() makes the due occurrence and says how many; a second tick at the same time
-- makes none; maintain() ticks too and reports 'schedules'; it prunes occurrence records
-- older than the events' keep and reports 'occurrences' (the executions stay); tick() with a
-- limit outside 1..100000 raises 22023 and makes nothing.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(7);

SET pgconductor.fake_now = '2025-06-01 10:00:00+00';
SELECT pgconductor.schedule('every-minute', 'reports.build', '* * * * *');
SET pgconductor.fake_now = '2025-06-01 10:01:00+00';
SELECT is(pgconductor.tick(), 1, 'tick() makes the occurrence due now');
SELECT is(pgconductor.tick(), 0, 'a second tick at the same time makes none');
SET pgconductor.fake_now = '2025-06-01 10:02:30+00';
SELECT is((pgconductor.maintain()->>'schedules')::integer, 1, 'maintain() ticks the schedules too');
SELECT throws_ok($$SELECT pgconductor.tick(0)$$, '22023', NULL, 'a limit below 1 raises 22023');
SELECT is((SELECT count(*)::integer FROM pgconductor.schedule_occurrences), 2, 'and made nothing');

-- Far later: the occurrence records are pruned, their executions stay.
SELECT pgconductor.pause_schedule('every-minute');
SELECT set_config('pgconductor.fake_now', (timestamptz '2025-06-01 10:03:00+00' + pgconductor._keep_events() + interval '1 day')::text, false);
SELECT is((pgconductor.maintain()->>'occurrences')::integer, 2, 'maintain() prunes old occurrence records');
SELECT is((SELECT count(*)::integer FROM pgconductor.executions WHERE task_key = 'reports.build'), 2, 'their executions stay');

SELECT * FROM finish();
ROLLBACK;
