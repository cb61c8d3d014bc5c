-- pgbench: one pgconductor.invoke() per transaction (rows/s = tps).
SELECT pgconductor.invoke('noop', '{}'::jsonb, 'bench');
