-- pgbench: what a worker does per batch, at a constant backlog. Transaction 1 claims :k
-- executions (get_executions), transaction 2 completes them (return_executions), and
-- transaction 3 enqueues :k new ones (invoke_batch), so the backlog stays where it was.
-- Jobs/s = tps * k. Each client is its own orchestrator
-- (uuid built from pgbench's :client_id).
SELECT coalesce(array_agg(id)::text, '{}') AS ids, coalesce(array_agg(attempt)::text, '{}') AS atts
  FROM pgconductor.get_executions(ARRAY['noop'], ('00000000-0000-4000-8000-' || lpad(:client_id::text, 12, '0'))::uuid, :k::int, 'bench') \gset
SELECT count(*) FROM pgconductor.return_executions(('00000000-0000-4000-8000-' || lpad(:client_id::text, 12, '0'))::uuid, :ids::uuid[], :atts::int[],
       array_fill('completed'::text, ARRAY[cardinality(:atts::int[])]));
SELECT count(*) FROM pgconductor.invoke_batch('noop', array_fill('{}'::jsonb, ARRAY[:k::int]), 'bench');
