-- Durable workflows, waking: due timers in the claim (_wake_due), a child's end in the
-- trigger on finished_executions (_on_finished), and events (emit_event).

-- Wakes the parked executions of queue p_queue whose run_at has passed (at most 1000): a
-- sleep is over; a child wait's deadline marks its waiting children timed_out and cancels
-- them; an event wait's deadline marks it timed_out. Row locks: those executions (SKIP
-- LOCKED). Returns how many it woke. Called by the claim, only when a due one exists.
CREATE FUNCTION pgconductor._wake_due(p_queue text, p_now timestamptz)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row      record;
    v_count    integer := 0;
    v_children uuid[];
BEGIN
    FOR v_row IN
        SELECT e.id, e.waiting FROM pgconductor.executions AS e
         WHERE e.queue = p_queue AND e.waiting IS NOT NULL AND e.run_at <= p_now
         ORDER BY e.run_at
         LIMIT 1000
           FOR UPDATE SKIP LOCKED
    LOOP
        IF v_row.waiting = 'children' THEN
            -- Steps first: the children's cancellation must not fill them as 'cancelled'.
            WITH timed_out AS (
                UPDATE pgconductor.steps AS s SET state = 'timed_out', done_at = p_now
                 WHERE s.execution_id = v_row.id AND s.kind = 'child' AND s.state = 'waiting'
                RETURNING s.child_id
            )
            SELECT array_agg(t.child_id) INTO v_children FROM timed_out AS t;
            PERFORM pgconductor.cancel(c, 'the parent stopped waiting: its deadline passed') FROM unnest(v_children) AS c;
        ELSIF v_row.waiting = 'event' THEN
            UPDATE pgconductor.steps AS s SET state = 'timed_out', done_at = p_now
             WHERE s.execution_id = v_row.id AND s.kind = 'event' AND s.state = 'waiting';
            DELETE FROM pgconductor.event_waits AS w WHERE w.execution_id = v_row.id;
        END IF;
        UPDATE pgconductor.executions AS e SET waiting = NULL, run_at = p_now
         WHERE e.id = v_row.id AND e.queue = p_queue;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;

-- Statement trigger on finished_executions: executions just ended (transition table
-- "ended"). A child's end fills its parent's step (done with its result, failed or
-- cancelled with its error) and wakes the parent once none of its children is awaited; a
-- parent that failed or was cancelled takes its live children with it; a cancelled execution's
-- event waits go. One NOTIFY pgconductor_finished per statement for conductor.wait().
CREATE FUNCTION pgconductor._on_finished()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_parents uuid[];
    v_queues  text[];
BEGIN
    PERFORM pg_notify('pgconductor_finished', '');
    IF NOT EXISTS (SELECT 1 FROM ended AS x WHERE x.parent_id IS NOT NULL OR x.state <> 'completed') THEN
        RETURN NULL;  -- the common case: plain executions completed
    END IF;

    -- Parents first, locked in id order: two statements ending the last two children of one
    -- parent would each see the other's step still waiting and neither would wake it. With
    -- the lock the second waits for the first to commit; its next statements see that.
    PERFORM 1 FROM pgconductor.executions AS p
     WHERE p.id IN (SELECT x.parent_id FROM ended AS x WHERE x.parent_id IS NOT NULL)
     ORDER BY p.id
       FOR UPDATE;
    WITH children AS (
        SELECT x.id, x.state, x.result, x.last_error FROM ended AS x WHERE x.parent_id IS NOT NULL
    ), filled AS (
        UPDATE pgconductor.steps AS s
           SET state = CASE c.state WHEN 'completed' THEN 'done' WHEN 'expired' THEN 'failed' ELSE c.state END,
               result = c.result, error = CASE WHEN c.state <> 'completed' THEN c.last_error END,
               done_at = pgconductor._now()
          FROM children AS c
         WHERE s.child_id = c.id AND s.kind = 'child' AND s.state = 'waiting'
        RETURNING s.execution_id
    )
    SELECT array_agg(DISTINCT f.execution_id) INTO v_parents FROM filled AS f;
    IF v_parents IS NOT NULL THEN
        WITH woken AS (
            UPDATE pgconductor.executions AS p SET waiting = NULL, run_at = pgconductor._now()
             WHERE p.id = ANY (v_parents) AND p.waiting = 'children'
               AND NOT EXISTS (SELECT 1 FROM pgconductor.steps AS s
                                WHERE s.execution_id = p.id AND s.kind = 'child' AND s.state = 'waiting')
            RETURNING p.queue
        )
        SELECT array_agg(DISTINCT w.queue) INTO v_queues FROM woken AS w;
        PERFORM pg_notify('pgconductor_invoke', q) FROM unnest(v_queues) AS q;
    END IF;

    PERFORM pgconductor.cancel(c.id, format('its parent %s', x.state))
       FROM ended AS x
       JOIN pgconductor.executions AS c ON c.parent_id = x.id
      WHERE x.state <> 'completed';
    DELETE FROM pgconductor.event_waits AS w
     WHERE w.execution_id IN (SELECT x.id FROM ended AS x WHERE x.state = 'cancelled');
    RETURN NULL;
END
$$;

CREATE TRIGGER finished_executions_ended AFTER INSERT ON pgconductor.finished_executions
    REFERENCING NEW TABLE AS ended
    FOR EACH STATEMENT EXECUTE FUNCTION pgconductor._on_finished();

-- Emits event p_name with payload p_payload (a JSON object) in the caller's transaction:
-- every execution waiting for p_name whose match the payload contains gets it as its step's
-- result and wakes. The event is kept (prune_finished) for waits registered later. Locks: the
-- name's event lock (shared), the matching waits and their executions. Raises 22023 for a bad name or payload. Returns
-- the event's id.
CREATE FUNCTION pgconductor.emit_event(p_name text, p_payload jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id      bigint;
    v_payload jsonb := coalesce(p_payload, '{}');
    v_pairs   text[];
    v_queues  text[];
BEGIN
    IF NOT coalesce(pgconductor._valid_event_name(p_name), false) THEN
        RAISE EXCEPTION 'invalid event name %', pgconductor._show(p_name)
            USING ERRCODE = '22023', HINT = 'An event name is 1-200 characters without control characters, e.g. order.paid.';
    END IF;
    IF jsonb_typeof(v_payload) <> 'object' THEN
        RAISE EXCEPTION 'an event payload must be a JSON object, got %', pgconductor._show(v_payload::text)
            USING ERRCODE = '22023', HINT = 'For example {"order_id": 7}.';
    END IF;
    -- Shared with other emits of this name, exclusive against a wait being registered for
    -- it (_suspend): a wait and an event committing at the same moment would not see each other.
    PERFORM pg_advisory_xact_lock_shared(pgconductor._event_lock(p_name));
    INSERT INTO pgconductor.events (name, payload) VALUES (p_name, v_payload) RETURNING id INTO v_id;
    -- Subscribed tasks get their executions in this transaction: an event rolled back makes none.
    PERFORM pgconductor._fan_out_event(v_id, p_name, v_payload);

    v_pairs := ARRAY(SELECT pgconductor._match_key(jsonb_build_object(m.key, m.value)) FROM jsonb_each(v_payload) AS m);
    WITH matched AS (
        SELECT w.execution_id, w.step_key FROM pgconductor.event_waits AS w
         WHERE w.event_name = p_name AND (w.match_key IS NULL OR w.match_key = ANY (v_pairs))
           AND v_payload @> w.match
         ORDER BY w.execution_id, w.step_key
           FOR UPDATE
    ), gone AS (
        DELETE FROM pgconductor.event_waits AS w USING matched AS m
         WHERE w.execution_id = m.execution_id AND w.step_key = m.step_key
    ), filled AS (
        UPDATE pgconductor.steps AS s SET state = 'done', result = v_payload, event_id = v_id, done_at = pgconductor._now()
          FROM matched AS m
         WHERE s.execution_id = m.execution_id AND s.key = m.step_key AND s.state = 'waiting'
        RETURNING s.execution_id
    ), woken AS (
        UPDATE pgconductor.executions AS e SET waiting = NULL, run_at = pgconductor._now()
          FROM filled AS f WHERE e.id = f.execution_id AND e.waiting = 'event'
        RETURNING e.queue
    )
    SELECT array_agg(DISTINCT w.queue) INTO v_queues FROM woken AS w;
    PERFORM pg_notify('pgconductor_invoke', q) FROM unnest(v_queues) AS q;
    RETURN v_id;
END
$$;
