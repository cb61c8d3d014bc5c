"""Batch tasks on a real database: 250 executions in batches of at most 100, each result on
its own execution; a stop mid-batch (running, or still collecting) releases the executions
and a later worker completes them with no attempt wasted (G21); a cancel of one execution of
a running batch ends that one cancelled while the others complete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import UUID

import pytest

from pgconductor import BatchContext, Conductor
from pgconductor.orchestrator import Orchestrator
from pgtest import execute

WaitUntil = Callable[..., Any]


@pytest.fixture
async def conductor(fresh_db_url: str) -> AsyncIterator[Conductor]:
    conductor = Conductor(fresh_db_url)
    yield conductor
    await conductor.close()


def orchestrator(conductor: Conductor, **options: Any) -> Orchestrator:
    return Orchestrator(
        conductor,
        heartbeat_interval=30.0,
        stale_after=120.0,
        poll_interval=0.05,
        maintenance_interval=None,
        tick_interval=None,
        **options,
    )


def finished(url: str, task_key: str) -> int:
    return int(
        execute(
            url,
            "SELECT count(*) FROM pgconductor.finished_executions WHERE task_key = %s",
            task_key,
        )[0][0]
    )


async def test_250_executions_run_in_batches_of_at_most_100_with_results_on_their_own(
    conductor: Conductor, fresh_db_url: str, wait_until: WaitUntil
) -> None:
    sizes: list[int] = []

    @conductor.task("index", batch_size=100, batch_timeout=0.2)
    async def index(ctx: BatchContext, payloads: list[dict[str, int]]) -> list[dict[str, Any]]:
        sizes.append(len(payloads))
        return [
            {"n": p["n"], "id": str(item.execution_id)}
            for p, item in zip(payloads, ctx.items, strict=True)
        ]

    await conductor.register_tasks()
    await conductor.invoke_many(index, [{"n": n} for n in range(250)])
    running = orchestrator(conductor, concurrency=100)
    await running.start()
    try:
        await wait_until(lambda: finished(fresh_db_url, "index") == 250, timeout=30.0)
    finally:
        await running.stop()
    assert len(sizes) >= 3
    assert max(sizes) <= 100
    assert sum(sizes) == 250
    rows = execute(
        fresh_db_url,
        "SELECT state, attempts, (payload->>'n')::int, (result->>'n')::int, id::text,"
        " result->>'id' FROM pgconductor.finished_executions WHERE task_key = 'index'",
    )
    assert len(rows) == 250
    for state, attempts, sent, got, execution_id, seen_as in rows:
        assert (state, attempts) == ("completed", 1)
        assert got == sent  # the result of its own payload
        assert seen_as == execution_id  # ctx.items[i] was that execution


async def test_an_item_that_is_an_exception_fails_that_execution_alone(
    conductor: Conductor, fresh_db_url: str, wait_until: WaitUntil
) -> None:
    @conductor.task("index", batch_size=4, batch_timeout=0.5, max_attempts=1)
    async def index(ctx: BatchContext, payloads: list[int]) -> list[Any]:
        return [ValueError(f"no document {p}") if p == 3 else p * 2 for p in payloads]

    await conductor.register_tasks()
    ids = await conductor.invoke_many(index, [1, 2, 3, 4])
    running = orchestrator(conductor)
    await running.start()
    try:
        await wait_until(lambda: finished(fresh_db_url, "index") == 4, timeout=15.0)
    finally:
        await running.stop()
    ended = {
        UUID(str(row[0])): row[1:]
        for row in execute(
            fresh_db_url,
            "SELECT id, state, result, last_error FROM pgconductor.finished_executions",
        )
    }
    assert [ended[i] for i in ids] == [
        ("completed", 2, None),
        ("completed", 4, None),
        ("failed", None, "ValueError: no document 3"),
        ("completed", 8, None),
    ]


async def test_a_stop_mid_batch_releases_it_and_a_later_worker_completes_it(
    conductor: Conductor, fresh_db_url: str, wait_until: WaitUntil
) -> None:
    started = asyncio.Event()
    block = True
    ran: list[list[int]] = []

    # the 4th waits for its batch 2 s: stopped before that, then run alone by the second
    @conductor.task("index", batch_size=3, batch_timeout=2, max_attempts=1)
    async def index(ctx: BatchContext, payloads: list[int]) -> list[int]:
        ran.append(payloads)
        if block:
            started.set()
            await asyncio.Event().wait()  # until the shutdown stops it
        return [p + 1 for p in payloads]

    await conductor.register_tasks()
    ids = await conductor.invoke_many(index, [1, 2, 3, 4])  # a full batch, one collecting
    first = orchestrator(conductor, concurrency=4, grace_period=0.1)
    await first.start()
    try:
        await asyncio.wait_for(started.wait(), 10.0)
        await wait_until(lambda: first.workers[0].in_flight == 4)
    finally:
        await first.stop()
    assert execute(
        fresh_db_url,
        "SELECT count(*), sum(attempts), bool_and(locked_by IS NULL)"
        " FROM pgconductor.executions WHERE task_key = 'index'",
    ) == [(4, 0, True)]  # released: pending again, no attempt counted
    block = False
    second = orchestrator(conductor)
    await second.start()
    try:
        await wait_until(lambda: finished(fresh_db_url, "index") == 4, timeout=15.0)
    finally:
        await second.stop()
    ended = execute(
        fresh_db_url,
        "SELECT id, state, attempts, result FROM pgconductor.finished_executions",
    )
    by_id = {UUID(str(i)): (state, attempts, result) for i, state, attempts, result in ended}
    # max_attempts 1: a shutdown that had cost an attempt would have failed them for good
    assert [by_id[i] for i in ids] == [("completed", 1, n + 1) for n in (1, 2, 3, 4)]
    assert sorted(map(len, ran)) == [1, 3, 3]  # the first stopped, the second's two


async def test_a_cancel_of_one_execution_of_a_running_batch(
    conductor: Conductor, fresh_db_url: str, wait_until: WaitUntil
) -> None:
    running, go_on = asyncio.Event(), asyncio.Event()

    @conductor.task("index", batch_size=3, batch_timeout=5)
    async def index(ctx: BatchContext, payloads: list[int]) -> list[Any]:
        running.set()
        await wait_until(lambda: any(item.cancelled for item in ctx.items))
        await go_on.wait()
        return [None if item.cancelled else p for p, item in zip(payloads, ctx.items, strict=True)]

    await conductor.register_tasks()
    ids = await conductor.invoke_many(index, [1, 2, 3])
    started = orchestrator(conductor)
    await started.start()
    try:
        assert started.notifier is not None  # the cancel's signal comes by NOTIFY
        await asyncio.wait_for(started.notifier.wait_connected(), 5.0)
        await asyncio.wait_for(running.wait(), 10.0)
        assert await conductor.client.cancel(ids[1]) == "cancelling"
        go_on.set()
        await wait_until(lambda: finished(fresh_db_url, "index") == 3, timeout=15.0)
    finally:
        await started.stop()
    ended = {
        UUID(str(i)): (state, result)
        for i, state, result in execute(
            fresh_db_url, "SELECT id, state, result FROM pgconductor.finished_executions"
        )
    }
    assert [ended[i] for i in ids] == [("completed", 1), ("cancelled", None), ("completed", 3)]
