"""The one contract every long-lived engine part follows: `start()`, `stop()`, `started`.

`start()` is idempotent and either finishes or raises (after cleaning up what it began);
`stop()` is idempotent, safe before `start()`, and concurrent callers all wait for the same
stop. Background loops are spawned with `spawn()`: a loop that crashes is logged, never lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from enum import Enum
from typing import Any

__all__ = ["Service", "ServiceState"]

#: How often `stop()` cancels a background task, waiting `CANCEL_WAIT` seconds each time.
CANCEL_TRIES = 5
CANCEL_WAIT = 1.0


class ServiceState(Enum):
    """Where a service is in its life."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Service:
    """Base of the engine parts; subclasses implement `_on_start()` and `_on_stop()`."""

    def __init__(self, name: str, logger: logging.Logger | None = None) -> None:
        self.name = name
        self.log = logger or logging.getLogger(f"pgconductor.{name}")
        self.state = ServiceState.NEW
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop_done: asyncio.Future[None] | None = None

    @property
    def started(self) -> bool:
        """True from a successful `start()` until `stop()` begins."""
        return self.state is ServiceState.RUNNING

    async def start(self) -> None:
        """Start the service; a second call does nothing; a failure cleans up and raises."""
        if self.state is not ServiceState.NEW:
            if self.state in (ServiceState.STOPPING, ServiceState.STOPPED):
                raise RuntimeError(f"{self.name} was stopped and cannot be started again")
            return
        self.state = ServiceState.STARTING
        try:
            await self._on_start()
        except BaseException:
            self.state = ServiceState.STOPPING
            try:
                await self._on_stop()
            except Exception:
                self.log.exception("%s: cleanup after a failed start failed", self.name)
            finally:
                await self._cancel_tasks()
                self.state = ServiceState.STOPPED
            raise
        self.state = ServiceState.RUNNING

    async def stop(self) -> None:
        """Stop the service and wait until it has stopped; idempotent, fine before start."""
        if self.state is ServiceState.NEW:
            return
        if self._stop_done is not None:
            await asyncio.shield(self._stop_done)
            return
        self._stop_done = asyncio.get_running_loop().create_future()
        self.state = ServiceState.STOPPING
        try:
            await self._on_stop()
        finally:
            await self._cancel_tasks()
            self.state = ServiceState.STOPPED
            self._stop_done.set_result(None)

    async def _on_start(self) -> None:
        """Begin the service's work (override)."""

    async def _on_stop(self) -> None:
        """End the service's work and wait for it (override)."""

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coro` as a background task owned by this service (cancelled at stop)."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error(
                "%s: background task %s crashed",
                self.name,
                task.get_name(),
                exc_info=task.exception(),
            )

    async def _cancel_tasks(self) -> None:
        """Cancel the background tasks; cancel again any that swallowed a cancellation."""
        pending = {t for t in self._tasks if not t.done()}
        for _ in range(CANCEL_TRIES):
            if not pending:
                return
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=CANCEL_WAIT)
        for task in pending:
            self.log.error(
                "%s: background task %s ignores cancellation", self.name, task.get_name()
            )
