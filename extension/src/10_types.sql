-- Composite types returned by the public API.

-- One claimed execution, as get_executions() hands it to a worker. The pair
-- (orchestrator id, attempt) is the lease a result must quote to be applied.
CREATE TYPE pgconductor.claimed_execution AS (
    id           uuid,
    task_key     text,
    queue        text,
    payload      jsonb,
    attempt      integer,
    max_attempts integer,
    priority     integer,
    run_at       timestamptz,
    timeout_ms   bigint
);
