"""An orchestrator started on an older extension notices a live upgrade (fake client)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from fakes import FakeDatabaseClient
from pgconductor.conductor import Conductor, TaskContext
from pgconductor.errors import TransientError
from pgconductor.orchestrator import Orchestrator


def orchestrator_on(fake: FakeDatabaseClient) -> Orchestrator:
    conductor = Conductor(fake)

    @conductor.task("a")
    async def a(ctx: TaskContext, payload: Any) -> None:
        return None

    return Orchestrator(conductor, heartbeat_interval=0.01, poll_interval=60.0, stale_after=60.0)


async def test_a_live_upgrade_that_brings_a_feature_is_told_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeDatabaseClient("0.5.0")
    orch = orchestrator_on(fake)
    await orch.start()
    try:
        await fake.wait_for_call("extension_version", 3)  # 0.5.0 has no workflows: it looks
        with caplog.at_level(logging.WARNING, logger="pgconductor.orchestrator"):
            fake.simulate_error("extension_version", TransientError("db restarting"), times=1)
            fake.installed_version = "0.6.0"
            seen = fake.call_count("extension_version")
            await fake.wait_for_call("extension_version", seen + 5)
    finally:
        orch.force()
        await orch.stop()
    told = [r.getMessage() for r in caplog.records if "was upgraded" in r.getMessage()]
    assert told == [
        f"orchestrator {orch.id}: the extension was upgraded from 0.5.0 to 0.6.0 while it ran;"
        " restart it to use durable workflows"
    ]


async def test_an_upgrade_that_brings_nothing_it_lacks_is_told_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeDatabaseClient("0.3.0")
    orch = orchestrator_on(fake)
    await orch.start()
    try:
        await fake.wait_for_call("extension_version", 2)
        with caplog.at_level(logging.WARNING, logger="pgconductor.orchestrator"):
            fake.installed_version = "0.3.1"
            seen = fake.call_count("extension_version")
            await fake.wait_for_call("extension_version", seen + 3)
    finally:
        orch.force()
        await orch.stop()
    told = [r.getMessage() for r in caplog.records if "was upgraded" in r.getMessage()]
    assert told == [
        f"orchestrator {orch.id}: the extension was upgraded from 0.3.0 to 0.3.1 while it ran;"
        " restart it to use what the new version adds"
    ]


async def test_an_upgrade_to_0_8_0_names_schedules_and_sources(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeDatabaseClient("0.7.0")  # has everything but the sources: it still looks
    orch = orchestrator_on(fake)
    await orch.start()
    try:
        await fake.wait_for_call("extension_version", 2)
        with caplog.at_level(logging.WARNING, logger="pgconductor.orchestrator"):
            fake.installed_version = "0.8.0"
            seen = fake.call_count("extension_version")
            await fake.wait_for_call("extension_version", seen + 1)
            await fake.wait_for_call("heartbeat", fake.call_count("heartbeat") + 3)
    finally:
        orch.force()
        await orch.stop()
    told = [r.getMessage() for r in caplog.records if "was upgraded" in r.getMessage()]
    assert told == [
        f"orchestrator {orch.id}: the extension was upgraded from 0.7.0 to 0.8.0 while it ran;"
        " restart it to use schedules, event subscriptions and table triggers"
    ]


async def test_an_orchestrator_on_the_newest_features_does_not_look() -> None:
    fake = FakeDatabaseClient("0.8.0")
    orch = orchestrator_on(fake)
    await orch.start()
    try:
        await fake.wait_for_call("heartbeat", 5)
        await asyncio.sleep(0)
    finally:
        orch.force()
        await orch.stop()
    assert fake.call_count("extension_version") == 1  # the check at start only
