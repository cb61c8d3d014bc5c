"""Wait for an `asyncio.Event` with a timeout measured by an injectable clock."""

from __future__ import annotations

import asyncio

from pgconductor.clock import Clock

__all__ = ["wait_event"]


async def wait_event(event: asyncio.Event, seconds: float | None, clock: Clock) -> bool:
    """Wait until `event` is set or `seconds` pass on `clock`; return `event.is_set()`.

    `seconds=None` waits for the event alone; zero or less does not wait.
    """
    if event.is_set():
        return True
    if seconds is None:
        await event.wait()
        return True
    if seconds <= 0:
        return False
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        pending = [task for task in (waiter, sleeper) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:  # asyncio.wait never raises for them, and lets our own cancel through
            await asyncio.wait(pending)
    return event.is_set()
