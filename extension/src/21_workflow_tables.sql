-- Tables of durable workflows: stored steps, emitted events and the waits for them.

-- One row per step an execution reached. kind: step (a ctx.step result), sleep (until: the
-- wake time), child (child_id: the child execution; state waiting until it ends), event (a
-- wait for an event; event_id: the event it got). seq: the order in which the run first
-- reached it (a replay that meets another key there is not deterministic). Kept as long as
-- the execution is.
CREATE TABLE pgconductor.steps (
    execution_id uuid NOT NULL,
    key          text NOT NULL CONSTRAINT steps_key_valid
                     CHECK (char_length(key) BETWEEN 1 AND 200 AND key !~ '[[:cntrl:]]'),
    seq          integer NOT NULL CONSTRAINT steps_seq_nonnegative CHECK (seq >= 0),
    kind         text NOT NULL CONSTRAINT steps_kind_valid CHECK (kind IN ('step', 'sleep', 'child', 'event')),
    state        text NOT NULL DEFAULT 'done'
                     CONSTRAINT steps_state_valid CHECK (state IN ('done', 'waiting', 'failed', 'cancelled', 'timed_out')),
    result       jsonb,
    error        text,
    child_id     uuid,
    until        timestamptz,
    event_id     bigint,
    created_at   timestamptz NOT NULL DEFAULT pgconductor._now(),
    done_at      timestamptz,
    CONSTRAINT steps_pkey PRIMARY KEY (execution_id, key)
);
-- A child's end finds its parent's step.
CREATE INDEX steps_child_idx ON pgconductor.steps (child_id) WHERE child_id IS NOT NULL;

-- Emitted events, kept for prune_finished()'s retention so a wait registered after the
-- emit still finds it.
CREATE TABLE pgconductor.events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL CONSTRAINT events_name_valid
                   CHECK (char_length(name) BETWEEN 1 AND 200 AND name !~ '[[:cntrl:]]'),
    payload    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT pgconductor._now()
);
CREATE INDEX events_name_idx ON pgconductor.events (name, created_at);

-- Parked executions waiting for an event. match_key: one top-level "key=value" of match (the
-- first key), NULL for an empty match. An emit looks up the waits of its name whose match_key
-- is one of its payload's own pairs (or NULL), so it costs O(matching waits), not O(waits).
CREATE TABLE pgconductor.event_waits (
    execution_id uuid NOT NULL,
    step_key     text NOT NULL,
    event_name   text NOT NULL,
    match        jsonb NOT NULL DEFAULT '{}',
    match_key    text,
    created_at   timestamptz NOT NULL DEFAULT pgconductor._now(),
    CONSTRAINT event_waits_pkey PRIMARY KEY (execution_id, step_key)
);
CREATE INDEX event_waits_lookup_idx ON pgconductor.event_waits (event_name, match_key);
