-- Event subscriptions: a task subscribes to an event name, with a containment filter and a
-- projection of the payload's top-level fields. emit_event() fans an event out to every
-- matching subscription in the emitter's transaction (_fan_out_event): one execution each,
-- whose payload is the projection (the event's id is in its dedupe key, 'event:<id>:<sub>').

-- One row per (task, event name). match: the payload must contain it ('{}': every event of
-- the name); fields: the top-level payload fields the handler gets (NULL: the whole payload);
-- queue NULL: the task's queue at emit time; static: declared in code and removed by the
-- worker's sync when no longer declared (a dynamic one is removed only by unsubscribe()).
CREATE TABLE pgconductor.subscriptions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_key   text NOT NULL CONSTRAINT subscriptions_task_key_valid
                   CHECK (char_length(task_key) BETWEEN 1 AND 200 AND task_key !~ '[[:cntrl:]]' AND task_key = btrim(task_key)),
    event      text NOT NULL CONSTRAINT subscriptions_event_valid
                   CHECK (char_length(event) BETWEEN 1 AND 200 AND event !~ '[[:cntrl:]]'),
    match      jsonb NOT NULL DEFAULT '{}' CONSTRAINT subscriptions_match_object CHECK (jsonb_typeof(match) = 'object'),
    fields     text[] CONSTRAINT subscriptions_fields_not_empty CHECK (cardinality(fields) >= 1),
    queue      text CONSTRAINT subscriptions_queue_valid CHECK (queue ~ '^[a-z0-9][a-z0-9_-]{0,47}$'),
    priority   integer NOT NULL DEFAULT 0,
    static     boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT pgconductor._now(),
    -- Event first: the fan-out reads the subscriptions of one name through this index.
    CONSTRAINT subscriptions_event_task_key UNIQUE (event, task_key)
);

-- p_object keeping only the top-level keys in p_keys (all of it for NULL keys); keys it
-- lacks are left out. Locks nothing.
CREATE FUNCTION pgconductor._project(p_object jsonb, p_keys text[])
RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN CASE WHEN p_keys IS NULL THEN p_object
            ELSE (SELECT coalesce(jsonb_object_agg(o.key, o.value), '{}') FROM jsonb_each(p_object) AS o
                   WHERE o.key = ANY (p_keys)) END;

-- Subscribes task p_task_key to event p_event (upsert: an existing subscription of the pair
-- takes the new settings). Creates p_queue when given and missing. Row lock: the
-- subscription. Raises 22023 for a bad task key, event name, match (a JSON object), fields
-- (non-empty, no NULL or empty name) or queue. Returns the subscription's id.
CREATE FUNCTION pgconductor.subscribe(
    p_task_key text,
    p_event    text,
    p_match    jsonb DEFAULT '{}',
    p_fields   text[] DEFAULT NULL,
    p_queue    text DEFAULT NULL,
    p_static   boolean DEFAULT false,
    p_priority integer DEFAULT 0
)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    PERFORM pgconductor._assert_task_key(p_task_key);
    IF NOT coalesce(pgconductor._valid_event_name(p_event), false) THEN
        RAISE EXCEPTION 'invalid event name %', pgconductor._show(p_event)
            USING ERRCODE = '22023', HINT = 'An event name is 1-200 characters without control characters, e.g. order.paid.';
    END IF;
    IF jsonb_typeof(coalesce(p_match, '{}')) <> 'object' THEN
        RAISE EXCEPTION 'a subscription''s match must be a JSON object, got %', pgconductor._show(p_match::text)
            USING ERRCODE = '22023', HINT = 'For example {"status": "paid"}; {} matches every event of the name.';
    END IF;
    IF p_fields IS NOT NULL AND (cardinality(p_fields) = 0 OR array_ndims(p_fields) > 1
                                 OR EXISTS (SELECT 1 FROM unnest(p_fields) AS f WHERE coalesce(f, '') = '')) THEN
        RAISE EXCEPTION 'invalid fields %', pgconductor._show(p_fields::text)
            USING ERRCODE = '22023', HINT = 'List the top-level payload fields the handler gets, e.g. {order_id,amount}; NULL for the whole payload.';
    END IF;
    IF p_queue IS NOT NULL THEN
        PERFORM pgconductor.create_queue(p_queue);
    END IF;
    INSERT INTO pgconductor.subscriptions AS s (task_key, event, match, fields, queue, priority, static)
    VALUES (p_task_key, p_event, coalesce(p_match, '{}'), p_fields, p_queue, coalesce(p_priority, 0), coalesce(p_static, false))
    ON CONFLICT (event, task_key) DO UPDATE
       SET match = excluded.match, fields = excluded.fields, queue = excluded.queue,
           priority = excluded.priority, static = excluded.static
    RETURNING s.id INTO v_id;
    RETURN v_id;
END
$$;

-- Removes the subscription of task p_task_key to event p_event, static or dynamic. Row
-- lock: the subscription. Returns false when there was none.
CREATE FUNCTION pgconductor.unsubscribe(p_task_key text, p_event text)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM pgconductor.subscriptions AS s WHERE s.event = p_event AND s.task_key = p_task_key RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM gone)
$$;

-- Every subscription, by event name then task. Locks nothing.
CREATE FUNCTION pgconductor.subscriptions()
RETURNS TABLE (id bigint, task_key text, event text, match jsonb, fields text[], queue text, priority integer,
               static boolean, created_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.id, s.task_key, s.event, s.match, s.fields, s.queue, s.priority, s.static, s.created_at
      FROM pgconductor.subscriptions AS s
     ORDER BY s.event, s.task_key
$$;

-- Worker start: deletes the static subscriptions of the tasks p_task_keys (the tasks the
-- worker serves) that are not among the declared pairs (p_events[i] of p_declared_tasks[i]);
-- the worker subscribed those with p_static => true just before. Subscriptions of other tasks
-- and dynamic ones stay. Row locks: the deleted rows. Returns how many it deleted.
CREATE FUNCTION pgconductor.sync_static_subscriptions(p_task_keys text[], p_declared_tasks text[], p_events text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    IF coalesce(cardinality(p_declared_tasks), 0) <> coalesce(cardinality(p_events), 0) THEN
        RAISE EXCEPTION 'declared tasks and events have different lengths'
            USING ERRCODE = '22023', HINT = 'Pass one task key per declared event.';
    END IF;
    DELETE FROM pgconductor.subscriptions AS s
     WHERE s.static AND s.task_key = ANY (p_task_keys)
       AND (s.task_key, s.event) NOT IN (SELECT d.t, d.e FROM unnest(p_declared_tasks, p_events) AS d(t, e)
                                          WHERE d.t IS NOT NULL AND d.e IS NOT NULL);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Fans event p_event_id (name p_name, payload p_payload, a JSON object) out: one execution
-- per subscription of p_name whose match p_payload contains, payload the subscription's
-- projection, in the subscription's queue (else the task's, else 'default'; created when
-- missing) with its priority, run now. One INSERT for all of them. Dedupe key
-- 'event:<event id>:<subscription id>': a second fan-out of the same event while the first
-- execution lives makes none. Called by emit_event() in the emitter's transaction; cost
-- O(subscriptions of the name). Notifies pgconductor_invoke per queue. Returns how many it made.
CREATE FUNCTION pgconductor._fan_out_event(p_event_id bigint, p_name text, p_payload jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now    timestamptz := pgconductor._now();
    v_count  integer;
    v_queues text[];
BEGIN
    -- Usually no row: the queues exist (subscribe() and register_task() make them).
    PERFORM pgconductor.create_queue(m.queue)
       FROM (SELECT DISTINCT coalesce(s.queue, t.queue, 'default') AS queue
               FROM pgconductor.subscriptions AS s
               LEFT JOIN pgconductor.tasks AS t ON t.key = s.task_key
              WHERE s.event = p_name AND p_payload @> s.match) AS m
      WHERE NOT EXISTS (SELECT 1 FROM pgconductor.queues AS q WHERE q.name = m.queue);

    WITH made AS (
        INSERT INTO pgconductor.executions AS e (task_key, queue, payload, run_at, priority, dedupe_key, start_by)
        SELECT s.task_key, coalesce(s.queue, t.queue, 'default'), pgconductor._project(p_payload, s.fields), v_now,
               s.priority, 'event:' || p_event_id || ':' || s.id, v_now + t.start_within
          FROM pgconductor.subscriptions AS s
          LEFT JOIN pgconductor.tasks AS t ON t.key = s.task_key
         WHERE s.event = p_name AND p_payload @> s.match
         ORDER BY s.id
        ON CONFLICT (queue, task_key, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
        RETURNING e.queue
    )
    SELECT count(*), array_agg(DISTINCT m.queue) INTO v_count, v_queues FROM made AS m;
    PERFORM pg_notify('pgconductor_invoke', q) FROM unnest(v_queues) AS q;
    RETURN v_count;
END
$$;
