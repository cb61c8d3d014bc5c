-- Bad input that used to lose executions, poison a batch or stop other sessions (0.2.0).
-- Cases, one block per finding: drop_queue with a NULL force keeps live executions and a
-- forced drop keeps them as cancelled; a 41st failed attempt with a 1 h cap does not overflow
-- and does not reject the other results of its batch; intervals beyond 365 days are refused;
-- a time zone that is only an abbreviation of the session is refused, and a zone the server
-- does not know closes only its own task's window; invoke_batch pairs by position whatever
-- the arrays' lower bounds and refuses 2-D arrays; queue names that look like index names
-- work; long dedupe keys are refused; queue creation is capped per call and per database;
-- run_at must be finite; huge intervals for heartbeat and prune_finished are refused with a
-- hint; messages are one line and cut; the claim position survives a DateStyle change and a
-- forged value.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(38);
SET pgconductor.fake_now = '2026-01-01 12:00:00+00';

-- 1. drop_queue(q, NULL) --------------------------------------------------------------------
SELECT pgconductor.invoke('t1', '{}', 'doomed');
SELECT pgconductor.invoke('t1', '{}', 'doomed');
SELECT throws_ok($$SELECT pgconductor.drop_queue('doomed', NULL)$$, '55006', NULL, 'a NULL force does not drop a queue with executions');
SELECT is((SELECT count(*) FROM pgconductor.executions WHERE queue = 'doomed'), 2::bigint, 'its executions are still there');
SELECT count(*) FROM pgconductor.get_executions('t1', '00000000-0000-0000-0000-0000000000d1', 1);  -- t1 is unregistered: queue 'default'
SELECT count(*) FROM pgconductor.get_executions(ARRAY['t1'], '00000000-0000-0000-0000-0000000000d1', 1, 'doomed');
SELECT ok(pgconductor.drop_queue('doomed', true), 'a forced drop drops it');
SELECT results_eq($$SELECT state, count(*) FROM pgconductor.finished_executions WHERE queue = 'doomed' GROUP BY state$$,
                  $$VALUES ('cancelled'::text, 2::bigint)$$, 'and its live executions end cancelled instead of vanishing');
SELECT is((SELECT count(*) FROM pgconductor.signals WHERE kind = 'cancel' AND orchestrator_id = '00000000-0000-0000-0000-0000000000d1'),
          1::bigint, 'the running one is signalled to stop');

-- 2. backoff overflow poisoning a batch ----------------------------------------------------------
SELECT pgconductor.register_task('many-tries', 'default', 100, NULL, NULL, 'UTC', '10 seconds', '1 hour');
SELECT pgconductor.invoke('many-tries');
SELECT pgconductor.invoke('other');
UPDATE pgconductor.executions SET attempts = 40 WHERE task_key = 'many-tries';
CREATE TEMP TABLE c2 AS SELECT * FROM pgconductor.get_executions(ARRAY['many-tries', 'other'], '00000000-0000-0000-0000-0000000000d2', 10);
SELECT is((SELECT attempt FROM c2 WHERE task_key = 'many-tries'), 41, 'the 41st attempt is claimed');
SELECT results_eq($$SELECT r.outcome FROM c2 JOIN pgconductor.return_executions('00000000-0000-0000-0000-0000000000d2',
                      ARRAY(SELECT id FROM c2 ORDER BY task_key), ARRAY(SELECT lease FROM c2 ORDER BY task_key),
                      ARRAY['failed', 'completed']) AS r ON r.id = c2.id ORDER BY c2.task_key$$,
                  ARRAY['retry_scheduled', 'completed'], 'its failure and the other task''s completion both apply');
SELECT ok((SELECT run_at <= pgconductor._now() + interval '1 hour' FROM pgconductor.executions WHERE task_key = 'many-tries'),
          'the retry waits at most the cap');
SELECT is(pgconductor._backoff(2147483647, '1 second', '365 days') <= interval '365 days', true, 'no attempt count overflows the backoff');

-- 3. intervals beyond the bound -----------------------------------------------------------------
SELECT throws_ok($$SELECT pgconductor.register_task('huge', 'default', 3, NULL, NULL, 'UTC', '1 second', '178000000 years')$$,
                 '22023', NULL, 'a backoff cap of 178000000 years is refused');
SELECT throws_ok($$SELECT pgconductor.register_task('huge', p_timeout => '400 days')$$, '22023', NULL, 'so is a timeout over 365 days');
SELECT throws_ok($$SELECT pgconductor.register_task('huge', p_backoff_base => '-1 second')$$, '22023', NULL, 'and a negative backoff');
SELECT is((SELECT count(*) FROM pgconductor.tasks WHERE key = 'huge'), 0::bigint, 'nothing was registered');
SELECT throws_ok($$UPDATE pgconductor.tasks SET backoff_cap = '500 days' WHERE key = 'many-tries'$$, '23514', NULL,
                 'the table refuses it too');

-- 4. time zones -----------------------------------------------------------------------------------
SET LOCAL timezone_abbreviations = 'Australia';
SELECT throws_ok($$SELECT pgconductor.register_task('tz', p_window_start => '09:00', p_window_end => '17:00', p_timezone => 'SAT')$$,
                 '22023', NULL, 'an abbreviation valid only in this session is not a time zone');
RESET timezone_abbreviations;
SELECT lives_ok($$SELECT pgconductor.register_task('tz', p_window_start => '09:00', p_window_end => '17:00', p_timezone => 'Australia/Adelaide')$$,
                'a zone name is');
SELECT throws_ok($$SELECT pgconductor.register_task('tz', p_timezone => 'UTC+2')$$, '22023', NULL,
                 'a POSIX string (UTC+2 means UTC-2) is not a zone name (found by the fuzz layer)');
SELECT lives_ok($$SELECT pgconductor.register_task('tz', p_timezone => 'Etc/GMT+3')$$, 'a zone name with a digit is');
SELECT pgconductor.register_task('tz-broken', 'tzq', 3, '09:00', '17:00', 'UTC');
UPDATE pgconductor.tasks SET timezone = 'SAT' WHERE key = 'tz-broken';  -- as an older release could leave it
SELECT pgconductor.invoke('tz-broken', '{}', 'tzq');
SELECT pgconductor.invoke('tz-fine', '{}', 'tzq');
SELECT results_eq($$SELECT task_key FROM pgconductor.get_executions(NULL, '00000000-0000-0000-0000-0000000000d4', 10, 'tzq')$$,
                  ARRAY['tz-fine'], 'a task whose zone the server does not know waits; the other tasks are claimed');

-- 6. invoke_batch lower bounds and dimensions ------------------------------------------------------
CREATE TEMP TABLE b6 AS
SELECT u.id, u.ord FROM pgconductor.invoke_batch('[0:1]={k6,k6}'::text[], '[0:1]={"{\"n\": 0}","{\"n\": 1}"}'::jsonb[],
                                                 NULL, NULL, NULL, '[5:6]={d0,d1}'::text[]) WITH ORDINALITY AS u(id, ord);
SELECT results_eq($$SELECT e.dedupe_key, e.payload->>'n' FROM b6 JOIN pgconductor.executions AS e ON e.id = b6.id ORDER BY b6.ord$$,
                  $$VALUES ('d0'::text, '0'::text), ('d1', '1')$$, 'payloads pair with their dedupe keys by position');
SELECT throws_ok($$SELECT pgconductor.invoke_batch('{{a,b},{c,d}}'::text[], array_fill('{}'::jsonb, ARRAY[4]))$$,
                 '22023', 'invoke_batch takes one-dimensional arrays', '2-D arrays are refused');

-- 7. queue names that look like index names -----------------------------------------------------
SELECT lives_ok($$SELECT pgconductor.create_queue(q) FROM unnest(ARRAY['pkey', 'claim_idx', 'locked_by_idx', 'dedupe_key', 'default_pkey']) AS q$$,
                'queues pkey, claim_idx, locked_by_idx, dedupe_key and default_pkey can be created');
SELECT lives_ok($$SELECT pgconductor.invoke('x', '{}', 'default_pkey')$$, 'and used');

-- 8. long dedupe keys ------------------------------------------------------------------------------
SELECT throws_ok(format('SELECT pgconductor.invoke(%L, %L, NULL, NULL, 0, %L)', 'k8', '{}', repeat('x', 10000)),
                 '22023', NULL, 'a 10k-character dedupe key is refused');
SELECT lives_ok(format('SELECT pgconductor.invoke(%L, %L, NULL, NULL, 0, %L)', 'k8', '{}', repeat('x', 250)),
                'a 250-character one is fine');

-- 9. queue creation caps ---------------------------------------------------------------------------
SELECT throws_ok($$SELECT pgconductor.invoke_batch(array_fill('k9'::text, ARRAY[11]), array_fill('{}'::jsonb, ARRAY[11]),
                                                   ARRAY(SELECT 'new-' || g FROM generate_series(1, 11) AS g))$$,
                 '54000', NULL, 'one invoke_batch creates at most 10 new queues');
SELECT is((SELECT count(*) FROM pgconductor.queues WHERE name LIKE 'new-%'), 0::bigint, 'and that batch created none');

-- run_at must be finite ------------------------------------------------------------------------------
SELECT throws_ok($$SELECT pgconductor.invoke('k', '{}', NULL, 'infinity')$$, '22023', NULL, 'run_at infinity is refused');
SELECT throws_ok($$SELECT pgconductor.invoke_batch(ARRAY['k'], ARRAY['{}'::jsonb], NULL, ARRAY['-infinity'::timestamptz])$$,
                 '22023', NULL, 'so is -infinity in a batch');

-- Low: huge intervals, messages ----------------------------------------------------------------------
SELECT throws_ok($$SELECT pgconductor.heartbeat(gen_random_uuid(), NULL, '10000 years')$$, '22023', NULL, 'heartbeat: 10000 years is refused');
SELECT throws_ok($$SELECT pgconductor.prune_finished('10000 years')$$, '22023', NULL, 'prune_finished: 10000 years is refused');
SELECT throws_matching(format('SELECT pgconductor.invoke(%L)', E'bad\nkey' || repeat('y', 10000)),
                       E'^invalid task key ''bad\\?key[y]{53}''\\.\\.\\.$', 'a bad key is quoted on one line and cut');
SELECT throws_matching(format('SELECT pgconductor.create_queue(%L)', 'sep' || chr(8232) || 'arator'),
                       '^invalid queue name ''sep\?arator''$', 'the Unicode line separator is not echoed (found by the fuzz layer)');
SELECT throws_matching(format('SELECT pgconductor.register_task(%L, p_timezone => %L)', 'k', E'Mars\n' || repeat('z', 5000)),
                       E'^[^\\n]{1,120}$', 'a bad time zone too');

-- Low: the claim position under another DateStyle, and a forged one -------------------------------------
SELECT pgconductor.invoke_batch('pos', array_fill('{}'::jsonb, ARRAY[6]), 'posq');
SELECT is((SELECT count(*) FROM pgconductor.get_executions(ARRAY['pos'], '00000000-0000-0000-0000-0000000000d5', 2, 'posq')), 2::bigint,
          'a full claim leaves a position');
SET LOCAL DateStyle = 'SQL, DMY';
SELECT is((SELECT count(*) FROM pgconductor.get_executions(ARRAY['pos'], '00000000-0000-0000-0000-0000000000d5', 2, 'posq')), 2::bigint,
          'the next claim works under another DateStyle');
SELECT set_config('pgconductor.claim_position_posq', 'x|y|z|w|' || md5('{pos}'), false);
SELECT is((SELECT count(*) FROM pgconductor.get_executions(ARRAY['pos'], '00000000-0000-0000-0000-0000000000d5', 2, 'posq')), 2::bigint,
          'a forged position is ignored');

-- 9 (end). The per-database cap, last: it fills the database with queues.
SELECT pgconductor.create_queue('fill-' || g) FROM generate_series(1, pgconductor._max_queues() - (SELECT count(*)::integer FROM pgconductor.queues)) AS g;
SELECT throws_ok($$SELECT pgconductor.create_queue('one-too-many')$$, '54000', NULL, 'a database holds at most _max_queues() queues');

SELECT * FROM finish();
ROLLBACK;
