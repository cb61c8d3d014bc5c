-- The public API surface and its privileges.
-- Cases: every documented function exists with its signature; every function pins its
-- search_path or has a SQL-standard body (names bound at CREATE, so inlinable); the hot
-- helpers and named limits are such bodies; internal helpers ("_" prefix) are not executable by
-- PUBLIC, except the three that column defaults call; neither is the public API (it takes a role).
\i tests/sql/setup.sql
BEGIN;
SELECT plan(28);

SELECT has_function('pgconductor', 'invoke', ARRAY['text', 'jsonb', 'text', 'timestamp with time zone', 'integer', 'text', 'text', 'text', 'interval',
                                                    'interval', 'interval', 'timestamp with time zone']);
SELECT has_function('pgconductor', 'invoke_batch', ARRAY['text[]', 'jsonb[]', 'text[]', 'timestamp with time zone[]', 'integer[]', 'text[]', 'text[]',
                                                          'text', 'interval', 'interval', 'interval', 'timestamp with time zone[]']);
SELECT has_function('pgconductor', 'invoke_batch', ARRAY['text', 'jsonb[]', 'text', 'timestamp with time zone', 'integer']);
SELECT has_function('pgconductor', 'get_executions', ARRAY['text', 'uuid', 'integer']);
SELECT has_function('pgconductor', 'get_executions', ARRAY['text[]', 'uuid', 'integer', 'text']);
SELECT has_function('pgconductor', 'return_executions', ARRAY['uuid', 'uuid[]', 'integer[]', 'text[]', 'text[]', 'jsonb[]', 'integer[]']);
SELECT has_function('pgconductor', 'heartbeat', ARRAY['uuid', 'text', 'interval', 'jsonb', 'uuid[]']);
SELECT has_function('pgconductor', 'recover_stale', ARRAY['integer']);
SELECT has_function('pgconductor', 'release_orchestrator', ARRAY['uuid', 'uuid[]']);
SELECT has_function('pgconductor', 'request_shutdown', ARRAY['uuid']);
SELECT has_function('pgconductor', 'register_task', ARRAY['text', 'text', 'integer', 'time without time zone', 'time without time zone', 'text', 'interval', 'interval', 'interval', 'integer',
                                                           'integer', 'integer', 'integer', 'integer', 'interval', 'interval', 'interval', 'interval']);
SELECT has_function('pgconductor', 'create_queue', ARRAY['text']);
SELECT has_function('pgconductor', 'drop_queue', ARRAY['text', 'boolean']);
SELECT has_function('pgconductor', 'cancel', ARRAY['uuid', 'text']);
SELECT has_function('pgconductor', 'retry', ARRAY['uuid']);
SELECT has_function('pgconductor', 'queue_stats', ARRAY[]::text[]);
SELECT has_function('pgconductor', 'orchestrator_stats', ARRAY[]::text[]);
SELECT has_function('pgconductor', 'declare_task', ARRAY['text', 'jsonb']);
SELECT has_function('pgconductor', 'list_executions', ARRAY['text', 'text', 'text', 'integer', 'uuid']);
SELECT has_function('pgconductor', 'retry_executions', ARRAY['text', 'text', 'text', 'integer']);
SELECT has_function('pgconductor', 'task_overview', ARRAY[]::text[]);
SELECT has_function('pgconductor', 'save_steps', ARRAY['uuid', 'uuid[]', 'integer[]', 'text[]', 'integer[]', 'jsonb[]']);
SELECT has_function('pgconductor', 'emit_event', ARRAY['text', 'jsonb']);

SELECT is((SELECT array_agg(proname::text ORDER BY proname) FROM pg_proc WHERE pronamespace = 'pgconductor'::regnamespace
            AND NOT coalesce(proconfig::text[] && ARRAY['search_path=pg_catalog, pg_temp'], false)
            AND prosqlbody IS NULL),
          NULL, 'every function pins search_path or binds its names at CREATE (SQL-standard body)');
SELECT is((SELECT array_agg(proname::text ORDER BY proname) FROM pg_proc WHERE pronamespace = 'pgconductor'::regnamespace
            AND prosqlbody IS NOT NULL AND proconfig IS NULL),
          ARRAY['_claimable', '_cron_ge', '_event_lock', '_finished_partition_name', '_gated', '_keep_events', '_keep_orchestrators', '_key_sep', '_limited', '_max_interval', '_max_new_queues_per_call',
                '_max_queues', '_now', '_partition_name', '_project', '_refilled', '_show', '_table_trigger_name', '_task_setting_keys', '_tz_offset', '_uuid7',
                '_valid_event_name', '_valid_queue_name', '_valid_task_key', '_with_error'],
          'the hot helpers and the named limits have no SET clause, so the planner can inline them');

CREATE ROLE pgc_test_outsider;
SELECT is((SELECT array_agg(proname::text ORDER BY proname) FROM pg_proc
            WHERE pronamespace = 'pgconductor'::regnamespace AND proname LIKE '\_%' AND prorettype <> 'trigger'::regtype
              AND has_function_privilege('pgc_test_outsider', oid, 'EXECUTE')),
          ARRAY['_now', '_test_clock', '_uuid7'],
          'PUBLIC may execute only the internal helpers that column defaults need (_test_clock through _now)');
SELECT ok(NOT has_function_privilege('pgc_test_outsider', 'pgconductor.submit(text, jsonb, text, timestamptz, integer, text, text, text, interval, interval, interval, timestamptz)', 'EXECUTE'),
          'nor the public API: that takes one of the group roles (schema/privileges.sql)');
SELECT ok(NOT has_function_privilege('pgc_test_outsider', 'pgconductor._finish(uuid, text, text, text)', 'EXECUTE'),
          'but not the internals (here: _finish)');

SELECT * FROM finish();
ROLLBACK;
