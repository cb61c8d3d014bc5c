"""Durable workflows through the Python API on a real database: steps, sleeps, children, events.

Each test runs an in-process orchestrator and waits with `conductor.wait(id)`; ledgers (lists
the handlers append to) show which step bodies really ran.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from pgconductor.conductor import Conductor, TaskContext
from pgconductor.db import SqlDatabaseClient, to_sqlalchemy_url
from pgconductor.errors import InvalidInput, NotFound
from pgconductor.orchestrator import Orchestrator
from pgconductor.steps import StepWriter
from pgconductor.workflow import ChildFailed, ChildTimedOut, LeaseLost


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


async def _wait_state(conductor: Conductor, execution_id: uuid.UUID, state: str) -> None:
    for _ in range(300):
        info = await conductor.get(execution_id)
        if info is not None and info.state == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{execution_id} never reached {state}: {info}")


async def test_cancelling_a_parked_parent_ends_it_at_once_and_cancels_its_children(
    conductor: Conductor, start: Any
) -> None:
    child_started = asyncio.Event()

    @conductor.task("forever-child")
    async def forever(ctx: TaskContext, payload: Any) -> None:
        child_started.set()
        await asyncio.sleep(3600)

    @conductor.task("waiting-parent")
    async def waiting(ctx: TaskContext, payload: Any) -> Any:
        return await ctx.invoke("child", forever, {})

    @conductor.task("sleeping")
    async def sleeping(ctx: TaskContext, payload: Any) -> None:
        await ctx.sleep("long", dt.timedelta(hours=1))

    await start()
    sleeper = await conductor.invoke("sleeping")
    parent = await conductor.invoke("waiting-parent")
    await _wait_state(conductor, sleeper, "sleeping")
    await _wait_state(conductor, parent, "waiting_for_children")
    await asyncio.wait_for(child_started.wait(), 10)

    assert await conductor.client.cancel(sleeper, "no longer needed") == "cancelled"
    assert (await conductor.wait(sleeper, timeout=5)).state == "cancelled"
    await conductor.client.cancel(parent, "order withdrawn")
    assert (await conductor.wait(parent, timeout=10)).state == "cancelled"
    info = await conductor.get(parent)
    assert info is not None
    child_id = uuid.UUID(info.steps[0]["child_id"])
    assert (await conductor.wait(child_id, timeout=10)).state == "cancelled"


async def test_a_child_past_the_parents_timeout_raises_child_timed_out(
    conductor: Conductor, start: Any
) -> None:
    @conductor.task("slow-child")
    async def slow(ctx: TaskContext, payload: Any) -> None:
        await asyncio.sleep(3600)

    @conductor.task("impatient")
    async def impatient(ctx: TaskContext, payload: Any) -> Any:
        try:
            await ctx.invoke("slow", slow, {}, timeout=0.5)
        except ChildTimedOut as exc:
            return {"timed_out": exc.state, "child": str(exc.child_id)}
        return "not reached"

    await start()
    execution_id = await conductor.invoke("impatient")
    info = await conductor.wait(execution_id, timeout=30)
    assert info.state == "completed", info.last_error
    assert info.result["timed_out"] == "timed_out"
    child = await conductor.wait(uuid.UUID(info.result["child"]), timeout=10)
    assert child.state == "cancelled"


async def test_a_step_written_after_the_lease_ended_is_refused_and_stops_its_handler(
    conductor: Conductor,
) -> None:
    client = conductor.client
    orchestrator = uuid.uuid4()
    execution_id = await conductor.invoke("fenced.t", {})
    (row,) = await client.get_executions(orchestrator, "default", ["fenced.t"], 1)
    assert row.steps is None
    told: list[uuid.UUID] = []
    writer = StepWriter(client, orchestrator, on_stale=told.append)
    await writer.save(row.id, row.lease, "kept", 0, {"v": 1})
    assert await client.release_orchestrator(orchestrator) == 1  # the lease ends here
    with pytest.raises(LeaseLost):
        await writer.save(row.id, row.lease, "late", 1, {"v": 2})
    assert told == [execution_id]
    await writer.close()
    (again,) = await client.get_executions(uuid.uuid4(), "default", ["fenced.t"], 1)
    assert again.steps == {"kept": {"seq": 0, "kind": "step", "state": "done", "result": {"v": 1}}}


async def test_the_cli_shows_steps_and_children_and_waits(
    conductor: Conductor, start: Any, fresh_db_url: str
) -> None:
    @conductor.task("cli-child")
    async def cli_child(ctx: TaskContext, payload: Any) -> str:
        return "mailed"

    @conductor.task("cli-flow")
    async def cli_flow(ctx: TaskContext, payload: Any) -> Any:
        total = await ctx.step("charge", lambda: 42)
        mailed = await ctx.invoke("email", cli_child, {})
        return {"total": total, "mail": mailed}

    await start()
    execution_id = await conductor.invoke("cli-flow")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pgconductor", *args, "--database-url", fresh_db_url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    waited = await asyncio.to_thread(cli, "wait", str(execution_id), "--timeout", "30")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.splitlines() == [
        f"execution {execution_id} completed",
        '{"mail": "mailed", "total": 42}',
    ]
    shown = await asyncio.to_thread(cli, "show", str(execution_id))
    assert shown.returncode == 0, shown.stderr
    assert "       0  charge  step done  -> 42" in shown.stdout
    assert "       1  email  child done  child " in shown.stdout
    assert "  children: 1 (1 done)" in shown.stdout
    unknown = await asyncio.to_thread(cli, "wait", str(uuid.uuid4()))
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: execution ")
    assert "Traceback" not in unknown.stderr


async def test_on_extension_0_5_plain_tasks_run_and_durable_calls_fail_with_one_line(
    bare_db_url: str,
) -> None:
    conductor = Conductor(bare_db_url)
    client = conductor.client
    assert isinstance(client, SqlDatabaseClient)
    assert await client.install_extension("0.5.0") == "0.5.0"

    @conductor.task("plain-old")
    async def plain(ctx: TaskContext, payload: Any) -> str:
        return "ran"

    @conductor.task("durable-old", max_attempts=1)
    async def durable(ctx: TaskContext, payload: Any) -> Any:
        return await ctx.step("a", lambda: 1)

    orchestrator = Orchestrator(conductor, heartbeat_interval=1.0, stale_after=5.0)
    await orchestrator.start()
    try:
        plain_id = await conductor.invoke("plain-old")
        durable_id = await conductor.invoke("durable-old")
        assert (await conductor.wait(plain_id, timeout=30)).result == "ran"
        failed = await conductor.wait(durable_id, timeout=30)
    finally:
        await orchestrator.stop()
        await conductor.close()
    assert failed.state == "failed"
    assert "need pgconductor extension 0.6.0" in (failed.last_error or "")
    assert failed.steps == []
