-- Durable workflows: suspend and replay. A handler stores step results (save_steps), parks
-- its execution to sleep, to wait for children or for an event (return_executions status
-- 'suspend', applied by _suspend), and is re-run from the top when woken; stored steps come
-- back with the claim. Wake-ups happen in SQL: due timers in the claim (_wake_due), a child's
-- end in the trigger on finished_executions (_on_finished), events in emit_event().

-- The stored steps of execution p_execution_id as one object keyed by step key (what a
-- replay needs); NULL when there are none. Locks nothing.
CREATE FUNCTION pgconductor._steps_by_key(p_execution_id uuid)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_object_agg(s.key, jsonb_strip_nulls(jsonb_build_object(
               'seq', s.seq, 'kind', s.kind, 'state', s.state, 'result', s.result, 'error', s.error,
               'child_id', s.child_id, 'until', s.until)) || jsonb_build_object('result', s.result))
      FROM pgconductor.steps AS s WHERE s.execution_id = p_execution_id
$$;

-- The lookup pair of an event wait's match: its first top-level key whose value is a scalar,
-- as 'key=value' (numbers without trailing zeros); NULL when there is none. An emit looks the
-- waits up by its payload's own pairs. Locks nothing.
CREATE FUNCTION pgconductor._match_key(p_match jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.key || '=' || CASE jsonb_typeof(m.value) WHEN 'number' THEN trim_scale((m.value #>> '{}')::numeric)::text
                                                    ELSE m.value::text END
      FROM jsonb_each(CASE WHEN jsonb_typeof(p_match) = 'object' THEN p_match ELSE '{}' END) AS m
     WHERE jsonb_typeof(m.value) IN ('string', 'number', 'boolean', 'null')
     ORDER BY m.key
     LIMIT 1
$$;

-- The advisory lock key of event name p_name (emits share it; registering a wait takes it
-- alone). Inlined.
CREATE FUNCTION pgconductor._event_lock(p_name text)
RETURNS bigint
LANGUAGE sql IMMUTABLE
RETURN hashtextextended('pgconductor.event:' || p_name, 0);

-- Stores step results for the executions orchestrator p_orchestrator_id holds under the
-- given leases (parallel arrays: id, lease, key, seq, result). A key already stored keeps its
-- first result. Row locks: those executions (shared). Returns (id, key, outcome) per input:
-- saved | stale (the lease no longer holds: nothing written). Raises 22023 for bad arrays or keys.
CREATE FUNCTION pgconductor.save_steps(
    p_orchestrator_id uuid,
    p_ids             uuid[],
    p_leases          integer[],
    p_keys            text[],
    p_seqs            integer[],
    p_results         jsonb[]
)
RETURNS TABLE (id uuid, key text, outcome text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n   integer := coalesce(cardinality(p_ids), 0);
    v_bad text;
BEGIN
    IF coalesce(cardinality(p_leases), 0) <> v_n OR coalesce(cardinality(p_keys), 0) <> v_n
       OR coalesce(cardinality(p_seqs), 0) <> v_n OR coalesce(cardinality(p_results), 0) <> v_n THEN
        RAISE EXCEPTION 'save_steps arrays have different lengths'
            USING ERRCODE = '22023', HINT = 'Pass one element per step in every array.';
    END IF;
    IF greatest(array_ndims(p_ids), array_ndims(p_leases), array_ndims(p_keys), array_ndims(p_seqs),
                array_ndims(p_results)) > 1 THEN
        RAISE EXCEPTION 'save_steps takes one-dimensional arrays'
            USING ERRCODE = '22023', HINT = 'Pass a flat array with one element per step.';
    END IF;
    SELECT k INTO v_bad FROM unnest(p_keys) AS k
     WHERE k IS NULL OR char_length(k) NOT BETWEEN 1 AND 200 OR k ~ '[[:cntrl:]]' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'invalid step key %', pgconductor._show(v_bad)
            USING ERRCODE = '22023', HINT = 'A step key is 1-200 characters without control characters.';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_seqs) AS q WHERE q IS NULL OR q < 0) THEN
        RAISE EXCEPTION 'step seq must be 0 or more'
            USING ERRCODE = '22023', HINT = 'seq counts the steps a run reached, from 0.';
    END IF;
    IF v_n = 0 THEN
        RETURN;
    END IF;

    RETURN QUERY
    WITH input AS (
        SELECT u.id, u.lease, u.key, u.seq, u.result, u.ord
          FROM unnest(p_ids, p_leases, p_keys, p_seqs, p_results) WITH ORDINALITY AS u(id, lease, key, seq, result, ord)
    ), live AS MATERIALIZED (
        SELECT e.id, e.queue FROM pgconductor.executions AS e
         WHERE e.id = ANY (p_ids) AND e.locked_by = p_orchestrator_id
           AND EXISTS (SELECT 1 FROM input AS i WHERE i.id = e.id AND i.lease = e.lease)
           FOR SHARE OF e
    ), flagged AS (
        UPDATE pgconductor.executions AS e SET has_steps = true
          FROM live AS l WHERE e.id = l.id AND e.queue = l.queue AND NOT e.has_steps
    ), stored AS (
        INSERT INTO pgconductor.steps (execution_id, key, seq, kind, state, result, done_at)
        SELECT i.id, i.key, i.seq, 'step', 'done', i.result, pgconductor._now()
          FROM input AS i WHERE i.id IN (SELECT l.id FROM live AS l)
        ON CONFLICT ON CONSTRAINT steps_pkey DO NOTHING
    )
    SELECT i.id, i.key, CASE WHEN i.id IN (SELECT l.id FROM live AS l) THEN 'saved' ELSE 'stale' END
      FROM input AS i ORDER BY i.ord;
END
$$;

-- Parks live execution p_id (queue p_queue; the caller holds its row lock and lease) as plan
-- p_plan says: {"sleep": {key, seq, until}}, {"children": {create: [{key, seq, task, payload,
-- queue, priority}], deadline}} or {"event": {key, seq, name, match, deadline}}. Stores the
-- step, creates the children or the wait, and unlocks the row without counting the attempt.
-- Returns outcome suspended (parked; run_at: wake time or deadline, NULL = none), resumed
-- (nothing left to wait for: pending now) or failed with error (a bad plan: the caller fails
-- this execution alone, never the whole batch).
CREATE FUNCTION pgconductor._suspend(p_id uuid, p_queue text, p_plan jsonb, OUT outcome text, OUT run_at timestamptz,
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
            IF v_key IS NULL OR NOT coalesce(pgconductor._valid_event_name(v_step ->> 'name'), false)
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
