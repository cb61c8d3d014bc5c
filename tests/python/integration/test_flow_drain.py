"""Draining under a concurrency limit on a real database (G13): a drain whose claim comes
back empty because other workers hold the task's slots goes on until `has_due_work` says
nothing due is left, and a drain on an extension without `has_due_work` (0.6.1) still ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pgconductor import Conductor, TaskContext
from pgconductor.orchestrator import Orchestrator
from pgtest import execute

WaitUntil = Callable[..., Any]
EXECUTIONS = 20
STATES = """
SELECT 'pending', count(*) FROM pgconductor.executions WHERE locked_by IS NULL
UNION ALL SELECT 'running', count(*) FROM pgconductor.executions WHERE locked_by IS NOT NULL
UNION ALL SELECT state, count(*) FROM pgconductor.finished_executions GROUP BY state
"""


def states(url: str) -> dict[str, int]:
    """How many executions are in each state (the states that have any)."""
    return {state: count for state, count in execute(url, STATES) if count}


def orchestrator(conductor: Conductor) -> Orchestrator:
    """An in-process orchestrator that polls every 50 ms."""
    return Orchestrator(conductor, heartbeat_interval=30.0, stale_after=120.0, poll_interval=0.05)


async def test_two_drains_under_max_running_leave_nothing_behind(
    conductor: Conductor, fresh_db_url: str, wait_until: WaitUntil
) -> None:
    gate = asyncio.Event()  # holds the first two handlers until both workers have claimed
    running = peak = 0

    @conductor.task("capped", max_running=2)
    async def capped(ctx: TaskContext, payload: Any) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await gate.wait()
            await asyncio.sleep(0.02)
        finally:
            running -= 1

    await conductor.register_tasks()
    await conductor.invoke_many("capped", [{"n": n} for n in range(EXECUTIONS)])
    first, second = orchestrator(conductor), orchestrator(conductor)
    left_behind: list[dict[str, int]] = []

    async def drain(one: Orchestrator) -> None:
        await one.drain()
        left_behind.append(states(fresh_db_url))

    drains = asyncio.gather(drain(first), drain(second))
    try:
        # One worker holds both slots; the other has claimed at least twice with its claims
        # empty (the drain of 0.6.1 returned at the first).
        def both_claimed() -> bool:
            workers = [*first.workers, *second.workers]
            return (
                len(workers) == 2
                and sum(w.in_flight for w in workers) == 2
                and all(w.stats.fetches >= 2 for w in workers)
            )

        await wait_until(both_claimed)
        assert not drains.done()
        gate.set()
        await asyncio.wait_for(drains, 60.0)
    finally:
        gate.set()
        await first.stop()
        await second.stop()
    # When each drain returned, nothing was pending any more (the other might still have
    # been running the last ones); in the end every execution completed, two at a time.
    assert len(left_behind) == 2
    assert all(counts.get("pending", 0) == 0 for counts in left_behind)
    assert states(fresh_db_url) == {"completed": EXECUTIONS}
    assert peak == 2


@pytest.fixture
async def old_conductor(bare_db_url: str) -> AsyncIterator[Conductor]:
    execute(bare_db_url, "CREATE EXTENSION pgconductor VERSION '0.6.1'")
    conductor = Conductor(bare_db_url)
    yield conductor
    await conductor.close()


async def test_a_drain_on_an_extension_without_has_due_work_ends(
    old_conductor: Conductor, bare_db_url: str
) -> None:
    ran: list[int] = []

    @old_conductor.task("plain")
    async def plain(ctx: TaskContext, payload: Any) -> None:
        ran.append(payload["n"])

    assert await old_conductor.client.has_due_work("default", None) is False
    await old_conductor.register_tasks()
    await old_conductor.invoke_many("plain", [{"n": n} for n in range(5)])
    assert await old_conductor.client.has_due_work("default", ["plain"]) is False
    one = orchestrator(old_conductor)
    try:
        await asyncio.wait_for(one.drain(), 60.0)
    finally:
        await one.stop()
    assert sorted(ran) == list(range(5))
    assert states(bare_db_url) == {"completed": 5}
