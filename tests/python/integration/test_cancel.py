"""Cancel reaches a running handler through NOTIFY, far sooner than the heartbeat (G4)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pgconductor.conductor import Conductor, TaskContext
from pgconductor.orchestrator import Orchestrator

WaitUntil = Callable[..., Any]
HEARTBEAT = 30.0  # cancel must not wait for it


@pytest.fixture
async def conductor(fresh_db_url: str) -> AsyncIterator[Conductor]:
    conductor = Conductor(fresh_db_url)
    yield conductor
    await conductor.close()


async def _state(conductor: Conductor, execution_id: Any) -> str | None:
    info = await conductor.client.get_execution(execution_id)
    return None if info is None else info.state


async def _running_orchestrator(conductor: Conductor) -> Orchestrator:
    orchestrator = Orchestrator(
        conductor,
        heartbeat_interval=HEARTBEAT,
        stale_after=4 * HEARTBEAT,
        poll_interval=0.05,
    )
    await orchestrator.start()
    assert orchestrator.notifier is not None
    await asyncio.wait_for(orchestrator.notifier.wait_connected(), 5.0)
    return orchestrator


async def test_cancel_stops_a_running_async_handler_promptly(
    conductor: Conductor, wait_until: WaitUntil
) -> None:
    started = asyncio.Event()
    stopped = asyncio.Event()

    @conductor.task("forever", max_attempts=5)
    async def forever(ctx: TaskContext, payload: Any) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.set()

    orchestrator = await _running_orchestrator(conductor)
    try:
        execution_id = await conductor.invoke("forever", {})
        await asyncio.wait_for(started.wait(), 5.0)
        asked = time.monotonic()
        assert await conductor.client.cancel(execution_id, "no longer needed") == "cancelling"
        await asyncio.wait_for(stopped.wait(), 5.0)
        assert time.monotonic() - asked < 2.0  # well under the 30 s heartbeat
        await wait_until(lambda: _is(conductor, execution_id, "cancelled"), timeout=5.0)
        info = await conductor.client.get_execution(execution_id)
        assert info is not None
        assert info.attempts == 1
        assert orchestrator.signals_received[-1].kind == "cancel"
    finally:
        await orchestrator.stop()


async def _is(conductor: Conductor, execution_id: Any, state: str) -> bool:
    return await _state(conductor, execution_id) == state


async def test_cancel_reaches_a_sync_handler_through_its_context(
    conductor: Conductor, wait_until: WaitUntil
) -> None:
    entered = threading.Event()

    @conductor.task("polling")
    def polling(ctx: TaskContext, payload: Any) -> None:
        entered.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if ctx.is_cancelled():
                raise RuntimeError("stopped: cancelled")
            time.sleep(0.005)

    orchestrator = await _running_orchestrator(conductor)
    try:
        execution_id = await conductor.invoke("polling", {})
        await asyncio.to_thread(entered.wait, 5.0)
        assert await conductor.client.cancel(execution_id) == "cancelling"
        await wait_until(lambda: _is(conductor, execution_id, "cancelled"), timeout=5.0)
    finally:
        await orchestrator.stop()


async def test_cancel_of_pending_work_never_runs_it(
    conductor: Conductor, wait_until: WaitUntil
) -> None:
    ran: list[Any] = []

    @conductor.task("later")
    async def later(ctx: TaskContext, payload: Any) -> None:
        ran.append(payload)

    execution_id = await conductor.invoke("later", {"n": 1}, delay=3600)
    assert await conductor.client.cancel(execution_id) == "cancelled"
    orchestrator = await _running_orchestrator(conductor)
    try:
        marker = await conductor.invoke("later", {"n": 2})
        await wait_until(lambda: _is(conductor, marker, "completed"))
        assert ran == [{"n": 2}]
        assert await _state(conductor, execution_id) == "cancelled"
    finally:
        await orchestrator.stop()
