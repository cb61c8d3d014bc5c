-- Database-change triggers: subscribe_table(), unsubscribe_table(), table_subscriptions(),
-- sync_static_table_subscriptions() and the trigger function _table_changed().
-- Cases: subscribing creates the trigger and its row; an insert, an update and a delete each
-- enqueue one execution with payload {op, table, old, new} (NULL old or new where the op has
-- none); an update that changes nothing enqueues nothing; with chosen columns old and new
-- carry only them and an update of other columns enqueues nothing; ops limit what fires; a
-- WHEN clause filters rows; the queue is the subscription's; a role without any privilege on
-- pgconductor enqueues; an insert rolled back enqueues nothing; subscribing again with the
-- same settings keeps the trigger, with others replaces it; a partition's row names its
-- partitioned table; hostile schema, table and column names (quotes, ";", "--", mixed case)
-- are quoted everywhere and run nothing; unsubscribe drops the trigger and row; a dropped
-- table's row goes; the static sync drops only undeclared static ones; unknown tables raise
-- 42P01, unknown columns 42703, bad ops and WHEN clauses 22023, a view or partition 42809, a
-- role without the TRIGGER privilege 42501, each changing nothing.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(53);
SET pgconductor.fake_now = '2026-05-01 10:00:00+00';

CREATE TABLE public.orders (id integer PRIMARY KEY, status text, amount integer, note text);
-- The payloads task p_task got: inserts, updates, deletes (one transaction: ids made in the
-- same millisecond are in no order).
CREATE FUNCTION pg_temp.payloads(p_task text) RETURNS SETOF jsonb LANGUAGE sql AS $$
    SELECT payload FROM pgconductor.executions WHERE task_key = p_task
     ORDER BY array_position(ARRAY['insert', 'update', 'delete'], payload->>'op'), payload::text
$$;

-- Every op, every column.
SELECT is(pgconductor.subscribe_table('sync-order', 'public.orders'), pgconductor._table_trigger_name('sync-order'),
          'subscribe_table returns the trigger''s name');
SELECT has_trigger('public', 'orders', pgconductor._table_trigger_name('sync-order'), 'the trigger exists');
SELECT row_eq($$SELECT table_name, ops, columns, when_clause, queue, static FROM pgconductor.table_subscriptions()$$,
              ROW('public.orders'::text, '{insert,update,delete}'::text[], NULL::text[], NULL::text, NULL::text, false),
              'table_subscriptions() lists it');
INSERT INTO public.orders VALUES (1, 'new', 10, 'n');
UPDATE public.orders SET status = 'paid' WHERE id = 1;
UPDATE public.orders SET status = 'paid' WHERE id = 1;
DELETE FROM public.orders WHERE id = 1;
SELECT results_eq($$SELECT * FROM pg_temp.payloads('sync-order')$$,
                  $$VALUES ('{"op": "insert", "table": "public.orders", "old": null, "new": {"id": 1, "status": "new", "amount": 10, "note": "n"}}'::jsonb),
                           ('{"op": "update", "table": "public.orders", "old": {"id": 1, "status": "new", "amount": 10, "note": "n"},
                              "new": {"id": 1, "status": "paid", "amount": 10, "note": "n"}}'),
                           ('{"op": "delete", "table": "public.orders", "old": {"id": 1, "status": "paid", "amount": 10, "note": "n"}, "new": null}')$$,
                  'insert, update and delete each enqueue their payload; an update changing nothing none');
SELECT is((SELECT count(*) FROM pgconductor.executions WHERE task_key = 'sync-order' AND queue = 'default'), 3::bigint,
          'in the task''s queue');

-- Chosen columns, ops, WHEN, queue.
SELECT pgconductor.subscribe_table('watch-status', 'public.orders', '{UPDATE}', '{status,id}', p_queue => 'watchq');
SELECT pgconductor.subscribe_table('big-orders', 'public.orders', '{insert}', '{id,amount}', 'NEW.amount > 100');
INSERT INTO public.orders VALUES (2, 'new', 5, 'a'), (3, 'new', 500, 'b');
UPDATE public.orders SET note = 'changed' WHERE id = 2;
UPDATE public.orders SET status = 'paid', note = 'x' WHERE id = 2;
DELETE FROM public.orders WHERE id = 3;
SELECT results_eq($$SELECT * FROM pg_temp.payloads('watch-status')$$,
                  $$VALUES ('{"op": "update", "table": "public.orders", "old": {"id": 2, "status": "new"}, "new": {"id": 2, "status": "paid"}}'::jsonb)$$,
                  'with columns, old and new carry only them, and only a change of them fires');
SELECT is((SELECT DISTINCT queue FROM pgconductor.executions WHERE task_key = 'watch-status'), 'watchq', 'in the subscription''s queue');
SELECT results_eq($$SELECT * FROM pg_temp.payloads('big-orders')$$,
                  $$VALUES ('{"op": "insert", "table": "public.orders", "old": null, "new": {"id": 3, "amount": 500}}'::jsonb)$$,
                  'the WHEN clause and the ops choose the rows that fire');

-- A role that may only insert into the table enqueues through the trigger (SECURITY DEFINER).
CREATE ROLE pgc_events_writer;
GRANT INSERT ON public.orders TO pgc_events_writer;
REVOKE ALL ON FUNCTION pgconductor._table_changed() FROM PUBLIC;
REVOKE ALL ON SCHEMA pgconductor FROM PUBLIC;
SET ROLE pgc_events_writer;
INSERT INTO public.orders VALUES (5, 'new', 1, 'w');
RESET ROLE;
SELECT is((SELECT count(*) FROM pgconductor.executions WHERE task_key = 'sync-order' AND payload->'new'->>'id' = '5'), 1::bigint,
          'a role with no privilege on pgconductor enqueues by changing the table');
DELETE FROM public.orders WHERE id = 5;

-- Rollback.
SELECT count(*) AS before FROM pgconductor.executions \gset
SAVEPOINT inserted;
INSERT INTO public.orders VALUES (4, 'new', 1000, 'r');
SELECT is((SELECT count(*) FROM pgconductor.executions), :before::bigint + 2, 'an insert enqueues in its transaction');
ROLLBACK TO SAVEPOINT inserted;
SELECT is((SELECT count(*) FROM pgconductor.executions), :before::bigint, 'an insert rolled back enqueues nothing');

-- Upsert.
SELECT t.oid AS trig FROM pg_trigger AS t WHERE t.tgname = pgconductor._table_trigger_name('big-orders') \gset
SELECT pgconductor.subscribe_table('big-orders', 'public.orders', '{insert}', '{id,amount}', 'NEW.amount > 100', p_static => true);
SELECT is((SELECT t.oid FROM pg_trigger AS t WHERE t.tgname = pgconductor._table_trigger_name('big-orders')), :'trig'::oid,
          'subscribing again with the same settings keeps the trigger');
SELECT is((SELECT static FROM pgconductor.table_subscriptions WHERE task_key = 'big-orders'), true, 'and updates the static flag');
SELECT pgconductor.subscribe_table('big-orders', 'public.orders', '{insert,delete}', '{id}', 'true');
SELECT isnt((SELECT t.oid FROM pg_trigger AS t WHERE t.tgname = pgconductor._table_trigger_name('big-orders')), :'trig'::oid,
            'other settings replace it');
SELECT row_eq($$SELECT ops, columns, when_clause, (SELECT count(*) FROM pgconductor.table_subscriptions WHERE task_key = 'big-orders')
                  FROM pgconductor.table_subscriptions WHERE task_key = 'big-orders'$$,
              ROW('{insert,delete}'::text[], '{id}'::text[], 'true'::text, 1::bigint), 'in the same row');
DELETE FROM public.orders WHERE id = 2;
SELECT is((SELECT payload FROM pgconductor.executions WHERE task_key = 'big-orders' AND payload->>'op' = 'delete'),
          '{"op": "delete", "table": "public.orders", "old": {"id": 2}, "new": null}'::jsonb, 'and fire with the new settings');

-- A partitioned table.
CREATE TABLE public.ledger (id integer, day date) PARTITION BY RANGE (day);
CREATE TABLE public.ledger_may PARTITION OF public.ledger FOR VALUES FROM ('2026-05-01') TO ('2026-06-01');
SELECT pgconductor.subscribe_table('book', 'public.ledger', '{insert}');
INSERT INTO public.ledger VALUES (1, '2026-05-02');
SELECT results_eq($$SELECT * FROM pg_temp.payloads('book')$$,
                  $$VALUES ('{"op": "insert", "table": "public.ledger", "old": null, "new": {"id": 1, "day": "2026-05-02"}}'::jsonb)$$,
                  'a partition''s row fires the partitioned table''s subscription, named after it');

-- Hostile identifiers.
CREATE TABLE public.x (id integer);
CREATE SCHEMA "we""ird; DROP TABLE x; --";
CREATE TABLE "we""ird; DROP TABLE x; --"."Or""ders; --" (id integer, "Sta""tus; DROP TABLE x; --" text, "MixedCase" text);
SELECT lives_ok($$SELECT pgconductor.subscribe_table('we"ird task; --', '"we""ird; DROP TABLE x; --"."Or""ders; --"', '{insert,update}',
                                                     '{"Sta\"tus; DROP TABLE x; --",MixedCase}',
                                                     $w$NEW."Sta""tus; DROP TABLE x; --" IS DISTINCT FROM 'x''; DROP TABLE x; --'$w$, 'odd')$$,
                'hostile schema, table, column, task and WHEN names subscribe');
SELECT has_trigger('we"ird; DROP TABLE x; --', 'Or"ders; --', pgconductor._table_trigger_name('we"ird task; --'), 'the trigger is on the hostile table');
SELECT has_table('public', 'x', 'and the sentinel table is still there');
INSERT INTO "we""ird; DROP TABLE x; --"."Or""ders; --" VALUES (1, 'a', 'M'), (2, 'x''; DROP TABLE x; --', 'N');
UPDATE "we""ird; DROP TABLE x; --"."Or""ders; --" SET "Sta""tus; DROP TABLE x; --" = 'b' WHERE id = 1;
SELECT results_eq($$SELECT * FROM pg_temp.payloads('we"ird task; --')$$,
                  $$VALUES (jsonb_build_object('op', 'insert', 'table', '"we""ird; DROP TABLE x; --"."Or""ders; --"', 'old', NULL,
                                               'new', jsonb_build_object('Sta"tus; DROP TABLE x; --', 'a', 'MixedCase', 'M'))),
                           (jsonb_build_object('op', 'update', 'table', '"we""ird; DROP TABLE x; --"."Or""ders; --"',
                                               'old', jsonb_build_object('Sta"tus; DROP TABLE x; --', 'a', 'MixedCase', 'M'),
                                               'new', jsonb_build_object('Sta"tus; DROP TABLE x; --', 'b', 'MixedCase', 'M')))$$,
                  'its rows fire with the chosen hostile columns, the table named as SQL quotes it');
SELECT is(pgconductor.unsubscribe_table('we"ird task; --', '"we""ird; DROP TABLE x; --"."Or""ders; --"'), true,
          'unsubscribe_table removes the hostile one');
SELECT hasnt_trigger('we"ird; DROP TABLE x; --', 'Or"ders; --', pgconductor._table_trigger_name('we"ird task; --'), 'its trigger is gone');
SELECT has_table('public', 'x', 'the sentinel table survived it all');

-- Unsubscribe.
SELECT is(pgconductor.unsubscribe_table('watch-status', 'public.orders'), true, 'unsubscribe_table says it removed one');
SELECT hasnt_trigger('public', 'orders', pgconductor._table_trigger_name('watch-status'), 'its trigger is dropped');
SELECT has_trigger('public', 'orders', pgconductor._table_trigger_name('sync-order'), 'other tasks'' triggers stay');
SELECT is(pgconductor.unsubscribe_table('watch-status', 'public.orders'), false, 'a second unsubscribe says there was none');
SELECT is(pgconductor.unsubscribe_table('watch-status', 'public.nope'), false, 'so does one for an unknown table');
CREATE TABLE public.gone (id integer);
SELECT pgconductor.subscribe_table('sync-gone', 'public.gone');
DROP TABLE public.gone;
SELECT pgconductor.unsubscribe_table('sync-gone', 'public.gone');
SELECT is((SELECT count(*) FROM pgconductor.table_subscriptions WHERE task_key = 'sync-gone'), 0::bigint,
          'the row of a dropped table goes');

-- Static sync.
CREATE TABLE public.items (id integer);
SELECT pgconductor.subscribe_table('worker-a', 'public.orders', p_static => true);
SELECT pgconductor.subscribe_table('worker-a', 'public.items', p_static => true);
SELECT pgconductor.subscribe_table('worker-b', 'public.items', p_static => true);
SELECT is(pgconductor.sync_static_table_subscriptions('{worker-a,big-orders}', '{worker-a}', '{public.orders}'), 1,
          'the sync drops the undeclared static subscription');
SELECT hasnt_trigger('public', 'items', pgconductor._table_trigger_name('worker-a'), 'with its trigger');
SELECT results_eq($$SELECT task_key || ' ' || table_name FROM pgconductor.table_subscriptions() WHERE task_key IN ('worker-a', 'worker-b', 'big-orders') ORDER BY 1$$,
                  ARRAY['big-orders public.orders', 'worker-a public.orders', 'worker-b public.items'],
                  'dynamic ones and other tasks'' stay');

-- Bad input.
CREATE VIEW public.orders_view AS SELECT * FROM public.orders;
SELECT count(*) AS subs FROM pgconductor.table_subscriptions \gset
SELECT count(*) AS trigs FROM pg_trigger WHERE tgname LIKE 'pgconductor\_%' \gset
SELECT throws_ok($$SELECT pgconductor.subscribe_table('t', 'public.nope')$$, '42P01', NULL, 'an unknown table raises 42P01');
SELECT throws_ok($$SELECT pgconductor.subscribe_table('t', 'orders')$$, '42P01', NULL, 'so does an unqualified one');
SELECT throws_ok($$SELECT pgconductor.subscribe_table('t', 'public."orders')$$, '42P01', NULL, 'and a malformed name');
SELECT throws_ok($$SELECT pgconductor.subscribe_table('t', 'public.orders_view')$$, '42809', NULL, 'a view raises 42809');
SELECT throws_ok($$SELECT pgconductor.subscribe_table('t', 'public.ledger_may')$$, '42809', NULL, 'so does a partition');
SELECT throws_ok($$SELECT pgconductor.subscribe_table('t', 'pgconductor.executions')$$, '22023', NULL, 'pgconductor''s tables are refused');
SELECT throws_ok($$SELECT pgconductor.subscribe_table('t', 'public.orders', p_columns => '{id,Status}')$$, '42703', NULL,
                 'an unknown column raises 42703 (case counts)');
SELECT throws_ok($$SELECT pgconductor.subscribe_table('t', 'public.orders', p_columns => '{}')$$, '22023', NULL, 'no columns at all raise 22023');
SELECT throws_ok($$SELECT pgconductor.subscribe_table('t', 'public.orders', '{insert,truncate}')$$, '22023', NULL, 'a bad op raises 22023');
SELECT throws_ok($$SELECT pgconductor.subscribe_table('t', 'public.orders', '{}')$$, '22023', NULL, 'so do no ops');
SELECT throws_ok($$SELECT pgconductor.subscribe_table('t', 'public.orders', p_when => 'true); DROP TABLE public.x; --')$$,
                 '22023', NULL, 'a WHEN clause closing its parenthesis raises 22023');
SELECT throws_ok($$SELECT pgconductor.subscribe_table('t', 'public.orders', p_when => 'true; DROP TABLE public.x')$$,
                 '22023', NULL, 'so does one with a ";"');
SELECT throws_ok($$SELECT pgconductor.subscribe_table('t', 'public.orders', p_when => E'NEW.note = \'\\\'')$$,
                 '22023', NULL, 'or a backslash');
SELECT throws_ok($q$SELECT pgconductor.subscribe_table('t', 'public.orders', p_when => 'NEW.id = $$1$$')$q$,
                 '22023', NULL, 'or a dollar quote');
SELECT throws_ok($$SELECT pgconductor.subscribe_table('t', 'public.orders', '{insert}', p_when => 'OLD.id = 1')$$,
                 '42P17', NULL, 'a WHEN clause PostgreSQL refuses keeps its SQLSTATE');
SELECT throws_ok($$SELECT pgconductor.subscribe_table(E't\n', 'public.orders')$$, '22023', NULL, 'a bad task key raises 22023');
-- A session role without the TRIGGER privilege (the function runs as its owner once installed).
CREATE ROLE pgc_events_nobody IN ROLE pgconductor_worker;
SET SESSION AUTHORIZATION pgc_events_nobody;
SELECT throws_ok($$SELECT pgconductor.subscribe_table('t', 'public.orders')$$, '42501', 'role pgc_events_nobody may not create triggers on public.orders',
                 'a session role that may not create triggers on the table raises 42501');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*) FROM pgconductor.table_subscriptions), :subs::bigint, 'bad input added no subscription');
SELECT is((SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgconductor\_%'), :trigs::bigint, 'nor a trigger');
SELECT has_table('public', 'x', 'and dropped nothing');

SELECT * FROM finish();
ROLLBACK;
