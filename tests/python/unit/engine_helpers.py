"""Builders shared by the engine's unit tests (executor, worker, orchestrator)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from pgconductor.conductor import TaskContext
from pgconductor.types import ClaimedExecution


def claimed(
    task_key: str = "t",
    payload: Any = None,
    *,
    queue: str = "default",
    attempt: int = 1,
    max_attempts: int = 3,
    timeout_ms: int | None = None,
    lease: int | None = None,
) -> ClaimedExecution:
    """A claimed execution as `get_executions` would return it."""
    return ClaimedExecution(
        id=uuid.uuid4(),
        task_key=task_key,
        queue=queue,
        payload={} if payload is None else payload,
        attempt=attempt,
        max_attempts=max_attempts,
        priority=0,
        run_at=datetime.now(UTC),
        timeout_ms=timeout_ms,
        lease=attempt + 10
        if lease is None
        else lease,  # differs from attempt: results must quote it
    )


def context(row: ClaimedExecution, cancel_event: asyncio.Event | None = None) -> TaskContext:
    """The `TaskContext` a worker would build for `row`."""
    return TaskContext(
        row.id,
        row.task_key,
        row.queue,
        row.attempt,
        row.max_attempts,
        cancel_event or asyncio.Event(),
        {},
        logging.getLogger("test.task"),
    )


class Backlog:
    """A canned `get_executions` answer: hands out queued rows, at most `batch_size` a call."""

    def __init__(self, rows: list[ClaimedExecution] | None = None) -> None:
        self.rows: list[ClaimedExecution] = list(rows or [])
        self.requests: list[int] = []

    def add(self, *rows: ClaimedExecution) -> None:
        """Make more rows due."""
        self.rows.extend(rows)

    def __call__(
        self, orchestrator_id: Any, queue: str, task_keys: Any, batch_size: int
    ) -> list[ClaimedExecution]:
        self.requests.append(batch_size)
        taken, self.rows = self.rows[:batch_size], self.rows[batch_size:]
        return taken


def flushed(fake: Any) -> list[Any]:
    """Every `ExecutionResult` sent through `return_executions`, in order."""
    return [r for args, _ in fake.calls_to("return_executions") for r in args[1]]
