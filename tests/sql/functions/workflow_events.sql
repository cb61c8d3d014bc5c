-- emit_event() and event waits.
-- Cases: a wait parks the execution; an emit whose payload contains the match wakes it with
-- the payload as the step's result, one that does not leaves it; no lost wake-up: an event
-- emitted after the execution was created but before the wait is taken at once; an event is
-- given to one wait of an execution only once; a deadline times the wait out; cancelling a
-- parked execution ends it at once and drops its wait; bad names and payloads raise 22023;
-- an emit reads about as many buffers with 10k waits of other matches as with none.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(14);
SET pgconductor.fake_now = '2026-05-01 10:00:00+00';
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-00000000000a');

-- Parks the execution of task p_task with an event plan; returns the outcome.
CREATE FUNCTION pg_temp.wait_for(p_task text, p_key text, p_match jsonb, p_deadline timestamptz DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE v_row record;
BEGIN
    SELECT * INTO v_row FROM pgconductor.get_executions(p_task, '00000000-0000-0000-0000-00000000000a', 1);
    RETURN (SELECT outcome FROM pgconductor.return_executions('00000000-0000-0000-0000-00000000000a', ARRAY[v_row.id],
                ARRAY[v_row.lease], ARRAY['suspend'], NULL,
                ARRAY[jsonb_build_object('event', jsonb_build_object('key', p_key, 'seq', 0, 'name', 'order.paid',
                                                                     'match', p_match, 'deadline', p_deadline))]));
END $$;

SELECT pgconductor.invoke('checkout-7', '{"order": 7}') AS c7 \gset
SELECT is(pg_temp.wait_for('checkout-7', 'paid', '{"order_id": 7}'), 'suspended', 'a wait parks the execution');
SELECT is((SELECT state FROM pgconductor.get_execution(:'c7')), 'waiting_for_event', 'waiting for the event');
SELECT pgconductor.emit_event('order.paid', '{"order_id": 8, "amount": 5}');
SELECT is((SELECT waiting FROM pgconductor.executions WHERE id = :'c7'), 'event', 'an event for another order leaves it');
SELECT ok(pgconductor.emit_event('order.paid', '{"order_id": 7, "amount": 12}') > 0, 'emit returns the event id');
SELECT row_eq(format($$SELECT s.state, s.result, e.waiting FROM pgconductor.steps AS s JOIN pgconductor.executions AS e ON e.id = s.execution_id
                       WHERE s.execution_id = %L$$, :'c7'),
              ROW('done'::text, '{"order_id": 7, "amount": 12}'::jsonb, NULL::text), 'the matching event wakes it with its payload');

-- No lost wake-up: emitted after the execution was created, before the wait.
SELECT pgconductor.invoke('checkout-9', '{"order": 9}') AS c9 \gset
SELECT pgconductor.emit_event('order.paid', '{"order_id": 9}');
SELECT is(pg_temp.wait_for('checkout-9', 'paid', '{"order_id": 9}'), 'resumed', 'an event emitted before the wait is taken at once');
SELECT is((SELECT result FROM pgconductor.steps WHERE execution_id = :'c9' AND key = 'paid'), '{"order_id": 9}'::jsonb,
          'as the step''s result');
-- The same execution waiting again for the same event does not get it twice.
SELECT is(pg_temp.wait_for('checkout-9', 'paid#2', '{"order_id": 9}'), 'suspended', 'an event is given to one wait only once');

-- A deadline.
SELECT pgconductor.invoke('checkout-11', '{"order": 11}') AS c11 \gset
SELECT pg_temp.wait_for('checkout-11', 'paid', '{"order_id": 11}', '2026-05-01 11:00:00+00');
SET pgconductor.fake_now = '2026-05-01 11:00:01+00';
SELECT count(*) FROM pgconductor.get_executions('nothing', '00000000-0000-0000-0000-00000000000a', 1);  -- the claim wakes due timers
SELECT row_eq(format($$SELECT s.state, s.result, e.waiting FROM pgconductor.steps AS s JOIN pgconductor.executions AS e ON e.id = s.execution_id
                       WHERE s.execution_id = %L$$, :'c11'),
              ROW('timed_out'::text, NULL::jsonb, NULL::text), 'past its deadline the wait times out and the execution wakes');

-- A replay that reaches a wait still pending keeps its first deadline.
SELECT pgconductor.invoke('checkout-12', '{"order": 12}') AS c12 \gset
SELECT pg_temp.wait_for('checkout-12', 'paid', '{"order_id": 12}', '2026-05-01 12:00:00+00');
UPDATE pgconductor.executions SET waiting = NULL, run_at = pgconductor._now() WHERE id = :'c12';  -- as if re-run early
SELECT pg_temp.wait_for('checkout-12', 'paid', '{"order_id": 12}', '2026-05-01 13:00:00+00');
SELECT is((SELECT run_at FROM pgconductor.executions WHERE id = :'c12'), '2026-05-01 12:00:00+00'::timestamptz,
          'a replay''s later deadline does not push back the first');

-- Cancelling a parked execution.
SELECT is(pgconductor.cancel(:'c9'), 'cancelled', 'cancelling a parked execution ends it at once');
SELECT is((SELECT count(*) FROM pgconductor.event_waits WHERE execution_id = :'c9'), 0::bigint, 'and drops its wait');

SELECT throws_ok($$SELECT pgconductor.emit_event('', '{}')$$, '22023', NULL, 'an empty event name is refused');
SELECT throws_ok($$SELECT pgconductor.emit_event('x', '[1, 2]')$$, '22023', NULL, 'so is a payload that is not an object');

SELECT * FROM finish();
ROLLBACK;
