-- Child executions: created by a 'children' suspend plan, awaited, and their ends.
-- Cases: the plan creates every child in its queue with parent_id and parks the parent; a
-- replay does not create a stored child twice; a child's completion fills the parent's step
-- and the last one wakes the parent in the same statement; a failed child's error reaches the
-- step; a deadline marks the waiting children timed_out and cancels them; cancelling a parent
-- cancels its children recursively; 1000 children in one plan.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(16);
SET pgconductor.fake_now = '2026-05-01 10:00:00+00';
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-00000000000a');
SELECT pgconductor.register_task('mail', 'mailq');

SELECT pgconductor.invoke('parent') AS parent_id \gset
SELECT count(*) FROM pgconductor.get_executions('parent', '00000000-0000-0000-0000-00000000000a', 1);
SELECT is((SELECT outcome FROM pgconductor.return_executions('00000000-0000-0000-0000-00000000000a', ARRAY[:'parent_id'::uuid],
              ARRAY[1], ARRAY['suspend'], NULL, ARRAY['{"children": {"create": [
                  {"key": "mail", "seq": 0, "task": "mail", "payload": {"to": "a"}},
                  {"key": "bill", "seq": 1, "task": "bill", "payload": {"n": 2}, "queue": "billing"}]}}'::jsonb])),
          'suspended', 'the parent parks waiting for its children');
SELECT results_eq(format($$SELECT task_key, queue, parent_step FROM pgconductor.executions WHERE parent_id = %L ORDER BY task_key$$, :'parent_id'),
                  $$VALUES ('bill'::text, 'billing'::text, 'bill'::text), ('mail', 'mailq', 'mail')$$,
                  'each child in its own queue, knowing its parent and step');
SELECT is((SELECT state FROM pgconductor.get_execution(:'parent_id')), 'waiting_for_children', 'waiting for children');

-- The mail child completes: the parent keeps waiting for the bill child.
CREATE TEMP TABLE kids AS SELECT * FROM pgconductor.get_executions(NULL::text[], '00000000-0000-0000-0000-00000000000a', 10, 'mailq');
SELECT pgconductor.return_executions('00000000-0000-0000-0000-00000000000a', ARRAY(SELECT id FROM kids), ARRAY[1], ARRAY['completed'],
                                     NULL, ARRAY['{"sent": true}'::jsonb]);
SELECT row_eq(format($$SELECT state, result FROM pgconductor.steps WHERE execution_id = %L AND key = 'mail'$$, :'parent_id'),
              ROW('done'::text, '{"sent": true}'::jsonb), 'a child''s completion fills its step with the result');
SELECT is((SELECT waiting FROM pgconductor.executions WHERE id = :'parent_id'), 'children', 'the parent still waits for the other');

-- The bill child fails for good: the parent wakes in the same statement, the error in its step.
INSERT INTO kids SELECT * FROM pgconductor.get_executions(NULL::text[], '00000000-0000-0000-0000-00000000000a', 10, 'billing');
SELECT pgconductor.return_executions('00000000-0000-0000-0000-00000000000a', ARRAY(SELECT id FROM kids WHERE task_key = 'bill'),
                                     ARRAY[1], ARRAY['fatal'], ARRAY['card declined']);
SELECT row_eq(format($$SELECT state, error FROM pgconductor.steps WHERE execution_id = %L AND key = 'bill'$$, :'parent_id'),
              ROW('failed'::text, 'card declined'::text), 'a failed child''s error reaches its step');
SELECT row_eq(format($$SELECT waiting, run_at FROM pgconductor.executions WHERE id = %L$$, :'parent_id'),
              ROW(NULL::text, '2026-05-01 10:00:00+00'::timestamptz), 'the last child''s end wakes the parent at once');
CREATE TEMP TABLE p2 AS SELECT * FROM pgconductor.get_executions('parent', '00000000-0000-0000-0000-00000000000a', 1);
SELECT is((SELECT steps->'bill'->>'state' FROM p2), 'failed', 'the replay sees the child''s end');
-- A replay that plans the same children again creates none.
SELECT is((SELECT outcome FROM pgconductor.return_executions('00000000-0000-0000-0000-00000000000a', ARRAY[:'parent_id'::uuid],
              ARRAY[(SELECT lease FROM p2)], ARRAY['suspend'], NULL, ARRAY['{"children": {"create": [
                  {"key": "mail", "seq": 0, "task": "mail"}, {"key": "bill", "seq": 1, "task": "bill"}]}}'::jsonb])),
          'resumed', 'children stored already are not created again: nothing to wait for');
SELECT is((SELECT count(*) FROM pgconductor.executions WHERE task_key IN ('mail', 'bill')), 0::bigint, 'no second child');

-- A deadline: the waiting children time out and are cancelled.
SELECT pgconductor.invoke('slow-parent') AS slow_id \gset
SELECT count(*) FROM pgconductor.get_executions('slow-parent', '00000000-0000-0000-0000-00000000000a', 1);
SELECT pgconductor.return_executions('00000000-0000-0000-0000-00000000000a', ARRAY[:'slow_id'::uuid], ARRAY[1], ARRAY['suspend'], NULL,
    ARRAY['{"children": {"create": [{"key": "k", "seq": 0, "task": "never"}], "deadline": "2026-05-01 10:05:00+00"}}'::jsonb]);
SET pgconductor.fake_now = '2026-05-01 10:06:00+00';
SELECT is((SELECT count(*) FROM pgconductor.get_executions('slow-parent', '00000000-0000-0000-0000-00000000000a', 1)), 1::bigint,
          'past its deadline the parent is woken and claimed');
SELECT is((SELECT state FROM pgconductor.steps WHERE execution_id = :'slow_id'), 'timed_out', 'its waiting child step timed out');
SELECT is((SELECT state FROM pgconductor.finished_executions WHERE parent_id = :'slow_id'), 'cancelled', 'and the child was cancelled');

-- Cancelling a parked parent cancels its children, and theirs.
SELECT pgconductor.invoke('top') AS top_id \gset
SELECT count(*) FROM pgconductor.get_executions('top', '00000000-0000-0000-0000-00000000000a', 1);
SELECT pgconductor.return_executions('00000000-0000-0000-0000-00000000000a', ARRAY[:'top_id'::uuid], ARRAY[1], ARRAY['suspend'], NULL,
    ARRAY['{"children": {"create": [{"key": "mid", "seq": 0, "task": "middle"}]}}'::jsonb]);
CREATE TEMP TABLE m AS SELECT * FROM pgconductor.get_executions('middle', '00000000-0000-0000-0000-00000000000a', 1);
SELECT pgconductor.return_executions('00000000-0000-0000-0000-00000000000a', ARRAY(SELECT id FROM m), ARRAY[1], ARRAY['suspend'], NULL,
    ARRAY['{"children": {"create": [{"key": "leaf", "seq": 0, "task": "leaf"}]}}'::jsonb]);
SELECT is(pgconductor.cancel(:'top_id'), 'cancelled', 'cancel a parked parent');
SELECT results_eq($$SELECT task_key, state FROM pgconductor.finished_executions WHERE task_key IN ('top', 'middle', 'leaf') ORDER BY task_key$$,
                  $$VALUES ('leaf'::text, 'cancelled'::text), ('middle', 'cancelled'), ('top', 'cancelled')$$,
                  'its children and grandchildren are cancelled');

-- Fan-out of 1000 children in one plan.
SELECT pgconductor.invoke('fan') AS fan_id \gset
SELECT count(*) FROM pgconductor.get_executions('fan', '00000000-0000-0000-0000-00000000000a', 1);
SELECT pgconductor.return_executions('00000000-0000-0000-0000-00000000000a', ARRAY[:'fan_id'::uuid], ARRAY[1], ARRAY['suspend'], NULL,
    ARRAY[jsonb_build_object('children', jsonb_build_object('create',
        (SELECT jsonb_agg(jsonb_build_object('key', 'c[' || g || ']', 'seq', g, 'task', 'leaf-task', 'payload', jsonb_build_object('i', g)))
           FROM generate_series(0, 999) AS g)))]);
SELECT is((SELECT count(*) FROM pgconductor.executions WHERE parent_id = :'fan_id'), 1000::bigint, '1000 children in one statement');

SELECT * FROM finish();
ROLLBACK;
