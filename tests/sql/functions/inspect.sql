-- get_execution(), list_executions(), task_overview(), retry_executions().
-- Cases: get_execution shows a pending, a running and a finished execution with every attempt's
-- error; list_executions filters by state, task and queue, newest first, pages with p_before,
-- and refuses bad states and limits; task_overview tells registered and served tasks and the
-- pending work no live orchestrator serves; retry_executions puts failed ones back in bulk.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(16);
SET pgconductor.fake_now = '2026-03-01 10:00:00+00';

SELECT pgconductor.register_task('flaky', p_max_attempts => 2, p_backoff_base => '0', p_backoff_cap => '0');
SELECT pgconductor.invoke('flaky', '{"n": 1}') AS flaky_id \gset
SELECT pgconductor.invoke('other', '{"n": 2}') AS other_id \gset
SELECT is((SELECT state || ':' || attempts FROM pgconductor.get_execution(:'other_id')), 'pending:0', 'a pending execution');
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-0000000000e1', NULL, '30 seconds',
                             '{"queues": {"default": {"tasks": ["flaky"]}}}');
SELECT count(*) FROM pgconductor.get_executions('flaky', '00000000-0000-0000-0000-0000000000e1', 1);
SELECT is((SELECT state FROM pgconductor.get_execution(:'flaky_id')), 'running', 'a running execution');
SELECT pgconductor.return_executions('00000000-0000-0000-0000-0000000000e1', ARRAY[:'flaky_id'::uuid], ARRAY[1], ARRAY['failed'], ARRAY['boom 1']);
SELECT count(*) FROM pgconductor.get_executions('flaky', '00000000-0000-0000-0000-0000000000e1', 1);
SELECT pgconductor.return_executions('00000000-0000-0000-0000-0000000000e1', ARRAY[:'flaky_id'::uuid], ARRAY[2], ARRAY['failed'], ARRAY['boom 2']);
SELECT row_eq(format($$SELECT state, attempts, max_attempts, last_error, payload FROM pgconductor.get_execution(%L)$$, :'flaky_id'),
              ROW('failed'::text, 2, 2, 'boom 2'::text, '{"n": 1}'::jsonb), 'a failed execution with its last error');
SELECT results_eq(format($$SELECT (e->>'attempt')::int, e->>'outcome', e->>'error' FROM pgconductor.get_execution(%L) AS g,
                           jsonb_array_elements(g.errors) AS e$$, :'flaky_id'),
                  $$VALUES (1, 'retry_scheduled'::text, 'boom 1'::text), (2, 'failed', 'boom 2')$$, 'and every attempt''s error');
SELECT is((SELECT count(*) FROM pgconductor.get_execution(gen_random_uuid())), 0::bigint, 'no row for an unknown id');

-- list_executions
SELECT pgconductor.invoke_batch('bulk', array_fill('{}'::jsonb, ARRAY[5]), 'q2');
SELECT results_eq($$SELECT id FROM pgconductor.list_executions('failed')$$, ARRAY[:'flaky_id'::uuid], 'by state');
SELECT is((SELECT count(*) FROM pgconductor.list_executions(p_queue => 'q2')), 5::bigint, 'by queue');
SELECT is((SELECT count(*) FROM pgconductor.list_executions(p_task_key => 'other', p_state => 'pending')), 1::bigint, 'by task and state');
SELECT is(ARRAY(SELECT id FROM pgconductor.list_executions()), ARRAY(SELECT id FROM pgconductor.list_executions() ORDER BY id DESC),
          'newest first');
SELECT is((SELECT count(*) FROM pgconductor.list_executions(p_queue => 'q2', p_limit => 2,
            p_before => (SELECT id FROM pgconductor.list_executions(p_queue => 'q2', p_limit => 2) ORDER BY id LIMIT 1))), 2::bigint,
          'the next page continues below the last id');
SELECT throws_ok($$SELECT * FROM pgconductor.list_executions('done')$$, '22023', NULL, 'an unknown state is refused');
SELECT throws_ok($$SELECT * FROM pgconductor.list_executions(p_limit => 0)$$, '22023', NULL, 'so is a limit of 0');

-- task_overview
SELECT results_eq($$SELECT task_key, registered, served, pending FROM pgconductor.task_overview() WHERE queue = 'default' ORDER BY task_key$$,
                  $$VALUES ('flaky'::text, true, true, 0::bigint), ('other', false, false, 1::bigint)$$,
                  'registered and served tasks, and pending work nobody serves');
SELECT is((SELECT served FROM pgconductor.task_overview() WHERE task_key = 'bulk'), false, 'a task in a queue nobody serves');

-- retry_executions
SELECT is(pgconductor.retry_executions('failed', 'flaky'), 1, 'bulk retry of the failed executions of a task');
SELECT row_eq(format($$SELECT state, attempts, jsonb_array_length(errors) FROM pgconductor.get_execution(%L)$$, :'flaky_id'),
              ROW('pending'::text, 0, 2), 'pending again, its errors kept');

SELECT * FROM finish();
ROLLBACK;
