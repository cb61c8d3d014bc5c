"""Orchestrator with the fake client: start checks, signals, stop and release (G25)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fakes import FakeDatabaseClient
from pgconductor.conductor import Conductor, TaskContext
from pgconductor.errors import (
    ExtensionMissing,
    InvalidInput,
    PgConductorError,
    TransientError,
    VersionMismatch,
)
from pgconductor.notifier import SIGNAL_CHANNEL
from pgconductor.orchestrator import Orchestrator, WorkerConfig
from pgconductor.schema import PACKAGE_VERSION
from pgconductor.types import Signal, TaskSpec
from pgconductor.worker import Worker

from .engine_helpers import Backlog, claimed, flushed

WaitUntil = Callable[..., Any]


@pytest.fixture
def fake() -> FakeDatabaseClient:
    return FakeDatabaseClient()


@pytest.fixture
def conductor(fake: FakeDatabaseClient) -> Conductor:
    conductor = Conductor(fake)

    @conductor.task("a")
    async def a(ctx: TaskContext, payload: Any) -> str:
        await asyncio.Event().wait() if payload.get("block") else None
        return "a"

    @conductor.task("b", queue="other")
    async def b(ctx: TaskContext, payload: Any) -> None:
        return None

    return conductor


@pytest.fixture
async def make(conductor: Conductor) -> AsyncIterator[Callable[..., Orchestrator]]:
    made: list[Orchestrator] = []

    def build(**options: Any) -> Orchestrator:
        options.setdefault("heartbeat_interval", 60.0)
        options.setdefault("poll_interval", 60.0)
        options.setdefault("stale_after", 7200.0)
        orchestrator = Orchestrator(conductor, **options)
        made.append(orchestrator)
        return orchestrator

    yield build
    for orchestrator in made:
        orchestrator.force()
        await orchestrator.stop()


def methods(fake: FakeDatabaseClient) -> list[str]:
    return [name for name, _, _ in fake.calls]


async def test_start_checks_registers_beats_then_runs(
    fake: FakeDatabaseClient, make: Callable[..., Orchestrator]
) -> None:
    orchestrator = make(heartbeat_interval=5.0, stale_after=30)
    await orchestrator.start()
    assert orchestrator.started
    names = methods(fake)
    assert names[:4] == [
        "extension_version",
        "declare_task",
        "declare_task",
        "heartbeat",
    ]
    assert sorted(w.queue for w in orchestrator.workers) == ["default", "other"]
    await fake.wait_for_call("get_executions", 2)
    (oid, version, stale_after, info, held), _ = fake.calls_to("heartbeat")[0]
    assert held == []  # nothing claimed yet: every lease it holds may be given back
    assert oid == orchestrator.id
    assert version == PACKAGE_VERSION
    assert stale_after.total_seconds() == 30
    assert info["queues"] == {
        "default": {"concurrency": 100, "running": 0, "tasks": ["a", "b"]},
        "other": {"concurrency": 100, "running": 0, "tasks": ["a", "b"]},
    }
    assert info["pid"] == os.getpid()


async def test_version_mismatch_refuses_to_start(
    make: Callable[..., Orchestrator],
) -> None:
    fake = FakeDatabaseClient(version="9.9.9")
    conductor = Conductor(fake)
    conductor.task("a")(lambda ctx, payload: None)
    orchestrator = Orchestrator(conductor)
    with pytest.raises(VersionMismatch, match=r"9\.9\.9 is installed") as raised:
        await orchestrator.start()
    assert raised.value.hint is not None
    assert "pip install --upgrade" in raised.value.hint
    assert not orchestrator.started
    assert methods(fake) == ["extension_version"]  # nothing registered, nothing claimed


async def test_missing_extension_refuses_to_start() -> None:
    conductor = Conductor(FakeDatabaseClient(version=None))
    conductor.task("a")(lambda ctx, payload: None)
    with pytest.raises(ExtensionMissing):
        await Orchestrator(conductor).start()


async def test_failed_start_raises_and_cleans_up(
    fake: FakeDatabaseClient,
    make: Callable[..., Orchestrator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """G25: a worker that cannot start makes start() raise instead of hanging."""
    original = Worker._on_start

    async def failing_start(self: Worker) -> None:
        if self.queue == "other":
            raise RuntimeError("worker cannot start")
        await original(self)

    monkeypatch.setattr(Worker, "_on_start", failing_start)
    orchestrator = make()
    with pytest.raises(RuntimeError, match="worker cannot start"):
        await asyncio.wait_for(orchestrator.start(), 5.0)
    assert not orchestrator.started
    assert not any(w.started for w in orchestrator.workers)
    assert fake.call_count("release_orchestrator") == 1


async def test_start_is_bounded_by_start_timeout(
    fake: FakeDatabaseClient, make: Callable[..., Orchestrator]
) -> None:
    async def hanging(*args: Any) -> list[Signal]:
        await asyncio.Event().wait()
        return []

    fake.responses["heartbeat"] = hanging
    orchestrator = make(start_timeout=0.05)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(orchestrator.start(), 5.0)


async def test_heartbeat_repeats_and_survives_errors(
    fake: FakeDatabaseClient,
    make: Callable[..., Orchestrator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    orchestrator = make(heartbeat_interval=0.01)
    await orchestrator.start()
    fake.simulate_error("heartbeat", TransientError("db restarting"), times=2)
    with caplog.at_level(logging.WARNING, logger="pgconductor.orchestrator"):
        await fake.wait_for_call("heartbeat", 5)
    assert any("heartbeat failed" in r.getMessage() for r in caplog.records)


async def test_signal_notification_beats_at_once(
    fake: FakeDatabaseClient, make: Callable[..., Orchestrator]
) -> None:
    orchestrator = make(heartbeat_interval=3600.0)  # only the NOTIFY can trigger a beat
    await orchestrator.start()
    assert orchestrator.notifier is not None
    orchestrator.notifier.dispatch(SIGNAL_CHANNEL, str(orchestrator.id))
    await fake.wait_for_call("heartbeat", 2, timeout=2.0)


async def test_cancel_and_lease_lost_signals_reach_the_handler(
    fake: FakeDatabaseClient, make: Callable[..., Orchestrator], wait_until: WaitUntil
) -> None:
    to_cancel, to_lose = claimed("a", {"block": True}), claimed("a", {"block": True})
    backlog = Backlog([to_cancel, to_lose])  # one backlog: a claim never returns a row twice
    fake.responses["get_executions"] = lambda oid, queue, keys, n: (
        backlog(oid, queue, keys, n) if queue == "default" else []
    )
    orchestrator = make()
    await orchestrator.start()
    default = next(w for w in orchestrator.workers if w.queue == "default")
    await wait_until(lambda: default.in_flight == 2)
    fake.responses["heartbeat"] = [
        Signal("cancel", to_cancel.id),
        Signal("lease_lost", to_lose.id),
        Signal("cancel", uuid.uuid4()),  # finished meanwhile: nothing to do
    ]
    orchestrator.beat_now()
    await wait_until(lambda: default.in_flight == 0)
    await wait_until(lambda: len(flushed(fake)) == 1)
    (result,) = flushed(fake)
    assert (result.id, result.error) == (to_cancel.id, "cancelled")


async def test_shutdown_signal_stops_an_unsupervised_orchestrator(
    fake: FakeDatabaseClient, make: Callable[..., Orchestrator], wait_until: WaitUntil
) -> None:
    orchestrator = make()
    await orchestrator.start()
    orchestrator.dispatch_signal(Signal("shutdown", None))
    await wait_until(lambda: not orchestrator.started and orchestrator.state.value == "stopped")
    assert fake.call_count("release_orchestrator") == 1


async def test_shutdown_signal_ends_run_until_stopped(
    fake: FakeDatabaseClient, make: Callable[..., Orchestrator]
) -> None:
    fake.responses["heartbeat"] = lambda *args: (
        [Signal("shutdown", None)] if fake.call_count("heartbeat") > 1 else []
    )
    orchestrator = make(heartbeat_interval=0.01)
    await asyncio.wait_for(orchestrator.run_until_stopped(), 5.0)
    assert [s.kind for s in orchestrator.signals_received] == ["shutdown"]
    assert fake.call_count("release_orchestrator") == 1


async def test_unknown_signal_is_logged(
    make: Callable[..., Orchestrator], caplog: pytest.LogCaptureFixture
) -> None:
    orchestrator = make()
    with caplog.at_level(logging.WARNING, logger="pgconductor.orchestrator"):
        orchestrator.dispatch_signal(Signal("dance", None))
    assert any("unknown signal" in r.getMessage() for r in caplog.records)


async def test_stop_is_idempotent_and_releases_once(
    fake: FakeDatabaseClient, make: Callable[..., Orchestrator]
) -> None:
    orchestrator = make()
    await orchestrator.stop()  # before start: nothing
    assert fake.calls == []
    await orchestrator.start()
    await asyncio.gather(orchestrator.stop(), orchestrator.stop())
    await orchestrator.stop()
    assert fake.call_count("release_orchestrator") == 1
    assert all(not w.started for w in orchestrator.workers)


async def test_release_failure_is_logged_not_raised(
    fake: FakeDatabaseClient,
    make: Callable[..., Orchestrator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.simulate_error("release_orchestrator", TransientError("gone"))
    orchestrator = make()
    await orchestrator.start()
    with caplog.at_level(logging.WARNING, logger="pgconductor.orchestrator"):
        await orchestrator.stop()
    assert any("release failed" in r.getMessage() for r in caplog.records)


async def test_abandoned_handlers_keep_their_leases_at_release(
    fake: FakeDatabaseClient,
    make: Callable[..., Orchestrator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    orchestrator = make()
    await orchestrator.start()
    stuck = uuid.uuid4()
    monkeypatch.setattr(Worker, "abandoned_ids", property(lambda self: {stuck}))
    await orchestrator.stop()
    [((oid, keep), _)] = fake.calls_to("release_orchestrator")
    assert (oid, keep) == (orchestrator.id, [stuck])


async def test_heartbeat_lists_every_lease_the_workers_hold(
    fake: FakeDatabaseClient,
    make: Callable[..., Orchestrator],
    monkeypatch: pytest.MonkeyPatch,
    wait_until: WaitUntil,
) -> None:
    orchestrator = make()
    await orchestrator.start()
    held = {uuid.uuid4(), uuid.uuid4()}
    monkeypatch.setattr(Worker, "held", lambda self: held)
    orchestrator.beat_now()
    await wait_until(lambda: fake.call_count("heartbeat") >= 2)
    assert fake.calls_to("heartbeat")[-1][0][4] == sorted(held)
    # A claim sent before that beat settled and still unanswered: give back nothing.
    worker = orchestrator.workers[0]
    monkeypatch.setattr(worker, "fetch_sent_at", orchestrator._beat_settled_at - 1.0)
    beats = fake.call_count("heartbeat")
    orchestrator.beat_now()
    await wait_until(lambda: fake.call_count("heartbeat") > beats)
    assert fake.calls_to("heartbeat")[-1][0][4] is None
    # One sent after it: its rows are newer than the beat, so the list goes out again.
    monkeypatch.setattr(worker, "fetch_sent_at", orchestrator._beat_settled_at + 1.0)
    beats = fake.call_count("heartbeat")
    orchestrator.beat_now()
    await wait_until(lambda: fake.call_count("heartbeat") > beats)
    assert fake.calls_to("heartbeat")[-1][0][4] == sorted(held)
    await orchestrator.stop()


async def test_os_signals_stop_gracefully_then_force(
    fake: FakeDatabaseClient, make: Callable[..., Orchestrator], wait_until: WaitUntil
) -> None:
    fake.responses["get_executions"] = lambda oid, queue, keys, n: (
        Backlog([claimed("a", {"block": True})])(oid, queue, keys, n)
        if queue == "default" and fake.call_count("get_executions") < 3
        else []
    )
    orchestrator = make(grace_period=3600, abort_grace=3600)
    serving = asyncio.ensure_future(orchestrator.serve())
    await wait_until(lambda: orchestrator.started and orchestrator.workers[0].in_flight == 1)
    os.kill(os.getpid(), signal.SIGTERM)
    await wait_until(lambda: orchestrator.state.value == "stopping")
    assert not serving.done()  # waiting for the handler's grace period
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.wait_for(serving, 10.0)
    assert [r.status.value for r in flushed(fake)] == ["released"]


async def test_drain_runs_every_queue_dry(
    fake: FakeDatabaseClient, make: Callable[..., Orchestrator]
) -> None:
    backlogs = {
        "default": Backlog([claimed("a")]),
        "other": Backlog([claimed("b")] * 1),
    }
    fake.responses["get_executions"] = lambda oid, q, keys, n: backlogs[q](oid, q, keys, n)
    orchestrator = make()
    await asyncio.wait_for(orchestrator.drain(), 10.0)
    assert len(flushed(fake)) == 2
    assert not orchestrator.started


async def test_worker_configs_override_defaults(
    make: Callable[..., Orchestrator],
) -> None:
    orchestrator = make(
        queues=[WorkerConfig("default", concurrency=3, fetch_batch=2)],
        concurrency=7,
        flush_batch=9,
    )
    await orchestrator.start()
    (worker,) = orchestrator.workers
    assert (worker.concurrency, worker.fetch_batch, worker.flush_batch) == (3, 2, 9)


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        (["nowhere"], "no task is registered for queue 'nowhere'"),
        (["other", "other"], "listed twice"),
    ],
)
def test_rejects_bad_queue_lists(fake: FakeDatabaseClient, queues: list[str], message: str) -> None:
    conductor = Conductor(fake)
    conductor.task("b", queue="other")(lambda ctx, payload: None)
    with pytest.raises(ValueError, match=message):
        Orchestrator(conductor, queues=queues)


async def test_a_queue_left_to_sql_is_checked_once_declared(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    # Task "a" gives no queue: it may be on "nowhere" until SQL says where it is.
    orchestrator = Orchestrator(conductor, queues=["nowhere"])
    with pytest.raises(ValueError, match="no task is registered for queue 'nowhere'"):
        await orchestrator.start()
    assert not orchestrator.started
    assert fake.call_count("get_executions") == 0


async def test_queues_follow_the_settings_made_in_sql(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make: Callable[..., Orchestrator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def declare(spec: TaskSpec) -> TaskSpec:
        if spec.key != "a":
            return spec
        return dataclasses.replace(spec, queue="mail", backoff_base=dt.timedelta(seconds=2))

    fake.responses["declare_task"] = declare
    orchestrator = make()
    with caplog.at_level(logging.INFO, logger="pgconductor"):
        await orchestrator.start()
    assert sorted(w.queue for w in orchestrator.workers) == ["mail", "other"]
    assert conductor.tasks["a"].spec.queue == "mail"
    (sent,), _ = fake.calls_to("declare_task")[0]
    assert sent.declared == frozenset()  # "a" gave no setting: none is sent
    assert (
        "task a: keeping settings made in SQL (not given in Python): queue=mail, backoff_base=2s"
        in caplog.messages
    )
    assert not any("task b" in m for m in caplog.messages)  # "b" keeps nothing from SQL


async def test_an_extension_without_declare_task_gets_register_task(
    fake: FakeDatabaseClient, conductor: Conductor, make: Callable[..., Orchestrator]
) -> None:
    fake.simulate_error(
        "declare_task", PgConductorError("no such function", sqlstate="42883"), times=1
    )
    await make().start()
    assert methods(fake)[:4] == [
        "extension_version",
        "declare_task",
        "register_task",
        "register_task",
    ]


async def test_other_declare_errors_fail_the_start(
    fake: FakeDatabaseClient, conductor: Conductor, make: Callable[..., Orchestrator]
) -> None:
    fake.simulate_error("declare_task", InvalidInput("bad timezone", sqlstate="22023"))
    orchestrator = make()
    with pytest.raises(InvalidInput, match="bad timezone"):
        await orchestrator.start()
    assert "register_task" not in methods(fake)


def test_rejects_a_conductor_without_tasks() -> None:
    with pytest.raises(ValueError, match="nothing to run"):
        Orchestrator(Conductor(FakeDatabaseClient()))


async def test_a_signal_during_a_hanging_start_gives_up_the_start(
    fake: FakeDatabaseClient, make: Callable[..., Orchestrator], wait_until: WaitUntil
) -> None:
    async def hanging(*args: Any) -> list[Signal]:
        await asyncio.Event().wait()
        return []

    fake.responses["heartbeat"] = hanging
    orchestrator = make()
    serving = asyncio.ensure_future(orchestrator.serve())
    await fake.wait_for_call("heartbeat")
    orchestrator.handle_os_signal(signal.SIGTERM)
    await asyncio.wait_for(serving, 5.0)
    assert orchestrator.state.value == "stopped"


def test_stale_after_must_exceed_the_heartbeat(conductor: Conductor) -> None:
    with pytest.raises(ValueError, match="stale_after must be longer"):
        Orchestrator(conductor, heartbeat_interval=10, stale_after=5)
