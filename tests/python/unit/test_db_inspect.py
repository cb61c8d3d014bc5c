"""The client methods behind `show`, `list`, `retry --state` and the unserved-task warning.

The SQL they send, the binds, and the rows they read back (stub engine, no server).
"""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.pq import DiagnosticField

from pgconductor.errors import PgConductorError
from pgconductor.types import ExecutionInfo, ExecutionSummary, TaskOverview

from .db_stubs import client_with

AT = dt.datetime(2026, 12, 4, 15, 30, tzinfo=dt.UTC)


async def test_list_executions_binds_every_filter_and_reads_summaries() -> None:
    row = (uuid.UUID(int=2), "t", "q", "failed", 3, 3, 0, AT, AT, AT, "boom")
    client, engine = client_with([row])
    before = uuid.UUID(int=9)
    page = await client.list_executions("failed", "t", "q", 10, before)
    assert page == [ExecutionSummary(*row)]
    sql, params = engine.executed[0]
    assert "FROM pgconductor.list_executions(CAST(%(state)b AS text)" in sql
    assert sql.index("%(task_key)b") < sql.index("%(queue)b") < sql.index("%(limit)b")
    assert sql.index("%(limit)b") < sql.index("%(before)b")
    assert params == {
        "state": "failed",
        "task_key": "t",
        "queue": "q",
        "limit": 10,
        "before": before,
    }
    await client.close()


async def test_list_executions_defaults_are_sqls() -> None:
    client, engine = client_with([])
    assert await client.list_executions() == []
    assert engine.executed[0][1] == {
        "state": None,
        "task_key": None,
        "queue": None,
        "limit": 50,
        "before": None,
    }
    await client.close()


async def test_retry_executions_returns_the_count() -> None:
    client, engine = client_with([(4,)])
    assert await client.retry_executions(task_key="t") == 4
    sql, params = engine.executed[0]
    assert sql.startswith("SELECT pgconductor.retry_executions(CAST(%(state)b AS text)")
    assert params == {"state": "failed", "task_key": "t", "queue": None, "limit": 1000}
    await client.close()


async def test_task_overview_reads_counts_as_ints() -> None:
    client, engine = client_with([("t", "default", True, False, 5, 0)])
    assert await client.task_overview() == [TaskOverview("t", "default", True, False, 5, 0)]
    assert "FROM pgconductor.task_overview() ORDER BY task_key, queue" in engine.executed[0][0]
    await client.close()


async def test_get_execution_reads_the_extended_row() -> None:
    eid = uuid.UUID(int=1)
    base = (eid, "t", "q", "failed", 2, 0, AT, None, "E2", None, AT)
    client, _ = client_with([base])
    info = await client.get_execution(eid)
    assert info == ExecutionInfo(*base)
    assert info is not None
    assert (info.max_attempts, info.errors, info.cancel_reason) == (None, [], None)
    await client.close()


def _undefined_column() -> psycopg.Error:
    info = {
        DiagnosticField.SQLSTATE: b"42703",
        DiagnosticField.MESSAGE_PRIMARY: b'column "max_attempts" does not exist',
    }
    return pg_errors.UndefinedColumn("no such column", info=info)  # type: ignore[arg-type]


async def test_get_execution_on_an_extension_before_0_4_reads_the_old_columns() -> None:
    eid = uuid.UUID(int=1)
    base = (eid, "t", "q", "failed", 2, 0, AT, None, "E2", None, AT)
    client, engine = client_with(_undefined_column(), _undefined_column(), [base])
    assert await client.get_execution(eid) == ExecutionInfo(*base)
    newest, before_0_6, before_0_4 = (sql for sql, _ in engine.executed)
    assert "parent_id, steps" in newest
    assert "cancel_reason" in before_0_6
    assert "parent_id" not in before_0_6
    assert "cancel_reason" not in before_0_4
    assert "FROM pgconductor.get_execution(" in before_0_4
    await client.close()


async def test_get_execution_reads_parent_and_steps_from_0_6() -> None:
    eid, parent = uuid.UUID(int=1), uuid.UUID(int=2)
    base = (
        eid,
        "t",
        "q",
        "sleeping",
        0,
        0,
        AT,
        None,
        None,
        None,
        None,
        3,
        {},
        AT,
        None,
        [],
        None,
    )
    client, _ = client_with([(*base, parent, None)], [(*base, None, [{"key": "a"}])])
    info = await client.get_execution(eid)
    assert info is not None
    assert (info.parent_id, info.steps) == (parent, [])
    info = await client.get_execution(eid)
    assert info is not None
    assert info.steps == [{"key": "a"}]
    await client.close()


async def test_the_claim_reads_stored_steps_and_falls_back_before_0_6() -> None:
    row = (uuid.UUID(int=1), "t", "q", "{}", 1, 3, 0, AT, None, 4)
    client, engine = client_with([(*row, '{"a": {"seq": 0}}')], [(*row, None)])
    (claimed,) = await client.get_executions(uuid.UUID(int=9), "q", None, 5)
    assert claimed.steps == {"a": {"seq": 0}}
    (claimed,) = await client.get_executions(uuid.UUID(int=9), "q", None, 5)
    assert claimed.steps is None
    assert all("steps::text" in sql for sql, _ in engine.executed)
    await client.close()

    old, engine = client_with(_undefined_column(), [row], [row])
    for _ in range(2):
        (claimed,) = await old.get_executions(uuid.UUID(int=9), "q", None, 5)
        assert claimed.steps is None
        assert claimed.lease == 4
    assert ["steps::text" in sql for sql, _ in engine.executed] == [True, False, False]
    await old.close()


async def test_save_steps_and_emit_event_send_json() -> None:
    client, engine = client_with([(uuid.UUID(int=1), "a", "saved")], [(17,)])
    rows = await client.save_steps(
        uuid.UUID(int=9), [uuid.UUID(int=1)], [2], ["a"], [0], [{"x": 1}]
    )
    assert rows == [(uuid.UUID(int=1), "a", "saved")]
    assert engine.executed[0][1]["results"] == ['{"x":1}']
    assert await client.emit_event("order.paid", None) == 17
    assert engine.executed[1][1] == {"name": "order.paid", "payload": "{}"}
    await client.close()


async def test_get_execution_raises_other_errors() -> None:
    info = {
        DiagnosticField.SQLSTATE: b"42501",
        DiagnosticField.MESSAGE_PRIMARY: b"denied",
    }
    denied = pg_errors.InsufficientPrivilege("denied", info=info)  # type: ignore[arg-type]
    client, engine = client_with(denied)
    with pytest.raises(PgConductorError, match="denied"):
        await client.get_execution(uuid.UUID(int=1))
    assert len(engine.executed) == 1
    await client.close()
