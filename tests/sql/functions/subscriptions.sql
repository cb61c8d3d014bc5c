-- Event subscriptions: subscribe(), unsubscribe(), subscriptions(), sync_static_subscriptions()
-- and the fan-out of an emitted event (emit_event calls _fan_out_event).
-- Cases: subscribe stores the settings and returns the id; subscribing the pair again updates
-- it in place (same id, one row); subscriptions() lists by event then task; unsubscribe says
-- whether it removed one; the fan-out makes one execution per subscription whose match the
-- payload contains, with the projected payload, the subscription's queue and priority (else
-- the task's queue), in one INSERT statement, and returns the count; no match and an event
-- without subscribers make none; a second fan-out of the same event makes none (dedupe key
-- event:<id>:<subscription>); a dropped queue is made again; a fan-out rolled back with its
-- emit leaves nothing; the static sync removes only the undeclared static subscriptions of
-- the worker's tasks; bad task keys, event names, matches, fields, queues and sync arrays
-- raise 22023 and change nothing.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(28);
SET pgconductor.fake_now = '2026-05-01 10:00:00+00';

-- subscribe / upsert / list / unsubscribe.
SELECT pgconductor.subscribe('mail', 'order.paid', '{"vip": true}', '{order_id,amount}') AS mail \gset
SELECT row_eq(format('SELECT task_key, event, match, fields, queue, priority, static FROM pgconductor.subscriptions WHERE id = %s', :mail),
              ROW('mail'::text, 'order.paid'::text, '{"vip": true}'::jsonb, '{order_id,amount}'::text[], NULL::text, 0, false),
              'subscribe stores the settings');
SELECT is(pgconductor.subscribe('mail', 'order.paid', '{"vip": false}', NULL, 'mailq', true, 5), :mail::bigint,
          'subscribing the pair again keeps its id');
SELECT row_eq(format('SELECT match, fields, queue, priority, static, (SELECT count(*) FROM pgconductor.subscriptions) FROM pgconductor.subscriptions WHERE id = %s', :mail),
              ROW('{"vip": false}'::jsonb, NULL::text[], 'mailq'::text, 5, true, 1::bigint), 'and takes the new settings in place');
SELECT ok(EXISTS (SELECT 1 FROM pgconductor.queues WHERE name = 'mailq'), 'a named queue is created');
SELECT pgconductor.subscribe('audit', 'order.shipped');
SELECT pgconductor.subscribe('audit', 'order.paid');
SELECT results_eq($$SELECT event || '/' || task_key FROM pgconductor.subscriptions()$$,
                  ARRAY['order.paid/audit', 'order.paid/mail', 'order.shipped/audit'], 'subscriptions() lists by event, then task');
SELECT is(pgconductor.unsubscribe('audit', 'order.shipped'), true, 'unsubscribe removes one');
SELECT is(pgconductor.unsubscribe('audit', 'order.shipped'), false, 'and says when there was none');
SELECT pgconductor.unsubscribe('audit', 'order.paid');
SELECT pgconductor.unsubscribe('mail', 'order.paid');

-- The fan-out.
SELECT pgconductor.register_task('ledger', p_queue => 'books');
SELECT pgconductor.subscribe('mail', 'order.paid', '{"vip": true}', '{order_id,amount,missing}') AS s_mail \gset
SELECT pgconductor.subscribe('ledger', 'order.paid') AS s_ledger \gset
SELECT pgconductor.subscribe('rush', 'order.paid', '{"items": [{"sku": "A"}]}', p_queue => 'rushq', p_priority => -5) AS s_rush \gset
SELECT pgconductor.subscribe('ship', 'order.shipped');
-- Counts INSERT statements into executions.
CREATE TEMP TABLE inserts (n integer NOT NULL);
INSERT INTO inserts VALUES (0);
CREATE FUNCTION pg_temp.count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN UPDATE inserts SET n = n + 1; RETURN NULL; END $$;
CREATE TRIGGER count_insert AFTER INSERT ON pgconductor.executions FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.count_insert();

SELECT pgconductor.emit_event('order.paid', '{"order_id": 7, "amount": 3, "vip": true, "items": [{"sku": "A", "n": 1}]}') AS ev \gset
SELECT is((SELECT count(*)::integer FROM pgconductor.executions WHERE dedupe_key LIKE format('event:%s:%%', :ev)),
          3, 'emit_event fans out: one execution per matching subscription');
SELECT is((SELECT n FROM inserts), 1, 'in one INSERT statement');
SELECT results_eq(format($$SELECT task_key, queue, priority, payload, dedupe_key FROM pgconductor.executions
                          WHERE dedupe_key LIKE 'event:%s:%%' ORDER BY task_key$$, :ev),
                  format($$VALUES ('ledger'::text, 'books'::text, 0, '{"order_id": 7, "amount": 3, "vip": true, "items": [{"sku": "A", "n": 1}]}'::jsonb, 'event:%1$s:%2$s'::text),
                                  ('mail', 'default', 0, '{"order_id": 7, "amount": 3}', 'event:%1$s:%3$s'),
                                  ('rush', 'rushq', -5, '{"order_id": 7, "amount": 3, "vip": true, "items": [{"sku": "A", "n": 1}]}', 'event:%1$s:%4$s')$$,
                         :ev, :s_ledger, :s_mail, :s_rush),
                  'payloads are projected; queue and priority are the subscription''s, else the task''s');
SELECT is(pgconductor._fan_out_event(:ev, 'order.paid', '{"order_id": 7, "amount": 3, "vip": true, "items": [{"sku": "A", "n": 1}]}'),
          0, 'a second fan-out of the same event makes none');

SELECT pgconductor.emit_event('order.paid', '{"order_id": 8, "vip": false}') AS ev2 \gset
SELECT is((SELECT count(*)::integer FROM pgconductor.executions WHERE dedupe_key LIKE format('event:%s:%%', :ev2)), 1,
          'an event matching one subscription makes one');
SELECT is((SELECT task_key FROM pgconductor.executions WHERE dedupe_key LIKE format('event:%s:%%', :ev2)), 'ledger',
          'the one whose match it contains');
SELECT pgconductor.emit_event('order.refunded', '{"order_id": 8}') AS ev3 \gset
SELECT is((SELECT count(*)::integer FROM pgconductor.executions WHERE dedupe_key LIKE format('event:%s:%%', :ev3)), 0,
          'an event without subscribers makes none');

UPDATE pgconductor.executions SET dedupe_key = NULL WHERE queue = 'rushq';
SELECT pgconductor.drop_queue('rushq', true);
SELECT pgconductor.emit_event('order.paid', '{"order_id": 9, "items": [{"sku": "A"}]}') AS ev4 \gset
SELECT is((SELECT count(*)::integer FROM pgconductor.executions WHERE dedupe_key LIKE format('event:%s:%%', :ev4)), 2,
          'a fan-out into a dropped queue');
SELECT ok(EXISTS (SELECT 1 FROM pgconductor.executions WHERE queue = 'rushq'), 'makes the queue again');

SELECT count(*) AS before FROM pgconductor.executions \gset
SAVEPOINT emitted;
SELECT pgconductor.emit_event('order.paid', '{"order_id": 10}');
ROLLBACK TO SAVEPOINT emitted;
SELECT is((SELECT count(*) FROM pgconductor.executions), :before::bigint, 'an emit rolled back leaves no execution');

-- Static sync.
SELECT pgconductor.subscribe('worker-a', 'ev1', p_static => true);
SELECT pgconductor.subscribe('worker-a', 'ev2', p_static => true);
SELECT pgconductor.subscribe('worker-a', 'ev3');
SELECT pgconductor.subscribe('worker-b', 'ev2', p_static => true);
SELECT is(pgconductor.sync_static_subscriptions('{worker-a,worker-gone}', '{worker-a}', '{ev1}'), 1,
          'the sync deletes the undeclared static subscription');
SELECT results_eq($$SELECT task_key || '/' || event FROM pgconductor.subscriptions() WHERE task_key LIKE 'worker-%' ORDER BY 1$$,
                  ARRAY['worker-a/ev1', 'worker-a/ev3', 'worker-b/ev2'], 'dynamic ones and other tasks'' stay');

-- Bad input.
SELECT count(*) AS subs FROM pgconductor.subscriptions \gset
SELECT throws_ok($$SELECT pgconductor.subscribe(' mail', 'order.paid')$$, '22023', NULL, 'a bad task key is refused');
SELECT throws_ok($$SELECT pgconductor.subscribe('mail', '')$$, '22023', NULL, 'an empty event name is refused');
SELECT throws_ok($$SELECT pgconductor.subscribe('mail', E'order\npaid')$$, '22023', NULL, 'and one with a control character');
SELECT throws_ok($$SELECT pgconductor.subscribe('mail', 'order.paid', '[1]')$$, '22023', NULL, 'a match that is not an object');
SELECT throws_ok($$SELECT pgconductor.subscribe('mail', 'order.paid', '{}', '{}')$$, '22023', NULL, 'empty fields');
SELECT throws_ok($$SELECT pgconductor.subscribe('mail', 'order.paid', '{}', '{a,NULL}')$$, '22023', NULL, 'a NULL field');
SELECT throws_ok($$SELECT pgconductor.subscribe('mail', 'order.paid', p_queue => 'Bad Queue')$$, '22023', NULL, 'a bad queue name');
SELECT throws_ok($$SELECT pgconductor.sync_static_subscriptions('{a}', '{a,b}', '{ev1}')$$, '22023', NULL,
                 'sync arrays of different lengths');
SELECT is((SELECT count(*) FROM pgconductor.subscriptions), :subs::bigint, 'bad input changed nothing');

SELECT * FROM finish();
ROLLBACK;
