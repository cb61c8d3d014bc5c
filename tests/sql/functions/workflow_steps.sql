-- save_steps(), the claim's steps, and suspend plans for sleep.
-- Cases: save_steps stores under the lease and reports stale without it; a stored key keeps
-- its first result; the next claim hands the steps back; a sleep parks the execution outside
-- the claim (attempt given back), the claim wakes it when its time comes and the stored wake
-- time is kept across replays; a sleep whose time passed resumes at once; a bad plan fails that
-- execution alone; bad keys raise 22023.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(14);
SET pgconductor.fake_now = '2026-05-01 10:00:00+00';
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-00000000000a');

SELECT pgconductor.invoke('wf') AS wf_id \gset
SELECT pgconductor.invoke('plain') AS plain_id \gset
SELECT count(*) FROM pgconductor.get_executions(ARRAY['wf', 'plain'], '00000000-0000-0000-0000-00000000000a', 10);
SELECT results_eq(format($$SELECT outcome FROM pgconductor.save_steps('00000000-0000-0000-0000-00000000000a',
                      ARRAY[%L, %L, %L]::uuid[], ARRAY[1, 1, 7], ARRAY['charge', 'charge#2', 'x'], ARRAY[0, 1, 0],
                      ARRAY['{"paid": 5}', '"second"', '1']::jsonb[])$$, :'wf_id', :'wf_id', :'plain_id'),
                  ARRAY['saved', 'saved', 'stale'], 'steps are saved under the lease; a wrong lease is stale');
SELECT is((SELECT count(*) FROM pgconductor.steps WHERE execution_id = :'plain_id'), 0::bigint, 'a stale step writes nothing');
SELECT pgconductor.save_steps('00000000-0000-0000-0000-00000000000a', ARRAY[:'wf_id'::uuid], ARRAY[1], ARRAY['charge'], ARRAY[0],
                              ARRAY['{"paid": 99}'::jsonb]);
SELECT is((SELECT result FROM pgconductor.steps WHERE execution_id = :'wf_id' AND key = 'charge'), '{"paid": 5}'::jsonb,
          'a stored key keeps its first result');

-- Sleep: park, then wake.
SELECT row_eq(format($$SELECT outcome, run_at FROM pgconductor.return_executions('00000000-0000-0000-0000-00000000000a',
                  ARRAY[%L::uuid], ARRAY[1], ARRAY['suspend'], NULL,
                  ARRAY['{"sleep": {"key": "cool-down", "seq": 2, "until": "2026-05-01 11:00:00+00"}}'::jsonb])$$, :'wf_id'),
              ROW('suspended'::text, '2026-05-01 11:00:00+00'::timestamptz), 'a sleep parks until its time');
SELECT row_eq(format($$SELECT state, attempts, locked_by FROM pgconductor.get_execution(%L)$$, :'wf_id'),
              ROW('sleeping'::text, 0, NULL::uuid), 'sleeping, its attempt given back, no lease held');
SELECT is((SELECT count(*) FROM pgconductor.get_executions('wf', '00000000-0000-0000-0000-00000000000a', 10)), 0::bigint,
          'a sleeping execution is not claimed');
SET pgconductor.fake_now = '2026-05-01 11:00:01+00';
CREATE TEMP TABLE c2 AS SELECT * FROM pgconductor.get_executions('wf', '00000000-0000-0000-0000-00000000000a', 10);
SELECT is((SELECT count(*) FROM c2), 1::bigint, 'after its time the claim wakes and takes it');
SELECT is((SELECT steps FROM c2), jsonb_build_object(
              'charge', jsonb_build_object('seq', 0, 'kind', 'step', 'state', 'done', 'result', '{"paid": 5}'::jsonb),
              'charge#2', jsonb_build_object('seq', 1, 'kind', 'step', 'state', 'done', 'result', '"second"'::jsonb),
              'cool-down', jsonb_build_object('seq', 2, 'kind', 'sleep', 'state', 'done', 'result', NULL,
                                              'until', '2026-05-01T11:00:00+00:00')),
          'the claim hands back every stored step');
SELECT is((SELECT attempt FROM c2), 1, 'the sleep did not spend an attempt');
-- A replay that reaches the same sleep again keeps the stored wake time: already over, it resumes.
SELECT is((SELECT outcome FROM pgconductor.return_executions('00000000-0000-0000-0000-00000000000a',
              ARRAY[(SELECT id FROM c2)], ARRAY[(SELECT lease FROM c2)], ARRAY['suspend'], NULL,
              ARRAY['{"sleep": {"key": "cool-down", "seq": 2, "until": "2026-05-01 12:00:00+00"}}'::jsonb])),
          'resumed', 'the stored wake time wins over a new one: the sleep is over');
SELECT is((SELECT state FROM pgconductor.get_execution(:'wf_id')), 'pending', 'pending again at once');

-- A bad plan fails that execution, not the batch.
SELECT pgconductor.invoke('bad-plan') AS bad_id \gset
SELECT pgconductor.invoke('good') AS good_id \gset
CREATE TEMP TABLE c3 AS SELECT * FROM pgconductor.get_executions(ARRAY['bad-plan', 'good'], '00000000-0000-0000-0000-00000000000a', 10);
SELECT results_eq($$SELECT r.outcome FROM c3 JOIN pgconductor.return_executions('00000000-0000-0000-0000-00000000000a',
                      ARRAY(SELECT id FROM c3 ORDER BY task_key), ARRAY(SELECT lease FROM c3 ORDER BY task_key),
                      ARRAY['suspend', 'completed'], NULL, ARRAY['{"nap": {}}', NULL]::jsonb[]) AS r ON r.id = c3.id
                    ORDER BY c3.task_key$$,
                  ARRAY['failed', 'completed'], 'a bad plan fails its execution; the other result applies');
SELECT matches((SELECT last_error FROM pgconductor.get_execution(:'bad_id')), '^invalid suspension plan', 'saying why');

SELECT throws_ok($$SELECT * FROM pgconductor.save_steps('00000000-0000-0000-0000-00000000000a', ARRAY[gen_random_uuid()], ARRAY[1],
                      ARRAY[E'bad\nkey'], ARRAY[0], ARRAY['1'::jsonb])$$, '22023', NULL, 'a step key with a control character is refused');

SELECT * FROM finish();
ROLLBACK;
