-- Least privilege: the three group roles, as each role.
-- Cases: the roles exist, nest client < worker < admin and cannot log in; every public
-- function is SECURITY DEFINER (of the helpers, only the table trigger function) and has a
-- role in _api_roles(); PUBLIC executes no public
-- function; as a client: invoke, cancel, read executions, but no claim, no queue drop, no
-- table read; as a worker: claim, complete, heartbeat, declare its tasks, but no queue drop,
-- no register_task, no table read or write; as an admin: queues and task settings; a role
-- with none of them: nothing, not even invoke.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(24);

SELECT is((SELECT array_agg(rolname::text ORDER BY rolname) FROM pg_roles WHERE rolname LIKE 'pgconductor\_%' AND NOT rolcanlogin),
          ARRAY['pgconductor_admin', 'pgconductor_client', 'pgconductor_worker'], 'three NOLOGIN group roles');
SELECT ok(pg_has_role('pgconductor_admin', 'pgconductor_client', 'MEMBER') AND pg_has_role('pgconductor_worker', 'pgconductor_client', 'MEMBER')
          AND NOT pg_has_role('pgconductor_client', 'pgconductor_worker', 'MEMBER'), 'client < worker < admin');
SELECT is((SELECT array_agg(DISTINCT proname::text) FROM pg_proc WHERE pronamespace = 'pgconductor'::regnamespace
            AND proname NOT LIKE '\_%' AND NOT prosecdef), NULL, 'every public function is SECURITY DEFINER');
SELECT is((SELECT array_agg(DISTINCT proname::text) FROM pg_proc WHERE pronamespace = 'pgconductor'::regnamespace
            AND proname NOT LIKE '\_%' AND has_function_privilege('public', oid, 'EXECUTE')), NULL, 'PUBLIC executes none of them');
SELECT is((SELECT array_agg(DISTINCT proname::text) FROM pg_proc WHERE pronamespace = 'pgconductor'::regnamespace
            AND proname LIKE '\_%' AND prosecdef), ARRAY['_table_changed'],
          'no internal helper is SECURITY DEFINER but the table trigger function (any writer of a subscribed table enqueues)');

CREATE ROLE pgc_t_client LOGIN IN ROLE pgconductor_client;
CREATE ROLE pgc_t_worker LOGIN IN ROLE pgconductor_worker;
CREATE ROLE pgc_t_admin LOGIN IN ROLE pgconductor_admin;
CREATE ROLE pgc_t_nobody LOGIN;

SET ROLE pgc_t_client;
SELECT lives_ok($$SELECT pgconductor.invoke('priv', '{"n": 1}')$$, 'client: invoke');
SELECT lives_ok($$SELECT pgconductor.invoke_batch('priv', ARRAY['{}'::jsonb, '{}'])$$, 'client: invoke_batch');
SELECT is((SELECT count(*) FROM pgconductor.list_executions(p_task_key => 'priv')), 3::bigint, 'client: list executions');
SELECT lives_ok($$SELECT pgconductor.cancel((SELECT id FROM pgconductor.list_executions(p_task_key => 'priv') LIMIT 1))$$, 'client: cancel');
SELECT throws_ok($$SELECT * FROM pgconductor.get_executions('priv', gen_random_uuid(), 1)$$, '42501', NULL, 'client: no claim');
SELECT throws_ok($$SELECT pgconductor.drop_queue('default', true)$$, '42501', NULL, 'client: no queue drop');
SELECT throws_ok($$SELECT count(*) FROM pgconductor.executions$$, '42501', NULL, 'client: no table read');
RESET ROLE;

SET ROLE pgc_t_worker;
SELECT lives_ok($$SELECT pgconductor.declare_task('priv', '{"max_attempts": 4}')$$, 'worker: declare its task');
SELECT lives_ok($$SELECT * FROM pgconductor.heartbeat('00000000-0000-0000-0000-0000000000a1')$$, 'worker: heartbeat');
SELECT is((SELECT count(*) FROM pgconductor.get_executions('priv', '00000000-0000-0000-0000-0000000000a1', 10)), 2::bigint, 'worker: claim');
SELECT is((SELECT count(*) FROM pgconductor.return_executions('00000000-0000-0000-0000-0000000000a1',
              ARRAY(SELECT id FROM pgconductor.list_executions('running', 'priv')), ARRAY[1, 1], ARRAY['completed', 'completed'])
            WHERE outcome = 'completed'), 2::bigint, 'worker: complete');
SELECT lives_ok($$SELECT pgconductor.invoke('priv')$$, 'worker: invoke (a client''s right)');
SELECT throws_ok($$SELECT pgconductor.drop_queue('default', true)$$, '42501', NULL, 'worker: no queue drop');
SELECT throws_ok($$SELECT pgconductor.register_task('priv', p_max_attempts => 9)$$, '42501', NULL, 'worker: no register_task');
SELECT throws_ok($$INSERT INTO pgconductor.executions (task_key) VALUES ('direct')$$, '42501', NULL, 'worker: no table write');
RESET ROLE;

SET ROLE pgc_t_admin;
SELECT lives_ok($$SELECT pgconductor.create_queue('priv-q')$$, 'admin: create a queue');
SELECT lives_ok($$SELECT pgconductor.register_task('priv', p_max_attempts => 9)$$, 'admin: task settings');
RESET ROLE;

SET ROLE pgc_t_nobody;
SELECT throws_ok($$SELECT pgconductor.invoke('priv')$$, '42501', NULL, 'a role with none of them cannot invoke');
RESET ROLE;
SELECT is((SELECT max_attempts FROM pgconductor.tasks WHERE key = 'priv'), 9, 'the admin''s setting applied');

SELECT * FROM finish();
ROLLBACK;
