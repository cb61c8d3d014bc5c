"""Injectable time source: services take a `Clock` so tests can control time."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Wall time, monotonic time and sleeping, behind one interface."""

    def now(self) -> datetime:
        """Return the current wall-clock time (timezone-aware)."""
        ...

    def monotonic(self) -> float:
        """Return a monotonic time in seconds, for measuring intervals."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for `seconds` (cancellable)."""
        ...


class SystemClock:
    """The real clock: `datetime.now(UTC)`, `time.monotonic()`, `asyncio.sleep()`."""

    def now(self) -> datetime:
        """Return the current UTC time."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """Return `time.monotonic()`."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep with `asyncio.sleep`; negative values sleep zero."""
        await asyncio.sleep(max(0.0, seconds))
