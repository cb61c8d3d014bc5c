"""The maintenance service: passes on its clock, counts logged, failures survived, the
service contract, and the orchestrator running it only on extensions of 0.7.0 or later."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fakes import FakeDatabaseClient
from pgconductor.conductor import Conductor, TaskContext
from pgconductor.errors import InvalidState, TransientError
from pgconductor.maintenance import Maintenance
from pgconductor.orchestrator import Orchestrator
from pgconductor.service import ServiceState


class GateClock:
    """A clock whose sleeps end only when the test says so (`tick`), recording each length."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self._gates: asyncio.Queue[None] = asyncio.Queue()
        self.sleeping = asyncio.Event()

    def now(self) -> Any:
        raise AssertionError("the maintenance service reads no wall time")

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.sleeping.set()
        await self._gates.get()

    def tick(self) -> None:
        self.sleeping.clear()
        self._gates.put_nowait(None)


@pytest.fixture
def fake() -> FakeDatabaseClient:
    return FakeDatabaseClient(version="0.7.0")


@pytest.fixture
async def service(
    fake: FakeDatabaseClient,
) -> AsyncIterator[tuple[Maintenance, GateClock]]:
    clock = GateClock()
    made = Maintenance(fake, interval=10, limit=500, clock=clock)
    yield made, clock
    await made.stop()


async def test_a_pass_runs_each_time_the_interval_ends(
    service: tuple[Maintenance, GateClock], fake: FakeDatabaseClient
) -> None:
    maintenance, clock = service
    fake.responses["maintain"] = {"expired": 1, "pruned": 3}
    await maintenance.start()
    await clock.sleeping.wait()
    assert fake.call_count("maintain") == 0  # the first pass waits one interval too
    for passes in (1, 2):
        clock.tick()
        await fake.wait_for_call("maintain", passes)
    assert fake.calls_to("maintain")[0] == ((500,), {})
    await clock.sleeping.wait()
    assert maintenance.passes == 2
    assert maintenance.last == {"expired": 1, "pruned": 3}
    assert len(clock.sleeps) == 3
    assert all(8.0 <= s <= 12.0 for s in clock.sleeps)  # 10 s, jittered by up to 20 %
    assert len(set(clock.sleeps)) > 1 or clock.sleeps[0] != 10.0  # jittered indeed


async def test_counts_are_logged_at_debug(
    service: tuple[Maintenance, GateClock],
    fake: FakeDatabaseClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    maintenance, _ = service
    caplog.set_level(logging.DEBUG, logger="pgconductor.maintenance")
    fake.responses["maintain"] = {"pruned": 3, "expired": 0}
    assert await maintenance.run_once() == {"pruned": 3, "expired": 0}
    fake.responses["maintain"] = {"skipped": True}
    await maintenance.run_once()
    fake.responses["maintain"] = {}
    await maintenance.run_once()
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [
        (logging.DEBUG, "maintenance: expired 0, pruned 3"),
        (logging.DEBUG, "maintenance: skipped (another pass is running)"),
        (logging.DEBUG, "maintenance: nothing to do"),
    ]


async def test_a_failed_pass_is_a_warning_and_the_next_one_runs(
    service: tuple[Maintenance, GateClock],
    fake: FakeDatabaseClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    maintenance, clock = service
    fake.simulate_error("maintain", TransientError("server closed", sqlstate="57P01"), times=1)
    await maintenance.start()
    clock.tick()
    await fake.wait_for_call("maintain", 1)
    await clock.sleeping.wait()
    assert maintenance.failures == 1
    assert maintenance.passes == 0
    assert maintenance.started  # still running
    clock.tick()
    await fake.wait_for_call("maintain", 2)
    await clock.sleeping.wait()
    assert maintenance.passes == 1
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith("maintenance: pass failed (next in ~10s): ")
    assert "server closed" in warning.getMessage()


async def test_stop_ends_the_loop_and_follows_the_service_contract(
    service: tuple[Maintenance, GateClock],
) -> None:
    maintenance, clock = service
    await maintenance.stop()  # fine before start
    assert maintenance.state is ServiceState.NEW
    await maintenance.start()
    await maintenance.start()  # idempotent
    await clock.sleeping.wait()
    await asyncio.gather(maintenance.stop(), maintenance.stop())
    assert maintenance.state is ServiceState.STOPPED
    assert not maintenance._tasks
    with pytest.raises(RuntimeError, match="cannot be started again"):
        await maintenance.start()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"interval": 0}, "interval must be longer than zero"),
        ({"limit": 0}, "at least 1"),
    ],
)
def test_bad_settings_are_refused(
    fake: FakeDatabaseClient, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Maintenance(fake, **options)


# -- in the orchestrator ----------------------------------------------------------------


def conductor_on(fake: FakeDatabaseClient) -> Conductor:
    conductor = Conductor(fake)

    @conductor.task("a")
    async def a(ctx: TaskContext, payload: Any) -> None:
        return None

    return conductor


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Orchestrator]]:
    made: list[Orchestrator] = []

    def build(fake: FakeDatabaseClient, **options: Any) -> Orchestrator:
        options.setdefault("heartbeat_interval", 60.0)
        options.setdefault("poll_interval", 60.0)
        options.setdefault("stale_after", 7200.0)
        orchestrator = Orchestrator(conductor_on(fake), use_listen=False, **options)
        made.append(orchestrator)
        return orchestrator

    yield build
    for orchestrator in made:
        await orchestrator.stop()


async def test_the_orchestrator_runs_maintenance_on_0_7_0(
    make: Callable[..., Orchestrator],
) -> None:
    fake = FakeDatabaseClient(version="0.7.0")
    orchestrator = make(fake, maintenance_interval=0.01)
    await orchestrator.start()
    assert orchestrator.maintenance is not None
    assert orchestrator.maintenance.started
    assert orchestrator.maintenance.clock is orchestrator.clock
    await fake.wait_for_call("maintain", 2)
    await orchestrator.stop()
    assert orchestrator.maintenance.state is ServiceState.STOPPED
    # stopped before the release: no pass after it
    names = [name for name, _, _ in fake.calls]
    assert "maintain" not in names[names.index("release_orchestrator") :]


@pytest.mark.parametrize(
    ("version", "interval"), [("0.6.1", 0.01), ("0.4.0", 0.01), ("0.7.0", None)]
)
async def test_no_maintenance_before_0_7_0_or_when_disabled(
    make: Callable[..., Orchestrator], version: str, interval: float | None
) -> None:
    fake = FakeDatabaseClient(version=version)
    orchestrator = make(fake, maintenance_interval=interval)
    await orchestrator.start()
    assert orchestrator.maintenance is None
    await orchestrator.stop()
    assert fake.call_count("maintain") == 0


def test_the_orchestrator_refuses_a_zero_interval() -> None:
    with pytest.raises(ValueError, match="maintenance_interval must be longer than zero"):
        Orchestrator(conductor_on(FakeDatabaseClient()), maintenance_interval=0)


async def test_task_limits_on_an_older_extension_refuse_the_start(
    make: Callable[..., Orchestrator],
) -> None:
    fake = FakeDatabaseClient(version="0.6.1")
    orchestrator = make(fake)
    orchestrator.conductor.task("limited", max_running=1)(lambda ctx, payload: None)
    with pytest.raises(InvalidState, match=r"needs pgconductor extension 0\.7\.0"):
        await orchestrator.start()
    assert fake.call_count("declare_task") == 0


async def test_a_live_upgrade_to_0_7_0_says_a_restart_brings_maintenance(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeDatabaseClient("0.6.1")
    orchestrator = Orchestrator(
        conductor_on(fake), heartbeat_interval=0.01, poll_interval=60.0, stale_after=60.0
    )
    await orchestrator.start()
    try:
        await fake.wait_for_call("extension_version", 3)  # 0.6.1 lacks flow control: it looks
        with caplog.at_level(logging.WARNING, logger="pgconductor.orchestrator"):
            fake.installed_version = "0.7.0"
            seen = fake.call_count("extension_version")
            await fake.wait_for_call("extension_version", seen + 3)
        assert orchestrator.maintenance is None  # a restart starts it
    finally:
        await orchestrator.stop()
    told = [r.getMessage() for r in caplog.records if "was upgraded" in r.getMessage()]
    assert told == [
        f"orchestrator {orchestrator.id}: the extension was upgraded from 0.6.1 to 0.7.0 while it"
        " ran; restart it to use maintenance and flow-control limits"
    ]
