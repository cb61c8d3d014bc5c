-- return_executions(): applying a batch of results.
-- Cases: completed moves to finished_executions with its result; failed schedules a retry
-- with jittered exponential backoff within [d/2, d] and keeps the error; the last attempt
-- fails permanently with its error kept; fatal fails at once; released returns to pending
-- without spending the attempt; results for a wrong attempt or another orchestrator are
-- 'stale' and change nothing (fencing); duplicates apply once; a cancelled running execution
-- ends cancelled unless it completed (G4); bad input raises and changes nothing.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(27);
SET pgconductor.fake_now = '2025-05-01 10:00:00';
SELECT pgconductor.register_task('job', p_max_attempts => 3, p_backoff_base => '10 seconds', p_backoff_cap => '15 seconds');

-- Claim five executions as orchestrator A.
CREATE TEMP TABLE c AS
SELECT row_number() OVER (ORDER BY (payload->>'n')::int) AS n, id, attempt
  FROM pgconductor.get_executions('job', '00000000-0000-0000-0000-00000000000a',
       (SELECT count(*)::int FROM pgconductor.invoke_batch('job', ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 6) AS g))));
SELECT is((SELECT count(*) FROM c), 6::bigint, 'six executions claimed');

CREATE TEMP TABLE r AS
SELECT * FROM pgconductor.return_executions('00000000-0000-0000-0000-00000000000a',
    ARRAY(SELECT id FROM c WHERE n <= 4 ORDER BY n), ARRAY[1, 1, 1, 1],
    ARRAY['completed', 'failed', 'fatal', 'released'],
    ARRAY[NULL, 'boom', 'bad payload', NULL], ARRAY['{"ok": true}', NULL, NULL, NULL]::jsonb[],
    ARRAY[NULL, NULL, NULL, 5000]) WITH ORDINALITY AS x(id, outcome, run_at, ord);
SELECT results_eq($$SELECT outcome FROM r ORDER BY ord$$, ARRAY['completed', 'retry_scheduled', 'failed', 'released'],
                  'outcomes in input order');

SELECT row_eq($$SELECT state, result, attempts FROM pgconductor.finished_executions WHERE id = (SELECT id FROM c WHERE n = 1)$$,
              ROW('completed'::text, '{"ok": true}'::jsonb, 1), 'completed: finished with its result');
SELECT is((SELECT count(*) FROM pgconductor.executions WHERE id = (SELECT id FROM c WHERE n = 1)), 0::bigint,
          'completed: gone from the hot table');
SELECT row_eq($$SELECT locked_by, attempts, last_error FROM pgconductor.executions WHERE id = (SELECT id FROM c WHERE n = 2)$$,
              ROW(NULL::uuid, 1, 'boom'::text), 'failed: pending again, attempt kept, error kept');
SELECT ok((SELECT run_at BETWEEN '2025-05-01 10:00:05' AND '2025-05-01 10:00:10' FROM pgconductor.executions
            WHERE id = (SELECT id FROM c WHERE n = 2)), 'failed: retry after the base delay with jitter in [d/2, d]');
SELECT row_eq($$SELECT state, last_error FROM pgconductor.finished_executions WHERE id = (SELECT id FROM c WHERE n = 3)$$,
              ROW('failed'::text, 'bad payload'::text), 'fatal: failed at once');
SELECT row_eq($$SELECT locked_by, attempts, run_at FROM pgconductor.executions WHERE id = (SELECT id FROM c WHERE n = 4)$$,
              ROW(NULL::uuid, 0, '2025-05-01 10:00:05+00'::timestamptz), 'released: pending after the delay, attempt not spent');

-- Fencing -----------------------------------------------------------------------------------
SELECT results_eq($$SELECT outcome FROM pgconductor.return_executions('00000000-0000-0000-0000-00000000000a',
                       ARRAY[(SELECT id FROM c WHERE n = 5)], ARRAY[2], ARRAY['completed'])$$,
                  ARRAY['stale'], 'a result for another attempt is stale');
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-00000000000b');
SELECT results_eq($$SELECT outcome FROM pgconductor.return_executions('00000000-0000-0000-0000-00000000000b',
                       ARRAY[(SELECT id FROM c WHERE n = 5)], ARRAY[1], ARRAY['completed'])$$,
                  ARRAY['stale'], 'a result from another orchestrator is stale');
SELECT results_eq($$SELECT outcome FROM pgconductor.return_executions('00000000-0000-0000-0000-00000000000a',
                       ARRAY[(SELECT id FROM c WHERE n = 1)], ARRAY[1], ARRAY['failed'])$$,
                  ARRAY['stale'], 'a second result for a finished execution is stale');
SELECT is((SELECT state FROM pgconductor.finished_executions WHERE id = (SELECT id FROM c WHERE n = 1)), 'completed',
          'and the first result stands');
SELECT ok((SELECT locked_by = '00000000-0000-0000-0000-00000000000a' FROM pgconductor.executions WHERE id = (SELECT id FROM c WHERE n = 5)),
          'stale results changed nothing');
SELECT results_eq($$SELECT outcome FROM pgconductor.return_executions('00000000-0000-0000-0000-00000000000a',
                       ARRAY[(SELECT id FROM c WHERE n = 5), (SELECT id FROM c WHERE n = 5)], ARRAY[1, 1], ARRAY['completed', 'failed'])$$,
                  ARRAY['completed', 'stale'], 'a duplicate in one batch is applied once');

-- A released execution re-claimed by the same orchestrator gets a new lease: a repeat of the
-- release (a flush retried after a lost acknowledgement) must not release the new claim.
SET pgconductor.fake_now = '2025-05-01 10:00:05';  -- n=4 is due again; n=2's retry is not yet
CREATE TEMP TABLE again AS
SELECT g.id, g.attempt, g.lease FROM pgconductor.get_executions('job', '00000000-0000-0000-0000-00000000000a', 10) AS g
 WHERE g.id = (SELECT id FROM c WHERE n = 4);
SELECT row_eq($$SELECT attempt, lease FROM again$$, ROW(1, 2), 'the re-claim is attempt 1 again but lease 2');
SELECT results_eq($$SELECT outcome FROM pgconductor.return_executions('00000000-0000-0000-0000-00000000000a',
                       ARRAY[(SELECT id FROM c WHERE n = 4)], ARRAY[1], ARRAY['released'])$$,
                  ARRAY['stale'], 'a repeated result for lease 1 is stale');
SELECT is((SELECT locked_by FROM pgconductor.executions WHERE id = (SELECT id FROM c WHERE n = 4)),
          '00000000-0000-0000-0000-00000000000a'::uuid, 'and the new claim keeps running');

-- Retries until exhausted, backoff capped -----------------------------------------------------
SET pgconductor.fake_now = '2025-05-01 11:00:00';
SELECT pgconductor.return_executions('00000000-0000-0000-0000-00000000000a', ARRAY[g.id], ARRAY[g.lease], ARRAY['failed'], ARRAY['boom 2'])
  FROM pgconductor.get_executions('job', '00000000-0000-0000-0000-00000000000a', 10) AS g
 WHERE g.id = (SELECT id FROM c WHERE n = 2);
SELECT ok((SELECT run_at BETWEEN '2025-05-01 11:00:07.5' AND '2025-05-01 11:00:15' FROM pgconductor.executions
            WHERE id = (SELECT id FROM c WHERE n = 2)), 'attempt 2: delay min(cap 15 s, 20 s) with jitter');
SET pgconductor.fake_now = '2025-05-01 12:00:00';
CREATE TEMP TABLE third AS
SELECT r3.outcome FROM pgconductor.get_executions('job', '00000000-0000-0000-0000-00000000000a', 10) AS g,
       pgconductor.return_executions('00000000-0000-0000-0000-00000000000a', ARRAY[g.id], ARRAY[g.lease],
                                     ARRAY['failed'], ARRAY['boom 3']) AS r3
 WHERE g.id = (SELECT id FROM c WHERE n = 2);
SELECT results_eq($$SELECT outcome FROM third$$, ARRAY['failed'], 'attempt 3 of 3 fails permanently');
SELECT row_eq($$SELECT state, attempts, last_error FROM pgconductor.finished_executions WHERE id = (SELECT id FROM c WHERE n = 2)$$,
              ROW('failed'::text, 3, 'boom 3'::text), 'with its last error kept');

-- Cancel while running (G4) -------------------------------------------------------------------
SELECT is(pgconductor.cancel((SELECT id FROM c WHERE n = 6), 'operator said so'), 'cancelling', 'cancel of a running execution is recorded');
SELECT results_eq($$SELECT outcome FROM pgconductor.return_executions('00000000-0000-0000-0000-00000000000a',
                       ARRAY[(SELECT id FROM c WHERE n = 6)], ARRAY[1], ARRAY['failed'], ARRAY['interrupted'])$$,
                  ARRAY['cancelled'], 'a failure after cancel ends cancelled, not retried');
SELECT row_eq($$SELECT state, last_error FROM pgconductor.finished_executions WHERE id = (SELECT id FROM c WHERE n = 6)$$,
              ROW('cancelled'::text, 'operator said so'::text), 'with the cancel reason');

-- Bad input -------------------------------------------------------------------------------------
SELECT throws_ok($$SELECT pgconductor.return_executions('00000000-0000-0000-0000-0000000000ff', ARRAY[]::uuid[], ARRAY[]::int[], ARRAY[]::text[])$$,
                 'P0002', NULL, 'an unknown orchestrator is rejected');
SELECT throws_ok($$SELECT pgconductor.return_executions('00000000-0000-0000-0000-00000000000a', ARRAY[gen_random_uuid()], ARRAY[1, 2], ARRAY['completed'])$$,
                 '22023', NULL, 'arrays of different lengths are rejected');
SELECT throws_ok($$SELECT pgconductor.return_executions('00000000-0000-0000-0000-00000000000a',
                       ARRAY[(SELECT id FROM c WHERE n = 4)], ARRAY[0], ARRAY['done'])$$,
                 '22023', NULL, 'an unknown status is rejected');
SELECT is((SELECT count(*) FROM pgconductor.finished_executions WHERE id = (SELECT id FROM c WHERE n = 4)), 0::bigint,
          'and changes nothing');

SELECT * FROM finish();
ROLLBACK;
