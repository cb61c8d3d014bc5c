-- submit(): dedupe modes, throttle, debounce, start-by, and their outcomes.
-- Cases: replace updates a pending one (updated); a started one (running or parked by a sleep)
-- lets go of the key and keeps its payload and wake time (created); keep returns the live one
-- unchanged (kept); supersede cancels a running one with a signal and makes a new one
-- (superseded); a finished execution never swallows an invoke; throttle: one execution per
-- key and period, later calls get it back (throttled), also after it finished, a new period
-- makes a new one, duplicate keys in one batch; debounce: one execution that runs a period
-- after the last call with the last payload, bounded by debounce_max; a running one is left
-- alone; start_by and the task's start_within; bad input is refused (22023).
\i tests/sql/setup.sql
BEGIN;
SELECT plan(21);
SET pgconductor.fake_now = '2026-09-01 09:00:00+00';
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-0000000000e1');

SELECT id AS first_id FROM pgconductor.submit('report', '{"v": 1}', p_dedupe_key => 'r1') \gset
SELECT row_eq($$SELECT * FROM pgconductor.submit('report', '{"v": 2}', p_dedupe_key => 'r1')$$, ROW(:'first_id'::uuid, 'updated'::text),
              'replace: the pending one takes the new payload');
SELECT row_eq($$SELECT * FROM pgconductor.submit('report', '{"v": 3}', p_dedupe_key => 'r1', p_on_conflict => 'keep')$$,
              ROW(:'first_id'::uuid, 'kept'::text), 'keep: the live one comes back');
SELECT is((SELECT payload FROM pgconductor.executions WHERE id = :'first_id'), '{"v": 2}'::jsonb, 'unchanged');
SELECT count(*) FROM pgconductor.get_executions(ARRAY['report'], '00000000-0000-0000-0000-0000000000e1', 1);
SELECT is((SELECT outcome FROM pgconductor.submit('report', '{"v": 4}', p_dedupe_key => 'r1', p_on_conflict => 'keep')), 'kept',
          'keep also returns a running one');
SELECT id AS second_id, outcome AS second_outcome
  FROM pgconductor.submit('report', '{"v": 5}', p_dedupe_key => 'r1', p_on_conflict => 'supersede') \gset
SELECT is(:'second_outcome'::text, 'superseded', 'supersede: a new execution');
SELECT row_eq(format($$SELECT cancel_reason IS NOT NULL, dedupe_key FROM pgconductor.executions WHERE id = %L$$, :'first_id'),
              ROW(true, NULL::text), 'the running one is cancelled and let go of the key');
SELECT is((SELECT count(*)::integer FROM pgconductor.signals WHERE kind = 'cancel' AND execution_id = :'first_id'), 1,
          'and its orchestrator signalled');

-- A parked workflow keeps its wake time: a replace makes a new execution.
SELECT pgconductor.invoke('flow', '{}', p_dedupe_key => 'w') AS wf_id \gset
SELECT count(*) FROM pgconductor.get_executions(ARRAY['flow'], '00000000-0000-0000-0000-0000000000e1', 1);
SELECT count(*) FROM pgconductor.return_executions('00000000-0000-0000-0000-0000000000e1', ARRAY[:'wf_id'::uuid], ARRAY[1],
    ARRAY['suspend'], NULL, ARRAY['{"sleep": {"key": "nap", "seq": 1, "until": "2026-09-01 12:00:00+00"}}'::jsonb]);
SELECT is((SELECT outcome FROM pgconductor.submit('flow', '{"new": true}', p_dedupe_key => 'w')), 'created',
          'replace with the key held by a parked execution makes a new one');
SELECT row_eq(format($$SELECT run_at, payload FROM pgconductor.executions WHERE id = %L$$, :'wf_id'),
              ROW('2026-09-01 12:00:00+00'::timestamptz, '{}'::jsonb), 'the parked one keeps its wake time and payload');

-- A finished execution never swallows an invoke.
SELECT pgconductor.invoke('once', '{}', p_dedupe_key => 'o') AS once_id \gset
SELECT pgconductor.cancel(:'once_id');
SELECT isnt((SELECT id FROM pgconductor.submit('once', '{}', p_dedupe_key => 'o')), :'once_id'::uuid,
            'after the holder finished, the same key makes a new execution');

-- Throttle.
SELECT id AS t1 FROM pgconductor.submit('ping', '{"n": 1}', p_throttle => '1 minute') \gset
SELECT row_eq($$SELECT * FROM pgconductor.submit('ping', '{"n": 2}', p_throttle => '1 minute')$$, ROW(:'t1'::uuid, 'throttled'::text),
              'a call within the period gets the execution of the period');
SELECT pgconductor.cancel(:'t1');
SELECT is((SELECT outcome FROM pgconductor.submit('ping', '{"n": 3}', p_throttle => '1 minute')), 'throttled',
          'also once that execution has finished');
SET pgconductor.fake_now = '2026-09-01 09:01:00+00';
SELECT is((SELECT outcome FROM pgconductor.submit('ping', '{"n": 4}', p_throttle => '1 minute')), 'created', 'a new period, a new one');
SELECT results_eq($$SELECT outcome FROM pgconductor.submit_batch(ARRAY['ping', 'ping', 'ping'], ARRAY['{}', '{}', '{}']::jsonb[],
                       p_dedupe_keys => ARRAY['x', 'x', 'y'], p_throttle => '1 minute')$$,
                  $$VALUES ('created'::text), ('throttled'), ('created')$$, 'duplicate keys in one batch: one per key');

-- Debounce.
SELECT id AS d1 FROM pgconductor.submit('save', '{"v": 1}', p_dedupe_key => 'doc', p_debounce => '10 seconds', p_debounce_max => '25 seconds') \gset
SET pgconductor.fake_now = '2026-09-01 09:01:08+00';
SELECT row_eq($$SELECT * FROM pgconductor.submit('save', '{"v": 2}', p_dedupe_key => 'doc', p_debounce => '10 seconds', p_debounce_max => '25 seconds')$$,
              ROW(:'d1'::uuid, 'debounced'::text), 'a call within the period joins the pending one');
SELECT row_eq(format($$SELECT run_at, payload FROM pgconductor.executions WHERE id = %L$$, :'d1'),
              ROW('2026-09-01 09:01:18+00'::timestamptz, '{"v": 2}'::jsonb), 'which runs a period after the last call, with its payload');
SET pgconductor.fake_now = '2026-09-01 09:01:20+00';
SELECT pgconductor.invoke('save', '{"v": 3}', p_dedupe_key => 'doc', p_debounce => '10 seconds', p_debounce_max => '25 seconds');
SELECT is((SELECT run_at FROM pgconductor.executions WHERE id = :'d1'), '2026-09-01 09:01:25+00'::timestamptz,
          'but no later than debounce_max after the first call');

-- Start-by.
SELECT pgconductor.register_task('fresh', p_start_within => '5 minutes');
SELECT pgconductor.invoke('fresh') AS fresh_id \gset
SELECT is((SELECT start_by FROM pgconductor.executions WHERE id = :'fresh_id'), '2026-09-01 09:06:20+00'::timestamptz,
          'start_within gives run_at + 5 minutes');

SELECT throws_ok($$SELECT pgconductor.invoke('x', p_on_conflict => 'merge')$$, '22023', NULL, 'an unknown on_conflict is refused');
SELECT throws_ok($$SELECT pgconductor.invoke('x', p_throttle => '1 s', p_debounce => '1 s')$$, '22023', NULL,
                 'throttle with debounce is refused');
SELECT throws_ok($$SELECT pgconductor.invoke('x', p_start_by => '2026-09-01 09:00:00+00')$$, '22023', NULL,
                 'a start_by before run_at is refused');

SELECT * FROM finish();
ROLLBACK;
