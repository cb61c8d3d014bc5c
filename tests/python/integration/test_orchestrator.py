"""Orchestrator against real PostgreSQL: start checks, shutdown signal, recovery, NOTIFY."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pgconductor.conductor import Conductor, TaskContext
from pgconductor.errors import ExtensionMissing
from pgconductor.orchestrator import Orchestrator
from pgconductor.schema import PACKAGE_VERSION
from pgtest import execute

from .worker_process import WorkerProcess, running_count, states

WaitUntil = Callable[..., Any]


@pytest.fixture
async def conductor(fresh_db_url: str) -> AsyncIterator[Conductor]:
    conductor = Conductor(fresh_db_url)

    @conductor.task("nap", max_attempts=3)
    async def nap(ctx: TaskContext, payload: dict[str, Any]) -> str:
        await asyncio.sleep(min(payload.get("seconds", 0), 0.01))  # a quick stand-in
        return f"recovered on attempt {ctx.attempt}"

    yield conductor
    await conductor.close()


async def test_start_refuses_a_database_without_the_extension(bare_db_url: str) -> None:
    conductor = Conductor(bare_db_url)

    @conductor.task("t")
    async def t(ctx: TaskContext, payload: Any) -> None:
        return None

    orchestrator = Orchestrator(conductor)
    try:
        with pytest.raises(ExtensionMissing, match="not installed"):
            await asyncio.wait_for(orchestrator.start(), 30.0)
        assert not orchestrator.started
    finally:
        await orchestrator.stop()
        await conductor.close()


async def test_heartbeat_registers_the_orchestrator(
    conductor: Conductor, fresh_db_url: str
) -> None:
    orchestrator = Orchestrator(conductor, stale_after=12)
    await orchestrator.start()
    try:
        rows = execute(
            fresh_db_url,
            "SELECT version, stale_after, info->'queues' ? 'default' FROM pgconductor.orchestrators"
            " WHERE id = %s",
            orchestrator.id,
        )
        assert len(rows) == 1
        version, stale_after, has_queue = rows[0]
        assert version == PACKAGE_VERSION
        assert stale_after.total_seconds() == 12
        assert has_queue
        tasks = execute(fresh_db_url, "SELECT key, max_attempts FROM pgconductor.tasks")
        assert tasks == [("nap", 3)]
    finally:
        await orchestrator.stop()
    stopped = execute(
        fresh_db_url,
        "SELECT stopped_at IS NOT NULL FROM pgconductor.orchestrators WHERE id = %s",
        orchestrator.id,
    )
    assert stopped == [(True,)]


async def test_shutdown_signal_from_sql_stops_it_promptly(
    conductor: Conductor, wait_until: WaitUntil
) -> None:
    orchestrator = Orchestrator(conductor, heartbeat_interval=30.0, stale_after=300)
    running = asyncio.ensure_future(orchestrator.run_until_stopped())
    await wait_until(lambda: orchestrator.started)
    assert orchestrator.notifier is not None
    await asyncio.wait_for(orchestrator.notifier.wait_connected(), 5.0)
    asked = time.monotonic()
    assert await conductor.client.request_shutdown(orchestrator.id) == 1
    await asyncio.wait_for(running, 10.0)
    assert time.monotonic() - asked < 5.0  # NOTIFY, not the 30 s heartbeat
    assert [s.kind for s in orchestrator.signals_received] == ["shutdown"]


async def test_polling_alone_works_without_listen(
    conductor: Conductor, wait_until: WaitUntil
) -> None:
    orchestrator = Orchestrator(conductor, use_listen=False, poll_interval=0.05)
    await orchestrator.start()
    try:
        assert orchestrator.notifier is not None
        assert not orchestrator.notifier.connected
        execution_id = await conductor.invoke("nap", {"seconds": 0})
        await wait_until(lambda: _completed(conductor, execution_id))
    finally:
        await orchestrator.stop()


async def _completed(conductor: Conductor, execution_id: Any) -> bool:
    info = await conductor.client.get_execution(execution_id)
    return info is not None and info.state == "completed"


async def test_notifier_reconnects_after_its_connection_is_killed(
    conductor: Conductor, fresh_db_url: str, wait_until: WaitUntil
) -> None:
    orchestrator = Orchestrator(
        conductor, poll_interval=60.0, heartbeat_interval=60.0, stale_after=300
    )
    await orchestrator.start()
    try:
        notifier = orchestrator.notifier
        assert notifier is not None
        notifier.reconnect_base = 0.05
        await asyncio.wait_for(notifier.wait_connected(), 5.0)
        execute(
            fresh_db_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'pgconductor-notifier' AND datname = current_database()",
        )
        await wait_until(lambda: notifier.reconnects == 1 and notifier.connected, timeout=10.0)
        execution_id = await conductor.invoke("nap", {"seconds": 0})
        await wait_until(lambda: _completed(conductor, execution_id), timeout=5.0)
    finally:
        await orchestrator.stop()


async def test_killed_workers_executions_are_recovered_by_another(
    conductor: Conductor, fresh_db_url: str, tmp_path: Path, wait_until: WaitUntil
) -> None:
    ids = [await conductor.invoke("nap", {"seconds": 3600}) for _ in range(3)]
    victim = WorkerProcess(
        tmp_path, fresh_db_url, "--stale-after", "1", "--heartbeat-interval", "0.2"
    )
    try:
        await wait_until(lambda: running_count(fresh_db_url) == 3, timeout=20.0)
        victim.signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
    finally:
        victim.kill()
    rescuer = Orchestrator(conductor, heartbeat_interval=0.2, poll_interval=0.1)
    await rescuer.start()
    try:
        await wait_until(lambda: states(fresh_db_url) == {"completed": 3}, timeout=20.0)
    finally:
        await rescuer.stop()
    for execution_id in ids:
        info = await conductor.client.get_execution(execution_id)
        assert info is not None
        assert info.result == "recovered on attempt 2"
