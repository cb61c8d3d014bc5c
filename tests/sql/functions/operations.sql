-- cancel(), retry(), get_execution(), queue_stats(), prune_finished(), version().
-- Cases: cancel of pending / finished / unknown executions; retry of failed and cancelled
-- executions and its refusals; get_execution in every state; queue_stats counts;
-- prune_finished by age and limit; version() reports the installed version.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(21);
SET pgconductor.fake_now = '2025-07-01 10:00:00';

SELECT pgconductor.register_task('op', 'ops');
SELECT pgconductor.invoke('op', '{"n": 1}', p_queue => 'ops') AS pending_id \gset
SELECT is(pgconductor.cancel(:'pending_id', 'not needed'), 'cancelled', 'cancel of a pending execution ends it');
SELECT row_eq($$SELECT state, last_error FROM pgconductor.finished_executions WHERE id = '$$ || :'pending_id' || $$'$$,
              ROW('cancelled'::text, 'not needed'::text), 'as cancelled, with the reason');
SELECT is(pgconductor.cancel(:'pending_id'), 'already_finished', 'cancel of a finished execution says so');
SELECT is(pgconductor.cancel(gen_random_uuid()), 'not_found', 'cancel of an unknown id says so');

SELECT is(pgconductor.retry(:'pending_id'), :'pending_id'::uuid, 'retry of a cancelled execution returns its id');
SELECT row_eq($$SELECT state, attempts FROM pgconductor.get_execution('$$ || :'pending_id' || $$')$$,
              ROW('pending'::text, 0), 'it is pending again with no attempts');
SELECT throws_ok(format('SELECT pgconductor.retry(%L)', :'pending_id'), '55000', NULL, 'retry of a live execution is refused');
SELECT throws_ok($$SELECT pgconductor.retry(gen_random_uuid())$$, 'P0002', NULL, 'retry of an unknown id is refused');

SELECT pgconductor.get_executions('op', '00000000-0000-0000-0000-00000000000a', 1);
SELECT is((SELECT state FROM pgconductor.get_execution(:'pending_id')), 'running', 'get_execution: running');
SELECT pgconductor.return_executions('00000000-0000-0000-0000-00000000000a', ARRAY[:'pending_id'::uuid], ARRAY[1], ARRAY['completed'],
                                     NULL, ARRAY['{"sum": 3}']::jsonb[]);
SELECT row_eq($$SELECT state, result FROM pgconductor.get_execution('$$ || :'pending_id' || $$')$$,
              ROW('completed'::text, '{"sum": 3}'::jsonb), 'get_execution: completed with its result');
SELECT throws_ok(format('SELECT pgconductor.retry(%L)', :'pending_id'), '55000', NULL, 'retry of a completed execution is refused');
SELECT is((SELECT count(*) FROM pgconductor.get_execution(gen_random_uuid())), 0::bigint, 'get_execution: no row for an unknown id');

-- queue_stats -----------------------------------------------------------------------------------
SELECT pgconductor.invoke_batch('op', array_fill('{}'::jsonb, ARRAY[3]), p_queue => 'ops');
SELECT pgconductor.invoke('op', '{}', p_queue => 'ops', p_run_at => '2025-07-02');
SELECT pgconductor.get_executions('op', '00000000-0000-0000-0000-00000000000a', 1);
SELECT row_eq($$SELECT pending, due, running, completed, failed, cancelled FROM pgconductor.queue_stats() WHERE queue = 'ops'$$,
              ROW(3::bigint, 2::bigint, 1::bigint, 1::bigint, 0::bigint, 0::bigint), 'queue_stats counts each state');
SELECT ok(EXISTS (SELECT 1 FROM pgconductor.queue_stats() WHERE queue = 'default'), 'queue_stats lists empty queues too');

-- prune_finished ------------------------------------------------------------------------------------
INSERT INTO pgconductor.finished_executions (id, task_key, queue, payload, state, attempts, priority, run_at, created_at, finished_at)
SELECT gen_random_uuid(), 'old', 'ops', '{}', 'completed', 1, 0, '2025-01-01', '2025-01-01', '2025-01-01'::timestamptz + g * interval '1 minute'
  FROM generate_series(1, 5) AS g;
SELECT is(pgconductor.prune_finished('7 days', 3), 3, 'prune_finished deletes at most the limit');
SELECT is(pgconductor.prune_finished('7 days'), 2, 'and the rest on the next call');
SELECT is((SELECT count(*) FROM pgconductor.finished_executions), 1::bigint, 'recent finished executions stay');
SELECT throws_ok($$SELECT pgconductor.prune_finished(NULL)$$, '22023', NULL, 'prune_finished needs an age');

-- orchestrator_stats ----------------------------------------------------------------------------
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-0000000000bb', '0.1.0');
SELECT pgconductor.release_orchestrator('00000000-0000-0000-0000-0000000000bb');
SELECT row_eq($$SELECT state, running FROM pgconductor.orchestrator_stats() WHERE id = '00000000-0000-0000-0000-00000000000a'$$,
              ROW('live'::text, 1::bigint), 'orchestrator_stats: a live orchestrator and what it runs');
SELECT is((SELECT state FROM pgconductor.orchestrator_stats() WHERE id = '00000000-0000-0000-0000-0000000000bb'), 'stopped',
          'orchestrator_stats: a stopped one');

SELECT is(pgconductor.version(), (SELECT default_version FROM pg_available_extensions WHERE name = 'pgconductor'),
          'version() is the installed version (the extension''s, or the plain-SQL install''s record)');

SELECT * FROM finish();
ROLLBACK;
