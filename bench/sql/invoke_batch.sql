-- pgbench: one pgconductor.invoke_batch() of :k payloads per transaction (rows/s = tps * k).
SELECT count(*) FROM pgconductor.invoke_batch('noop', array_fill('{}'::jsonb, ARRAY[:k::int]), 'bench');
