"""Frozen dataclasses mirroring the rows returned by the pgconductor SQL functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

__all__ = [
    "ClaimedExecution",
    "ExecutionInfo",
    "ExecutionResult",
    "ExecutionSummary",
    "FlowStatus",
    "OrchestratorInfo",
    "QueueStats",
    "ResultStatus",
    "ReturnOutcome",
    "Signal",
    "Submitted",
    "TaskOverview",
    "TaskSpec",
]


@dataclass(frozen=True, slots=True)
class ClaimedExecution:
    """One row of `pgconductor.get_executions`: an execution leased to an orchestrator."""

    id: UUID
    task_key: str
    queue: str
    payload: Any
    attempt: int
    max_attempts: int
    priority: int
    run_at: datetime
    timeout_ms: int | None
    #: The claim's lease number: never repeats for an execution; results quote it.
    lease: int
    #: The stored steps of a durable workflow by key (extension 0.6.0 on; None when none).
    steps: Any = None


class ResultStatus(StrEnum):
    """How a handler run ended, as understood by `pgconductor.return_executions`."""

    COMPLETED = "completed"
    FAILED = "failed"
    FATAL = "fatal"
    RELEASED = "released"
    #: Back to pending after `delay_ms`, the attempt not counted (the handler asked for it).
    RETRY_AFTER = "retry_after"
    #: Parked until what `result` (the plan) waits for; the attempt not counted (0.6.0 on).
    SUSPEND = "suspend"


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """One element of a `return_executions` batch; `(id, lease)` quotes the claim's lease."""

    id: UUID
    lease: int
    status: ResultStatus
    error: str | None = None
    result: Any = None
    delay_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ReturnOutcome:
    """What SQL did with a result.

    completed | retry_scheduled | failed | released | rescheduled (a `retry_after`) |
    cancelled | stale | suspended / resumed (a `suspend`: parked, or pending again at once).
    """

    id: UUID
    outcome: str
    #: The next run for retry_scheduled / released / rescheduled (extension 0.4.0 on).
    run_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Signal:
    """A signal for an orchestrator: `shutdown`, `cancel` or `lease_lost`."""

    kind: str
    execution_id: UUID | None


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A task's settings, the arguments of `pgconductor.register_task`.

    `declared` names the settings given explicitly in Python (`@conductor.task(...)` fills
    it): `declare_task` sends only those, so a setting made in SQL is kept; `register_task`
    sends every setting whatever it says.
    """

    key: str
    queue: str = "default"
    max_attempts: int = 3
    window_start: time | None = None
    window_end: time | None = None
    timezone: str = "UTC"
    backoff_base: timedelta = timedelta(seconds=1)
    backoff_cap: timedelta = timedelta(minutes=10)
    timeout: timedelta | None = None
    #: How often a handler may `raise RetryAfter(...)` before the execution fails.
    max_retry_after: int = 20
    # Flow control (extension 0.7.0 on); None is no limit.
    #: Running executions of the task across every worker.
    max_running: int | None = None
    #: Running executions per concurrency key.
    max_running_per_key: int | None = None
    #: Starts per `rate_period`, of the whole task / per concurrency key.
    rate_limit: int | None = None
    rate_limit_per_key: int | None = None
    rate_period: timedelta = timedelta(seconds=1)
    #: An execution not started within this of its run_at ends `expired`.
    start_within: timedelta | None = None
    #: How long finished executions are kept: completed ones, and failed/cancelled/expired ones.
    keep_completed: timedelta = timedelta(days=7)
    keep_failed: timedelta = timedelta(days=30)
    declared: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ExecutionInfo:
    """One row of `pgconductor.get_execution`: a live or finished execution."""

    id: UUID
    task_key: str
    queue: str
    state: str
    attempts: int
    priority: int
    run_at: datetime | None
    locked_by: UUID | None
    last_error: str | None
    result: Any
    finished_at: datetime | None
    # Read from extension 0.4.0 on (None or empty before):
    max_attempts: int | None = None
    payload: Any = None
    created_at: datetime | None = None
    locked_at: datetime | None = None
    #: Every attempt's error, oldest first: {"attempt", "at", "outcome", "error"} objects.
    errors: list[dict[str, Any]] = field(default_factory=list)
    cancel_reason: str | None = None
    # Read from extension 0.6.0 on:
    parent_id: UUID | None = None
    #: The stored steps of a workflow ordered by seq: {key, seq, kind, state, result, error,
    #: child_id, until, created_at, done_at} objects.
    steps: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ExecutionSummary:
    """One row of `pgconductor.list_executions`: an execution in a listing, newest first."""

    id: UUID
    task_key: str
    queue: str
    state: str
    attempts: int
    max_attempts: int
    priority: int
    run_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class TaskOverview:
    """One row of `pgconductor.task_overview`: a task, whether a live worker serves it, counts."""

    task_key: str
    queue: str
    registered: bool
    served: bool
    pending: int
    running: int


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One row of `pgconductor.queue_stats`: counts per queue."""

    queue: str
    pending: int
    due: int
    running: int
    completed: int
    failed: int
    cancelled: int


@dataclass(frozen=True, slots=True)
class OrchestratorInfo:
    """One row of `pgconductor.orchestrator_stats`: a worker process and what it holds."""

    id: UUID
    state: str  # live | expired | stopped
    version: str | None
    started_at: datetime
    last_heartbeat_at: datetime
    running: int
    info: Any


@dataclass(frozen=True, slots=True)
class Submitted:
    """One row of `pgconductor.submit`: the execution id and what the call did with it.

    outcome: created | updated | kept | superseded | throttled | debounced (extension 0.7.0).
    """

    id: UUID
    outcome: str


@dataclass(frozen=True, slots=True)
class FlowStatus:
    """One row of `pgconductor.flow_status`: what a task's limits hold now, per key."""

    queue: str
    task_key: str
    #: None for the task's executions without a concurrency key.
    concurrency_key: str | None
    running: int
    pending: int
    #: Parked workflows (sleeping, waiting for children or an event): they hold no slot.
    parked: int
    max_running: int | None
    max_running_per_key: int | None
    paused: bool
