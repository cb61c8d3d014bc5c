-- invoke_batch(): many executions in one statement.
-- Cases: ids in input order for both forms; thousands of rows in one call; per-row queue,
-- run_at and priority; NULL elements take defaults; mixed queues created on demand;
-- duplicate dedupe keys in one batch (the last wins, G9); bad input changes nothing.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(12);
SET pgconductor.fake_now = '2025-04-01 08:00:00';

CREATE TEMP TABLE ids AS
SELECT row_number() OVER () AS n, id
  FROM pgconductor.invoke_batch('bulk', ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 5000) AS g)) AS id;
SELECT is((SELECT count(*) FROM ids), 5000::bigint, '5000 ids from one call');
SELECT is((SELECT count(*) FROM pgconductor.executions WHERE task_key = 'bulk'), 5000::bigint, '5000 executions stored');
SELECT is((SELECT count(*) FROM ids JOIN pgconductor.executions AS e USING (id) WHERE (e.payload->>'n')::bigint = ids.n),
          5000::bigint, 'ids come back in input order');

CREATE TEMP TABLE mixed AS
SELECT r.n, r.id FROM pgconductor.invoke_batch(ARRAY['a', 'b', 'c'], ARRAY['{}', '{}', '{}']::jsonb[],
                                       p_queues => ARRAY['qa', NULL, 'qc'],
                                       p_run_ats => ARRAY[NULL, '2025-04-01 09:00', NULL]::timestamptz[],
                                       p_priorities => ARRAY[1, NULL, -1]) WITH ORDINALITY AS r(id, n);
SELECT results_eq(
    $$SELECT e.queue || ':' || e.priority || ':' || e.run_at::time::text
        FROM mixed AS m JOIN pgconductor.executions AS e ON e.id = m.id ORDER BY m.n$$,
    ARRAY['qa:1:08:00:00', 'default:0:09:00:00', 'qc:-1:08:00:00'],
    'per-row queue, run_at and priority; NULL elements take the defaults');
SELECT ok(EXISTS (SELECT 1 FROM pgconductor.queues WHERE name = 'qc'), 'queues named in a batch are created');

CREATE TEMP TABLE keyed AS
SELECT row_number() OVER () AS n, id
  FROM pgconductor.invoke_batch(ARRAY['k', 'k', 'k'], ARRAY['{"v": 1}', '{"v": 2}', '{"v": 3}']::jsonb[],
                                p_dedupe_keys => ARRAY['same', NULL, 'same']) AS id;
SELECT is((SELECT count(DISTINCT id) FROM keyed), 2::bigint, 'duplicate keys in one batch make one execution (no error)');
SELECT is((SELECT (SELECT id FROM keyed WHERE n = 1) = (SELECT id FROM keyed WHERE n = 3)), true, 'both positions get its id');
SELECT is((SELECT payload FROM pgconductor.executions WHERE dedupe_key = 'same'), '{"v": 3}'::jsonb, 'the last payload wins');

SELECT throws_ok($$SELECT pgconductor.invoke_batch(ARRAY['x', 'y'], ARRAY['{}']::jsonb[])$$,
                 '22023', NULL, 'arrays of different lengths are rejected');
SELECT throws_ok($$SELECT pgconductor.invoke_batch(ARRAY['ok', ''], ARRAY['{}', '{}']::jsonb[])$$,
                 '22023', NULL, 'one bad key rejects the whole batch');
SELECT is((SELECT count(*) FROM pgconductor.executions WHERE task_key = 'ok'), 0::bigint, 'and enqueues nothing');
SELECT is((SELECT count(*) FROM pgconductor.invoke_batch('none', ARRAY[]::jsonb[])), 0::bigint, 'an empty batch returns no ids');

SELECT * FROM finish();
ROLLBACK;
