-- Tables. Live executions sit in the small, hot, LIST-partitioned table "executions" (one
-- partition per queue); an execution that ends moves to "finished_executions", so claims
-- never scan finished work.

-- Queues: inserting a row creates the queue's partition, deleting it drops it (25_queues.sql);
-- at most _max_queues() of them.
-- paused: claims skip the queue; fair_share: its concurrency keys share the claim round-robin
-- (47_flow_gate.sql), served by an index on its partition made by set_fair_share().
CREATE TABLE pgconductor.queues (
    name       text PRIMARY KEY CONSTRAINT queues_name_valid CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,47}$'),
    created_at timestamptz NOT NULL DEFAULT pgconductor._now(),
    paused     boolean NOT NULL DEFAULT false,
    fair_share boolean NOT NULL DEFAULT false
);

-- Tasks: settings per task key. A key invoked before any worker registered it needs no row
-- here: it runs with the defaults (3 attempts, no window, 1 s..10 min backoff). The column
-- defaults are the only home of the defaults: register_task() and declare_task() read them.
-- max_retry_after: how often a handler may put its execution back with RetryAfter.
-- Flow control (48_flow.sql): max_running and max_running_per_key cap running executions of
-- the task and of each concurrency key; rate_limit and rate_limit_per_key cap starts per
-- rate_period; start_within expires executions not started that long after run_at; paused:
-- claims skip it; keep_completed / keep_failed: how long maintain() keeps them once ended.
CREATE TABLE pgconductor.tasks (
    key          text PRIMARY KEY CONSTRAINT tasks_key_valid
                     CHECK (char_length(key) BETWEEN 1 AND 200 AND key !~ '[[:cntrl:]]' AND key = btrim(key)),
    queue        text NOT NULL DEFAULT 'default' CONSTRAINT tasks_queue_valid CHECK (queue ~ '^[a-z0-9][a-z0-9_-]{0,47}$'),
    max_attempts integer NOT NULL DEFAULT 3 CONSTRAINT tasks_max_attempts_positive CHECK (max_attempts >= 1),
    window_start time,
    window_end   time,
    timezone     text NOT NULL DEFAULT 'UTC',
    backoff_base interval NOT NULL DEFAULT '1 second' CONSTRAINT tasks_backoff_base_nonnegative CHECK (backoff_base >= interval '0'),
    backoff_cap  interval NOT NULL DEFAULT '10 minutes'
                     CONSTRAINT tasks_backoff_cap_bounded CHECK (backoff_cap <= pgconductor._max_interval()),
    timeout      interval CONSTRAINT tasks_timeout_positive CHECK (timeout > interval '0')
                     CONSTRAINT tasks_timeout_bounded CHECK (timeout <= pgconductor._max_interval()),
    created_at   timestamptz NOT NULL DEFAULT pgconductor._now(),
    updated_at   timestamptz NOT NULL DEFAULT pgconductor._now(),
    max_retry_after integer NOT NULL DEFAULT 20
                     CONSTRAINT tasks_max_retry_after_nonnegative CHECK (max_retry_after >= 0),
    max_running         integer CONSTRAINT tasks_max_running_positive CHECK (max_running >= 1),
    max_running_per_key integer CONSTRAINT tasks_max_running_per_key_positive CHECK (max_running_per_key >= 1),
    rate_limit          integer CONSTRAINT tasks_rate_limit_positive CHECK (rate_limit >= 1),
    rate_limit_per_key  integer CONSTRAINT tasks_rate_limit_per_key_positive CHECK (rate_limit_per_key >= 1),
    rate_period         interval NOT NULL DEFAULT '1 second'
                            CONSTRAINT tasks_rate_period_bounded CHECK (rate_period > interval '0' AND rate_period <= pgconductor._max_interval()),
    start_within        interval CONSTRAINT tasks_start_within_bounded
                            CHECK (start_within > interval '0' AND start_within <= pgconductor._max_interval()),
    paused              boolean NOT NULL DEFAULT false,
    keep_completed      interval NOT NULL DEFAULT '7 days'
                            CONSTRAINT tasks_keep_completed_bounded CHECK (keep_completed >= interval '0' AND keep_completed <= pgconductor._max_interval()),
    keep_failed         interval NOT NULL DEFAULT '30 days'
                            CONSTRAINT tasks_keep_failed_bounded CHECK (keep_failed >= interval '0' AND keep_failed <= pgconductor._max_interval()),
    CONSTRAINT tasks_window_both_or_neither CHECK ((window_start IS NULL) = (window_end IS NULL)),
    CONSTRAINT tasks_window_not_empty CHECK (window_start IS NULL OR window_start <> window_end),
    CONSTRAINT tasks_backoff_cap_ge_base CHECK (backoff_cap >= backoff_base)
);

-- Live executions: pending (locked_by IS NULL) or running (locked_by = the orchestrator
-- holding the lease). attempts: attempts spent; lease: claims ever made (never decreases, so
-- (locked_by, lease) identifies one claim). Priority: lower runs first. errors: every attempt's
-- error, oldest first (_with_error keeps the last 50); retry_afters: RetryAfter put it back.
-- Durable workflows (46_workflows.sql): parent_id/parent_step name a child's parent and the
-- parent's step; waiting (sleep | children | event) marks a parked execution, which no claim
-- sees until it is woken (run_at is its wake time or deadline); has_steps: steps are stored.
-- concurrency_key: the key its task's per-key limits, rate limits and fair share count by;
-- start_by: it ends 'expired' when no claim started it by then (maintain()).
CREATE TABLE pgconductor.executions (
    id            uuid NOT NULL DEFAULT pgconductor._uuid7(),
    task_key      text NOT NULL CONSTRAINT executions_task_key_valid
                      CHECK (char_length(task_key) BETWEEN 1 AND 200 AND task_key !~ '[[:cntrl:]]' AND task_key = btrim(task_key)),
    queue         text NOT NULL DEFAULT 'default',
    payload       jsonb NOT NULL DEFAULT '{}',
    run_at        timestamptz NOT NULL DEFAULT pgconductor._now(),
    priority      integer NOT NULL DEFAULT 0,
    attempts      integer NOT NULL DEFAULT 0 CONSTRAINT executions_attempts_nonnegative CHECK (attempts >= 0),
    lease         integer NOT NULL DEFAULT 0,
    locked_by     uuid,
    locked_at     timestamptz,
    last_error    text,
    dedupe_key    text,
    cancel_reason text,
    created_at    timestamptz NOT NULL DEFAULT pgconductor._now(),
    errors        jsonb NOT NULL DEFAULT '[]',
    retry_afters  integer NOT NULL DEFAULT 0,
    parent_id     uuid,
    parent_step   text,
    waiting       text CONSTRAINT executions_waiting_valid CHECK (waiting IN ('sleep', 'children', 'event')),
    has_steps     boolean NOT NULL DEFAULT false,
    concurrency_key text,
    start_by      timestamptz,
    CONSTRAINT executions_pkey PRIMARY KEY (id, queue),
    CONSTRAINT executions_lock_consistent CHECK ((locked_by IS NULL) = (locked_at IS NULL))
) PARTITION BY LIST (queue);

-- The claim path: pending rows in claim order. The claim reads only the rows it returns;
-- parked rows are not in it, so a million of them cost a claim nothing.
CREATE INDEX executions_claim_idx ON pgconductor.executions (priority, run_at, id)
    INCLUDE (task_key, attempts) WHERE locked_by IS NULL AND waiting IS NULL;
-- Parked rows by wake time: the claim wakes the due ones of its queue.
CREATE INDEX executions_timers_idx ON pgconductor.executions (run_at) WHERE waiting IS NOT NULL;
-- Children by parent: cancelling a parent reaches its live children.
CREATE INDEX executions_parent_idx ON pgconductor.executions (parent_id) WHERE parent_id IS NOT NULL;
-- Recovery and release: the rows an orchestrator holds.
CREATE INDEX executions_locked_by_idx ON pgconductor.executions (locked_by) WHERE locked_by IS NOT NULL;
-- Start-by deadlines: maintain() expires the overdue ones.
CREATE INDEX executions_start_by_idx ON pgconductor.executions (start_by) WHERE start_by IS NOT NULL;
-- Cancel by concurrency key.
CREATE INDEX executions_concurrency_key_idx ON pgconductor.executions (task_key, concurrency_key)
    WHERE concurrency_key IS NOT NULL;
-- Deduplication: one live execution per (queue, task, dedupe key).
CREATE UNIQUE INDEX executions_dedupe_key ON pgconductor.executions (queue, task_key, dedupe_key)
    WHERE dedupe_key IS NOT NULL;

-- Executions that ended. state: completed | failed | cancelled | expired. Partitioned by
-- finished_at: daily partitions made ahead by maintain() (_add_finished_partitions), the rest
-- in the default partition; retention drops a whole day's partition once every row in it is
-- past its task's keep (_drop_finished_partitions) instead of deleting its rows one by one,
-- and deletes the rest per task policy in bounded batches (maintain()); prune_finished() by age.
CREATE TABLE pgconductor.finished_executions (
    id              uuid NOT NULL,
    task_key        text NOT NULL,
    queue           text NOT NULL,
    payload         jsonb NOT NULL,
    state           text NOT NULL CONSTRAINT finished_state_valid CHECK (state IN ('completed', 'failed', 'cancelled', 'expired')),
    attempts        integer NOT NULL,
    lease           integer NOT NULL DEFAULT 0,
    priority        integer NOT NULL,
    run_at          timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    orchestrator_id uuid,
    last_error      text,
    result          jsonb,
    errors          jsonb NOT NULL DEFAULT '[]',
    parent_id       uuid,
    parent_step     text,
    CONSTRAINT finished_executions_pkey PRIMARY KEY (id, finished_at)
) PARTITION BY RANGE (finished_at);
CREATE TABLE pgconductor.finished_executions_default PARTITION OF pgconductor.finished_executions DEFAULT;
-- Retention only: every extra index here is paid by every completion.
CREATE INDEX finished_executions_finished_at_idx ON pgconductor.finished_executions (finished_at);
-- Listing and bulk retries of failed and cancelled executions, newest first; partial, so a
-- completion does not pay for it.
CREATE INDEX finished_executions_unsuccessful_idx ON pgconductor.finished_executions (state, task_key, id)
    WHERE state <> 'completed';
-- A parent's children that ended.
CREATE INDEX finished_executions_parent_idx ON pgconductor.finished_executions (parent_id)
    WHERE parent_id IS NOT NULL;

-- Orchestrators (one per worker process). expired_at: heartbeat lapsed and recovery took its
-- work; drained: recovery found nothing more to release; stopped_at: left cleanly.
CREATE TABLE pgconductor.orchestrators (
    id                uuid PRIMARY KEY,
    started_at        timestamptz NOT NULL DEFAULT pgconductor._now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT pgconductor._now(),
    stale_after       interval NOT NULL DEFAULT '30 seconds' CONSTRAINT orchestrators_stale_after_positive CHECK (stale_after > interval '0'),
    version           text,
    info              jsonb NOT NULL DEFAULT '{}',
    expired_at        timestamptz,
    drained           boolean NOT NULL DEFAULT false,
    stopped_at        timestamptz
);

-- Signals waiting for an orchestrator: shutdown, cancel (execution_id), lease_lost
-- (execution_id: recovery gave its execution away). Delivered and deleted by heartbeat().
CREATE TABLE pgconductor.signals (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    orchestrator_id uuid NOT NULL REFERENCES pgconductor.orchestrators (id) ON DELETE CASCADE,
    kind            text NOT NULL CONSTRAINT signals_kind_valid CHECK (kind IN ('shutdown', 'cancel', 'lease_lost')),
    execution_id    uuid,
    created_at      timestamptz NOT NULL DEFAULT pgconductor._now(),
    CONSTRAINT signals_unique UNIQUE NULLS NOT DISTINCT (orchestrator_id, kind, execution_id)
);
