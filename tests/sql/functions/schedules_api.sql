-- The schedule API: schedule, unschedule, pause_schedule, resume_schedule,
-- schedules, sync_static_schedules.
-- Cases: schedule() creates with the defaults and returns the next run; an update keeps the
-- next run unless the cron expression or the time zone changed, and keeps a pause; bad input
-- (name, task key, cron field, unknown zone, queue, missed, overlap, catch_up_max) raises
-- 22023 in one line and changes nothing; unschedule() says whether it deleted, drops the
-- occurrence records and leaves the executions; pause/resume (unknown name: P0002), resume
-- recomputes from now for missed = skip and keeps the next run for catch_up; the listing;
-- syncing static schedules deletes only static ones the code no longer declares, of the
-- given tasks when given.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(28);
SET pgconductor.fake_now = '2025-06-01 10:02:00+00';

SELECT is(pgconductor.schedule('report', 'reports.build', '*/5 * * * *', '{"kind": "daily"}'),
          '2025-06-01 10:05:00+00'::timestamptz, 'schedule() returns the next run');
SELECT is((SELECT ARRAY[s.tz, s.missed, s.overlap, s.static::text, s.paused::text, s.catch_up_max::text, s.priority::text,
                        coalesce(s.queue, 'NULL'), s.payload::text]
             FROM pgconductor.schedules AS s WHERE s.name = 'report'),
          ARRAY['UTC', 'skip', 'allow', 'false', 'false', '100', '0', 'NULL', '{"kind": "daily"}'], 'the defaults');
SELECT is((SELECT (s.parsed).minutes FROM pgconductor.schedules AS s WHERE s.name = 'report'), '{0,5,10,15,20,25,30,35,40,45,50,55}',
          'the parsed form is stored');

SET pgconductor.fake_now = '2025-06-01 10:07:00+00';
SELECT is(pgconductor.schedule('report', 'reports.build', '*/5 * * * *', '{"kind": "weekly"}', p_priority => 3),
          '2025-06-01 10:05:00+00'::timestamptz, 'same cron and zone: the next run stays (the tick has it)');
SELECT is((SELECT s.payload->>'kind' || s.priority FROM pgconductor.schedules AS s WHERE s.name = 'report'), 'weekly3',
          'the update took the new payload and priority');
SELECT is(pgconductor.schedule('report', 'reports.build', '0 * * * *'), '2025-06-01 11:00:00+00'::timestamptz,
          'a new cron expression: the next run is computed from now');
SELECT is(pgconductor.schedule('report', 'reports.build', '0 * * * *', p_tz => 'Asia/Kolkata'), '2025-06-01 10:30:00+00'::timestamptz,
          'a new zone: computed again (+05:30)');
SELECT pgconductor.pause_schedule('report');
SELECT pgconductor.schedule('report', 'reports.build', '0 * * * *', p_tz => 'Asia/Kolkata', p_overlap => 'skip');
SELECT ok((SELECT s.paused AND s.overlap = 'skip' FROM pgconductor.schedules AS s WHERE s.name = 'report'),
          'an update keeps the pause');
SELECT pgconductor.resume_schedule('report');

-- Bad input: one line, 22023, nothing changed.
CREATE TEMP TABLE before AS SELECT * FROM pgconductor.schedules;
SELECT throws_ok($$SELECT pgconductor.schedule(' report', 't', '* * * * *')$$, '22023',
                 'invalid schedule name '' report''', 'a name with spaces around');
SELECT throws_ok($$SELECT pgconductor.schedule('report', E't\n', '* * * * *')$$, '22023',
                 'invalid task key ''t?''', 'a bad task key');
SELECT throws_ok($$SELECT pgconductor.schedule('report', 't', '*/5 * * * mon-funday')$$, '22023',
                 'invalid cron day-of-week field ''mon-funday'': ''funday'' is not a number or a name', 'a bad cron field');
SELECT throws_ok($$SELECT pgconductor.schedule('report', 't', '* * * * *', p_tz => 'Mars/Olympus_Mons')$$, '22023',
                 'unknown time zone ''Mars/Olympus_Mons''', 'an unknown time zone');
SELECT throws_ok($$SELECT pgconductor.schedule('report', 't', '* * * * *', p_tz => 'UTC+2')$$, '22023',
                 'unknown time zone ''UTC+2''', 'a POSIX offset is no zone');
SELECT throws_ok($$SELECT pgconductor.schedule('report', 't', '* * * * *', p_queue => 'No Queue')$$, '22023',
                 'invalid queue name ''No Queue''', 'a bad queue name');
SELECT throws_ok($$SELECT pgconductor.schedule('report', 't', '* * * * *', p_missed => 'later')$$, '22023',
                 'invalid missed policy ''later''', 'a bad missed policy');
SELECT throws_ok($$SELECT pgconductor.schedule('report', 't', '* * * * *', p_overlap => 'never')$$, '22023',
                 'invalid overlap policy ''never''', 'a bad overlap policy');
SELECT throws_ok($$SELECT pgconductor.schedule('report', 't', '* * * * *', p_catch_up_max => 0)$$, '22023',
                 'catch_up_max must be between 1 and 1000, got 0', 'a catch_up_max below 1');
SELECT ok((SELECT count(*) = 1 FROM pgconductor.schedules)
          AND (SELECT s = b FROM pgconductor.schedules AS s, before AS b), 'nothing changed');

-- Pause and resume.
SELECT throws_ok($$SELECT pgconductor.pause_schedule('nope')$$, 'P0002', 'unknown schedule ''nope''', 'pause: an unknown name');
SELECT throws_ok($$SELECT pgconductor.resume_schedule('nope')$$, 'P0002', 'unknown schedule ''nope''', 'resume: an unknown name');
SELECT pgconductor.schedule('nightly', 'reports.build', '0 2 * * *', p_missed => 'catch_up');
SELECT pgconductor.pause_schedule(n) FROM unnest(ARRAY['report', 'nightly']) AS n;
SET pgconductor.fake_now = '2025-06-04 12:10:00+00';
SELECT is(pgconductor.resume_schedule('report'), '2025-06-04 12:30:00+00'::timestamptz,
          'resume, missed = skip: the next run after now');
SELECT is(pgconductor.resume_schedule('nightly'), '2025-06-02 02:00:00+00'::timestamptz,
          'resume, missed = catch_up: the next run stays, for the tick to catch up');

SELECT is((SELECT array_agg(s.name || ' ' || s.task_key || ' ' || s.cron || ' ' || s.tz || ' ' || s.paused ORDER BY s.name)
             FROM pgconductor.schedules() AS s),
          ARRAY['nightly reports.build 0 2 * * * UTC false', 'report reports.build 0 * * * * Asia/Kolkata false'],
          'schedules() lists them by name');

-- unschedule: true, then false; occurrence records go, executions stay.
SELECT pgconductor.backfill('nightly', '2025-06-01', '2025-06-03');
SELECT is(ARRAY[pgconductor.unschedule('nightly'), pgconductor.unschedule('nightly')], ARRAY[true, false],
          'unschedule says whether it deleted');
SELECT is(ARRAY[(SELECT count(*) FROM pgconductor.schedule_occurrences),
                (SELECT count(*) FROM pgconductor.executions WHERE task_key = 'reports.build')],
          ARRAY[0, 2]::bigint[], 'its occurrence records are gone, its executions stay');

-- Static schedules removed from code go at worker start; dynamic ones stay.
SELECT pgconductor.schedule(n, t, '@daily', p_static => true)
  FROM (VALUES ('a', 't1'), ('b', 't1'), ('c', 't2')) AS v(n, t);
SELECT is(pgconductor.sync_static_schedules('{a}', '{t1}'), 1, 'a worker of t1 declaring a removes b only');
SELECT is(pgconductor.sync_static_schedules('{a}'), 1, 'without task keys: every static schedule not declared (c)');
SELECT is((SELECT array_agg(s.name || ':' || s.static ORDER BY s.name) FROM pgconductor.schedules AS s),
          ARRAY['a:true', 'report:false'], 'the dynamic schedule stays');

SELECT * FROM finish();
ROLLBACK;
