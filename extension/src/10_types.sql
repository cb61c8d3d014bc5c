-- Composite types returned by the public API.

-- One claimed execution, as get_executions() hands it to a worker. attempt counts the
-- attempts spent (a released attempt is given back); lease numbers every claim of the
-- execution and never repeats: (orchestrator id, lease) is what a result must quote. steps:
-- the stored steps of a durable workflow by key (NULL when none; see _steps_by_key).
CREATE TYPE pgconductor.claimed_execution AS (
    id           uuid,
    task_key     text,
    queue        text,
    payload      jsonb,
    attempt      integer,
    max_attempts integer,
    priority     integer,
    run_at       timestamptz,
    timeout_ms   bigint,
    lease        integer,
    steps        jsonb
);
