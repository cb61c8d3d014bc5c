-- finished_executions partitioned by day: partitions made ahead, whole days dropped.
-- Cases: _add_finished_partitions makes the day of now and the two after it, once; ended
-- executions land in their day's partition; a day whose rows went to the default partition
-- (nothing made it ahead) keeps them there; maintain() drops a day's partition once every
-- row in it is past the longest keep of any task, with the steps of its executions, and
-- counts them as pruned; a task keeping failed ones 90 days keeps its day.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(8);
SELECT is(pgconductor._add_finished_partitions('2026-01-10 08:00:00+00'), 3, 'three days made');
SELECT is(pgconductor._add_finished_partitions('2026-01-10 20:00:00+00'), 0, 'once');
SELECT has_table('pgconductor', 'finished_executions_20260112', 'up to the day after tomorrow');

SET pgconductor.fake_now = '2026-01-10 12:00:00+00';
SELECT pgconductor.invoke('old', '{}') AS old_id \gset
SELECT pgconductor.cancel(:'old_id');
INSERT INTO pgconductor.steps (execution_id, key, seq, kind, state, result) VALUES (:'old_id', 'k', 1, 'step', 'done', '1');
SELECT is((SELECT tableoid::regclass::text FROM pgconductor.finished_executions WHERE id = :'old_id'),
          'pgconductor.finished_executions_20260110', 'an ended execution lands in its day');

SET pgconductor.fake_now = '2026-01-20 12:00:00+00';
SELECT pgconductor.cancel(pgconductor.invoke('stray', '{}'));
SELECT is(pgconductor._add_finished_partitions('2026-01-20 13:00:00+00'), 2, 'a day with rows in the default partition is not made');

SET pgconductor.fake_now = '2026-03-01 00:00:00+00';
SELECT cmp_ok((pgconductor.maintain()->>'pruned')::integer, '>=', 1, 'past the longest keep the day goes, counted as pruned');
SELECT ok(to_regclass('pgconductor.finished_executions_20260110') IS NULL
          AND NOT EXISTS (SELECT 1 FROM pgconductor.steps WHERE execution_id = :'old_id'),
          'its partition dropped, the steps of its executions deleted');

SELECT pgconductor.register_task('slow', p_keep_failed => '90 days');
SELECT pgconductor.invoke('slow', '{}') AS slow_id \gset
SELECT pgconductor.cancel(:'slow_id');
SET pgconductor.fake_now = '2026-05-15 00:00:00+00';
SELECT pgconductor.maintain();
SELECT ok(to_regclass('pgconductor.finished_executions_20260301') IS NOT NULL
          AND EXISTS (SELECT 1 FROM pgconductor.finished_executions WHERE id = :'slow_id'),
          'a task that keeps failed ones 90 days keeps its day and its row');

SELECT * FROM finish();
ROLLBACK;
