"""Sources at worker start and while it runs, against the fake client: static declarations
upserted then synced (G6), an older extension refused, the schedule tick on its clock, and
`ctx.scheduled_at()` (G7)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import BaseModel

from fakes import FakeDatabaseClient
from pgconductor.conductor import Conductor, TaskContext
from pgconductor.errors import InvalidState, PgConductorError, TransientError
from pgconductor.maintenance import Ticker
from pgconductor.orchestrator import Orchestrator
from pgconductor.service import ServiceState
from pgconductor.sources import EventSource, OccurrenceReader, Removed, declare_sources
from pgconductor.worker import Worker

from .engine_helpers import Backlog, claimed, context, flushed

WHEN = dt.datetime(2030, 1, 1, 2, 30, tzinfo=dt.UTC)


def conductor_on(fake: FakeDatabaseClient) -> Conductor:
    conductor = Conductor(fake)

    @conductor.task(
        "report", cron="30 2 * * *", tz="Europe/Berlin", schedule_payload={"full": True}
    )
    async def report(ctx: TaskContext, payload: Any) -> None:
        return None

    @conductor.task(
        "ship",
        on_event=["order.paid", EventSource("order.retry", priority=2)],
        match={"ok": True},
        fields=["id"],
        on_table="public.orders",
        ops=["insert"],
        columns=["id"],
        when="NEW.id > 0",
        queue="shipping",
    )
    async def ship(ctx: TaskContext, payload: Any) -> None:
        return None

    @conductor.task("plain")
    async def plain(ctx: TaskContext, payload: Any) -> None:
        return None

    return conductor


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Orchestrator]]:
    made: list[Orchestrator] = []

    def build(
        fake: FakeDatabaseClient, conductor: Conductor | None = None, **options: Any
    ) -> Orchestrator:
        options.setdefault("heartbeat_interval", 60.0)
        options.setdefault("poll_interval", 60.0)
        options.setdefault("stale_after", 7200.0)
        options.setdefault("tick_interval", None)
        orchestrator = Orchestrator(conductor or conductor_on(fake), use_listen=False, **options)
        made.append(orchestrator)
        return orchestrator

    yield build
    for orchestrator in made:
        await orchestrator.stop()


async def test_start_upserts_static_sources_then_syncs_them(
    make: Callable[..., Orchestrator],
) -> None:
    fake = FakeDatabaseClient(version="0.8.0")
    await make(fake).start()
    names = [name for name, _, _ in fake.calls]
    last_declare = max(i for i, n in enumerate(names) if n == "declare_task")
    source_calls = [n for n in names if n.startswith(("schedule", "subscribe", "sync_static"))]
    assert names.index("schedule") > last_declare  # the tasks (and their queues) come first
    assert source_calls == [
        "schedule",
        "subscribe",
        "subscribe",
        "subscribe_table",
        "sync_static_schedules",
        "sync_static_subscriptions",
        "sync_static_table_subscriptions",
    ]
    assert fake.calls_to("schedule") == [
        (
            ("report", "report", "30 2 * * *"),
            {
                "payload": {"full": True},
                "tz": "Europe/Berlin",
                "queue": None,
                "missed": "skip",
                "overlap": "allow",
                "priority": 0,
                "static": True,
                "catch_up_max": 100,
            },
        )
    ]
    paid, retry = fake.calls_to("subscribe")
    assert paid == (
        ("ship", "order.paid"),
        {"match": {"ok": True}, "fields": ["id"], "queue": None, "static": True, "priority": 0},
    )
    assert retry[1] == {"match": None, "fields": None, "queue": None, "static": True, "priority": 2}
    assert fake.calls_to("subscribe_table") == [
        (
            ("ship", "public.orders"),
            {
                "ops": ["insert"],
                "columns": ["id"],
                "when": "NEW.id > 0",
                "queue": None,
                "static": True,
            },
        )
    ]
    keys = ["report", "ship", "plain"]
    assert fake.calls_to("sync_static_schedules") == [((["report"], keys), {})]
    assert fake.calls_to("sync_static_subscriptions") == [
        ((keys, ["ship", "ship"], ["order.paid", "order.retry"]), {})
    ]
    assert fake.calls_to("sync_static_table_subscriptions") == [
        ((keys, ["ship"], ["public.orders"]), {})
    ]


async def test_a_conductor_declaring_nothing_still_removes_what_it_dropped(
    make: Callable[..., Orchestrator], caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeDatabaseClient(version="0.8.0")
    conductor = Conductor(fake)
    conductor.task("plain")(lambda ctx, payload: None)
    fake.responses["sync_static_schedules"] = 2
    fake.responses["sync_static_table_subscriptions"] = 1
    with caplog.at_level(logging.INFO, logger="pgconductor.orchestrator"):
        await make(fake, conductor).start()
    assert fake.calls_to("sync_static_schedules") == [(([], ["plain"]), {})]
    assert fake.calls_to("sync_static_subscriptions") == [((["plain"], [], []), {})]
    assert fake.call_count("schedule") == 0
    told = [r.getMessage() for r in caplog.records if r.getMessage().startswith("removed")]
    assert told == [
        "removed 2 static schedule(s) the code no longer declares",
        "removed 1 static table trigger(s) the code no longer declares",
    ]


async def test_an_older_extension_with_declarations_refuses_to_start(
    make: Callable[..., Orchestrator],
) -> None:
    fake = FakeDatabaseClient(version="0.7.0")
    with pytest.raises(InvalidState) as caught:
        await make(fake).start()
    assert str(caught.value).splitlines()[0] == (
        "task 'report' declares cron, schedule_payload, tz, which needs pgconductor extension"
        " 0.8.0 or later (installed: 0.7.0)"
    )
    assert caught.value.sqlstate == "55000"
    assert fake.call_count("declare_task") == 0  # nothing registered
    assert fake.call_count("heartbeat") == 0


async def test_an_older_extension_without_declarations_neither_syncs_nor_ticks(
    make: Callable[..., Orchestrator],
) -> None:
    fake = FakeDatabaseClient(version="0.7.0")
    conductor = Conductor(fake)
    conductor.task("plain")(lambda ctx, payload: None)
    orchestrator = make(fake, conductor, tick_interval=0.001)
    await orchestrator.start()
    assert orchestrator.ticker is None
    await orchestrator.stop()
    synced = [n for n, _, _ in fake.calls if n.startswith(("sync_static", "tick"))]
    assert synced == []


async def test_a_client_without_source_calls_cannot_declare() -> None:
    fake = FakeDatabaseClient(version="0.8.0")
    tasks = list(conductor_on(fake).tasks.values())
    with pytest.raises(PgConductorError, match="cannot declare schedules or events"):
        await declare_sources(object(), tasks)
    assert await declare_sources(object(), [tasks[2]]) == Removed()


# -- the tick ------------------------------------------------------------------------------


class StepClock:
    """A clock at a set time whose sleeps end when the test says so (`step`)."""

    def __init__(self, now: float) -> None:
        self.at = now
        self.sleeps: list[float] = []
        self._gates: asyncio.Queue[None] = asyncio.Queue()
        self.sleeping = asyncio.Event()

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.at, dt.UTC)

    def monotonic(self) -> float:
        return self.at

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.sleeping.set()
        await self._gates.get()
        self.at += seconds

    def step(self) -> None:
        self.sleeping.clear()
        self._gates.put_nowait(None)


async def test_ticks_come_just_after_each_whole_second() -> None:
    fake = FakeDatabaseClient(version="0.8.0")
    fake.responses["tick"] = 3
    clock = StepClock(1_000_000.25)
    draws = iter([0.0, 0.5, 1.0, 0.2])
    ticker = Ticker(fake, limit=200, clock=clock, rand=lambda: next(draws))
    await ticker.start()
    try:
        for ticks in (1, 2, 3):
            await clock.sleeping.wait()
            clock.step()
            await fake.wait_for_call("tick", ticks)
        await clock.sleeping.wait()
    finally:
        await ticker.stop()
    assert clock.sleeps == pytest.approx([0.75, 1.05, 1.05, 0.92])
    assert [(args, kwargs) for args, kwargs in fake.calls_to("tick")] == [((200,), {})] * 3
    assert (ticker.ticks, ticker.made, ticker.failures) == (3, 9, 0)
    assert ticker.state is ServiceState.STOPPED


async def test_a_failing_tick_warns_once_and_says_when_it_works_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeDatabaseClient(version="0.8.0")
    ticker = Ticker(fake, clock=StepClock(0.0))
    fake.simulate_error("tick", TransientError("server closed", sqlstate="57P01"), times=3)
    with caplog.at_level(logging.DEBUG, logger="pgconductor.maintenance"):
        assert [await ticker.run_once() for _ in range(4)] == [None, None, None, 0]
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [
        (logging.WARNING, "ticker: tick failed (retrying every ~1s): server closed"),
        (logging.INFO, "ticker: ticking again"),
    ]
    assert (ticker.failures, ticker.ticks) == (3, 1)


@pytest.mark.parametrize(
    ("options", "message"), [({"interval": 0}, "longer than zero"), ({"limit": 0}, "at least 1")]
)
def test_bad_tick_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Ticker(FakeDatabaseClient(), **options)


async def test_the_orchestrator_ticks_on_0_8_0_and_stops_ticking_before_the_release(
    make: Callable[..., Orchestrator],
) -> None:
    fake = FakeDatabaseClient(version="0.8.0")
    orchestrator = make(fake, tick_interval=0.01, maintenance_interval=None)
    await orchestrator.start()
    assert orchestrator.ticker is not None
    assert orchestrator.ticker.clock is orchestrator.clock
    await fake.wait_for_call("tick", 2)
    await orchestrator.stop()
    names = [name for name, _, _ in fake.calls]
    assert "tick" not in names[names.index("release_orchestrator") :]
    with pytest.raises(ValueError, match="tick_interval must be longer than zero"):
        make(fake, tick_interval=0)


# -- ctx.scheduled_at() ----------------------------------------------------------------------


async def test_a_handler_reads_its_occurrence_once_and_only_when_it_asks(
    wait_until: Callable[..., Any],
) -> None:
    fake = FakeDatabaseClient(version="0.8.0")
    conductor = Conductor(fake)
    seen: list[Any] = []

    @conductor.task("report")
    async def report(ctx: TaskContext, payload: Any) -> None:
        seen.append(await ctx.scheduled_at())
        seen.append(await ctx.scheduled_at())

    @conductor.task("sync_report")
    def sync_report(ctx: TaskContext, payload: Any) -> None:
        seen.append(
            (ctx.scheduled_at_sync(), threading.current_thread() is threading.main_thread())
        )

    @conductor.task("plain")
    async def plain(ctx: TaskContext, payload: Any) -> None:
        seen.append("plain")

    fake.responses["occurrence_of"] = WHEN
    report_row, plain_row = claimed("report"), claimed("plain")
    backlog = Backlog([report_row, plain_row])
    fake.responses["get_executions"] = backlog
    worker = Worker(fake, "default", conductor.tasks, uuid.uuid4(), poll_interval=60.0)
    await worker.start()
    try:
        await wait_until(lambda: len(flushed(fake)) == 2)
        assert sorted(map(str, seen)) == sorted([str(WHEN), str(WHEN), "plain"])
        # once for the run that asked twice, never for the one that did not ask
        assert fake.calls_to("occurrence_of") == [((report_row.id,), {})]
        sync_row = claimed("sync_report")
        backlog.add(sync_row)
        worker.notify()
        await wait_until(lambda: len(flushed(fake)) == 3)
    finally:
        await worker.stop()
    assert fake.calls_to("occurrence_of")[1] == ((sync_row.id,), {})
    assert seen[-1] == (WHEN, False)  # read from the handler's own thread
    assert {str(r.status) for r in flushed(fake)} == {"completed"}


async def test_without_a_worker_or_on_an_older_extension_there_is_no_occurrence() -> None:
    row = claimed("t")
    ctx = context(row)
    assert await ctx.scheduled_at() is None
    assert ctx.scheduled_at_sync() is None
    fake = FakeDatabaseClient(version="0.7.0")
    ctx = context(row)
    ctx._occurrence = OccurrenceReader(None, asyncio.get_running_loop())
    assert await ctx.scheduled_at() is None
    assert fake.call_count("occurrence_of") == 0


async def test_the_blocking_read_refuses_the_event_loop_thread() -> None:
    fake = FakeDatabaseClient(version="0.8.0")
    ctx = context(claimed("t"))
    ctx._occurrence = OccurrenceReader(fake, asyncio.get_running_loop())
    with pytest.raises(InvalidState, match="would block the event loop"):
        ctx.scheduled_at_sync()
    fake.responses["occurrence_of"] = WHEN
    assert await asyncio.to_thread(ctx.scheduled_at_sync) == WHEN
    assert await ctx.scheduled_at() == WHEN  # remembered
    assert fake.call_count("occurrence_of") == 1


class Digest(BaseModel):
    day: str
    limit: int = 5


async def test_a_schedule_payload_is_sent_in_the_task_payload_s_json_form() -> None:
    fake = FakeDatabaseClient(version="0.8.0")
    conductor = Conductor(fake)
    conductor.task("digest", payload=Digest, cron="0 8 * * *", schedule_payload=Digest(day="mon"))(
        lambda ctx, payload: None
    )
    await declare_sources(fake, conductor.tasks.values())
    ((args, options),) = fake.calls_to("schedule")
    assert args == ("digest", "digest", "0 8 * * *")
    assert options["payload"] == {"day": "mon", "limit": 5}
