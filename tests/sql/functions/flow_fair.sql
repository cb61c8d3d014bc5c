-- Fair share: the concurrency keys of a queue share the claim round-robin, by weight.
-- Cases: set_fair_share makes the partition's index; a key with 200 queued executions does not
-- starve one with 3 or one with 1 (every claim serves each key in turn); a key alone gets
-- the whole batch; weight 3 gets three rows for each row of weight 1; executions without a
-- key form one key; turning it off drops the index; bad weights are refused (22023), an
-- unknown queue is P0002; keys with nothing due do not starve a key behind them (the probe
-- for the next key passes over keys without a claimable row); a batch of 100 or more serves
-- half as many keys, two rows each, and the next claim goes on after them.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(13);
SET pgconductor.fake_now = '2026-08-01 09:00:00+00';
SELECT pgconductor.set_fair_share('fair', true);
SELECT has_index('pgconductor', 'executions_fair$', 'executions_fair$f', 'set_fair_share makes the round-robin index');
SELECT count(*) FROM pgconductor.invoke_batch(array_fill('job'::text, ARRAY[204]),
    ARRAY(SELECT jsonb_build_object('k', k) FROM unnest(array_fill('big'::text, ARRAY[200]) || ARRAY['mid', 'mid', 'mid', 'tiny']) AS k),
    array_fill('fair'::text, ARRAY[204]), NULL, NULL, NULL,
    array_fill('big'::text, ARRAY[200]) || ARRAY['mid', 'mid', 'mid', 'tiny']);
CREATE FUNCTION pg_temp.claim_keys(p_n integer) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(payload->>'k', ',' ORDER BY payload->>'k')
      FROM pgconductor.get_executions(ARRAY['job'], '00000000-0000-0000-0000-0000000000d1', p_n, 'fair') $$;
SELECT is(pg_temp.claim_keys(3), 'big,mid,tiny', 'the first claim serves every key once');
SELECT is(pg_temp.claim_keys(3), 'big,big,mid', 'the next ones share among the keys left: mid is not starved by big');
SELECT is(pg_temp.claim_keys(4), 'big,big,big,mid', 'mid gives its last row, big fills the batch');
SELECT is((SELECT count(*)::integer FROM pgconductor.executions WHERE queue = 'fair' AND payload->>'k' IN ('mid', 'tiny') AND locked_by IS NULL), 0,
          'the small keys are done while big still has 194 of 200 waiting');
SELECT is((SELECT count(*)::integer FROM pgconductor.get_executions(ARRAY['job'], '00000000-0000-0000-0000-0000000000d1', 50, 'fair')), 50,
          'a key alone gets the whole batch');

SELECT pgconductor.set_key_weight('fair', 'heavy', 3);
SELECT count(*) FROM pgconductor.invoke_batch(array_fill('job'::text, ARRAY[40]),
    ARRAY(SELECT jsonb_build_object('k', k) FROM unnest(array_fill('heavy'::text, ARRAY[20]) || array_fill('light'::text, ARRAY[20])) AS k),
    array_fill('fair'::text, ARRAY[40]), NULL, NULL, NULL,
    array_fill('heavy'::text, ARRAY[20]) || array_fill('light'::text, ARRAY[20]));
UPDATE pgconductor.executions SET locked_by = '00000000-0000-0000-0000-0000000000d9', locked_at = now()
 WHERE queue = 'fair' AND payload->>'k' = 'big';  -- out of the way
SELECT is((SELECT count(*)::integer FROM pgconductor.get_executions(ARRAY['job'], '00000000-0000-0000-0000-0000000000d1', 8, 'fair')
            WHERE payload->>'k' = 'heavy'), 6, 'weight 3 against weight 1: 6 of 8');

SELECT pgconductor.set_fair_share('fair', false);
SELECT hasnt_index('pgconductor', 'executions_fair$', 'executions_fair$f', 'turning it off drops the index');
SELECT throws_ok($$SELECT pgconductor.set_key_weight('fair', 'heavy', 0)$$, '22023', NULL, 'a weight below 1 is refused');
SELECT throws_ok($$SELECT pgconductor.set_key_weight('nowhere', 'k', 2)$$, 'P0002', NULL, 'a weight in an unknown queue too');


-- 60 keys whose rows are due in an hour sort before the one key with due rows.
SELECT pgconductor.set_fair_share('later', true);
SELECT count(*) FROM pgconductor.invoke_batch(array_fill('job'::text, ARRAY[60]), array_fill('{}'::jsonb, ARRAY[60]),
    array_fill('later'::text, ARRAY[60]), array_fill('2026-08-01 10:00:00+00'::timestamptz, ARRAY[60]), NULL, NULL,
    ARRAY(SELECT 'a' || lpad(g::text, 3, '0') FROM generate_series(1, 60) AS g));
SELECT count(*) FROM pgconductor.invoke_batch(array_fill('job'::text, ARRAY[20]), array_fill('{}'::jsonb, ARRAY[20]),
    array_fill('later'::text, ARRAY[20]), NULL, NULL, NULL, array_fill('zz'::text, ARRAY[20]));
SELECT is((SELECT count(*)::integer FROM pgconductor.get_executions(ARRAY['job'], '00000000-0000-0000-0000-0000000000d2', 10, 'later'))
          + (SELECT count(*)::integer FROM pgconductor.get_executions(ARRAY['job'], '00000000-0000-0000-0000-0000000000d2', 10, 'later')),
          20, 'keys with nothing due do not starve the key behind them: each claim serves it');

-- A batch of 100 or more serves half as many keys, two rows each, and the next claim goes on
-- after them: 300 keys of 5 rows, claims of 200.
SELECT pgconductor.set_fair_share('wide', true);
SELECT count(*) FROM pgconductor.invoke_batch(array_fill('job'::text, ARRAY[1500]), array_fill('{}'::jsonb, ARRAY[1500]),
    array_fill('wide'::text, ARRAY[1500]), NULL, NULL, NULL,
    ARRAY(SELECT 'w' || lpad((g % 300)::text, 3, '0') FROM generate_series(1, 1500) AS g));
CREATE TEMP TABLE wide_claims AS
SELECT 1 AS claim, e.id FROM pgconductor.get_executions(ARRAY['job'], '00000000-0000-0000-0000-0000000000d3', 200, 'wide') AS e;
INSERT INTO wide_claims
SELECT 2, e.id FROM pgconductor.get_executions(ARRAY['job'], '00000000-0000-0000-0000-0000000000d3', 200, 'wide') AS e;
SELECT is((SELECT array_agg(n ORDER BY claim) FROM (
             SELECT c.claim, count(DISTINCT x.concurrency_key)::integer AS n
               FROM wide_claims AS c JOIN pgconductor.executions AS x ON x.id = c.id GROUP BY c.claim) AS k),
          ARRAY[100, 100], 'a claim of 200 serves 100 keys, two rows each');
SELECT is((SELECT count(DISTINCT x.concurrency_key)::integer FROM wide_claims AS c JOIN pgconductor.executions AS x ON x.id = c.id),
          200, 'and the next claim serves the next 100 keys');

SELECT * FROM finish();
ROLLBACK;
