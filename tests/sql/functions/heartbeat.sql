-- heartbeat(), recover_stale(), release_orchestrator(), request_shutdown().
-- Cases: heartbeat registers and refreshes an orchestrator; signals are returned once, in
-- order; shutdown and cancel signals; an orchestrator whose heartbeat lapsed loses its
-- executions to any live orchestrator's heartbeat (G1): released with the lost attempt
-- counted and a clear last_error, failed when exhausted, cancelled when a cancel was pending;
-- lease_lost signals reach it when it comes back and its late results are stale;
-- release_orchestrator hands work back without spending attempts, keeping what it is told to;
-- heartbeat(p_held) gives back claims whose reply was lost (held unlisted since the previous
-- beat), not newer ones; bad input.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(31);
SET pgconductor.fake_now = '2025-06-01 10:00:00';

SELECT is((SELECT count(*) FROM pgconductor.heartbeat('00000000-0000-0000-0000-00000000000a', '0.1.0', '30 seconds', '{"host": "h1"}')),
          0::bigint, 'a first heartbeat has no signals');
SELECT row_eq($$SELECT version, stale_after, info->>'host', last_heartbeat_at FROM pgconductor.orchestrators WHERE id = '00000000-0000-0000-0000-00000000000a'$$,
              ROW('0.1.0'::text, '30 seconds'::interval, 'h1'::text, '2025-06-01 10:00:00+00'::timestamptz), 'it registers the orchestrator');
SET pgconductor.fake_now = '2025-06-01 10:00:05';
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-00000000000a');
SELECT is((SELECT last_heartbeat_at FROM pgconductor.orchestrators WHERE id = '00000000-0000-0000-0000-00000000000a'),
          '2025-06-01 10:00:05+00'::timestamptz, 'a later heartbeat refreshes it');

-- Signals -----------------------------------------------------------------------------------
SELECT is(pgconductor.request_shutdown('00000000-0000-0000-0000-00000000000a'), 1, 'request_shutdown signals one orchestrator');
SELECT results_eq($$SELECT kind FROM pgconductor.heartbeat('00000000-0000-0000-0000-00000000000a')$$, ARRAY['shutdown'],
                  'the next heartbeat delivers the shutdown');
SELECT is((SELECT count(*) FROM pgconductor.heartbeat('00000000-0000-0000-0000-00000000000a')), 0::bigint, 'a signal is delivered once');
SELECT pgconductor.invoke_batch('work', array_fill('{}'::jsonb, ARRAY[4]));
CREATE TEMP TABLE held AS
SELECT row_number() OVER (ORDER BY id) AS n, id FROM pgconductor.get_executions('work', '00000000-0000-0000-0000-00000000000a', 4);
SELECT is(pgconductor.cancel((SELECT id FROM held WHERE n = 1)), 'cancelling', 'cancel a running execution');
SELECT is(pgconductor.cancel((SELECT id FROM held WHERE n = 1)), 'cancelling', 'a second cancel is idempotent');
SELECT results_eq($$SELECT kind || ':' || (execution_id = (SELECT id FROM held WHERE n = 1)) FROM pgconductor.heartbeat('00000000-0000-0000-0000-00000000000a')$$,
                  ARRAY['cancel:true'], 'the cancel signal names the execution, once');

-- Recovery of a lapsed orchestrator (G1) -------------------------------------------------------
UPDATE pgconductor.executions SET attempts = 3 WHERE id = (SELECT id FROM held WHERE n = 2);  -- its last attempt
SET pgconductor.fake_now = '2025-06-01 10:00:40';  -- A last beat at 10:00:05, stale after 30 s
CREATE TEMP TABLE rec AS SELECT * FROM pgconductor.heartbeat('00000000-0000-0000-0000-00000000000b');
SELECT ok((SELECT expired_at IS NOT NULL FROM pgconductor.orchestrators WHERE id = '00000000-0000-0000-0000-00000000000a'),
          'another orchestrator''s heartbeat expires the lapsed one');
SELECT is((SELECT state FROM pgconductor.finished_executions WHERE id = (SELECT id FROM held WHERE n = 1)), 'cancelled',
          'its cancelled execution ends cancelled');
SELECT is((SELECT state FROM pgconductor.finished_executions WHERE id = (SELECT id FROM held WHERE n = 2)), 'failed',
          'its execution on the last attempt ends failed');
SELECT row_eq($$SELECT locked_by, attempts, run_at FROM pgconductor.executions WHERE id = (SELECT id FROM held WHERE n = 3)$$,
              ROW(NULL::uuid, 1, '2025-06-01 10:00:40+00'::timestamptz), 'the others are pending again, due now, the lost attempt counted');
SELECT matches((SELECT last_error FROM pgconductor.executions WHERE id = (SELECT id FROM held WHERE n = 3)),
               '^attempt 1 of 3 lost: orchestrator 00000000-0000-0000-0000-00000000000a stopped sending heartbeats',
               'last_error says what happened');
SELECT is((SELECT count(*) FROM pgconductor.recover_stale()), 0::bigint, 'recovery is idempotent');
SELECT ok((SELECT drained FROM pgconductor.orchestrators WHERE id = '00000000-0000-0000-0000-00000000000a'),
          'a lapsed orchestrator with nothing left is not visited again');

-- The lapsed orchestrator comes back --------------------------------------------------------------
SELECT is((SELECT count(*) FROM pgconductor.heartbeat('00000000-0000-0000-0000-00000000000a') WHERE kind = 'lease_lost'),
          4::bigint, 'it learns which leases it lost (all four)');
SELECT ok((SELECT expired_at IS NULL FROM pgconductor.orchestrators WHERE id = '00000000-0000-0000-0000-00000000000a'),
          'and is live again');
SELECT results_eq($$SELECT outcome FROM pgconductor.return_executions('00000000-0000-0000-0000-00000000000a',
                       ARRAY[(SELECT id FROM held WHERE n = 3)], ARRAY[1], ARRAY['completed'])$$,
                  ARRAY['stale'], 'its late result is stale (fenced)');

-- Clean stop ---------------------------------------------------------------------------------------
SELECT pgconductor.get_executions('work', '00000000-0000-0000-0000-00000000000b', 10);
SELECT is(pgconductor.release_orchestrator('00000000-0000-0000-0000-00000000000b'), 2, 'release_orchestrator lets go of what it holds');
SELECT is((SELECT array_agg(attempts ORDER BY attempts) FROM pgconductor.executions WHERE task_key = 'work'), ARRAY[1, 1],
          'without spending attempts');

-- A stopped (or expired) orchestrator that claims again is live again, so recovery watches it.
SELECT pgconductor.invoke('work', '{}');
SELECT is((SELECT count(*) FROM pgconductor.get_executions('work', '00000000-0000-0000-0000-00000000000b', 10)), 3::bigint,
          'a stopped orchestrator can claim again');
SELECT ok((SELECT stopped_at IS NULL AND expired_at IS NULL AND NOT drained AND last_heartbeat_at = pgconductor._now()
             FROM pgconductor.orchestrators WHERE id = '00000000-0000-0000-0000-00000000000b'),
          'and is revived by its claim');

-- Claims whose reply was lost: held by C but not in its list ------------------------------------
SET pgconductor.fake_now = '2025-06-01 10:59:59';
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-00000000000c', p_held => '{}');
SET pgconductor.fake_now = '2025-06-01 11:00:00';
SELECT pgconductor.invoke_batch('lost', array_fill('{}'::jsonb, ARRAY[3]));
CREATE TEMP TABLE lost AS
SELECT row_number() OVER (ORDER BY id) AS n, id FROM pgconductor.get_executions('lost', '00000000-0000-0000-0000-00000000000c', 3);
SET pgconductor.fake_now = '2025-06-01 11:00:05';
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-00000000000c', p_held => ARRAY[(SELECT id FROM lost WHERE n = 1)]);
SELECT is((SELECT count(*) FROM pgconductor.executions WHERE task_key = 'lost' AND locked_by IS NOT NULL), 3::bigint,
          'claims made since the previous heartbeat are left alone (their reply may still be on its way)');
SET pgconductor.fake_now = '2025-06-01 11:00:10';
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-00000000000c', p_held => ARRAY[(SELECT id FROM lost WHERE n = 1)]);
SELECT is((SELECT count(*) FROM pgconductor.executions WHERE task_key = 'lost' AND locked_by IS NOT NULL), 1::bigint,
          'one beat later, heartbeat(p_held) gives back the claims it does not list (their reply was lost)');
SELECT is((SELECT array_agg(attempts) FROM pgconductor.executions WHERE task_key = 'lost' AND locked_by IS NULL), ARRAY[0, 0],
          'without spending their attempt');
SELECT is((SELECT count(*) FROM pgconductor.get_executions('lost', '00000000-0000-0000-0000-00000000000c', 3)), 2::bigint,
          'and they can be claimed again');
SELECT is(pgconductor.release_orchestrator('00000000-0000-0000-0000-00000000000c', ARRAY[(SELECT id FROM lost WHERE n = 1)]), 2,
          'release_orchestrator keeps what it is told to keep');
SELECT ok((SELECT stopped_at IS NULL FROM pgconductor.orchestrators WHERE id = '00000000-0000-0000-0000-00000000000c'),
          'and then stays live, so recovery takes the kept execution once its heartbeat lapses');

SELECT throws_ok($$SELECT pgconductor.heartbeat(NULL)$$, '22023', NULL, 'a NULL orchestrator id is rejected');
SELECT throws_ok($$SELECT pgconductor.heartbeat(gen_random_uuid(), NULL, '0 seconds')$$, '22023', NULL, 'a non-positive stale_after is rejected');

SELECT * FROM finish();
ROLLBACK;
