"""Frozen dataclasses mirroring the rows returned by the pgconductor SQL functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

__all__ = [
    "ClaimedExecution",
    "ExecutionInfo",
    "ExecutionResult",
    "OrchestratorInfo",
    "QueueStats",
    "ResultStatus",
    "ReturnOutcome",
    "Signal",
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


class ResultStatus(StrEnum):
    """How a handler run ended, as understood by `pgconductor.return_executions`."""

    COMPLETED = "completed"
    FAILED = "failed"
    FATAL = "fatal"
    RELEASED = "released"


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
    """What SQL did with a result: completed|retry_scheduled|failed|released|cancelled|stale."""

    id: UUID
    outcome: str


@dataclass(frozen=True, slots=True)
class Signal:
    """A signal for an orchestrator: `shutdown`, `cancel` or `lease_lost`."""

    kind: str
    execution_id: UUID | None


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A task's registered settings, the arguments of `pgconductor.register_task`."""

    key: str
    queue: str = "default"
    max_attempts: int = 3
    window_start: time | None = None
    window_end: time | None = None
    timezone: str = "UTC"
    backoff_base: timedelta = timedelta(seconds=1)
    backoff_cap: timedelta = timedelta(minutes=10)
    timeout: timedelta | None = None


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
