-- Rate limits in the claim: a token bucket per task (rate_limit per rate_period) and per
-- concurrency key (rate_limit_per_key).
-- Cases: a full bucket admits a burst of rate_limit and then nothing; it refills one token per
-- period / rate_limit (not a moment before); it never holds more than rate_limit; a waiting
-- execution spends no attempt; per key, each key has its own bucket; a task's rate limit
-- and its per-key running limit both apply; maintain() drops full buckets; bad periods and
-- limits are refused (22023).
\i tests/sql/setup.sql
BEGIN;
SELECT plan(12);
SET pgconductor.fake_now = '2026-07-01 09:00:00+00';
SELECT pgconductor.register_task('mail', p_rate_limit => 3, p_rate_period => '1 minute');
SELECT count(*) FROM pgconductor.invoke_batch('mail', array_fill('{}'::jsonb, ARRAY[20]));
CREATE FUNCTION pg_temp.claim(p_task text, p_n integer) RETURNS integer LANGUAGE sql AS $$
    SELECT count(*)::integer FROM pgconductor.get_executions(ARRAY[p_task], '00000000-0000-0000-0000-0000000000c1', p_n) $$;

SELECT is(pg_temp.claim('mail', 10), 3, 'a full bucket admits a burst of 3');
SELECT is(pg_temp.claim('mail', 10), 0, 'then nothing');
SET pgconductor.fake_now = '2026-07-01 09:00:19.999+00';
SELECT is(pg_temp.claim('mail', 10), 0, 'one token takes 20 s: not at 19.999 s');
SET pgconductor.fake_now = '2026-07-01 09:00:20+00';
SELECT is(pg_temp.claim('mail', 10), 1, 'at 20 s one more start');
SET pgconductor.fake_now = '2026-07-01 10:00:00+00';
SELECT is(pg_temp.claim('mail', 10), 3, 'an hour later: a burst of 3 again, never more than the bucket holds');
SELECT is((SELECT max(attempts) FROM pgconductor.executions WHERE task_key = 'mail' AND locked_by IS NULL), 0,
          'the executions kept waiting spent no attempt');

-- Per key, and with a running limit beside it.
SELECT pgconductor.register_task('sync', p_rate_limit_per_key => 1, p_rate_period => '1 minute', p_max_running_per_key => 1);
SELECT count(*) FROM pgconductor.invoke_batch(array_fill('sync'::text, ARRAY[6]),
    ARRAY(SELECT jsonb_build_object('k', k) FROM unnest(ARRAY['a', 'a', 'a', 'b', 'b', 'c']) AS k),
    p_concurrency_keys => ARRAY['a', 'a', 'a', 'b', 'b', 'c']);
SELECT results_eq($$SELECT payload->>'k' FROM pgconductor.get_executions(ARRAY['sync'], '00000000-0000-0000-0000-0000000000c1', 10) ORDER BY 1$$,
                  $$VALUES ('a'::text), ('b'), ('c')$$, 'each key has its own bucket');
SELECT pgconductor.return_executions('00000000-0000-0000-0000-0000000000c1',
    ARRAY(SELECT id FROM pgconductor.executions WHERE task_key = 'sync' AND locked_by IS NOT NULL ORDER BY id),
    ARRAY(SELECT lease FROM pgconductor.executions WHERE task_key = 'sync' AND locked_by IS NOT NULL ORDER BY id),
    array_fill('completed'::text, ARRAY[3]));
SELECT is(pg_temp.claim('sync', 10), 0, 'slots are free again but the buckets are empty');
SET pgconductor.fake_now = '2026-07-01 10:01:00+00';
SELECT is(pg_temp.claim('sync', 10), 2, 'a minute later a and b start again (c has nothing left)');
SET pgconductor.fake_now = '2026-07-01 12:00:00+00';
SELECT is((pgconductor.maintain()->>'rate_buckets')::integer, 4, 'maintain() drops the buckets that are full again (mail, a, b, c)');

SELECT throws_ok($$SELECT pgconductor.register_task('bad', p_rate_limit => 5, p_rate_period => '0 seconds')$$, '22023', NULL,
                 'a period of 0 is refused');
SELECT throws_ok($$SELECT pgconductor.declare_task('bad', '{"rate_limit": 0}')$$, '22023', NULL, 'so is a rate below 1');

SELECT * FROM finish();
ROLLBACK;
