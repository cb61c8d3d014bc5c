-- The claim's cost does not grow with the backlog.
-- Cases: the claim query shape uses the partial claim index with no sort; claiming 10 from a
-- 100k-row backlog touches about as many buffers as claiming 10 from a 1k-row backlog
-- (measured on get_executions itself with EXPLAIN (ANALYZE, BUFFERS)); claiming 100 of 10k
-- rows starts no sequential scan of the partition (the UPDATE finds the rows it picked by key).
\i tests/sql/setup.sql
BEGIN;
SELECT plan(5);
SET pgconductor.fake_now = '2025-08-01 10:00:00';

-- Buffers read by one claim of 10 from queue p_queue (the function's own work included).
CREATE FUNCTION pg_temp.claim_buffers(p_queue text, p_n integer DEFAULT 10) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE v_plan json;
BEGIN
    EXECUTE format('EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM pgconductor.get_executions(NULL::text[], %L, %s, %L)',
                   gen_random_uuid(), p_n, p_queue) INTO v_plan;
    RETURN (v_plan->0->'Plan'->>'Shared Hit Blocks')::bigint + (v_plan->0->'Plan'->>'Shared Read Blocks')::bigint;
END $$;

-- The JSON plan of an EXPLAIN statement.
CREATE FUNCTION pg_temp.explain_json(p_sql text) RETURNS json LANGUAGE plpgsql AS $$
DECLARE v_plan json;
BEGIN
    EXECUTE p_sql INTO v_plan;
    RETURN v_plan;
END $$;

-- Claiming 100 of 10k rows: no sequential scan of the partition (counted by the statistics
-- of this transaction). Done first, while the queue is the only one with rows: that is when
-- the planner liked to hash-join a whole-partition scan with the picked rows.
SELECT pgconductor.create_queue('mid');
INSERT INTO pgconductor.executions (task_key, queue, run_at)
SELECT 'c', 'mid', '2025-08-01 09:00'::timestamptz - g * interval '1 second' FROM generate_series(1, 10000) AS g;
ANALYZE pgconductor.executions;
SELECT seq_scan AS seq_before FROM pg_stat_xact_user_tables WHERE relid = 'pgconductor."executions_mid$"'::regclass \gset
SELECT count(*) FROM pgconductor.get_executions(NULL::text[], gen_random_uuid(), 100, 'mid');
SELECT count(*) FROM pgconductor.get_executions(NULL::text[], gen_random_uuid(), 100, 'mid');
SELECT is((SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relid = 'pgconductor."executions_mid$"'::regclass),
          :seq_before::bigint, 'claiming 100 of 10k rows scans no partition sequentially');

SELECT pgconductor.create_queue('small');
SELECT pgconductor.create_queue('big');
INSERT INTO pgconductor.executions (task_key, queue, priority, run_at)
SELECT 'c', 'small', g % 5, '2025-08-01 09:00'::timestamptz - g * interval '1 second' FROM generate_series(1, 1000) AS g;
INSERT INTO pgconductor.executions (task_key, queue, priority, run_at)
SELECT 'c', 'big', g % 5, '2025-08-01 09:00'::timestamptz - g * interval '1 second' FROM generate_series(1, 100000) AS g;
ANALYZE pgconductor.executions;

-- Warm both once (plan caching, catalog), then measure.
SELECT pg_temp.claim_buffers('small'), pg_temp.claim_buffers('big');
SELECT pg_temp.claim_buffers('small') AS small_buffers, pg_temp.claim_buffers('big') AS big_buffers \gset
SELECT cmp_ok(:big_buffers::bigint, '<=', 2 * :small_buffers::bigint + 20,
              format('claim cost is flat: %s buffers on a 100k backlog vs %s on 1k', :big_buffers, :small_buffers));

-- The claim's candidate query, as get_executions() writes it, on the 100k partition.
CREATE TEMP TABLE claim_plan AS
SELECT p::text AS plan FROM (SELECT pg_temp.explain_json($q$
    EXPLAIN (FORMAT JSON) SELECT e.id, e.queue FROM pgconductor.executions AS e
     WHERE e.queue = 'big' AND e.locked_by IS NULL AND e.waiting IS NULL AND e.run_at <= pgconductor._now()
       AND NOT (e.task_key = ANY ('{}'::text[]))
     ORDER BY e.priority, e.run_at, e.id LIMIT 10 FOR UPDATE SKIP LOCKED$q$)) AS x(p);
SELECT matches((SELECT plan FROM claim_plan), '"Index Name": "executions_big\$_priority_run_at_id_task_key_attempts_idx"',
               'the claim reads the partial claim index of the queue partition');
SELECT doesnt_match((SELECT plan FROM claim_plan), '"Node Type": "(Sort|Seq Scan)"', 'with no sort and no sequential scan');
SELECT is((SELECT count(*) FROM pgconductor.get_executions(NULL::text[], gen_random_uuid(), 10, 'big')), 10::bigint,
          'and claims the requested 10 rows');

SELECT * FROM finish();
ROLLBACK;
