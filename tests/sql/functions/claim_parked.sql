-- Parked executions do not slow the claim.
-- Cases: with 1M parked executions (sleeping, waiting for children or for an event) in the
-- queue, claiming 10 reads about as many buffers as with none; none of them is claimed; the
-- probe for due timers reads the timers index, not the parked rows.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(3);
SET pgconductor.fake_now = '2025-08-01 10:00:00';

-- Buffers read by one claim of 10 from queue p_queue (the function's own work included).
CREATE FUNCTION pg_temp.claim_buffers(p_queue text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE v_plan json;
BEGIN
    EXECUTE format('EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM pgconductor.get_executions(NULL::text[], %L, 10, %L)',
                   gen_random_uuid(), p_queue) INTO v_plan;
    RETURN (v_plan->0->'Plan'->>'Shared Hit Blocks')::bigint + (v_plan->0->'Plan'->>'Shared Read Blocks')::bigint;
END $$;

SELECT pgconductor.create_queue('wf');
INSERT INTO pgconductor.executions (task_key, queue, run_at)
SELECT 'c', 'wf', '2025-08-01 09:00'::timestamptz - g * interval '1 second' FROM generate_series(1, 1000) AS g;
ANALYZE pgconductor.executions;
SELECT pg_temp.claim_buffers('wf');
SELECT pg_temp.claim_buffers('wf') AS before_buffers \gset

INSERT INTO pgconductor.executions (task_key, queue, run_at, waiting, has_steps)
SELECT 'p', 'wf', CASE g % 3 WHEN 0 THEN '2025-08-02 10:00'::timestamptz ELSE 'infinity' END,
       (ARRAY['sleep', 'children', 'event'])[g % 3 + 1], true
  FROM generate_series(1, 1000000) AS g;
ANALYZE pgconductor.executions;
SELECT pg_temp.claim_buffers('wf');
SELECT pg_temp.claim_buffers('wf') AS after_buffers \gset
SELECT cmp_ok(:after_buffers::bigint, '<=', :before_buffers::bigint + 20,
              format('a claim reads %s buffers with 1M parked rows, %s without', :after_buffers, :before_buffers));
SELECT is((SELECT count(*) FROM pgconductor.get_executions(NULL::text[], gen_random_uuid(), 1000, 'wf') WHERE task_key = 'p'),
          0::bigint, 'no parked execution is claimed');
SELECT is((SELECT count(*) FROM pgconductor.executions WHERE queue = 'wf' AND waiting IS NOT NULL), 1000000::bigint,
          'and none was woken before its time');

SELECT * FROM finish();
ROLLBACK;
