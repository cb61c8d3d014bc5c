"""The engine against real PostgreSQL: invoke → claim → run → flush, in one process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import UUID

import pytest
from pydantic import BaseModel

from pgconductor.conductor import Conductor, TaskContext
from pgconductor.orchestrator import Orchestrator, WorkerConfig

WaitUntil = Callable[..., Any]


class Order(BaseModel):
    """A typed payload."""

    sku: str
    quantity: int


@pytest.fixture
async def conductor(fresh_db_url: str) -> AsyncIterator[Conductor]:
    conductor = Conductor(fresh_db_url)
    yield conductor
    await conductor.close()


@pytest.fixture
async def orchestrators() -> AsyncIterator[list[Orchestrator]]:
    """Orchestrators a test starts; stopped at the end whatever happened."""
    started: list[Orchestrator] = []
    yield started
    for orchestrator in started:
        await orchestrator.stop()


async def state_of(conductor: Conductor, execution_id: UUID) -> str | None:
    info = await conductor.client.get_execution(execution_id)
    return None if info is None else info.state


async def test_invoke_runs_and_completes(
    conductor: Conductor, orchestrators: list[Orchestrator], wait_until: WaitUntil
) -> None:
    @conductor.task("greet")
    async def greet(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"greeting": f"hello {payload['name']}", "attempt": ctx.attempt}

    @conductor.task("add")
    def add(ctx: TaskContext, payload: dict[str, int]) -> int:
        return payload["a"] + payload["b"]

    orchestrator = Orchestrator(conductor, heartbeat_interval=1.0)
    orchestrators.append(orchestrator)
    await orchestrator.start()
    first = await conductor.invoke("greet", {"name": "ada"})
    second = await conductor.invoke("add", {"a": 2, "b": 3})
    await wait_until(lambda: _all_done(conductor, [first, second]), timeout=10.0)
    info = await conductor.client.get_execution(first)
    assert info is not None
    assert info.result == {"greeting": "hello ada", "attempt": 1}
    assert info.attempts == 1
    assert info.locked_by is None
    added = await conductor.client.get_execution(second)
    assert added is not None
    assert added.result == 5


async def _all_done(conductor: Conductor, ids: list[UUID], state: str = "completed") -> bool:
    return all([await state_of(conductor, i) == state for i in ids])


async def test_notify_wakes_an_idle_worker_without_polling(
    conductor: Conductor, orchestrators: list[Orchestrator], wait_until: WaitUntil
) -> None:
    done = asyncio.Event()

    @conductor.task("ping")
    async def ping(ctx: TaskContext, payload: Any) -> None:
        done.set()

    orchestrator = Orchestrator(
        conductor, poll_interval=60.0, heartbeat_interval=60.0, stale_after=300
    )
    orchestrators.append(orchestrator)
    await orchestrator.start()
    assert orchestrator.notifier is not None
    await asyncio.wait_for(orchestrator.notifier.wait_connected(), 5.0)
    await wait_until(lambda: orchestrator.workers[0].stats.claimed == 0)
    started = time.monotonic()
    await conductor.invoke("ping", {})
    await asyncio.wait_for(done.wait(), 5.0)
    assert time.monotonic() - started < 2.0  # far below the 60 s poll interval


async def test_retry_then_success(
    conductor: Conductor, orchestrators: list[Orchestrator], wait_until: WaitUntil
) -> None:
    @conductor.task("flaky", max_attempts=3, backoff=(0.05, 0.1))
    async def flaky(ctx: TaskContext, payload: Any) -> str:
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} fails")
        return "third time lucky"

    orchestrator = Orchestrator(conductor, poll_interval=0.05)
    orchestrators.append(orchestrator)
    await orchestrator.start()
    execution_id = await conductor.invoke("flaky", {})
    await wait_until(lambda: _all_done(conductor, [execution_id]), timeout=10.0)
    info = await conductor.client.get_execution(execution_id)
    assert info is not None
    assert info.attempts == 3
    assert info.result == "third time lucky"


async def test_failures_exhaust_attempts(
    conductor: Conductor, orchestrators: list[Orchestrator], wait_until: WaitUntil
) -> None:
    @conductor.task("doomed", max_attempts=2, backoff=(0.02, 0.05))
    async def doomed(ctx: TaskContext, payload: Any) -> None:
        raise ValueError("always wrong")

    @conductor.task("slow", max_attempts=1, timeout=0.05)
    async def slow(ctx: TaskContext, payload: Any) -> None:
        await asyncio.sleep(30)

    @conductor.task("typed", payload=Order)
    async def typed(ctx: TaskContext, payload: Order) -> int:
        return payload.quantity

    orchestrator = Orchestrator(conductor, poll_interval=0.05)
    orchestrators.append(orchestrator)
    await orchestrator.start()
    doomed_id = await conductor.invoke("doomed", {})
    slow_id = await conductor.invoke("slow", {})
    # Bypass invoke-time validation, as an older producer or a psql user could.
    bad_id = await conductor.client.invoke("typed", {"sku": "x", "quantity": "lots"})
    await wait_until(lambda: _all_done(conductor, [doomed_id, slow_id, bad_id], "failed"))
    doomed_info = await conductor.client.get_execution(doomed_id)
    assert doomed_info is not None
    assert doomed_info.attempts == 2
    assert "ValueError: always wrong" in (doomed_info.last_error or "")
    slow_info = await conductor.client.get_execution(slow_id)
    assert slow_info is not None
    assert slow_info.last_error == "timed out after 0.05 s"
    bad_info = await conductor.client.get_execution(bad_id)
    assert bad_info is not None
    assert bad_info.attempts == 1
    assert (bad_info.last_error or "").startswith("invalid payload")


async def test_drain_runs_everything_then_returns(conductor: Conductor) -> None:
    seen: list[int] = []

    @conductor.task("count", queue="numbers")
    async def count(ctx: TaskContext, payload: dict[str, int]) -> None:
        await asyncio.sleep(0)
        seen.append(payload["n"])

    await conductor.invoke_many("count", [{"n": n} for n in range(300)])
    orchestrator = Orchestrator(
        conductor, queues=[WorkerConfig("numbers", concurrency=16, flush_batch=50)]
    )
    await asyncio.wait_for(orchestrator.drain(), 30.0)
    assert sorted(seen) == list(range(300))
    stats = {s.queue: s for s in await conductor.client.queue_stats()}
    assert (stats["numbers"].completed, stats["numbers"].pending) == (300, 0)
    assert stats["numbers"].running == 0


async def test_two_queues_in_one_process(
    conductor: Conductor, orchestrators: list[Orchestrator], wait_until: WaitUntil
) -> None:
    @conductor.task("mail", queue="mail")
    async def mail(ctx: TaskContext, payload: Any) -> str:
        return ctx.queue

    @conductor.task("report", queue="reports")
    def report(ctx: TaskContext, payload: Any) -> str:
        return ctx.queue

    orchestrator = Orchestrator(conductor, concurrency=2)
    orchestrators.append(orchestrator)
    await orchestrator.start()
    assert sorted(w.queue for w in orchestrator.workers) == ["mail", "reports"]
    ids = [await conductor.invoke("mail", {}), await conductor.invoke("report", {})]
    await wait_until(lambda: _all_done(conductor, ids))
    results = [await conductor.client.get_execution(i) for i in ids]
    assert [r.result for r in results if r is not None] == ["mail", "reports"]


async def test_a_task_invoked_into_another_queue_runs_there(
    conductor: Conductor, orchestrators: list[Orchestrator], wait_until: WaitUntil
) -> None:
    @conductor.task("mail", queue="mail")
    async def mail(ctx: TaskContext, payload: Any) -> str:
        return ctx.queue

    @conductor.task("report", queue="reports")
    async def report(ctx: TaskContext, payload: Any) -> str:
        return ctx.queue

    orchestrator = Orchestrator(conductor, queues=["mail"])
    orchestrators.append(orchestrator)
    await orchestrator.start()
    execution_id = await conductor.invoke("report", {}, queue="mail")
    await wait_until(lambda: _all_done(conductor, [execution_id]))
    info = await conductor.client.get_execution(execution_id)
    assert info is not None
    assert info.result == "mail"
