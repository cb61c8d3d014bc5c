-- Flow-control state (48_flow_gate.sql, 40_invoke.sql). Running counts are not stored: a slot
-- is the lease of the execution holding it (executions.locked_by), so it is freed by the
-- very statement that ends, releases, parks or recovers that execution, and cannot leak.

-- Token buckets of rate-limited tasks: per_key false is the task's bucket (key ''), true one
-- concurrency key's (key '' for executions without one). tokens as of "at"; the bucket
-- refills at capacity per rate_period up to capacity. No row: a full bucket (maintain()
-- deletes the full ones).
CREATE TABLE pgconductor.rate_buckets (
    task_key text NOT NULL,
    per_key  boolean NOT NULL,
    key      text NOT NULL,
    tokens   double precision NOT NULL,
    at       timestamptz NOT NULL,
    PRIMARY KEY (task_key, per_key, key)
);

-- Throttle periods: the execution admitted for (task, key) and the end of its period; until
-- then invokes with that key get its id back (a finished one keeps its period). key '' is
-- the whole task. maintain() deletes the ended periods.
CREATE TABLE pgconductor.throttle_slots (
    task_key     text NOT NULL,
    key          text NOT NULL,
    until        timestamptz NOT NULL,
    execution_id uuid NOT NULL,
    PRIMARY KEY (task_key, key)
);

-- Fair-share weights of concurrency keys in a queue (no row: weight 1). A key of weight w is
-- served w rows for every row of a key of weight 1 while both wait.
CREATE TABLE pgconductor.key_weights (
    queue  text NOT NULL REFERENCES pgconductor.queues (name) ON DELETE CASCADE,
    key    text NOT NULL,
    weight integer NOT NULL CONSTRAINT key_weights_weight_range CHECK (weight BETWEEN 1 AND 100),
    PRIMARY KEY (queue, key)
);
