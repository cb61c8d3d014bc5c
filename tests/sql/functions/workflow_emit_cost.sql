-- emit_event() costs O(matching waits), not O(waits).
-- Cases: with 10k waits for the same event name but other orders, an emit for one order reads
-- about as many buffers as with 10 such waits, and wakes exactly the one that matches.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(2);
SET pgconductor.fake_now = '2026-05-01 10:00:00+00';

-- Buffers read by one emit (the function's own work included).
CREATE FUNCTION pg_temp.emit_buffers(p_order integer) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE v_plan json;
BEGIN
    EXECUTE format('EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT pgconductor.emit_event(%L, %L)',
                   'order.paid', jsonb_build_object('order_id', p_order, 'amount', 3)) INTO v_plan;
    RETURN (v_plan->0->'Plan'->>'Shared Hit Blocks')::bigint + (v_plan->0->'Plan'->>'Shared Read Blocks')::bigint;
END $$;

-- p_n parked executions waiting for order.paid of orders p_from .. p_from + p_n - 1.
CREATE FUNCTION pg_temp.park(p_from integer, p_n integer) RETURNS void LANGUAGE sql AS $$
    WITH x AS (
        INSERT INTO pgconductor.executions (task_key, run_at, waiting, has_steps, payload)
        SELECT 'waiter', 'infinity', 'event', true, jsonb_build_object('o', g) FROM generate_series(p_from, p_from + p_n - 1) AS g
        RETURNING id, (payload->>'o')::integer AS o
    ), s AS (
        INSERT INTO pgconductor.steps (execution_id, key, seq, kind, state) SELECT x.id, 'paid', 0, 'event', 'waiting' FROM x
    )
    INSERT INTO pgconductor.event_waits (execution_id, step_key, event_name, match, match_key)
    SELECT x.id, 'paid', 'order.paid', jsonb_build_object('order_id', x.o), pgconductor._match_key(jsonb_build_object('order_id', x.o))
      FROM x
$$;

SELECT pg_temp.park(1, 10);
ANALYZE pgconductor.event_waits, pgconductor.steps, pgconductor.executions;
SELECT pg_temp.emit_buffers(-1);
SELECT pg_temp.emit_buffers(-2) AS few \gset
SELECT pg_temp.park(100, 10000);
ANALYZE pgconductor.event_waits, pgconductor.steps, pgconductor.executions;
SELECT pg_temp.emit_buffers(-3);
SELECT pg_temp.emit_buffers(-4) AS many \gset
SELECT cmp_ok(:many::bigint, '<=', :few::bigint + 15,
              format('an emit reads %s buffers with 10k other waits, %s with 10', :many, :few));
SELECT pgconductor.emit_event('order.paid', '{"order_id": 5000, "amount": 1}');
SELECT is((SELECT count(*) FROM pgconductor.executions WHERE task_key = 'waiter' AND waiting IS NULL), 1::bigint,
          'and it wakes exactly the matching wait');

SELECT * FROM finish();
ROLLBACK;
