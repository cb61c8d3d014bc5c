-- The claim's cost with limits on does not grow with the backlog.
-- Cases: with max_running_per_key and rate_limit_per_key set, claiming 10 from a 100k-row
-- backlog over 1,000 keys touches about as many buffers as from a 1k-row backlog; the same for
-- a fair-share queue (the round-robin reads one index probe per key it serves).
\i tests/sql/setup.sql
BEGIN;
SELECT plan(2);
SET pgconductor.fake_now = '2025-08-01 10:00:00';

-- Buffers read by one claim of 10 from queue p_queue (the function's own work included).
CREATE FUNCTION pg_temp.claim_buffers(p_queue text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE v_plan json;
BEGIN
    EXECUTE format('EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM pgconductor.get_executions(ARRAY[''c''], %L, 10, %L)',
                   gen_random_uuid(), p_queue) INTO v_plan;
    RETURN (v_plan->0->'Plan'->>'Shared Hit Blocks')::bigint + (v_plan->0->'Plan'->>'Shared Read Blocks')::bigint;
END $$;

SELECT pgconductor.register_task('c', p_max_running_per_key => 5, p_rate_limit_per_key => 1000000);
SELECT pgconductor.create_queue(q) FROM unnest(ARRAY['small', 'big', 'fsmall', 'fbig']) AS q;
SELECT pgconductor.set_fair_share(q, true) FROM unnest(ARRAY['fsmall', 'fbig']) AS q;
INSERT INTO pgconductor.executions (task_key, queue, run_at, concurrency_key)
SELECT 'c', q.q, '2025-08-01 09:00'::timestamptz - g * interval '1 second', 'k' || (g % 1000)
  FROM (VALUES ('small', 1000), ('big', 100000), ('fsmall', 1000), ('fbig', 100000)) AS q(q, n),
       generate_series(1, q.n) AS g;
ANALYZE pgconductor.executions;

-- Warm each once (plan caching, catalog), then measure.
SELECT pg_temp.claim_buffers(q) FROM unnest(ARRAY['small', 'big', 'fsmall', 'fbig']) AS q;
SELECT pg_temp.claim_buffers('small') AS small_buffers, pg_temp.claim_buffers('big') AS big_buffers,
       pg_temp.claim_buffers('fsmall') AS fsmall_buffers, pg_temp.claim_buffers('fbig') AS fbig_buffers \gset
SELECT cmp_ok(:big_buffers::bigint, '<=', 2 * :small_buffers::bigint + 20,
              format('with per-key limits: %s buffers on a 100k backlog vs %s on 1k', :big_buffers, :small_buffers));
SELECT cmp_ok(:fbig_buffers::bigint, '<=', 2 * :fsmall_buffers::bigint + 20,
              format('fair share: %s buffers on a 100k backlog vs %s on 1k', :fbig_buffers, :fsmall_buffers));

SELECT * FROM finish();
ROLLBACK;
