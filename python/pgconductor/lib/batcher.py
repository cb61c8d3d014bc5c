"""`Batcher`: buffer items and hand them to an async `send` in batches, retrying failures.

A batch leaves when `max_size` items are waiting, or `interval` seconds after the first
one arrived. A failed `send` is retried with the same batch (capped exponential backoff)
until it succeeds; so `send` must be idempotent. `close()` sends what is left, giving up
after a deadline and reporting how many items were lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from pgconductor.clock import Clock
from pgconductor.lib.backoff import exponential
from pgconductor.lib.event import wait_event

__all__ = ["Batcher"]

T = TypeVar("T")


class Batcher(Generic[T]):
    """Send items in batches by size or interval; run `run()` as a task, end with `close()`."""

    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[None]],
        *,
        max_size: int,
        interval: float,
        clock: Clock,
        retry_base: float = 0.05,
        retry_cap: float = 5.0,
        name: str = "batcher",
        logger: logging.Logger | None = None,
        on_sent: Callable[[], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self._send = send
        self.max_size = max_size
        self.interval = interval
        self.clock = clock
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.name = name
        self.log = logger or logging.getLogger("pgconductor.batcher")
        self._on_sent = on_sent
        self._on_error = on_error
        self._buffer: list[T] = []
        self._batch: list[T] = []
        self._sending = 0
        self._has_items = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = asyncio.Event()
        self._deadline: float | None = None
        self.failures = 0

    def __len__(self) -> int:
        """Items not sent yet (buffered or in the batch being sent)."""
        return len(self._buffer) + self._sending

    def unsent(self) -> list[T]:
        """The items not sent yet: buffered, or in the batch being sent."""
        return [*self._batch, *self._buffer]

    def push(self, item: T) -> None:
        """Queue one item."""
        self._buffer.append(item)
        self._has_items.set()
        if len(self._buffer) >= self.max_size:
            self._full.set()

    async def run(self) -> None:
        """Send batches until `close()` and the buffer is empty (or the deadline passed)."""
        while True:
            await self._has_items.wait()
            if not self._buffer:
                self._has_items.clear()
                if self._closing.is_set():
                    return
                continue
            if len(self._buffer) < self.max_size and not self._closing.is_set():
                await wait_event(self._full, self.interval, self.clock)
            batch = self._buffer[: self.max_size]
            del self._buffer[: self.max_size]
            if len(self._buffer) < self.max_size:
                self._full.clear()
            self._sending = len(batch)
            self._batch = batch
            try:
                if not await self._send_with_retry(batch):
                    self._buffer[:0] = batch  # gave up at close: still counted as unsent
                    return
            finally:
                self._sending = 0
                self._batch = []
                if self._on_sent is not None:
                    self._on_sent()

    async def _send_with_retry(self, batch: list[T]) -> bool:
        attempt = 0
        while True:
            try:
                await self._send(batch)
                return True
            except Exception as exc:
                attempt += 1
                self.failures += 1
                if self._on_error is not None:
                    self._on_error(exc)
                delay = exponential(attempt, self.retry_base, self.retry_cap)
                if self._deadline is not None:
                    left = self._deadline - self.clock.monotonic()
                    if left <= 0:
                        return False
                    delay = min(delay, left)
                self.log.warning(
                    "%s: sending %d item(s) failed (%s); retry in %.2fs",
                    self.name,
                    len(batch),
                    exc,
                    delay,
                )
                if self._closing.is_set():
                    await self.clock.sleep(delay)
                else:  # close() cuts the wait short: its deadline applies from then on
                    await wait_event(self._closing, delay, self.clock)

    async def close(self, task: asyncio.Task[None] | None, timeout: float) -> int:
        """Send what is left within `timeout` seconds (`task` runs `run()`); return how many
        items could not be sent."""
        self._deadline = self.clock.monotonic() + timeout
        self._closing.set()
        self._has_items.set()
        self._full.set()
        if task is not None and not task.done():
            await asyncio.wait((task,), timeout=timeout + 1.0)
        return len(self)
