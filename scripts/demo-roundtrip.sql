-- A round trip through the SQL API, as a worker would do it (run by `make demo`):
-- register a task, invoke 3 executions with different priorities, claim them with
-- get_executions (lowest priority value first), complete them with return_executions,
-- and show the finished rows. Run on a fresh database: psql -f scripts/demo-roundtrip.sql
\set ON_ERROR_STOP 1
\pset footer off

\echo '== 1. register the task demo.greet'
SELECT pgconductor.register_task('demo.greet', p_max_attempts => 3) \g /dev/null

\echo '== 2. invoke 3 executions (lower priority runs first)'
SELECT pgconductor.invoke('demo.greet', '{"name": "later"}', p_priority => 10) AS later_id,
       pgconductor.invoke('demo.greet', '{"name": "urgent"}', p_priority => -5) AS urgent_id,
       pgconductor.invoke('demo.greet', '{"name": "normal"}') AS normal_id;

\echo '== 3. a worker (orchestrator) claims up to 10 of them'
SELECT gen_random_uuid() AS orchestrator \gset
CREATE TEMP TABLE claimed AS
    SELECT * FROM pgconductor.get_executions('demo.greet', :'orchestrator'::uuid, 10);
SELECT id, payload ->> 'name' AS name, priority, attempt FROM claimed ORDER BY priority, id;

\echo '== 4. it completes all three in one return_executions call (outcome per id)'
SELECT r.id, r.outcome
FROM pgconductor.return_executions(
    :'orchestrator'::uuid,
    (SELECT array_agg(id ORDER BY priority, id) FROM claimed),
    (SELECT array_agg(attempt ORDER BY priority, id) FROM claimed),
    (SELECT array_agg('completed'::text ORDER BY priority, id) FROM claimed),
    p_results => (SELECT array_agg(jsonb_build_object('greeting', 'hello ' || (payload ->> 'name'))
                                   ORDER BY priority, id) FROM claimed)
) AS r;

\echo '== 5. pgconductor.finished_executions'
SELECT payload ->> 'name' AS name, priority, state, attempts, result
FROM pgconductor.finished_executions
ORDER BY priority, id;


\echo '== 6. the hand-made worker leaves cleanly (release_orchestrator marks it stopped)'
SELECT pgconductor.release_orchestrator(:'orchestrator'::uuid) AS released;
