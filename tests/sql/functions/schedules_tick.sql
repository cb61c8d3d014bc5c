-- The schedules' tick (_tick_schedules) with the fake clock, and
-- occurrence_of.
-- Cases: nothing before the first occurrence; an occurrence makes one execution with the
-- schedule's payload, queue and priority, run_at = the occurrence and a per-occurrence dedupe
-- key, recorded in schedule_occurrences (occurrence_of reads it back); a second tick at the
-- same time makes nothing; missed = skip makes only the latest missed occurrence, catch_up
-- each (the latest catch_up_max); overlap = skip makes none while the last occurrence's
-- execution is live and moves next_run_at on; a paused schedule is left alone; an occurrence
-- made by backfill is not made again (ON CONFLICT) and an unscheduled one not at all; after
-- three days down, skip and catch_up find the latest occurrences without walking every one.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(25);

-- The occurrence times of schedule p_name, as wall-clock UTC text.
CREATE FUNCTION pg_temp.occ(p_name text) RETURNS text[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(to_char(o.occurs_at AT TIME ZONE 'UTC', 'HH24:MI') ORDER BY o.occurs_at), '{}')
      FROM pgconductor.schedule_occurrences AS o WHERE o.schedule = p_name $$;
CREATE FUNCTION pg_temp.tick(p_at timestamptz) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('pgconductor.fake_now', p_at::text, true);
    RETURN pgconductor._tick_schedules(p_at, 1000);
END $$;

SET pgconductor.fake_now = '2025-06-01 10:00:00+00';
SELECT pgconductor.schedule('s5', 'reports.build', '*/5 * * * *', '{"a": 1}', p_queue => 'reports', p_priority => 2);
SELECT is(pg_temp.tick('2025-06-01 10:04:59+00'), 0, 'nothing before the first occurrence');
SELECT is(pg_temp.tick('2025-06-01 10:05:00+00'), 1, 'the first occurrence, at its time');
SELECT is((SELECT ARRAY[e.task_key, e.queue, e.payload::text, e.priority::text, e.run_at::text, e.dedupe_key]
             FROM pgconductor.executions AS e),
          ARRAY['reports.build', 'reports', '{"a": 1}', '2', '2025-06-01 10:05:00+00',
                'schedule:s5:' || extract(epoch FROM '2025-06-01 10:05:00+00'::timestamptz)::bigint],
          'its execution: the schedule''s task, queue, payload and priority, run_at = the occurrence');
SELECT is((SELECT pgconductor.occurrence_of(e.id) FROM pgconductor.executions AS e), '2025-06-01 10:05:00+00'::timestamptz,
          'occurrence_of gives the occurrence time back');
SELECT is(pgconductor.occurrence_of(gen_random_uuid()), NULL, 'occurrence_of: NULL for an execution no schedule made');
SELECT is((SELECT ARRAY[s.next_run_at, s.last_run_at] FROM pgconductor.schedules AS s WHERE s.name = 's5'),
          ARRAY['2025-06-01 10:10:00+00', '2025-06-01 10:05:00+00']::timestamptz[], 'next_run_at and last_run_at move on');
SELECT is(pg_temp.tick('2025-06-01 10:05:00+00'), 0, 'a second tick at the same time makes nothing');
SELECT is(pg_temp.tick('2025-06-01 10:31:00+00'), 1, 'missed = skip: 10:10 to 10:30 were missed, one is made');
SELECT is(pg_temp.occ('s5'), '{10:05,10:30}', 'missed = skip: the latest one');

SELECT pgconductor.schedule('cu', 'c', '*/5 * * * *', p_missed => 'catch_up');
SELECT pgconductor.schedule('cu3', 'c', '*/5 * * * *', p_missed => 'catch_up', p_catch_up_max => 3);
SELECT pgconductor.schedule('ov', 'o', '*/5 * * * *', p_overlap => 'skip');
SELECT pgconductor.schedule('pz', 'p', '*/5 * * * *');
SELECT pgconductor.pause_schedule('pz');
SELECT is(pg_temp.tick('2025-06-01 10:52:00+00'), 9, 'after 10:35, 10:40, 10:45 and 10:50 were missed: 1 + 4 + 3 + 1');
SELECT is(pg_temp.occ('cu'), '{10:35,10:40,10:45,10:50}', 'catch_up: each missed one');
SELECT is(pg_temp.occ('cu3'), '{10:40,10:45,10:50}', 'catch_up with catch_up_max 3: the latest 3');
SELECT is(pg_temp.occ('ov'), '{10:50}', 'overlap = skip: the latest one');

SELECT is(pg_temp.tick('2025-06-01 10:55:00+00'), 3, 'at 10:55: s5, cu, cu3; not ov, whose 10:50 is pending');
SELECT is((SELECT s.next_run_at FROM pgconductor.schedules AS s WHERE s.name = 'ov'), '2025-06-01 11:00:00+00'::timestamptz,
          'overlap = skip: next_run_at moves on all the same');
SELECT pgconductor.cancel(e.id) FROM pgconductor.executions AS e WHERE e.task_key = 'o';
SELECT is(pg_temp.tick('2025-06-01 11:00:00+00'), 4, 'at 11:00 with the 10:50 of ov cancelled: ov too');
SELECT is(pg_temp.occ('ov'), '{10:50,11:00}', 'overlap = skip: 10:55 was skipped');
SELECT is(ARRAY[(SELECT count(*) FROM pgconductor.schedule_occurrences AS o WHERE o.schedule = 'pz'),
                (SELECT extract(minute FROM s.next_run_at)::bigint FROM pgconductor.schedules AS s WHERE s.name = 'pz')],
          ARRAY[0, 35]::bigint[], 'a paused schedule is left alone');

-- Exactly once: an occurrence that exists is not made again.
SELECT is(pgconductor.backfill('s5', '2025-06-01 11:05+00', '2025-06-01 11:06+00'), 1, 'backfill makes 11:05 of s5 ahead');
SELECT is(pg_temp.tick('2025-06-01 11:05:00+00'), 2, 'the tick at 11:05 makes cu and cu3 only');
SELECT is((SELECT count(*) FROM pgconductor.executions AS e WHERE e.task_key = 'reports.build' AND e.run_at = '2025-06-01 11:05+00'),
          1::bigint, 'one execution for the 11:05 of s5');
SELECT pgconductor.unschedule('cu3');
SELECT is(pg_temp.tick('2025-06-01 11:10:00+00'), 2, 'unscheduled: cu3 makes nothing (s5 and cu do; ov waits)');

-- Three days down: skip and catch_up find the latest occurrences by halving, not by walking.
SELECT pgconductor.schedule('lm', 'm', '* * * * *', p_missed => 'catch_up', p_catch_up_max => 5);
SELECT pgconductor.schedule('ls', 'm', '* * * * *');
SELECT is(pg_temp.tick('2025-06-04 09:30:30+00'), 107, 's5 1, cu 100 (its catch_up_max), ov 0, lm 5, ls 1');
SELECT is(pg_temp.occ('lm') || pg_temp.occ('ls'), '{09:26,09:27,09:28,09:29,09:30,09:30}', 'the latest 5, and the latest 1');
SELECT is((SELECT ARRAY[min(o.occurs_at), max(o.occurs_at)] FROM pgconductor.schedule_occurrences AS o
            WHERE o.schedule = 'cu' AND o.occurs_at > '2025-06-02'),
          ARRAY['2025-06-04 01:15:00+00', '2025-06-04 09:30:00+00']::timestamptz[], 'cu: the latest 100, every 5 minutes');

SELECT * FROM finish();
ROLLBACK;
