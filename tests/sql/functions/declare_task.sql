-- declare_task(): only the settings it is given; register_task() NULLs take the defaults.
-- Cases: a new task gets the column defaults for what is not given; a later declare keeps what
-- SQL set and changes only what it names; a JSON null resets to the default; the result is the
-- effective settings; unknown keys, wrong types, a non-object, bad values raise 22023 and
-- change nothing; register_task with NULLs takes the defaults (one home: the table columns).
\i tests/sql/setup.sql
BEGIN;
SELECT plan(12);

SELECT is(pgconductor.declare_task('mail', '{"max_attempts": 5}') - 'queue' - 'window_start' - 'window_end' - 'timezone',
          '{"max_attempts": 5, "backoff_base_ms": 1000, "backoff_cap_ms": 600000, "timeout_ms": null, "max_retry_after": 20,
            "max_running": null, "max_running_per_key": null, "rate_limit": null, "rate_limit_per_key": null,
            "rate_period_ms": 1000, "start_within_ms": null, "keep_completed_ms": 604800000, "keep_failed_ms": 2592000000}'::jsonb,
          'a new task: the given setting, the defaults for the rest');
SELECT pgconductor.register_task('mail', p_max_attempts => 5, p_backoff_base => '2 seconds', p_backoff_cap => '5 minutes');
SELECT is(pgconductor.declare_task('mail', '{"timeout_ms": 30000}')->>'backoff_base_ms', '2000',
          'a declare that does not name the backoff keeps the one set in SQL');
SELECT row_eq($$SELECT max_attempts, backoff_cap, timeout FROM pgconductor.tasks WHERE key = 'mail'$$,
              ROW(5, '5 minutes'::interval, '30 seconds'::interval), 'and sets what it names');
SELECT is(pgconductor.declare_task('mail', '{"timeout_ms": null, "max_attempts": null}')
              - ARRAY['queue', 'window_start', 'window_end', 'timezone', 'backoff_base_ms', 'backoff_cap_ms', 'max_running',
                      'max_running_per_key', 'rate_limit', 'rate_limit_per_key', 'rate_period_ms', 'start_within_ms',
                      'keep_completed_ms', 'keep_failed_ms'],
          '{"max_attempts": 3, "timeout_ms": null, "max_retry_after": 20}'::jsonb, 'a JSON null resets a setting to its default');
SELECT is(pgconductor.declare_task('mail', '{"window_start": "22:00", "window_end": "06:00", "timezone": "Europe/Berlin", "queue": "mails"}')
          ->> 'window_start', '22:00:00', 'windows and queue by declare');
SELECT has_table('pgconductor', 'executions_mails$', 'the declared queue exists');

SELECT throws_ok($$SELECT pgconductor.declare_task('mail', '{"max_atempts": 4}')$$, '22023', NULL, 'an unknown key is refused');
SELECT throws_ok($$SELECT pgconductor.declare_task('mail', '{"max_attempts": "many"}')$$, '22023', NULL, 'a wrong type is refused');
SELECT throws_ok($$SELECT pgconductor.declare_task('mail', '[1]')$$, '22023', NULL, 'so is a non-object');
SELECT throws_ok($$SELECT pgconductor.declare_task('mail', '{"backoff_cap_ms": 1e15}')$$, '22023', NULL, 'and an interval beyond the bound');
SELECT is((SELECT max_attempts FROM pgconductor.tasks WHERE key = 'mail'), 3, 'refused declares changed nothing');

SELECT pgconductor.register_task('plain', p_max_attempts => NULL, p_timezone => NULL);
SELECT row_eq($$SELECT queue, max_attempts, timezone, max_retry_after FROM pgconductor.tasks WHERE key = 'plain'$$,
              ROW('default'::text, 3, 'UTC'::text, 20), 'register_task: NULL means the default');

SELECT * FROM finish();
ROLLBACK;
