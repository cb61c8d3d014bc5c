"""`StepWriter`: step results of many handlers written with one `save_steps` call per cycle.

`save()` queues one result and returns once the statement holding it has committed, so a
step's result is durable before `ctx.step` returns. A cycle sends what is queued when the
previous call has returned (group commit: with `interval` 0, the worker's setting, an idle
worker writes a step at once and a busy one many per call; at most `max_size`), and a failed
call is retried with the same group (SQL keeps a key's first result, so a repeat changes
nothing). A 'stale' outcome (the lease no longer holds) raises `LeaseLost` in that handler
and calls `on_stale(id)`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from pgconductor.clock import Clock, SystemClock
from pgconductor.lib.batcher import Batcher
from pgconductor.protocol import DatabaseClient
from pgconductor.workflow import LeaseLost

__all__ = ["PendingStep", "StepWriter"]


@dataclass(slots=True)
class PendingStep:
    """One step result waiting for its group's commit."""

    execution_id: UUID
    lease: int
    key: str
    seq: int
    result: Any
    done: asyncio.Future[None] = field(repr=False)


class StepWriter:
    """Group step writes per flush cycle; start lazily on the first `save`, end with `close`."""

    def __init__(
        self,
        client: DatabaseClient,
        orchestrator_id: UUID,
        *,
        max_size: int = 200,
        interval: float = 0.0,
        clock: Clock | None = None,
        on_stale: Callable[[UUID], object] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.client = client
        self.orchestrator_id = orchestrator_id
        self.on_stale = on_stale
        self.log = logger or logging.getLogger("pgconductor.worker")
        self.saved = 0
        self.stale = 0
        self.calls = 0
        self._batcher: Batcher[PendingStep] = Batcher(
            self._send,
            max_size=max_size,
            interval=interval,
            clock=clock or SystemClock(),
            name="step writer",
            logger=self.log,
        )
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def save(self, execution_id: UUID, lease: int, key: str, seq: int, result: Any) -> None:
        """Queue one step result; return once committed; raise `LeaseLost` when stale."""
        if self._closed:  # the worker stopped: nothing is written any more
            raise LeaseLost(key)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._batcher.run())
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._batcher.push(PendingStep(execution_id, lease, key, seq, result, done))
        await done

    async def _send(self, group: list[PendingStep]) -> None:
        self.calls += 1
        rows = await self.client.save_steps(
            self.orchestrator_id,
            [p.execution_id for p in group],
            [p.lease for p in group],
            [p.key for p in group],
            [p.seq for p in group],
            [p.result for p in group],
        )
        stale = {(row_id, key) for row_id, key, outcome in rows if outcome == "stale"}
        for pending in group:
            if (pending.execution_id, pending.key) in stale:
                self.stale += 1
                self.log.warning(
                    "execution %s: step %r was stale (the lease ended); stopping its handler",
                    pending.execution_id,
                    pending.key,
                )
                if not pending.done.done():
                    pending.done.set_exception(LeaseLost(pending.key))
                if self.on_stale is not None:
                    self.on_stale(pending.execution_id)
            else:
                self.saved += 1
                if not pending.done.done():
                    pending.done.set_result(None)

    async def close(self, timeout: float = 10.0) -> int:
        """Write what is queued within `timeout`; handlers whose step was not written get
        `LeaseLost`. Return how many were not written."""
        self._closed = True
        lost = await self._batcher.close(self._task, timeout) if self._task is not None else 0
        for pending in self._batcher.unsent():
            if not pending.done.done():
                pending.done.set_exception(LeaseLost(pending.key))
        return lost
