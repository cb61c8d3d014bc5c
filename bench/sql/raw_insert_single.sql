-- pgbench reference: one plain INSERT per transaction into a table shaped like a job row.
INSERT INTO bench_raw_jobs (task_key, queue, payload) VALUES ('noop', 'bench', '{}');
