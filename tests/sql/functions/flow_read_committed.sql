-- The claim of limited tasks needs READ COMMITTED.
-- Cases: in a REPEATABLE READ transaction a claim that would count a limit is refused with
-- 25000 (it could count running executions from an old snapshot and over-admit); a claim of
-- tasks without limits still works there.
\i tests/sql/setup.sql
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT plan(2);
SELECT pgconductor.register_task('limited', p_max_running => 1);
SELECT pgconductor.invoke('limited');
SELECT pgconductor.invoke('free');
SELECT throws_ok($$SELECT * FROM pgconductor.get_executions(ARRAY['limited'], '00000000-0000-0000-0000-0000000000b1', 1)$$,
                 '25000', NULL, 'a limited claim outside READ COMMITTED is refused');
SELECT is((SELECT count(*)::integer FROM pgconductor.get_executions(ARRAY['free'], '00000000-0000-0000-0000-0000000000b1', 1)), 1,
          'a claim without limits is not');
SELECT * FROM finish();
ROLLBACK;
