-- The fan-out costs O(subscriptions of the event's name), not O(subscriptions).
-- Cases: with 10k subscriptions of other event names, a fan-out to 3 subscribers reads about
-- as many buffers as with 10 of them, and still makes exactly 3 executions.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(2);
SET pgconductor.fake_now = '2026-05-01 10:00:00+00';

-- Buffers read by one fan-out of order.paid (the function's own work included).
CREATE FUNCTION pg_temp.fan_out_buffers() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_payload jsonb := '{"order_id": 7}';
    v_plan    json;
BEGIN
    EXECUTE format('EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT pgconductor._fan_out_event(%s, %L, %L)',
                   pgconductor.emit_event('order.paid', v_payload), 'order.paid', v_payload) INTO v_plan;
    RETURN (v_plan->0->'Plan'->>'Shared Hit Blocks')::bigint + (v_plan->0->'Plan'->>'Shared Read Blocks')::bigint;
END $$;

-- p_n subscriptions of other event names, one task each.
CREATE FUNCTION pg_temp.others(p_from integer, p_n integer) RETURNS void LANGUAGE sql AS $$
    INSERT INTO pgconductor.subscriptions (task_key, event)
    SELECT 'other-' || g, 'other.event.' || (g % 500) FROM generate_series(p_from, p_from + p_n - 1) AS g
$$;

SELECT pgconductor.subscribe(t, 'order.paid') FROM unnest(ARRAY['a', 'b', 'c']) AS t;
SELECT pg_temp.others(1, 10);
ANALYZE pgconductor.subscriptions;
SELECT pg_temp.fan_out_buffers();
SELECT pg_temp.fan_out_buffers() AS few \gset
SELECT pg_temp.others(100, 10000);
ANALYZE pgconductor.subscriptions;
SELECT pg_temp.fan_out_buffers();
SELECT pg_temp.fan_out_buffers() AS many \gset
SELECT cmp_ok(:many::bigint, '<=', :few::bigint + 10,
              format('a fan-out reads %s buffers with 10k other subscriptions, %s with 10', :many, :few));
SELECT pgconductor.emit_event('order.paid', '{"order_id": 8}') AS ev \gset
SELECT is((SELECT count(*)::integer FROM pgconductor.executions WHERE dedupe_key LIKE format('event:%s:%%', :ev)),
          3, 'and emit_event makes exactly its 3 executions');

SELECT * FROM finish();
ROLLBACK;
