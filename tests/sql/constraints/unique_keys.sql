-- Keys and constraints of the tables.
-- Cases: primary keys; one live execution per (queue, task, dedupe key) while finished ones
-- free the key; task/queue/window/attempt checks; lock columns set together; signal
-- uniqueness; finished state values.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(16);

SELECT col_is_pk('pgconductor', 'executions', ARRAY['id', 'queue'], 'executions: primary key (id, queue)');
SELECT col_is_pk('pgconductor', 'tasks', 'key', 'tasks: primary key key');
SELECT col_is_pk('pgconductor', 'queues', 'name', 'queues: primary key name');
SELECT col_is_pk('pgconductor', 'finished_executions', ARRAY['id', 'finished_at'], 'finished_executions: primary key (id, finished_at): it is partitioned by day');
SELECT index_is_unique('pgconductor', 'executions', 'executions_dedupe_key', 'dedupe index is unique');

INSERT INTO pgconductor.executions (id, task_key, dedupe_key) VALUES ('00000000-0000-0000-0000-000000000001', 't', 'k');
SELECT throws_ok($$INSERT INTO pgconductor.executions (task_key, dedupe_key) VALUES ('t', 'k')$$, '23505', NULL,
                 'two live executions cannot share (queue, task, dedupe key)');
SELECT lives_ok($$INSERT INTO pgconductor.executions (task_key, dedupe_key) VALUES ('other', 'k')$$, 'another task may use the key');
SELECT throws_ok($$INSERT INTO pgconductor.executions (id, task_key) VALUES ('00000000-0000-0000-0000-000000000001', 'u')$$, '23505', NULL,
                 'ids are unique within a queue');
SELECT throws_ok($$INSERT INTO pgconductor.executions (task_key) VALUES ('')$$, '23514', NULL, 'the task key check guards plain inserts');
SELECT throws_ok($$INSERT INTO pgconductor.executions (task_key, locked_by) VALUES ('t', gen_random_uuid())$$, '23514', NULL,
                 'locked_by and locked_at are set together');
SELECT throws_ok($$INSERT INTO pgconductor.tasks (key, window_start, window_end) VALUES ('w', '09:00', '09:00')$$, '23514', NULL,
                 'a window cannot start and end at the same time');
SELECT throws_ok($$INSERT INTO pgconductor.tasks (key, window_start) VALUES ('w', '09:00')$$, '23514', NULL,
                 'a window needs both ends');
SELECT throws_ok($$INSERT INTO pgconductor.tasks (key, max_attempts) VALUES ('w', 0)$$, '23514', NULL, 'max_attempts is at least 1');
SELECT throws_ok($$INSERT INTO pgconductor.queues (name) VALUES ('no spaces')$$, '23514', NULL, 'queue names are checked');
INSERT INTO pgconductor.orchestrators (id) VALUES ('00000000-0000-0000-0000-00000000000a');
INSERT INTO pgconductor.signals (orchestrator_id, kind) VALUES ('00000000-0000-0000-0000-00000000000a', 'shutdown');
SELECT throws_ok($$INSERT INTO pgconductor.signals (orchestrator_id, kind) VALUES ('00000000-0000-0000-0000-00000000000a', 'shutdown')$$,
                 '23505', NULL, 'one pending signal per (orchestrator, kind, execution)');
SELECT throws_ok($$INSERT INTO pgconductor.finished_executions (id, task_key, queue, payload, state, attempts, priority, run_at, created_at, finished_at)
                   VALUES (gen_random_uuid(), 't', 'default', '{}', 'running', 0, 0, now(), now(), now())$$, '23514', NULL,
                 'finished states are completed, failed or cancelled');

SELECT * FROM finish();
ROLLBACK;
