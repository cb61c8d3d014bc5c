"""The schedule, subscription and table-trigger calls of SqlDatabaseClient (extension 0.8.0),
without a server: the statement and binds each sends, rows read back as dataclasses, an
older extension named as such, and the fake client kept in step with the protocol.
"""

from __future__ import annotations

import datetime as dt
import inspect
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.pq import DiagnosticField

from fakes import FakeDatabaseClient
from pgconductor.db import SqlDatabaseClient
from pgconductor.db.schedules import needs_sources
from pgconductor.errors import InvalidInput, NotFound, PgConductorError
from pgconductor.source_types import (
    ScheduleInfo,
    SourceClient,
    SubscriptionInfo,
    TableSubscriptionInfo,
)

from .db_stubs import client_with

WHEN = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
ID = uuid.UUID(int=9)


def _sql_error(sqlstate: str, message: str, cls: type[psycopg.Error]) -> psycopg.Error:
    info = {
        DiagnosticField.SQLSTATE: sqlstate.encode(),
        DiagnosticField.MESSAGE_PRIMARY: message.encode(),
        DiagnosticField.MESSAGE_HINT: b"a hint",
    }
    return cls(message, info=info)  # type: ignore[arg-type]


def _methods(protocol: type) -> list[str]:
    return [n for n, v in vars(protocol).items() if not n.startswith("_") and inspect.isfunction(v)]


@pytest.mark.parametrize("implementation", [FakeDatabaseClient, SqlDatabaseClient])
def test_clients_match_the_source_protocol(implementation: type) -> None:
    names = _methods(SourceClient)
    assert len(names) == 17
    for name in names:
        expected = inspect.signature(getattr(SourceClient, name))
        assert str(inspect.signature(getattr(implementation, name))) == str(expected), name
        assert inspect.iscoroutinefunction(getattr(implementation, name))
    assert isinstance(FakeDatabaseClient(), SourceClient)


async def test_schedule_sends_every_argument_in_sql_order() -> None:
    client, engine = client_with([(WHEN,)])
    found = await client.schedule(
        "nightly",
        "report",
        "0 2 * * *",
        {"full": True},
        tz="Europe/Berlin",
        missed="catch_up",
    )
    assert found == WHEN
    ((sql, params),) = engine.executed
    assert sql.startswith("SELECT pgconductor.schedule(CAST(%(name)b AS text)")
    assert sql.count("CAST(") == 11
    assert params["payload"] == '{"full":true}'
    assert (params["tz"], params["missed"], params["overlap"]) == (
        "Europe/Berlin",
        "catch_up",
        "allow",
    )
    assert (params["static"], params["catch_up_max"], params["queue"]) == (
        False,
        100,
        None,
    )


async def test_a_missing_payload_or_match_is_an_empty_object() -> None:
    client, engine = client_with([(WHEN,)], [(3,)])
    await client.schedule("s", "t", "* * * * *")
    await client.subscribe("t", "order.paid")
    (_, scheduled), (_, subscribed) = engine.executed
    assert scheduled["payload"] == "{}"
    assert subscribed["match"] == "{}"
    assert subscribed["fields"] is None


async def test_lists_go_as_arrays_and_a_lone_string_as_one_element() -> None:
    client, engine = client_with([("trg",)], [(0,)], [(1,)])
    assert (
        await client.subscribe_table("t", "public.orders", "insert", ("id",), "NEW.id > 0") == "trg"
    )
    await client.sync_static_subscriptions(["t"], ["t"], ("order.paid",))
    await client.sync_static_schedules([], None)
    (_, table), (_, subs), (_, scheds) = engine.executed
    assert table["ops"] == ["insert"]
    assert table["columns"] == ["id"]
    assert table["when_clause"] == "NEW.id > 0"
    assert table["static"] is False
    assert subs == {
        "task_keys": ["t"],
        "declared_tasks": ["t"],
        "events": ["order.paid"],
    }
    assert scheds == {"names": [], "task_keys": None}


async def test_listings_come_back_as_dataclasses() -> None:
    schedule_row = (
        "s",
        "t",
        "* * * * *",
        "UTC",
        WHEN,
        None,
        False,
        True,
        "skip",
        "allow",
        None,
    )
    sub_row = (4, "t", "order.paid", {"a": 1}, ["id"], None, 0, True, WHEN)
    table_row = ("t", "public.orders", ["insert"], None, None, "q", "trg", False, WHEN)
    client, engine = client_with([schedule_row], [sub_row], [table_row])
    assert await client.schedules() == [ScheduleInfo(*schedule_row)]
    assert await client.subscriptions() == [SubscriptionInfo(*sub_row)]
    assert await client.table_subscriptions() == [TableSubscriptionInfo(*table_row)]
    sqls = [sql for sql, _ in engine.executed]
    assert sqls[0].startswith("SELECT name, task_key, cron, tz, next_run_at")
    assert "FROM pgconductor.schedules()" in sqls[0]
    assert "FROM pgconductor.table_subscriptions()" in sqls[2]


async def test_scalar_answers_are_typed() -> None:
    plan: list[Any] = [
        [(True,)],
        [(None,)],
        [(WHEN,)],
        [(2,)],
        [(None,)],
        [(5,)],
        [(False,)],
    ]
    client, engine = client_with(*plan, [(True,)])
    assert await client.unschedule("s") is True
    assert await client.pause_schedule("s") is None
    assert await client.resume_schedule("s") == WHEN
    assert await client.backfill("s", WHEN, WHEN + dt.timedelta(hours=1)) == 2
    assert await client.occurrence_of(ID) is None
    assert await client.tick(50) == 5
    assert await client.unsubscribe("t", "e") is False
    assert await client.unsubscribe_table("t", "public.orders") is True
    backfill = engine.executed[3][1]
    assert backfill == {
        "name": "s",
        "start": WHEN,
        "end_at": WHEN + dt.timedelta(hours=1),
    }
    assert engine.executed[5][1] == {"limit": 50}


async def test_sql_errors_are_mapped_like_every_call() -> None:
    bad = _sql_error("22023", "invalid cron expression 'x'", pg_errors.InvalidParameterValue)
    client, _ = client_with(bad, _sql_error("P0002", "unknown schedule 'x'", pg_errors.NoDataFound))
    with pytest.raises(InvalidInput, match="invalid cron expression"):
        await client.schedule("s", "t", "x")
    with pytest.raises(NotFound, match="unknown schedule"):
        await client.pause_schedule("x")


async def test_an_older_extension_is_named_as_such() -> None:
    missing = "function pgconductor.tick(integer) does not exist"
    client, _ = client_with(_sql_error("42883", missing, pg_errors.UndefinedFunction))
    with pytest.raises(PgConductorError) as caught:
        await client.tick()
    assert str(caught.value).startswith("pgconductor.tick needs extension 0.8.0 or later")
    assert caught.value.sqlstate == "42883"
    assert caught.value.hint == "upgrade the extension: pgconductor schema upgrade"


def test_other_undefined_functions_pass_unchanged() -> None:
    inner = PgConductorError(
        "function pgconductor._cron_next(int) does not exist", sqlstate="42883"
    )
    assert needs_sources(inner, "tick") is inner
    other = InvalidInput("bad", sqlstate="22023")
    assert needs_sources(other, "tick") is other
