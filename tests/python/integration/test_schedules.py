"""Schedules on a real database: exactly one execution per occurrence however many tick
(100 fake-clock ticks from two connections at once), static schedules removed from code at
the next worker start while dynamic ones stay (G6), and a scheduled handler that receives
the schedule's payload and its occurrence time (G7)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from pgconductor.conductor import Conductor, TaskContext
from pgconductor.db import SqlDatabaseClient
from pgconductor.maintenance import Ticker
from pgconductor.orchestrator import Orchestrator
from pgconductor.sources import Schedule
from pgtest import execute

T0 = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)


def set_clock(url: str, when: datetime) -> None:
    """Move the database's fake clock and make every session pick it up."""
    name = execute(url, "SELECT current_database()")[0][0]
    execute(url, f"ALTER DATABASE \"{name}\" SET pgconductor.fake_now = '{when.isoformat()}'")
    execute(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )


def quiet(conductor: Conductor, **options: Any) -> Orchestrator:
    """An orchestrator that only does what a test asks of it (no ticks, no maintenance)."""
    options.setdefault("tick_interval", None)
    return Orchestrator(
        conductor,
        heartbeat_interval=30.0,
        stale_after=120.0,
        poll_interval=0.05,
        maintenance_interval=None,
        use_listen=False,
        **options,
    )


@pytest.fixture
async def client(fresh_db_url: str) -> AsyncIterator[SqlDatabaseClient]:
    client = SqlDatabaseClient(fresh_db_url)
    yield client
    await client.close()


async def test_two_tickers_make_each_occurrence_once_over_100_ticks(
    fresh_db_url: str, client: SqlDatabaseClient
) -> None:
    conns = [await psycopg.AsyncConnection.connect(fresh_db_url, autocommit=True) for _ in range(2)]
    try:
        for conn in conns:
            await conn.execute(
                "SELECT set_config('pgconductor.fake_now', %s, false)", [T0.isoformat()]
            )
        # Made at T0 (on the first connection's clock): next runs just after T0.
        setup = conns[0]
        for name, cron, missed in (
            ("every-second", "* * * * * *", "skip"),
            ("every-3s", "*/3 * * * * *", "catch_up"),
            ("every-7s", "*/7 * * * * *", "skip"),
        ):
            await setup.execute(
                "SELECT pgconductor.schedule(%s, 'job', %s, p_missed => %s)", [name, cron, missed]
            )
        made = 0
        for step in range(1, 101):
            now = (T0 + timedelta(milliseconds=500 * step)).isoformat()

            async def tick(conn: psycopg.AsyncConnection[Any], at: str = now) -> int:
                await conn.execute("SELECT set_config('pgconductor.fake_now', %s, false)", [at])
                row = await (await conn.execute("SELECT pgconductor.tick(1000)")).fetchone()
                assert row is not None
                return int(row[0])

            made += sum(await asyncio.gather(*(tick(conn) for conn in conns)))
    finally:
        for conn in conns:
            await conn.close()
    # 100 ticks half a second apart: T0 + 0.5 s ... T0 + 50 s.
    occurrences = execute(
        fresh_db_url,
        "SELECT schedule, count(*), count(DISTINCT occurs_at), count(DISTINCT execution_id),"
        " min(occurs_at), max(occurs_at) FROM pgconductor.schedule_occurrences"
        " GROUP BY 1 ORDER BY 1",
    )
    assert occurrences == [
        ("every-3s", 16, 16, 16, T0 + timedelta(seconds=3), T0 + timedelta(seconds=48)),
        ("every-7s", 7, 7, 7, T0 + timedelta(seconds=7), T0 + timedelta(seconds=49)),
        ("every-second", 50, 50, 50, T0 + timedelta(seconds=1), T0 + timedelta(seconds=50)),
    ]
    executions = execute(
        fresh_db_url,
        "SELECT count(*), count(DISTINCT dedupe_key), count(DISTINCT run_at)"
        " FROM pgconductor.executions",
    )
    assert executions == [(73, 73, 50)]  # every-3s and every-7s share run_at with every-second
    assert made == 73  # no tick counted an occurrence another made
    assert [s.last_run_at for s in await client.schedules()] == [
        T0 + timedelta(seconds=48),
        T0 + timedelta(seconds=49),
        T0 + timedelta(seconds=50),
    ]


async def test_two_ticker_services_share_a_schedule_of_every_second(
    fresh_db_url: str, client: SqlDatabaseClient, wait_until: Callable[..., Any]
) -> None:
    await client.schedule("pulse", "job", "* * * * * *")
    others = [SqlDatabaseClient(fresh_db_url) for _ in range(2)]
    tickers = [Ticker(c, interval=0.25) for c in others]  # four ticks per occurrence
    for ticker in tickers:
        await ticker.start()
    try:
        await wait_until(lambda: sum(t.made for t in tickers) >= 3, timeout=10)
    finally:
        for ticker in tickers:
            await ticker.stop()
        for other in others:
            await other.close()
    assert min(t.ticks for t in tickers) >= 4
    made = sum(t.made for t in tickers)
    [(rows, keys)] = execute(
        fresh_db_url, "SELECT count(*), count(DISTINCT dedupe_key) FROM pgconductor.executions"
    )
    assert rows == keys == made


async def test_a_static_schedule_dropped_from_code_goes_at_the_next_start(
    fresh_db_url: str, client: SqlDatabaseClient
) -> None:
    execute(fresh_db_url, "CREATE TABLE public.orders (id int PRIMARY KEY, status text)")

    def app(*, with_sources: bool) -> Conductor:
        conductor = Conductor(fresh_db_url)
        sources: dict[str, Any] = (
            {"cron": "0 * * * *", "on_event": "order.paid", "on_table": "public.orders"}
            if with_sources
            else {}
        )
        conductor.task("report", **sources)(lambda ctx, payload: None)
        conductor.task("digest", cron=[Schedule("0 8 * * *", name="digest-morning")])(
            lambda ctx, payload: None
        )
        return conductor

    first = app(with_sources=True)
    orchestrator = quiet(first)
    await orchestrator.start()
    await orchestrator.stop()
    await first.close()
    # Made in SQL (or by a client) for the same task: dynamic, never removed by a start.
    await client.schedule("report-adhoc", "report", "*/5 * * * *", {"adhoc": True})
    await client.subscribe("report", "order.refunded")
    execute(fresh_db_url, "CREATE TABLE public.refunds (id int)")
    await client.subscribe_table("report", "public.refunds", ["insert"])
    assert [(s.name, s.static) for s in await client.schedules()] == [
        ("digest-morning", True),
        ("report", True),
        ("report-adhoc", False),
    ]

    second = app(with_sources=False)  # the next release drops report's sources
    orchestrator = quiet(second)
    await orchestrator.start()
    await orchestrator.stop()
    await second.close()
    assert [(s.name, s.static) for s in await client.schedules()] == [
        ("digest-morning", True),
        ("report-adhoc", False),
    ]
    assert [(s.event, s.static) for s in await client.subscriptions()] == [
        ("order.refunded", False)
    ]
    assert [(t.table_name, t.static) for t in await client.table_subscriptions()] == [
        ("public.refunds", False)
    ]
    triggers = execute(
        fresh_db_url,
        "SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname LIKE 'pgconductor%'",
    )
    assert triggers == [("refunds",)]


async def test_a_scheduled_handler_gets_the_payload_and_the_occurrence_time(
    fresh_db_url: str, wait_until: Callable[..., Any]
) -> None:
    set_clock(fresh_db_url, T0)
    conductor = Conductor(fresh_db_url)
    seen: list[Any] = []

    @conductor.task("report", cron="0 * * * *", schedule_payload={"kind": "hourly"})
    async def report(ctx: TaskContext, payload: Any) -> None:
        seen.append((payload, await ctx.scheduled_at()))

    @conductor.task("plain")
    def plain(ctx: TaskContext, payload: Any) -> None:
        seen.append((payload, ctx.scheduled_at_sync()))

    orchestrator = quiet(conductor, tick_interval=0.05)
    await orchestrator.start()
    try:
        await conductor.invoke("plain", {"kind": "invoked"})
        await wait_until(lambda: len(seen) == 1)
        set_clock(fresh_db_url, T0 + timedelta(hours=2, minutes=30))  # 13:00 and 14:00 passed
        await wait_until(lambda: len(seen) == 2)
    finally:
        await orchestrator.stop()
        await conductor.close()
    # missed = skip: the latest occurrence only
    assert seen == [({"kind": "invoked"}, None), ({"kind": "hourly"}, T0 + timedelta(hours=2))]
    [(count,)] = execute(fresh_db_url, "SELECT count(*) FROM pgconductor.finished_executions")
    assert count == 2
