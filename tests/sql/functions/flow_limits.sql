-- Concurrency limits in the claim: max_running per task, max_running_per_key per concurrency key.
-- Cases: a claim takes no more than the free slots, a full task claims nothing; the slot is
-- freed by every end path (completed, failed with a retry, released, parked by a sleep,
-- recovered after the orchestrator expired, given back by a clean stop, a cancel applied);
-- per key: one claim serves several keys up to each key's limit (executions without a key
-- share one); a key at its limit does not keep other keys or tasks of the queue waiting; a
-- limited claim outside READ COMMITTED is refused (25000); bad limits are refused (22023).
\i tests/sql/setup.sql
BEGIN;
SELECT plan(16);
SET pgconductor.fake_now = '2026-06-01 10:00:00+00';
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-0000000000a1');
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-0000000000a2');

-- max_running = 2
SELECT pgconductor.register_task('two', p_max_running => 2);
SELECT count(*) FROM (SELECT pgconductor.invoke('two', jsonb_build_object('n', g)) FROM generate_series(1, 8) AS g) AS x;
SELECT is((SELECT count(*)::integer FROM pgconductor.get_executions(ARRAY['two'], '00000000-0000-0000-0000-0000000000a1', 10)), 2,
          'a claim of 10 takes the 2 free slots');
SELECT is((SELECT count(*)::integer FROM pgconductor.get_executions(ARRAY['two'], '00000000-0000-0000-0000-0000000000a2', 10)), 0,
          'another orchestrator finds the task full');

-- Each end path frees the slot: end one running execution, and the next claim takes one more.
CREATE TEMP TABLE freed (path text, claimed integer);
CREATE FUNCTION pg_temp.running_one() RETURNS record LANGUAGE sql AS $$
    SELECT e.id, e.lease, e.locked_by FROM pgconductor.executions AS e
     WHERE e.task_key = 'two' AND e.locked_by IS NOT NULL ORDER BY e.id LIMIT 1 $$;
CREATE FUNCTION pg_temp.claim_after(p_path text) RETURNS void LANGUAGE sql AS $$
    INSERT INTO freed SELECT p_path, count(*)::integer
      FROM pgconductor.get_executions(ARRAY['two'], '00000000-0000-0000-0000-0000000000a1', 10) $$;

SELECT count(*) FROM pgconductor.return_executions('00000000-0000-0000-0000-0000000000a1',
    ARRAY[(SELECT id FROM pg_temp.running_one() AS (id uuid, lease integer, o uuid))],
    ARRAY[(SELECT lease FROM pg_temp.running_one() AS (id uuid, lease integer, o uuid))], ARRAY['completed']);
SELECT pg_temp.claim_after('completed');
SELECT count(*) FROM pgconductor.return_executions('00000000-0000-0000-0000-0000000000a1',
    ARRAY[(SELECT id FROM pg_temp.running_one() AS (id uuid, lease integer, o uuid))],
    ARRAY[(SELECT lease FROM pg_temp.running_one() AS (id uuid, lease integer, o uuid))], ARRAY['failed'], ARRAY['boom']);
SELECT pg_temp.claim_after('failed, retry later');
SELECT count(*) FROM pgconductor.return_executions('00000000-0000-0000-0000-0000000000a1',
    ARRAY[(SELECT id FROM pg_temp.running_one() AS (id uuid, lease integer, o uuid))],
    ARRAY[(SELECT lease FROM pg_temp.running_one() AS (id uuid, lease integer, o uuid))], ARRAY['released'], NULL, NULL, ARRAY[3600000]);
SELECT pg_temp.claim_after('released');
SELECT count(*) FROM pgconductor.return_executions('00000000-0000-0000-0000-0000000000a1',
    ARRAY[(SELECT id FROM pg_temp.running_one() AS (id uuid, lease integer, o uuid))],
    ARRAY[(SELECT lease FROM pg_temp.running_one() AS (id uuid, lease integer, o uuid))], ARRAY['suspend'], NULL,
    ARRAY['{"sleep": {"key": "nap", "seq": 1, "until": "2026-06-01 12:00:00+00"}}'::jsonb]);
SELECT pg_temp.claim_after('parked by a sleep');
SELECT results_eq($$SELECT path, claimed FROM freed ORDER BY path$$,
                  $$VALUES ('completed'::text, 1), ('failed, retry later', 1), ('parked by a sleep', 1), ('released', 1)$$,
                  'completed, failed, released and parked each free their slot in the statement that ends them');
SELECT is((SELECT count(*)::integer FROM pgconductor.executions WHERE task_key = 'two' AND locked_by IS NOT NULL), 2,
          'and the task is full again, never over');

-- Recovery frees the slots of an expired orchestrator.
SELECT count(*) FROM pgconductor.invoke_batch('two', ARRAY['{}', '{}', '{}']::jsonb[]);
SET pgconductor.fake_now = '2026-06-01 10:05:00+00';
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-0000000000a2');
SELECT is((SELECT count(*)::integer FROM pgconductor.executions WHERE task_key = 'two' AND locked_by IS NOT NULL), 0,
          'recovery gave back what the expired orchestrator held');
SELECT is((SELECT count(*)::integer FROM pgconductor.get_executions(ARRAY['two'], '00000000-0000-0000-0000-0000000000a2', 10)), 2,
          'so its slots are free');
SELECT pgconductor.release_orchestrator('00000000-0000-0000-0000-0000000000a2');
SELECT is((SELECT count(*)::integer FROM pgconductor.get_executions(ARRAY['two'], '00000000-0000-0000-0000-0000000000a1', 10)), 2,
          'a clean stop frees them too');
SELECT pgconductor.cancel((SELECT id FROM pg_temp.running_one() AS (id uuid, lease integer, o uuid)), 'enough');
SELECT is((SELECT count(*)::integer FROM pgconductor.get_executions(ARRAY['two'], '00000000-0000-0000-0000-0000000000a2', 10)), 0,
          'a cancel only requested keeps the slot while the handler runs');
SELECT count(*) FROM pgconductor.return_executions('00000000-0000-0000-0000-0000000000a1',
    ARRAY[(SELECT id FROM pgconductor.executions WHERE task_key = 'two' AND cancel_reason IS NOT NULL)],
    ARRAY[(SELECT lease FROM pgconductor.executions WHERE task_key = 'two' AND cancel_reason IS NOT NULL)], ARRAY['failed'], ARRAY['stopped']);
SELECT is((SELECT count(*)::integer FROM pgconductor.get_executions(ARRAY['two'], '00000000-0000-0000-0000-0000000000a2', 10)), 1,
          'its end frees it');

-- Per key: 1 running per tenant; executions without a key share the key ''.
SELECT pgconductor.register_task('tenant', p_queue => 'keyed', p_max_running_per_key => 1);
SELECT count(*) FROM pgconductor.invoke_batch(array_fill('tenant'::text, ARRAY[9]),
    ARRAY(SELECT jsonb_build_object('k', coalesce(k, '-')) FROM unnest(ARRAY['a', 'a', 'a', 'a', 'b', 'b', 'c', NULL, NULL]) AS k),
    p_concurrency_keys => ARRAY['a', 'a', 'a', 'a', 'b', 'b', 'c', NULL, NULL]);
SELECT results_eq($$SELECT payload->>'k' FROM pgconductor.get_executions(ARRAY['tenant'], '00000000-0000-0000-0000-0000000000a1', 10, 'keyed')
                     ORDER BY 1$$,
                  $$VALUES ('-'::text), ('a'), ('b'), ('c')$$, 'one claim serves every key up to its limit, the keyless as one key');
SELECT is((SELECT count(*)::integer FROM pgconductor.get_executions(ARRAY['tenant'], '00000000-0000-0000-0000-0000000000a1', 10, 'keyed')), 0,
          'then every key is full');

-- A key at its limit at the head of the queue keeps neither other keys nor other tasks waiting.
-- (The queue is created after this session's first claims: its claim once found nothing.)
SET pgconductor.fake_now = '2026-06-01 11:00:00+00';
SELECT pgconductor.register_task('head', p_queue => 'shared', p_max_running_per_key => 1);
SELECT count(*) FROM pgconductor.invoke_batch(array_fill('head'::text, ARRAY[200]), array_fill('{"k": "big"}'::jsonb, ARRAY[200]),
    p_queues => array_fill('shared'::text, ARRAY[200]), p_run_ats => array_fill('2026-06-01 10:00:00+00'::timestamptz, ARRAY[200]),
    p_concurrency_keys => array_fill('big'::text, ARRAY[200]));
SELECT pgconductor.invoke('head', '{"k": "small"}', 'shared', '2026-06-01 10:30:00+00', p_concurrency_key => 'small');
SELECT pgconductor.invoke('other', '{}', 'shared', '2026-06-01 10:45:00+00');
SELECT is((SELECT count(*)::integer FROM pgconductor.get_executions(NULL::text[], '00000000-0000-0000-0000-0000000000a1', 1, 'shared')), 1,
          'the head key takes its one slot');
SELECT results_eq($$SELECT task_key || ':' || coalesce(payload->>'k', '-')
                      FROM pgconductor.get_executions(NULL::text[], '00000000-0000-0000-0000-0000000000a1', 2, 'shared') ORDER BY 1$$,
                  $$VALUES ('head:small'::text), ('other:-')$$,
                  'the next claim passes its 199 waiting rows: the other key and the other task run');

SELECT throws_ok($$SELECT pgconductor.register_task('bad', p_max_running => 0)$$, '22023', NULL, 'max_running below 1 is refused');
SELECT throws_ok($$SELECT pgconductor.declare_task('bad', '{"max_running_per_key": -1}')$$, '22023', NULL, 'so is a per-key limit below 1');
SELECT throws_ok($$SELECT pgconductor.invoke('tenant', '{}', p_concurrency_key => repeat('k', 251))$$, '22023', NULL,
                 'and an over-long concurrency key');

SELECT * FROM finish();
ROLLBACK;
