-- get_executions(): claiming.
-- Cases: the seed's window example (inside 1 row, outside 0 rows, exhausted attempts excluded);
-- lease fields (locked_by, attempt, max_attempts); claimed rows are not claimed again; priority
-- then run_at order; delayed rows wait; batch size bounds and errors; windows crossing
-- midnight and in a time zone; unregistered tasks; the queue form and its task filter.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(28);

-- The seed's example -----------------------------------------------------------------------
SET pgconductor.fake_now = '2025-01-15 10:00:00';
INSERT INTO pgconductor.tasks (key, window_start, window_end) VALUES ('windowed-task', '09:00:00', '17:00:00');
INSERT INTO pgconductor.executions (id, task_key, payload) VALUES (uuid_generate_v4(), 'windowed-task', '{}'::jsonb);

SELECT is((SELECT count(*) FROM pgconductor.get_executions('windowed-task', uuid_generate_v4(), 10)),
          1::bigint, 'Returns executions within time window');

SET pgconductor.fake_now = '2025-01-15 20:00:00';
INSERT INTO pgconductor.executions (id, task_key, payload) VALUES (uuid_generate_v4(), 'windowed-task', '{}'::jsonb);
SELECT is((SELECT count(*) FROM pgconductor.get_executions('windowed-task', uuid_generate_v4(), 10)),
          0::bigint, 'Blocks executions outside time window');

-- Back inside the window: the row from 20:00 is due, the exhausted one is not.
SET pgconductor.fake_now = '2025-01-16 10:00:00';
INSERT INTO pgconductor.executions (id, task_key, payload, attempts) VALUES (uuid_generate_v4(), 'windowed-task', '{}'::jsonb, 5);
UPDATE pgconductor.tasks SET max_attempts = 3 WHERE key = 'windowed-task';
SELECT is((SELECT count(*) FROM pgconductor.get_executions('windowed-task', uuid_generate_v4(), 10)),
          1::bigint, 'Excludes executions that exceeded max_attempts');
SELECT is((SELECT attempts FROM pgconductor.executions WHERE task_key = 'windowed-task' AND locked_by IS NULL),
          5, 'the exhausted execution stays unclaimed');

-- Lease fields ------------------------------------------------------------------------------
SET pgconductor.fake_now = '2025-02-01 12:00:00';
SELECT pgconductor.register_task('lease', p_max_attempts => 4, p_timeout => '2 seconds');
SELECT pgconductor.invoke('lease', '{"n": 1}') AS lease_id \gset
CREATE TEMP TABLE got AS
SELECT * FROM pgconductor.get_executions('lease', '00000000-0000-0000-0000-00000000000a', 5);
SELECT is((SELECT id FROM got), :'lease_id'::uuid, 'returns the invoked execution');
SELECT is((SELECT attempt FROM got), 1, 'the claim counts attempt 1');
SELECT is((SELECT max_attempts FROM got), 4, 'max_attempts comes from the task');
SELECT is((SELECT timeout_ms FROM got), 2000::bigint, 'timeout_ms comes from the task');
SELECT is((SELECT payload FROM got), '{"n": 1}'::jsonb, 'payload is returned');
SELECT is((SELECT locked_by FROM pgconductor.executions WHERE id = :'lease_id'),
          '00000000-0000-0000-0000-00000000000a'::uuid, 'locked_by is the claiming orchestrator');
SELECT is((SELECT locked_at FROM pgconductor.executions WHERE id = :'lease_id'),
          '2025-02-01 12:00:00+00'::timestamptz, 'locked_at comes from the fake clock');
SELECT ok(EXISTS (SELECT 1 FROM pgconductor.orchestrators WHERE id = '00000000-0000-0000-0000-00000000000a'),
          'an unknown claimer is registered as an orchestrator');
SELECT is((SELECT count(*) FROM pgconductor.get_executions('lease', uuid_generate_v4(), 5)),
          0::bigint, 'a claimed execution is not claimed again');

-- Order: priority (lower first), then run_at -------------------------------------------------
SELECT pgconductor.invoke('order', '{"n": "late-p0"}', p_run_at => '2025-02-01 11:59:00', p_priority => 0);
SELECT pgconductor.invoke('order', '{"n": "early-p0"}', p_run_at => '2025-02-01 11:00:00', p_priority => 0);
SELECT pgconductor.invoke('order', '{"n": "p-5"}', p_run_at => '2025-02-01 11:59:59', p_priority => -5);
SELECT pgconductor.invoke('order', '{"n": "p9"}', p_run_at => '2025-02-01 10:00:00', p_priority => 9);
SELECT pgconductor.invoke('order', '{"n": "future"}', p_run_at => '2025-02-01 12:00:01', p_priority => -100);
SELECT results_eq(
    $$SELECT payload->>'n' FROM pgconductor.get_executions('order', '00000000-0000-0000-0000-00000000000b', 10)$$,
    ARRAY['p-5', 'early-p0', 'late-p0', 'p9'],
    'claims by priority then run_at; delayed executions wait');
SET pgconductor.fake_now = '2025-02-01 12:00:01';
SELECT is((SELECT payload->>'n' FROM pgconductor.get_executions('order', '00000000-0000-0000-0000-00000000000b', 10)),
          'future', 'a delayed execution is claimable once due');

-- Batch size --------------------------------------------------------------------------------
SELECT pgconductor.invoke_batch('sized', array_fill('{}'::jsonb, ARRAY[7]));
SELECT is((SELECT count(*) FROM pgconductor.get_executions('sized', uuid_generate_v4(), 3)), 3::bigint, 'claims at most the batch size');
SELECT is((SELECT count(*) FROM pgconductor.get_executions('sized', uuid_generate_v4(), 0)), 0::bigint, 'batch size 0 claims nothing');
SELECT throws_ok($$SELECT * FROM pgconductor.get_executions('sized', uuid_generate_v4(), -1)$$,
                 '22023', NULL, 'a negative batch size is rejected');
SELECT throws_ok($$SELECT * FROM pgconductor.get_executions('sized', uuid_generate_v4(), 10001)$$,
                 '22023', NULL, 'a batch size over 10000 is rejected');
SELECT throws_ok($$SELECT * FROM pgconductor.get_executions('sized', NULL, 1)$$,
                 '22023', NULL, 'a NULL orchestrator id is rejected');

-- Windows across midnight and in a time zone (G11) -------------------------------------------
SELECT pgconductor.register_task('night', p_window_start => '22:00', p_window_end => '06:00');
SELECT pgconductor.invoke_batch('night', array_fill('{}'::jsonb, ARRAY[3]), p_run_at => '2025-03-01 00:00');
SET pgconductor.fake_now = '2025-03-01 12:00:00';
SELECT is((SELECT count(*) FROM pgconductor.get_executions('night', uuid_generate_v4(), 1)), 0::bigint, 'overnight window: noon is outside');
SET pgconductor.fake_now = '2025-03-01 23:30:00';
SELECT is((SELECT count(*) FROM pgconductor.get_executions('night', uuid_generate_v4(), 1)), 1::bigint, 'overnight window: 23:30 is inside');
SET pgconductor.fake_now = '2025-03-02 05:59:59';
SELECT is((SELECT count(*) FROM pgconductor.get_executions('night', uuid_generate_v4(), 1)), 1::bigint, 'overnight window: 05:59:59 is inside');
SET pgconductor.fake_now = '2025-03-02 06:00:00';
SELECT is((SELECT count(*) FROM pgconductor.get_executions('night', uuid_generate_v4(), 1)), 0::bigint, 'the window end is exclusive');

SELECT pgconductor.register_task('berlin', p_window_start => '09:00', p_window_end => '10:00', p_timezone => 'Europe/Berlin');
SELECT pgconductor.invoke_batch('berlin', array_fill('{}'::jsonb, ARRAY[2]), p_run_at => '2025-03-01 00:00');
SET pgconductor.fake_now = '2025-03-03 09:30:00+00';  -- 10:30 in Berlin
SELECT is((SELECT count(*) FROM pgconductor.get_executions('berlin', uuid_generate_v4(), 1)), 0::bigint, 'windows are read in the task time zone (outside)');
SET pgconductor.fake_now = '2025-03-03 08:30:00+00';  -- 09:30 in Berlin
SELECT is((SELECT count(*) FROM pgconductor.get_executions('berlin', uuid_generate_v4(), 1)), 1::bigint, 'windows are read in the task time zone (inside)');

-- Queue form: only the named tasks of that queue ----------------------------------------------
SELECT pgconductor.invoke('mail', '{}', p_queue => 'side');
SELECT pgconductor.invoke('sms', '{}', p_queue => 'side');
SELECT results_eq(
    $$SELECT task_key FROM pgconductor.get_executions(ARRAY['mail'], '00000000-0000-0000-0000-00000000000c', 10, 'side')$$,
    ARRAY['mail'], 'the queue form claims only the listed tasks');
SELECT results_eq(
    $$SELECT task_key FROM pgconductor.get_executions(NULL::text[], '00000000-0000-0000-0000-00000000000c', 10, 'side')$$,
    ARRAY['sms'], 'NULL task keys claim every task of the queue (invoked before any registration)');

SELECT * FROM finish();
ROLLBACK;
