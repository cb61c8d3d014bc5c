"""The start/stop contract shared by every engine part (aesthetics §8 principle 10)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from pgconductor import service as service_module
from pgconductor.service import Service, ServiceState


class Probe(Service):
    """Records its hooks; can be told to fail at start."""

    def __init__(self, fail_start: bool = False) -> None:
        super().__init__("probe")
        self.events: list[str] = []
        self.fail_start = fail_start
        self.release_stop = asyncio.Event()
        self.release_stop.set()

    async def _on_start(self) -> None:
        self.events.append("start")
        self.spawn(asyncio.Event().wait(), "idle")
        if self.fail_start:
            raise RuntimeError("cannot start")

    async def _on_stop(self) -> None:
        self.events.append("stop")
        await self.release_stop.wait()


async def test_stop_before_start_is_a_no_op() -> None:
    probe = Probe()
    await probe.stop()
    assert probe.events == []
    assert probe.state is ServiceState.NEW
    await probe.start()
    assert probe.started


async def test_start_twice_starts_once_and_stop_twice_stops_once() -> None:
    probe = Probe()
    await probe.start()
    await probe.start()
    await probe.stop()
    await probe.stop()
    assert probe.events == ["start", "stop"]
    assert probe.state is ServiceState.STOPPED
    assert not probe.started


async def test_concurrent_stops_wait_for_the_same_stop() -> None:
    probe = Probe()
    await probe.start()
    probe.release_stop.clear()
    first = asyncio.ensure_future(probe.stop())
    second = asyncio.ensure_future(probe.stop())
    await asyncio.sleep(0)
    assert not first.done()
    assert not second.done()
    probe.release_stop.set()
    await asyncio.gather(first, second)
    assert probe.events == ["start", "stop"]


async def test_failed_start_cleans_up_and_raises() -> None:
    probe = Probe(fail_start=True)
    with pytest.raises(RuntimeError, match="cannot start"):
        await probe.start()
    assert probe.events == ["start", "stop"]
    assert probe.state is ServiceState.STOPPED
    assert probe._tasks == set()
    with pytest.raises(RuntimeError, match="cannot be started again"):
        await probe.start()


async def test_stop_cancels_background_tasks() -> None:
    probe = Probe()
    await probe.start()
    (task,) = probe._tasks
    await probe.stop()
    assert task.cancelled()


async def test_crashing_background_task_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    probe = Probe()
    await probe.start()

    async def crash() -> None:
        raise ValueError("loop bug")

    with caplog.at_level(logging.ERROR, logger="pgconductor.probe"):
        task = probe.spawn(crash(), "crasher")
        await asyncio.wait({task})
    assert any("crasher crashed" in r.getMessage() for r in caplog.records)
    await probe.stop()


async def test_a_task_that_swallows_cancellation_does_not_hang_stop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(service_module, "CANCEL_WAIT", 0.01)
    monkeypatch.setattr(service_module, "CANCEL_TRIES", 2)
    probe = Probe()
    await probe.start()
    done = asyncio.Event()

    async def stubborn() -> None:
        while not done.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    task = probe.spawn(stubborn(), "stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="pgconductor.probe"):
        await asyncio.wait_for(probe.stop(), 5.0)
    assert any("ignores cancellation" in r.getMessage() for r in caplog.records)
    done.set()
    task.cancel()
    await asyncio.wait({task})
