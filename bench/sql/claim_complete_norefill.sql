-- pgbench: claim :k (transaction 1) then complete them (transaction 2); no refill, so the
-- run must be sized (-t) to consume less than the backlog. Jobs/s = tps * k.
SELECT coalesce(array_agg(id)::text, '{}') AS ids, coalesce(array_agg(attempt)::text, '{}') AS atts
  FROM pgconductor.get_executions(ARRAY['noop'], ('00000000-0000-4000-8000-' || lpad(:client_id::text, 12, '0'))::uuid, :k::int, 'bench') \gset
SELECT count(*) FROM pgconductor.return_executions(('00000000-0000-4000-8000-' || lpad(:client_id::text, 12, '0'))::uuid, :ids::uuid[], :atts::int[],
       array_fill('completed'::text, ARRAY[cardinality(:atts::int[])]));
