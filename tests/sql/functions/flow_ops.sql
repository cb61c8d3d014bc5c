-- Pause and resume, cancel by key, start-by expiry and retention by maintain(), flow_status.
-- Cases: a paused queue or task is skipped by claims while its running executions finish and
-- invokes still enqueue; resume brings them back; pausing an unknown queue is P0002, an
-- unknown task gets a row; cancel_by_key by dedupe key and by concurrency key, exactly one
-- key (22023); an execution not started by its start_by is skipped by the claim and ended
-- 'expired' by maintain(); retention prunes by
-- task policy (keep_completed 0: at the next pass; failed ones kept 30 days by default);
-- has_due_work: true while due work waits only for a limit, false once the task is paused or
-- nothing is due.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(21);
SET pgconductor.fake_now = '2026-10-01 09:00:00+00';
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-0000000000f1');
CREATE FUNCTION pg_temp.claim(p_queue text, p_n integer) RETURNS integer LANGUAGE sql AS $$
    SELECT count(*)::integer FROM pgconductor.get_executions(NULL::text[], '00000000-0000-0000-0000-0000000000f1', p_n, p_queue) $$;

SELECT count(*) FROM pgconductor.invoke_batch('work', array_fill('{}'::jsonb, ARRAY[4]), 'pq');
SELECT is(pg_temp.claim('pq', 1), 1, 'one running before the pause');
SELECT ok(pgconductor.pause_queue('pq'), 'pause_queue pauses');
SELECT is(pg_temp.claim('pq', 10), 0, 'a paused queue gives nothing');
SELECT ok((SELECT pgconductor.invoke('work', '{}', 'pq') IS NOT NULL), 'invokes still enqueue');
SELECT is((SELECT outcome FROM pgconductor.return_executions('00000000-0000-0000-0000-0000000000f1',
              ARRAY(SELECT id FROM pgconductor.executions WHERE queue = 'pq' AND locked_by IS NOT NULL),
              ARRAY[1], ARRAY['completed'])), 'completed', 'the running one finishes');
SELECT ok(pgconductor.resume_queue('pq') AND NOT pgconductor.resume_queue('pq'), 'resume_queue resumes, once');
SELECT is(pg_temp.claim('pq', 10), 4, 'and the claims take the rest');
SELECT throws_ok($$SELECT pgconductor.pause_queue('no-such-queue')$$, 'P0002', NULL, 'an unknown queue cannot be paused');

SELECT ok(pgconductor.pause_task('later'), 'a task without a row can be paused');
SELECT pgconductor.invoke('later', '{}', 'pt');
SELECT pgconductor.invoke('now', '{}', 'pt');
SELECT is((SELECT string_agg(task_key, ',') FROM pgconductor.get_executions(NULL::text[], '00000000-0000-0000-0000-0000000000f1', 10, 'pt')),
          'now', 'claims skip the paused task only');
SELECT pgconductor.resume_task('later');
SELECT is(pg_temp.claim('pt', 10), 1, 'resumed, it runs');

-- Cancel by key.
SELECT count(*) FROM pgconductor.invoke_batch(array_fill('sync'::text, ARRAY[3]), array_fill('{}'::jsonb, ARRAY[3]),
    p_concurrency_keys => ARRAY['t1', 't1', 't2']);
SELECT pgconductor.invoke('sync', '{}', p_dedupe_key => 'd');
SELECT is(pgconductor.cancel_by_key('sync', p_concurrency_key => 't1'), 2, 'by concurrency key');
SELECT is(pgconductor.cancel_by_key('sync', p_dedupe_key => 'd'), 1, 'by dedupe key');
SELECT throws_ok($$SELECT pgconductor.cancel_by_key('sync')$$, '22023', NULL, 'one key is needed');

-- Start-by: skipped by the claim once passed, then expired by maintain(); its parent hears it.
SELECT pgconductor.invoke('late', '{}', 'sb', p_start_by => '2026-10-01 09:05:00+00') AS late_id \gset
SET pgconductor.fake_now = '2026-10-01 09:06:00+00';
SELECT is(pg_temp.claim('sb', 10), 0, 'past its start_by the claim does not start it');
SELECT is((pgconductor.maintain()->>'expired')::integer, 1, 'maintain() expires it');
SELECT row_eq(format($$SELECT state, last_error FROM pgconductor.get_execution(%L)$$, :'late_id'),
              ROW('expired'::text, 'expired: not started by its start-by deadline 2026-10-01 09:05:00+00'::text), 'saying why');

-- Retention by task policy.
SELECT pgconductor.register_task('noisy', p_keep_completed => '0 seconds');
SELECT pgconductor.invoke('noisy', '{}', 'ret') AS noisy_id \gset
SELECT pgconductor.invoke('kept', '{}', 'ret') AS kept_id \gset
SELECT count(*) FROM pgconductor.get_executions(NULL::text[], '00000000-0000-0000-0000-0000000000f1', 10, 'ret');
SELECT count(*) FROM pgconductor.return_executions('00000000-0000-0000-0000-0000000000f1', ARRAY[:'noisy_id', :'kept_id']::uuid[],
    ARRAY[1, 1], ARRAY['completed', 'completed']);
SET pgconductor.fake_now = '2026-10-01 09:07:00+00';
SELECT pgconductor.maintain();
SELECT results_eq(format($$SELECT id FROM pgconductor.finished_executions WHERE id IN (%L, %L)$$, :'noisy_id', :'kept_id'),
                  format($$VALUES (%L::uuid)$$, :'kept_id'), 'keep_completed 0 goes at the next pass, the default keeps 7 days');


-- has_due_work: what a draining worker asks when its claim comes back empty.
SELECT pgconductor.register_task('one', p_max_running => 1);
SELECT count(*) FROM pgconductor.invoke_batch('one', ARRAY['{}', '{}']::jsonb[], 'hd');
SELECT is(pg_temp.claim('hd', 10), 1, 'the limit admits one');
SELECT ok(pg_temp.claim('hd', 10) = 0 AND pgconductor.has_due_work('hd'), 'an empty claim, but due work waits for the slot');
SELECT pgconductor.pause_task('one');
SELECT ok(NOT pgconductor.has_due_work('hd') AND NOT pgconductor.has_due_work('hd', ARRAY['other']),
          'not once the task is paused, nor for other tasks');

SELECT * FROM finish();
ROLLBACK;
