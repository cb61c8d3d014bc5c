"""SystemClock satisfies the Clock protocol with real time."""

from __future__ import annotations

import asyncio

from pgconductor.clock import Clock, SystemClock


def test_system_clock_is_a_clock() -> None:
    assert isinstance(SystemClock(), Clock)


def test_now_is_timezone_aware() -> None:
    now = SystemClock().now()
    assert now.tzinfo is not None
    assert now.utcoffset() is not None


def test_monotonic_does_not_go_back() -> None:
    clock = SystemClock()
    first = clock.monotonic()
    assert clock.monotonic() >= first


async def test_sleep_yields_and_tolerates_negative_values() -> None:
    clock = SystemClock()
    ran = asyncio.Event()

    async def other() -> None:
        ran.set()

    task = asyncio.create_task(other())
    await clock.sleep(-1)
    await clock.sleep(0)
    await task
    assert ran.is_set()
