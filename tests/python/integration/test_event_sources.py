"""Event subscriptions and table triggers declared in Python, on a real database: an emitted
event runs the subscribed handler with the projected payload; a row change runs it with
{op, table, old, new}; a rolled back INSERT runs nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest

from pgconductor.conductor import Conductor, TaskContext
from pgconductor.orchestrator import Orchestrator
from pgtest import execute


@pytest.fixture
async def run(conductor: Conductor) -> AsyncIterator[Callable[[], Any]]:
    """`await run()` starts an orchestrator for the conductor's tasks; stopped at the end."""
    started: list[Orchestrator] = []

    async def start() -> Orchestrator:
        orchestrator = Orchestrator(
            conductor,
            heartbeat_interval=30.0,
            stale_after=120.0,
            poll_interval=0.05,
            maintenance_interval=None,
            tick_interval=None,
            use_listen=False,
        )
        await orchestrator.start()
        started.append(orchestrator)
        return orchestrator

    yield start
    for orchestrator in started:
        await orchestrator.stop()


async def test_an_emitted_event_runs_the_subscriber_with_the_projected_payload(
    conductor: Conductor, run: Callable[[], Any], wait_until: Callable[..., Any]
) -> None:
    got: list[tuple[str, Any]] = []

    @conductor.task(
        "ship", on_event="order.paid", match={"currency": "EUR"}, fields=["id", "amount"]
    )
    async def ship(ctx: TaskContext, payload: Any) -> None:
        got.append(("ship", payload))

    @conductor.task("audit", on_event=["order.paid", "order.refunded"])
    async def audit(ctx: TaskContext, payload: Any) -> None:
        got.append(("audit", payload))

    await run()
    paid = {"id": 7, "amount": 12.5, "currency": "EUR", "card": "secret"}
    await conductor.emit("order.paid", paid)
    await conductor.emit("order.paid", {"id": 8, "amount": 3, "currency": "USD"})
    await conductor.emit("order.shipped", {"id": 7, "currency": "EUR"})
    await wait_until(lambda: len(got) == 3)
    # the USD order matched only audit's subscription; order.shipped has no subscriber
    assert sorted(got, key=repr) == sorted(
        [
            ("ship", {"id": 7, "amount": 12.5}),
            ("audit", paid),
            ("audit", {"id": 8, "amount": 3, "currency": "USD"}),
        ],
        key=repr,
    )
    subs = await conductor.client.subscriptions()  # type: ignore[attr-defined]
    assert [(s.event, s.task_key, s.static) for s in subs] == [
        ("order.paid", "audit", True),
        ("order.paid", "ship", True),
        ("order.refunded", "audit", True),
    ]


async def test_row_changes_run_the_handler_with_op_table_old_and_new(
    conductor: Conductor, fresh_db_url: str, run: Callable[[], Any], wait_until: Callable[..., Any]
) -> None:
    execute(
        fresh_db_url,
        'CREATE SCHEMA "Shop Floor";'
        ' CREATE TABLE "Shop Floor"."Or""ders" (id int PRIMARY KEY, status text, note text)',
    )
    got: list[Any] = []

    @conductor.task(
        "changes",
        on_table='"Shop Floor"."Or""ders"',
        ops=["insert", "update"],
        columns=["id", "status"],
        when="NEW.id > 0",
    )
    async def changes(ctx: TaskContext, payload: Any) -> None:
        got.append(payload)

    await run()
    table = '"Shop Floor"."Or""ders"'
    execute(fresh_db_url, f"INSERT INTO {table} VALUES (1, 'new', 'x'), (-1, 'new', 'skipped')")
    await wait_until(lambda: len(got) == 1)
    execute(fresh_db_url, f"UPDATE {table} SET note = 'only note' WHERE id = 1")  # no column
    execute(fresh_db_url, f"UPDATE {table} SET status = 'paid' WHERE id = 1")
    execute(fresh_db_url, f"DELETE FROM {table} WHERE id = 1")  # not an op of the task
    await wait_until(lambda: len(got) == 2)
    assert got == [
        {"op": "insert", "table": table, "old": None, "new": {"id": 1, "status": "new"}},
        {
            "op": "update",
            "table": table,
            "old": {"id": 1, "status": "new"},
            "new": {"id": 1, "status": "paid"},
        },
    ]
    [(made,)] = execute(
        fresh_db_url,
        "SELECT count(*) FROM (SELECT id FROM pgconductor.executions"
        " UNION ALL SELECT id FROM pgconductor.finished_executions) AS e",
    )
    assert made == 2


async def test_a_rolled_back_insert_runs_nothing(
    conductor: Conductor, fresh_db_url: str, run: Callable[[], Any], wait_until: Callable[..., Any]
) -> None:
    execute(fresh_db_url, "CREATE TABLE public.orders (id int PRIMARY KEY)")
    got: list[Any] = []

    @conductor.task("on_insert", on_table="public.orders", ops="insert")
    async def on_insert(ctx: TaskContext, payload: Any) -> None:
        got.append(payload["new"]["id"])

    await run()
    with psycopg.connect(fresh_db_url) as conn:
        conn.execute("INSERT INTO public.orders VALUES (1)")
        conn.rollback()
        conn.execute("INSERT INTO public.orders VALUES (2)")
        conn.commit()
    await wait_until(lambda: got == [2])  # the committed row, after the rolled back one
    [(made,)] = execute(
        fresh_db_url,
        "SELECT count(*) FROM (SELECT id FROM pgconductor.executions"
        " UNION ALL SELECT id FROM pgconductor.finished_executions) AS e",
    )
    assert made == 1
