-- return_executions(): retry_after, cancel over completion, errors and the next run time.
-- Cases: retry_after puts the execution back after the delay without counting the attempt and
-- returns its run_at; after max_retry_after times it fails with the reason; a failed attempt
-- returns the retry's run_at; a cancelled execution whose handler then completes ends
-- cancelled, its result kept; recovery adds a 'lost' entry to the errors.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(9);
SET pgconductor.fake_now = '2026-03-01 10:00:00+00';
SELECT pgconductor.register_task('poll', p_max_retry_after => 1);
SELECT pgconductor.invoke('poll') AS poll_id \gset
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-0000000000f1');
SELECT count(*) FROM pgconductor.get_executions('poll', '00000000-0000-0000-0000-0000000000f1', 1);
SELECT row_eq(format($$SELECT outcome, run_at FROM pgconductor.return_executions('00000000-0000-0000-0000-0000000000f1', ARRAY[%L::uuid],
                  ARRAY[1], ARRAY['retry_after'], ARRAY['not ready'], NULL, ARRAY[60000])$$, :'poll_id'),
              ROW('rescheduled'::text, '2026-03-01 10:01:00+00'::timestamptz), 'retry_after: rescheduled, with the next run');
SELECT row_eq(format($$SELECT attempts, retry_afters, locked_by FROM pgconductor.executions WHERE id = %L$$, :'poll_id'),
              ROW(0, 1, NULL::uuid), 'the attempt is not counted');
SET pgconductor.fake_now = '2026-03-01 10:01:00+00';
SELECT count(*) FROM pgconductor.get_executions('poll', '00000000-0000-0000-0000-0000000000f1', 1);
SELECT is((SELECT outcome FROM pgconductor.return_executions('00000000-0000-0000-0000-0000000000f1', ARRAY[:'poll_id'::uuid],
              ARRAY[2], ARRAY['retry_after'], ARRAY['still not ready'], NULL, ARRAY[60000])), 'failed',
          'past max_retry_after it fails');
SELECT is((SELECT last_error FROM pgconductor.get_execution(:'poll_id')), 'rescheduled more than 1 times: still not ready',
          'saying why');

SELECT pgconductor.invoke('work') AS work_id \gset
SELECT count(*) FROM pgconductor.get_executions('work', '00000000-0000-0000-0000-0000000000f1', 1);
SELECT ok((SELECT run_at > pgconductor._now() FROM pgconductor.return_executions('00000000-0000-0000-0000-0000000000f1',
              ARRAY[:'work_id'::uuid], ARRAY[1], ARRAY['failed'], ARRAY['x'])), 'a retry returns its run_at');
SET pgconductor.fake_now = '2026-03-01 12:00:00+00';
SELECT count(*) FROM pgconductor.get_executions('work', '00000000-0000-0000-0000-0000000000f1', 1);
SELECT pgconductor.cancel(:'work_id', 'stop it');
SELECT is((SELECT outcome FROM pgconductor.return_executions('00000000-0000-0000-0000-0000000000f1', ARRAY[:'work_id'::uuid],
              ARRAY[2], ARRAY['completed'], NULL, ARRAY['{"done": true}'::jsonb])), 'cancelled',
          'a cancelled execution whose handler completes ends cancelled');
SELECT row_eq(format($$SELECT state, result, last_error FROM pgconductor.get_execution(%L)$$, :'work_id'),
              ROW('cancelled'::text, '{"done": true}'::jsonb, 'stop it'::text), 'its result kept, the cancel reason as error');

-- Recovery writes a 'lost' entry.
SELECT pgconductor.invoke('lost-one') AS lost_id \gset
SELECT count(*) FROM pgconductor.get_executions('lost-one', '00000000-0000-0000-0000-0000000000f2', 1);
SET pgconductor.fake_now = '2026-03-01 13:00:00+00';
SELECT count(*) FROM pgconductor.recover_stale();
SELECT is((SELECT e->>'outcome' FROM pgconductor.get_execution(:'lost_id') AS g, jsonb_array_elements(g.errors) AS e), 'lost',
          'a lost attempt is in the errors');
SELECT is((SELECT state FROM pgconductor.get_execution(:'lost_id')), 'pending', 'and the execution is pending again');

SELECT * FROM finish();
ROLLBACK;
