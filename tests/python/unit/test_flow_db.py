"""The flow-control calls of SqlDatabaseClient (extension 0.7.0), without a server.

Which statement each call sends and with which binds, how rows come back, the plain
statements kept for enqueues without flow options (older extensions have no others), an
older extension's missing function reported with the version needed, and the task
settings sent to and read from `declare_task`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.pq import DiagnosticField

from pgconductor.db import rows
from pgconductor.db.flow import needs_flow
from pgconductor.errors import InvalidInput, PgConductorError
from pgconductor.types import FlowStatus, Submitted, TaskSpec

from .db_stubs import SyncStubEngine, client_with

ID = uuid.UUID(int=7)
WHEN = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def undefined(function: str) -> psycopg.Error:
    """The server's answer to a call of a function the extension does not have."""
    message = f"function pgconductor.{function}(text, jsonb) does not exist"
    info = {
        DiagnosticField.SQLSTATE: b"42883",
        DiagnosticField.MESSAGE_PRIMARY: message.encode(),
        DiagnosticField.MESSAGE_HINT: b"No function matches the given name and argument types.",
    }
    return pg_errors.UndefinedFunction(message, info=info)  # type: ignore[arg-type]


async def test_an_invoke_without_flow_options_sends_the_plain_statement() -> None:
    client, engine = client_with([(ID,)], [(ID,)])
    assert await client.invoke("t", {}) == ID
    await client.invoke_batch(["t"], [{}])
    (sql, params), (batch_sql, batch_params) = engine.executed
    assert sql.count("CAST(") == 6
    assert "concurrency_key" not in sql
    assert "concurrency_key" not in params
    assert batch_sql.count("CAST(") == 6
    assert "concurrency_keys" not in batch_params


async def test_an_invoke_with_flow_options_sends_them_all() -> None:
    client, engine = client_with([(ID,)])
    found = await client.invoke(
        "t",
        {"a": 1},
        concurrency_key="tenant-1",
        on_conflict="keep",
        throttle=dt.timedelta(seconds=5),
        start_by=WHEN,
    )
    assert found == ID
    ((sql, params),) = engine.executed
    assert sql.startswith("SELECT pgconductor.invoke(")
    assert sql.count("CAST(") == 12
    assert sql.index("%(concurrency_key)b") < sql.index("%(start_by)b")
    assert params["concurrency_key"] == "tenant-1"
    assert params["on_conflict"] == "keep"
    assert params["throttle"] == dt.timedelta(seconds=5)
    assert (params["debounce"], params["debounce_max"]) == (None, None)
    assert params["start_by"] == WHEN


async def test_a_batch_with_flow_options_sends_arrays_in_input_order() -> None:
    client, engine = client_with([(ID,), (uuid.UUID(int=8),)])
    found = await client.invoke_batch(
        ["t", "t"],
        [{}, {}],
        concurrency_keys=["a", None],
        debounce=dt.timedelta(seconds=2),
    )
    assert found == [ID, uuid.UUID(int=8)]
    ((sql, params),) = engine.executed
    assert "WITH ORDINALITY" in sql
    assert sql.count("CAST(") == 12
    assert params["concurrency_keys"] == ["a", None]
    assert params["start_bys"] is None  # all NULL: sent as NULL
    assert params["debounce"] == dt.timedelta(seconds=2)


async def test_submit_returns_the_id_and_the_outcome() -> None:
    client, engine = client_with([(ID, "throttled")])
    assert await client.submit("t", {}, throttle=dt.timedelta(seconds=1)) == Submitted(
        ID, "throttled"
    )
    ((sql, params),) = engine.executed
    assert sql.startswith("SELECT id, outcome FROM pgconductor.submit(")
    assert params["throttle"] == dt.timedelta(seconds=1)


async def test_submit_without_options_still_calls_submit() -> None:
    client, engine = client_with([(ID, "created")])
    assert (await client.submit("t", {})).outcome == "created"
    ((sql, params),) = engine.executed
    assert "pgconductor.submit(" in sql
    assert params["concurrency_key"] is None


async def test_submit_batch_rows_keep_the_input_order() -> None:
    other = uuid.UUID(int=9)
    client, engine = client_with([(ID, "created"), (other, "updated")])
    answer = await client.submit_batch(["t", "t"], [{}, {}], dedupe_keys=["a", "a"])
    assert answer == [Submitted(ID, "created"), Submitted(other, "updated")]
    ((sql, _),) = engine.executed
    assert sql.endswith("WITH ORDINALITY AS b(id, outcome, n) ORDER BY n")


def test_blocking_forms_choose_the_statement_the_same_way() -> None:
    from pgconductor.db import SqlDatabaseClient

    from .db_stubs import FAST

    client = SqlDatabaseClient("postgresql://u@localhost/db", retry=FAST)
    engine = SyncStubEngine([(ID,)], [(ID,)], [(ID,)])
    client._sync_engine = engine  # type: ignore[assignment]
    client.invoke_sync("t", {})
    client.invoke_sync("t", {}, concurrency_key="k")
    client.invoke_batch_sync(["t"], [{}], start_bys=[WHEN])
    counts = [sql.count("CAST(") for sql, _ in engine.executed]
    assert counts == [6, 12, 12]
    assert engine.executed[2][1]["start_bys"] == [WHEN]


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "answer", "expected", "sent"),
    [
        ("pause_queue", ("mail",), {}, True, True, {"queue": "mail"}),
        ("resume_queue", ("mail",), {}, False, False, {"queue": "mail"}),
        ("pause_task", ("send",), {}, True, True, {"task_key": "send"}),
        ("resume_task", ("send",), {}, True, True, {"task_key": "send"}),
        (
            "cancel_by_key",
            ("send",),
            {"concurrency_key": "t1"},
            3,
            3,
            {
                "task_key": "send",
                "dedupe_key": None,
                "concurrency_key": "t1",
                "reason": "cancelled by user",
            },
        ),
        (
            "set_fair_share",
            ("mail", True),
            {},
            None,
            None,
            {"queue": "mail", "enabled": True},
        ),
        (
            "set_key_weight",
            ("mail", "t1", 5),
            {},
            None,
            None,
            {"queue": "mail", "key": "t1", "weight": 5},
        ),
        (
            "maintain",
            (),
            {},
            {"expired": 2, "pruned": 10},
            {"expired": 2, "pruned": 10},
            None,
        ),
        ("maintain", (50,), {}, None, {}, {"limit": 50}),
    ],
)
async def test_operations_send_their_binds_and_read_their_answer(
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    answer: Any,
    expected: Any,
    sent: dict[str, Any] | None,
) -> None:
    client, engine = client_with([(answer,)])
    assert await getattr(client, method)(*args, **kwargs) == expected
    ((sql, params),) = engine.executed
    assert f"pgconductor.{method}(" in sql
    assert params == (sent if sent is not None else {"limit": 10000})


async def test_flow_status_rows() -> None:
    client, engine = client_with(
        [
            ("mail", "send", None, 2, 5, 0, 10, None, False),
            ("mail", "send", "t1", 1, 0, 3, 10, 2, True),
        ]
    )
    found = await client.flow_status("mail")
    assert found == [
        FlowStatus("mail", "send", None, 2, 5, 0, 10, None, False),
        FlowStatus("mail", "send", "t1", 1, 0, 3, 10, 2, True),
    ]
    ((sql, params),) = engine.executed
    assert "FROM pgconductor.flow_status(" in sql
    assert params == {"queue": "mail"}


async def test_an_older_extension_is_named_as_such() -> None:
    client, _ = client_with(undefined("submit"))
    with pytest.raises(PgConductorError) as caught:
        await client.submit("t", {})
    assert caught.value.sqlstate == "42883"
    assert "needs extension 0.7.0" in str(caught.value)
    assert caught.value.hint == "upgrade the extension: pgconductor schema upgrade"


async def test_an_invoke_with_options_on_an_older_extension_names_the_version() -> None:
    client, _ = client_with(undefined("invoke"))
    with pytest.raises(PgConductorError, match=r"pgconductor\.invoke with flow control needs"):
        await client.invoke("t", {}, concurrency_key="k")


def test_other_errors_pass_unchanged() -> None:
    bad = InvalidInput("concurrency key too long", sqlstate="22023", hint="1-250 characters")
    assert needs_flow(bad, "invoke") is bad
    elsewhere = PgConductorError(
        "function pgconductor._helper(int) does not exist", sqlstate="42883"
    )
    assert needs_flow(elsewhere, "invoke") is elsewhere  # a bug inside SQL, not a version


def test_declared_flow_settings_use_sqls_names_and_milliseconds() -> None:
    spec = TaskSpec(
        "t",
        max_running=3,
        rate_limit_per_key=10,
        rate_period=dt.timedelta(minutes=1),
        start_within=dt.timedelta(seconds=30),
        keep_completed=dt.timedelta(0),
        declared=frozenset(
            {
                "max_running",
                "rate_limit_per_key",
                "rate_period",
                "start_within",
                "keep_completed",
            }
        ),
    )
    assert rows.declared_settings(spec) == {
        "max_running": 3,
        "rate_limit_per_key": 10,
        "rate_period_ms": 60000,
        "start_within_ms": 30000,
        "keep_completed_ms": 0,
    }


BASE = {
    "queue": "default",
    "max_attempts": 3,
    "timezone": "UTC",
    "backoff_base_ms": 1000,
    "backoff_cap_ms": 600000,
    "max_retry_after": 20,
}


def test_settings_of_an_older_extension_read_as_the_defaults() -> None:
    spec = rows.task_spec("t", dict(BASE), frozenset())
    defaults = TaskSpec("t")
    assert (
        spec.max_running,
        spec.rate_period,
        spec.keep_completed,
        spec.keep_failed,
    ) == (
        None,
        defaults.rate_period,
        dt.timedelta(days=7),
        dt.timedelta(days=30),
    )


def test_flow_settings_read_back_from_sql() -> None:
    settings = BASE | {
        "max_running": 4,
        "max_running_per_key": 1,
        "rate_limit": 100,
        "rate_limit_per_key": None,
        "rate_period_ms": 2000,
        "start_within_ms": 500,
        "keep_completed_ms": 0,
        "keep_failed_ms": 86400000,
    }
    spec = rows.task_spec("t", settings, frozenset({"max_running"}))
    assert (spec.max_running, spec.max_running_per_key, spec.rate_limit) == (4, 1, 100)
    assert spec.rate_limit_per_key is None
    assert spec.rate_period == dt.timedelta(seconds=2)
    assert spec.start_within == dt.timedelta(milliseconds=500)
    assert (spec.keep_completed, spec.keep_failed) == (
        dt.timedelta(0),
        dt.timedelta(days=1),
    )


def test_a_blocking_flow_call_on_an_older_extension_names_the_version() -> None:
    from pgconductor.db import SqlDatabaseClient

    from .db_stubs import FAST

    client = SqlDatabaseClient("postgresql://u@localhost/db", retry=FAST)
    client._sync_engine = SyncStubEngine(undefined("invoke_batch"))  # type: ignore[assignment]
    with pytest.raises(PgConductorError, match=r"invoke_batch with flow control needs extension"):
        client.invoke_batch_sync(["t"], [{}], concurrency_keys=["k"])
