-- Queue partitions: the queues trigger, create_queue() and drop_queue().
-- Cases: the default partition exists; create_queue creates a partition and is idempotent;
-- names that differ only by "-"/"_" get separate partitions (G19); invalid names; rows are
-- routed to their queue's partition; a row for a queue with no partition is refused; queues
-- cannot be renamed; drop_queue refuses the default queue and a non-empty queue unless forced,
-- and drops the partition.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(18);

SELECT has_table('pgconductor', 'executions_default$', 'the default queue has its partition');
SELECT is(pgconductor.create_queue('a-b'), true, 'create_queue creates a queue');
SELECT is(pgconductor.create_queue('a-b'), false, 'and is idempotent');
SELECT is(pgconductor.create_queue('a_b'), true, 'a_b is a different queue from a-b');
SELECT has_table('pgconductor', 'executions_a-b$', 'a-b has its partition');
SELECT has_table('pgconductor', 'executions_a_b$', 'a_b has its own partition');
SELECT throws_ok($$SELECT pgconductor.create_queue('Upper')$$, '22023', NULL, 'upper case is refused');
SELECT throws_ok($$SELECT pgconductor.create_queue(repeat('q', 49))$$, '22023', NULL, 'names over 48 characters are refused');
SELECT throws_ok($$SELECT pgconductor.create_queue('-lead')$$, '22023', NULL, 'a leading dash is refused');

INSERT INTO pgconductor.executions (task_key, queue) VALUES ('t', 'a-b'), ('t', 'a_b'), ('t', 'a_b');
SELECT is((SELECT count(*) FROM pgconductor."executions_a-b$"), 1::bigint, 'rows go to their queue partition (a-b)');
SELECT is((SELECT count(*) FROM pgconductor."executions_a_b$"), 2::bigint, 'rows go to their queue partition (a_b)');
SELECT throws_ok($$INSERT INTO pgconductor.executions (task_key, queue) VALUES ('t', 'nowhere')$$, '23514', NULL,
                 'a row for a queue that does not exist is refused');
SELECT throws_ok($$UPDATE pgconductor.queues SET name = 'c' WHERE name = 'a-b'$$, '55000', NULL, 'queues cannot be renamed');

SELECT throws_ok($$SELECT pgconductor.drop_queue('default')$$, '42501', NULL, 'the default queue cannot be dropped');
SELECT throws_ok($$SELECT pgconductor.drop_queue('a_b')$$, '55006', NULL, 'a queue with executions is not dropped');
SELECT is(pgconductor.drop_queue('a_b', p_force => true), true, 'unless forced');
SELECT hasnt_table('pgconductor', 'executions_a_b$', 'its partition is gone');
SELECT is(pgconductor.drop_queue('never-was'), false, 'dropping an unknown queue returns false');

SELECT * FROM finish();
ROLLBACK;
