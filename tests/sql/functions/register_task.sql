-- register_task(): a task's settings.
-- Cases: insert with defaults; update in place; the queue is created; bad input (key, queue,
-- max_attempts, window ends equal or half given, time zone, backoff, timeout) raises 22023
-- with a hint and changes nothing.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(13);

SELECT pgconductor.register_task('report');
SELECT row_eq($$SELECT queue, max_attempts, window_start, timezone, backoff_base, backoff_cap, timeout FROM pgconductor.tasks WHERE key = 'report'$$,
              ROW('default'::text, 3, NULL::time, 'UTC'::text, '1 second'::interval, '10 minutes'::interval, NULL::interval),
              'defaults');
SELECT pgconductor.register_task('report', 'reports', 5, '22:00', '06:00', 'Europe/Paris', '2 seconds', '1 minute', '30 seconds');
SELECT row_eq($$SELECT queue, max_attempts, window_start, window_end, timezone, backoff_base, backoff_cap, timeout FROM pgconductor.tasks WHERE key = 'report'$$,
              ROW('reports'::text, 5, '22:00'::time, '06:00'::time, 'Europe/Paris'::text, '2 seconds'::interval, '1 minute'::interval, '30 seconds'::interval),
              'a second call updates every setting');
SELECT has_table('pgconductor', 'executions_reports$', 'the task queue exists');

SELECT throws_ok($$SELECT pgconductor.register_task('')$$, '22023', NULL, 'empty key');
SELECT throws_ok($$SELECT pgconductor.register_task('x', 'a b')$$, '22023', NULL, 'bad queue');
SELECT throws_ok($$SELECT pgconductor.register_task('x', p_max_attempts => 0)$$, '22023', NULL, 'max_attempts 0');
SELECT throws_ok($$SELECT pgconductor.register_task('x', p_window_start => '09:00', p_window_end => '09:00')$$, '22023', NULL, 'a window with start = end');
SELECT throws_ok($$SELECT pgconductor.register_task('x', p_window_start => '09:00')$$, '22023', NULL, 'a window with one end');
SELECT throws_ok($$SELECT pgconductor.register_task('x', p_timezone => 'Mars/Olympus')$$, '22023', NULL, 'an unknown time zone');
SELECT throws_ok($$SELECT pgconductor.register_task('x', p_backoff_base => '1 minute', p_backoff_cap => '1 second')$$, '22023', NULL, 'cap below base');
SELECT throws_ok($$SELECT pgconductor.register_task('x', p_timeout => '0 seconds')$$, '22023', NULL, 'a zero timeout');
SELECT is((SELECT count(*) FROM pgconductor.tasks WHERE key = 'x'), 0::bigint, 'rejected registrations change nothing');
SELECT is((SELECT count(*) FROM pgconductor.queues WHERE name = 'a b'), 0::bigint, 'and create no queue');

SELECT * FROM finish();
ROLLBACK;
