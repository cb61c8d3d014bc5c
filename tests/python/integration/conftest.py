"""Fixtures shared by the integration modules that run a real orchestrator in-process.

`conductor`: a Conductor on a fresh database; `start()`: start an orchestrator on it that
polls quickly and has its LISTEN connection up, stopped at the end of the test. A module that
needs other settings defines its own fixture of the same name, which takes precedence.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pgconductor import Conductor
from pgconductor.orchestrator import Orchestrator


@pytest.fixture
async def conductor(fresh_db_url: str) -> AsyncIterator[Conductor]:
    """A Conductor on a database of its own, closed after the test."""
    conductor = Conductor(fresh_db_url)
    yield conductor
    await conductor.close()


@pytest.fixture
async def start(conductor: Conductor) -> AsyncIterator[Callable[[], Any]]:
    """`await start()` runs an orchestrator (poll 50 ms, LISTEN connected); all stop at the end."""
    started: list[Orchestrator] = []

    async def run() -> Orchestrator:
        orchestrator = Orchestrator(
            conductor, heartbeat_interval=30.0, stale_after=120.0, poll_interval=0.05
        )
        await orchestrator.start()
        assert orchestrator.notifier is not None
        await asyncio.wait_for(orchestrator.notifier.wait_connected(), 5.0)
        started.append(orchestrator)
        return orchestrator

    yield run
    for orchestrator in started:
        await orchestrator.stop()
