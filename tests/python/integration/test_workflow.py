"""Durable workflows through the Python API on a real database: steps, sleeps, children, events.

Each test runs an in-process orchestrator and waits with `conductor.wait(id)`; ledgers (lists
the handlers append to) show which step bodies really ran.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from pgconductor.conductor import Conductor, TaskContext
from pgconductor.db import to_sqlalchemy_url
from pgconductor.errors import InvalidInput, NotFound
from pgconductor.orchestrator import Orchestrator
from pgconductor.workflow import ChildFailed


@pytest.fixture
async def conductor(fresh_db_url: str) -> AsyncIterator[Conductor]:
    conductor = Conductor(fresh_db_url)
    yield conductor
    await conductor.close()


@pytest.fixture
async def start(conductor: Conductor) -> AsyncIterator[Any]:
    started: list[Orchestrator] = []

    async def run() -> Orchestrator:
        orchestrator = Orchestrator(
            conductor, heartbeat_interval=1.0, stale_after=5.0, poll_interval=0.1
        )
        await orchestrator.start()
        started.append(orchestrator)
        return orchestrator

    yield run
    for orchestrator in started:
        await orchestrator.stop()


async def test_steps_run_once_across_a_sleep_and_the_steps_are_readable(
    conductor: Conductor, start: Any
) -> None:
    ledger: list[str] = []

    async def charge(amount: int) -> dict[str, int]:
        ledger.append("charge")
        return {"charged": amount}

    def receipt(charged: dict[str, int]) -> str:
        ledger.append("receipt")
        return f"receipt for {charged['charged']}"

    @conductor.task("checkout")
    async def checkout(ctx: TaskContext, payload: Any) -> Any:
        charged = await ctx.step("charge", charge, payload["amount"])
        await ctx.sleep("cool-down", 0.3)
        return await ctx.step("receipt", receipt, charged)

    await start()
    execution_id = await conductor.invoke("checkout", {"amount": 12})
    info = await conductor.wait(execution_id, timeout=30)
    assert info.state == "completed"
    assert info.result == "receipt for 12"
    assert ledger == ["charge", "receipt"]  # the replay after the sleep ran neither again
    assert info.attempts <= 1  # the suspension spent no attempt
    assert [(s["key"], s["seq"], s["kind"], s["state"]) for s in info.steps] == [
        ("charge", 0, "step", "done"),
        ("cool-down", 1, "sleep", "done"),
        ("receipt", 2, "step", "done"),
    ]
    assert info.steps[0]["result"] == {"charged": 12}
    got = await conductor.get(execution_id)
    assert got is not None
    assert got.steps == info.steps


async def test_keys_under_gather_and_repeated_names(conductor: Conductor, start: Any) -> None:
    @conductor.task("fan-steps")
    async def fan(ctx: TaskContext, payload: Any) -> Any:
        values = await asyncio.gather(*(ctx.step("part", lambda n=n: n * n) for n in range(5)))
        await ctx.sleep("nap", 0)
        return values

    await start()
    execution_id = await conductor.invoke("fan-steps")
    info = await conductor.wait(execution_id, timeout=30)
    assert info.result == [0, 1, 4, 9, 16]
    keys = {s["key"]: s["result"] for s in info.steps if s["kind"] == "step"}
    assert keys == {"part": 0, "part#2": 1, "part#3": 4, "part#4": 9, "part#5": 16}


async def test_children_fan_out_and_join_and_a_failed_child_raises(
    conductor: Conductor, start: Any
) -> None:
    @conductor.task("square")
    async def square(ctx: TaskContext, payload: Any) -> int:
        return int(payload["n"]) ** 2

    @conductor.task("broken-child", max_attempts=1)
    async def broken(ctx: TaskContext, payload: Any) -> None:
        raise RuntimeError("child exploded")

    @conductor.task("parent")
    async def parent(ctx: TaskContext, payload: Any) -> Any:
        a, b = await ctx.gather(
            ctx.invoke("a", square, {"n": 2}), ctx.invoke("b", "square", {"n": 3})
        )
        many = await ctx.invoke_many("many", square, [{"n": n} for n in range(50)])
        try:
            await ctx.invoke("bad", broken, {})
        except ChildFailed as exc:
            failed = [exc.state, "child exploded" in (exc.error or ""), exc.child_id is not None]
        return {"a": a, "b": b, "sum": sum(many), "failed": failed}

    await start()
    execution_id = await conductor.invoke("parent")
    info = await conductor.wait(execution_id, timeout=60)
    assert info.state == "completed", info.last_error
    assert info.result == {
        "a": 4,
        "b": 9,
        "sum": sum(n * n for n in range(50)),
        "failed": ["failed", True, True],
    }
    children = [s for s in info.steps if s["kind"] == "child"]
    assert len(children) == 53
    child = await conductor.get(uuid.UUID(children[0]["child_id"]))
    assert child is not None
    assert child.parent_id == execution_id


async def test_an_event_wakes_its_waiter_and_a_rolled_back_emit_does_not(
    conductor: Conductor, start: Any, fresh_db_url: str
) -> None:
    @conductor.task("await-shipment")
    async def shipment(ctx: TaskContext, payload: Any) -> Any:
        shipped = await ctx.wait_for_event(
            "shipped", "order.shipped", match={"order_id": payload["order"]}, timeout=60
        )
        late = await ctx.wait_for_event("never", "order.lost", timeout=0.2)
        return {"shipped": shipped, "late": late}

    await start()
    execution_id = await conductor.invoke("await-shipment", {"order": 7})

    async def parked() -> bool:
        info = await conductor.get(execution_id)
        return info is not None and info.state == "waiting_for_event"

    for _ in range(200):
        if await parked():
            break
        await asyncio.sleep(0.05)
    assert await parked()

    engine = create_async_engine(to_sqlalchemy_url(fresh_db_url))
    try:
        async with engine.connect() as conn:
            await conn.begin()
            await conductor.emit("order.shipped", {"order_id": 7, "carrier": "x"}, conn=conn)
            await conn.rollback()
    finally:
        await engine.dispose()
    await conductor.emit("order.shipped", {"order_id": 8})  # another order
    await asyncio.sleep(0.3)
    assert await parked()

    await conductor.emit("order.shipped", {"order_id": 7, "carrier": "ups"})
    info = await conductor.wait(execution_id, timeout=30)
    assert info.result == {"shipped": {"order_id": 7, "carrier": "ups"}, "late": None}


async def test_a_replay_meeting_another_step_fails_for_good(
    conductor: Conductor, start: Any
) -> None:
    runs: list[int] = []

    @conductor.task("drifting")
    async def drifting(ctx: TaskContext, payload: Any) -> None:
        runs.append(1)
        await ctx.step("first" if len(runs) == 1 else "renamed", lambda: 1)
        await ctx.sleep("nap", 0)

    await start()
    execution_id = await conductor.invoke("drifting")
    info = await conductor.wait(execution_id, timeout=30)
    assert info.state == "failed"
    assert "'renamed'" in (info.last_error or "")
    assert "'first'" in (info.last_error or "")
    assert len(runs) == 2  # fatal: no retry


async def test_wait_returns_an_ended_execution_and_times_out_or_refuses(
    conductor: Conductor,
) -> None:
    @conductor.task("idle")
    async def idle(ctx: TaskContext, payload: Any) -> None:
        return None

    execution_id = await conductor.invoke("idle")
    with pytest.raises(TimeoutError, match=r"did not end within 0\.2 s"):
        await conductor.wait(execution_id, timeout=dt.timedelta(seconds=0.2))
    await conductor.client.cancel(execution_id)
    assert (await conductor.wait(execution_id, timeout=5)).state == "cancelled"
    with pytest.raises(NotFound):
        await conductor.wait(uuid.uuid4(), timeout=5)
    with pytest.raises(InvalidInput, match="event name"):
        await conductor.emit("", {})
