-- pgconductor 0.6.0 -> 0.6.1: two lost wake-ups of durable workflows under concurrency.
-- * Two statements ending the last two children of one parent at the same moment each saw the
--   other's step still waiting, so neither woke the parent (found by the fan-out benchmark):
--   the trigger on finished_executions now locks the parents before filling their steps.
-- * An event emitted while a wait for it was being registered could be missed by both: emits
--   take the event name's lock shared, registering a wait takes it alone (for at most 1 s).
\echo Use "ALTER EXTENSION pgconductor UPDATE TO '0.6.1'" to load this file. \quit

-- The advisory lock key of event name p_name (emits share it; registering a wait takes it
-- alone). Inlined.
CREATE FUNCTION pgconductor._event_lock(p_name text)
RETURNS bigint
LANGUAGE sql IMMUTABLE
RETURN hashtextextended('pgconductor.event:' || p_name, 0);


-- Parks live execution p_id (queue p_queue; the caller holds its row lock and lease) as plan
-- p_plan says: {"sleep": {key, seq, until}}, {"children": {create: [{key, seq, task, payload,
-- queue, priority}], deadline}} or {"event": {key, seq, name, match, deadline}}. Stores the
-- step, creates the children or the wait, and unlocks the row without counting the attempt.
-- Returns outcome suspended (parked; run_at: wake time or deadline, NULL = none), resumed
-- (nothing left to wait for: pending now) or failed with error (a bad plan: the caller fails
-- this execution alone, never the whole batch).
CREATE OR REPLACE FUNCTION pgconductor._suspend(p_id uuid, p_queue text, p_plan jsonb, OUT outcome text, OUT run_at timestamptz,
                                     OUT error text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now     timestamptz := pgconductor._now();
    v_kind    text := CASE WHEN jsonb_typeof(p_plan) = 'object' AND (SELECT count(*) FROM jsonb_object_keys(p_plan)) = 1
                           THEN (SELECT k FROM jsonb_object_keys(p_plan) AS k) END;
    v_step    jsonb := p_plan -> v_kind;
    v_key     text := v_step ->> 'key';
    v_seq     integer;
    v_waiting text;
    v_wake    timestamptz;
    v_created timestamptz;
    v_event   record;
    v_queues  text[];
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    IF v_kind IS NULL OR v_kind NOT IN ('sleep', 'children', 'event') OR jsonb_typeof(v_step) <> 'object' THEN
        outcome := 'failed';
        error := format('invalid suspension plan %s', pgconductor._show(p_plan::text));
        RETURN;
    END IF;
    BEGIN
        v_seq := coalesce((v_step ->> 'seq')::integer, 0);
        IF v_kind = 'sleep' THEN
            IF v_key IS NULL THEN RAISE invalid_parameter_value; END IF;
            INSERT INTO pgconductor.steps (execution_id, key, seq, kind, state, until, done_at)
            VALUES (p_id, v_key, v_seq, 'sleep', 'done', (v_step ->> 'until')::timestamptz, v_now)
            ON CONFLICT ON CONSTRAINT steps_pkey DO NOTHING;
            SELECT s.until INTO v_wake FROM pgconductor.steps AS s WHERE s.execution_id = p_id AND s.key = v_key;
            v_waiting := CASE WHEN v_wake > v_now THEN 'sleep' END;
        ELSIF v_kind = 'children' THEN
            v_wake := (v_step ->> 'deadline')::timestamptz;
            IF jsonb_typeof(coalesce(v_step -> 'create', '[]')) <> 'array' OR EXISTS (
                SELECT 1 FROM jsonb_to_recordset(coalesce(v_step -> 'create', '[]')) AS c(key text, task text, queue text)
                 WHERE c.key IS NULL OR NOT pgconductor._valid_task_key(c.task)
                    OR (c.queue IS NOT NULL AND NOT pgconductor._valid_queue_name(c.queue))) THEN
                RAISE invalid_parameter_value;
            END IF;
            -- Queues first (a child's partition must exist), then the steps and the children in
            -- one statement; keys stored already (a replay) are not created twice.
            v_queues := ARRAY(
                SELECT DISTINCT coalesce(c.queue, (SELECT t.queue FROM pgconductor.tasks AS t WHERE t.key = c.task), 'default')
                  FROM jsonb_to_recordset(coalesce(v_step -> 'create', '[]')) AS c(task text, queue text));
            IF (SELECT count(*) FROM unnest(v_queues) AS q
                 WHERE NOT EXISTS (SELECT 1 FROM pgconductor.queues AS x WHERE x.name = q)) > pgconductor._max_new_queues_per_call() THEN
                RAISE program_limit_exceeded;
            END IF;
            PERFORM pgconductor.create_queue(q) FROM unnest(v_queues) AS q;
            WITH input AS MATERIALIZED (
                SELECT c.key, coalesce(c.seq, 0) AS seq, c.task, coalesce(c.payload, '{}') AS payload,
                       coalesce(c.queue, (SELECT t.queue FROM pgconductor.tasks AS t WHERE t.key = c.task), 'default') AS queue,
                       coalesce(c.priority, 0) AS priority, pgconductor._uuid7() AS child_id
                  FROM jsonb_to_recordset(coalesce(v_step -> 'create', '[]'))
                       AS c(key text, seq integer, task text, payload jsonb, queue text, priority integer)
                 WHERE NOT EXISTS (SELECT 1 FROM pgconductor.steps AS s WHERE s.execution_id = p_id AND s.key = c.key)
            ), stored AS (
                INSERT INTO pgconductor.steps (execution_id, key, seq, kind, state, child_id, until)
                SELECT p_id, i.key, i.seq, 'child', 'waiting', i.child_id, v_wake FROM input AS i
            )
            INSERT INTO pgconductor.executions (id, task_key, queue, payload, run_at, priority, parent_id, parent_step)
            SELECT i.child_id, i.task, i.queue, i.payload, v_now, i.priority, p_id, i.key FROM input AS i;
            PERFORM pg_notify('pgconductor_invoke', q) FROM unnest(v_queues) AS q;
            -- The deadline stored when the children were first awaited holds: a replay's new
            -- plan (its own now + timeout) does not push it back.
            SELECT CASE WHEN count(*) > 0 THEN 'children' END, min(s.until) INTO v_waiting, v_wake
              FROM pgconductor.steps AS s WHERE s.execution_id = p_id AND s.kind = 'child' AND s.state = 'waiting';
        ELSE
            IF v_key IS NULL OR char_length(v_step ->> 'name') NOT BETWEEN 1 AND 200
               OR jsonb_typeof(coalesce(v_step -> 'match', '{}')) <> 'object' THEN
                RAISE invalid_parameter_value;
            END IF;
            v_wake := (v_step ->> 'deadline')::timestamptz;
            IF NOT EXISTS (SELECT 1 FROM pgconductor.steps AS s WHERE s.execution_id = p_id AND s.key = v_key) THEN
                -- The name's event lock, exclusive: an emit still in flight commits first and the
                -- look-up below sees it. Waited for at most 1 s (an emitter's transaction can be
                -- long); past that the wait is registered without it, as before.
                BEGIN
                    PERFORM set_config('lock_timeout', '1s', true);
                    PERFORM pg_advisory_xact_lock(pgconductor._event_lock(v_step ->> 'name'));
                EXCEPTION WHEN lock_not_available THEN
                    NULL;
                END;
                PERFORM set_config('lock_timeout', v_lock_timeout, true);
                -- No lost wake-up: an event emitted since the execution was created, and not given
                -- to an earlier wait of it, is taken now.
                SELECT e.created_at INTO v_created FROM pgconductor.executions AS e WHERE e.id = p_id AND e.queue = p_queue;
                SELECT ev.id, ev.payload INTO v_event FROM pgconductor.events AS ev
                 WHERE ev.name = v_step ->> 'name' AND ev.created_at >= v_created
                   AND ev.payload @> coalesce(v_step -> 'match', '{}')
                   AND NOT EXISTS (SELECT 1 FROM pgconductor.steps AS s WHERE s.execution_id = p_id AND s.event_id = ev.id)
                 ORDER BY ev.id LIMIT 1;
                IF v_event.id IS NOT NULL THEN
                    INSERT INTO pgconductor.steps (execution_id, key, seq, kind, state, result, event_id, done_at)
                    VALUES (p_id, v_key, v_seq, 'event', 'done', v_event.payload, v_event.id, v_now);
                ELSE
                    INSERT INTO pgconductor.steps (execution_id, key, seq, kind, state, until)
                    VALUES (p_id, v_key, v_seq, 'event', 'waiting', v_wake);
                    INSERT INTO pgconductor.event_waits (execution_id, step_key, event_name, match, match_key)
                    VALUES (p_id, v_key, v_step ->> 'name', coalesce(v_step -> 'match', '{}'),
                            pgconductor._match_key(coalesce(v_step -> 'match', '{}')));
                END IF;
            END IF;
            SELECT 'event', s.until INTO v_waiting, v_wake  -- the stored deadline holds (see above)
              FROM pgconductor.steps AS s WHERE s.execution_id = p_id AND s.key = v_key AND s.state = 'waiting';
        END IF;
    EXCEPTION WHEN invalid_parameter_value OR data_exception OR check_violation OR program_limit_exceeded THEN
        outcome := 'failed';
        error := format('invalid %s step in suspension plan %s', v_kind, pgconductor._show(p_plan::text));
        RETURN;
    END;

    UPDATE pgconductor.executions AS e
       SET locked_by = NULL, locked_at = NULL, attempts = greatest(e.attempts - 1, 0), has_steps = true,
           waiting = v_waiting,
           run_at = CASE WHEN v_waiting IS NULL THEN v_now ELSE coalesce(v_wake, 'infinity') END
     WHERE e.id = p_id AND e.queue = p_queue;
    IF v_waiting IS NULL THEN
        outcome := 'resumed';
        run_at := v_now;
        PERFORM pg_notify('pgconductor_invoke', p_queue);
    ELSE
        outcome := 'suspended';
        run_at := v_wake;
    END IF;
END
$$;

-- Statement trigger on finished_executions: executions just ended (transition table
-- "ended"). A child's end fills its parent's step (done with its result, failed or
-- cancelled with its error) and wakes the parent once none of its children is awaited; a
-- parent that failed or was cancelled takes its live children with it; a cancelled execution's
-- event waits go. One NOTIFY pgconductor_finished per statement for conductor.wait().
CREATE OR REPLACE FUNCTION pgconductor._on_finished()
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
           SET state = CASE c.state WHEN 'completed' THEN 'done' ELSE c.state END,
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

-- Emits event p_name with payload p_payload (a JSON object) in the caller's transaction:
-- every execution waiting for p_name whose match the payload contains gets it as its step's
-- result and wakes. The event is kept (prune_finished) for waits registered later. Locks: the
-- name's event lock (shared), the matching waits and their executions. Raises 22023 for a bad name or payload. Returns
-- the event's id.
CREATE OR REPLACE FUNCTION pgconductor.emit_event(p_name text, p_payload jsonb DEFAULT '{}')
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
    IF p_name IS NULL OR char_length(p_name) NOT BETWEEN 1 AND 200 OR p_name ~ '[[:cntrl:]]' THEN
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

-- SECURITY DEFINER again for the replaced functions, and the grants.
SELECT pgconductor._apply_privileges();
