-- pgbench: claim_complete.sql with concurrency keys (flow section): the refill spreads its
-- :k executions at random over 1,000 keys, like the backlog bench/flow.py fills, so a task
-- limit per key (max_running_per_key) is counted by every claim.
SELECT coalesce(array_agg(id)::text, '{}') AS ids, coalesce(array_agg(attempt)::text, '{}') AS atts
  FROM pgconductor.get_executions(ARRAY['noop'], ('00000000-0000-4000-8000-' || lpad(:client_id::text, 12, '0'))::uuid, :k::int, 'bench') \gset
SELECT count(*) FROM pgconductor.return_executions(('00000000-0000-4000-8000-' || lpad(:client_id::text, 12, '0'))::uuid, :ids::uuid[], :atts::int[],
       array_fill('completed'::text, ARRAY[cardinality(:atts::int[])]));
SELECT count(*) FROM pgconductor.invoke_batch(array_fill('noop'::text, ARRAY[:k::int]), array_fill('{}'::jsonb, ARRAY[:k::int]),
       array_fill('bench'::text, ARRAY[:k::int]),
       p_concurrency_keys => ARRAY(SELECT 'k' || floor(random() * 1000)::int FROM generate_series(1, :k::int)));
