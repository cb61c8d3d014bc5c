-- invoke(): enqueueing one execution.
-- Cases: returns the id; defaults (queue, priority 0, run_at now, payload); the task's
-- registered queue; an explicit queue is created on demand (G19); delayed run_at; bad input
-- (NULL/empty/over-long/space-padded keys, bad queue, non-JSON payload) raises and changes
-- nothing; dedupe: a pending holder is replaced in place, a running holder lets go of the key;
-- a finished execution does not hold its key (G8).
\i tests/sql/setup.sql
BEGIN;
SELECT plan(22);
SET pgconductor.fake_now = '2025-04-01 08:00:00';

SELECT pgconductor.invoke('plain') AS plain_id \gset
SELECT ok(:'plain_id'::uuid IS NOT NULL, 'invoke returns the new id');
SELECT row_eq($$SELECT queue, priority, run_at, payload, attempts FROM pgconductor.executions WHERE id = '$$ || :'plain_id' || $$'$$,
              ROW('default'::text, 0, '2025-04-01 08:00:00+00'::timestamptz, '{}'::jsonb, 0),
              'defaults: queue default, priority 0, run_at now, empty payload, no attempts');

SELECT pgconductor.register_task('mailer', p_queue => 'mail');
SELECT pgconductor.invoke('mailer', '{"to": "a@b"}') AS mail_id \gset
SELECT is((SELECT queue FROM pgconductor.executions WHERE id = :'mail_id'), 'mail', 'a registered task goes to its queue');
SELECT pgconductor.invoke('ad-hoc', '{}', p_queue => 'fresh-q') AS adhoc_id \gset
SELECT is((SELECT queue FROM pgconductor.executions WHERE id = :'adhoc_id'), 'fresh-q', 'an unknown queue is created on demand');
SELECT has_table('pgconductor', 'executions_fresh-q$', 'the new queue has its partition');
SELECT pgconductor.invoke('later', '{}', p_run_at => '2025-04-02 00:00') AS later_id \gset
SELECT is((SELECT run_at FROM pgconductor.executions WHERE id = :'later_id'),
          '2025-04-02 00:00:00+00'::timestamptz, 'run_at delays the execution');
SELECT pgconductor.invoke('urgent', '{}', p_priority => -10) AS urgent_id \gset
SELECT is((SELECT priority FROM pgconductor.executions WHERE id = :'urgent_id'), -10, 'priority is stored');

-- Bad input --------------------------------------------------------------------------------
SELECT throws_ok($$SELECT pgconductor.invoke(NULL)$$, '22023', 'invalid task key NULL', 'a NULL task key is rejected');
SELECT throws_ok($$SELECT pgconductor.invoke('')$$, '22023', NULL, 'an empty task key is rejected');
SELECT throws_ok($$SELECT pgconductor.invoke(repeat('k', 201))$$, '22023', NULL, 'an over-long task key is rejected');
SELECT throws_ok($$SELECT pgconductor.invoke(' padded ')$$, '22023', NULL, 'a space-padded task key is rejected');
SELECT throws_ok($$SELECT pgconductor.invoke('t', '{}', p_queue => 'Bad Queue')$$, '22023', NULL, 'an invalid queue name is rejected');
SELECT throws_ok($$SELECT pgconductor.invoke('t', '{not json')$$, '22P02', NULL, 'a non-JSON payload is rejected');
SELECT is((SELECT count(*) FROM pgconductor.executions WHERE task_key IN ('t', '')), 0::bigint, 'rejected calls enqueue nothing');
SELECT hasnt_table('pgconductor', 'executions_Bad Queue', 'a rejected queue gets no partition');

-- Dedupe -------------------------------------------------------------------------------------
SELECT pgconductor.invoke('sync', '{"v": 1}', p_dedupe_key => 'user-1') AS d1 \gset
SELECT pgconductor.invoke('sync', '{"v": 2}', p_dedupe_key => 'user-1', p_priority => 3) AS d2 \gset
SELECT is(:'d2'::uuid, :'d1'::uuid, 'a pending execution with the same key is reused');
SELECT row_eq($$SELECT payload, priority FROM pgconductor.executions WHERE id = '$$ || :'d1' || $$'$$,
              ROW('{"v": 2}'::jsonb, 3), 'its payload and priority are replaced');
SELECT is((SELECT count(*) FROM pgconductor.get_executions('sync', '00000000-0000-0000-0000-0000000000d1', 1)), 1::bigint, 'claim the keyed execution');
SELECT pgconductor.invoke('sync', '{"v": 3}', p_dedupe_key => 'user-1') AS d3 \gset
SELECT isnt(:'d3'::uuid, :'d1'::uuid, 'a running holder does not swallow the invoke: a new execution is made');
SELECT is((SELECT dedupe_key FROM pgconductor.executions WHERE id = :'d1'), NULL, 'the running execution let go of its key and keeps running');
SELECT pgconductor.return_executions('00000000-0000-0000-0000-0000000000d1', ARRAY[:'d1'::uuid], ARRAY[1], ARRAY['completed']);
SELECT pgconductor.get_executions('sync', '00000000-0000-0000-0000-0000000000d1', 1);
SELECT pgconductor.return_executions('00000000-0000-0000-0000-0000000000d1', ARRAY[:'d3'::uuid], ARRAY[1], ARRAY['completed']);
SELECT pgconductor.invoke('sync', '{"v": 4}', p_dedupe_key => 'user-1') AS d4 \gset
SELECT ok(:'d4'::uuid NOT IN (:'d1'::uuid, :'d3'::uuid), 'after completion the key is free: a new execution runs (G8)');
SELECT is((SELECT payload FROM pgconductor.executions WHERE id = :'d4'), '{"v": 4}'::jsonb, 'with the new payload');

SELECT * FROM finish();
ROLLBACK;
