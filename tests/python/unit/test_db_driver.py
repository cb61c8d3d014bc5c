"""SqlDatabaseClient's own calls on the pooled psycopg connection, without a server.

How a statement runs there (autocommit, prepared, binary), the connection the client keeps
checked out for its calls and the ones it borrows when that is busy, how each goes back to
the pool after each kind of failure and on close, the fallback through SQLAlchemy for
other drivers, and the bind values the hot calls send.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.pq import DiagnosticField

from pgconductor.db import SqlDatabaseClient, rows, runner
from pgconductor.db.statements import CALLS
from pgconductor.errors import InvalidInput, NotFound, TransientError
from pgconductor.types import ClaimedExecution, ExecutionResult, ResultStatus

from .db_stubs import FAST, Broken, StubEngine, SyncStubEngine, client_with

OID = uuid.UUID(int=42)


def from_server(cls: type[psycopg.Error], message: str, sqlstate: str, hint: str) -> psycopg.Error:
    """A psycopg error as the server sends it: SQLSTATE, message and hint in its diagnostics."""
    info = {
        DiagnosticField.SQLSTATE: sqlstate.encode(),
        DiagnosticField.MESSAGE_PRIMARY: message.encode(),
        DiagnosticField.MESSAGE_HINT: hint.encode(),
    }
    return cls(f"{message}\nHINT:  {hint}", info=info)  # type: ignore[arg-type]


# -- how a statement runs ---------------------------------------------------------------


async def test_calls_run_prepared_in_autocommit_on_the_kept_connection() -> None:
    client, engine = client_with([(uuid.UUID(int=1),)], [(uuid.UUID(int=2),)])
    assert await client.invoke("t", {"a": 1}) == uuid.UUID(int=1)
    assert await client.invoke("t", {"a": 2}) == uuid.UUID(int=2)
    (pooled,) = engine.pooled  # one checkout for both calls
    driver = pooled.driver_connection
    assert driver.executions == [{"autocommit": True, "prepare": True, "binary": True}] * 2
    assert driver.autocommit_log == [True]  # put in autocommit once
    assert pooled.fate is None  # still checked out
    sql, params = engine.executed[0]
    assert sql.startswith("SELECT pgconductor.invoke(CAST(%(task_key)b AS text)")
    assert params["payload"] == '{"a":1}'
    assert engine.sqlalchemy_connections == 0
    await client.close()
    assert pooled.fate == "returned"
    assert driver.autocommit_log == [True, False]  # back as it came: not autocommit
    assert engine.disposed


async def test_a_call_while_the_kept_one_is_busy_borrows_another() -> None:
    client, engine = client_with([(1,)], [(2,)], [(3,)])
    gate = asyncio.Event()
    engine.gates.append(gate)
    first = asyncio.create_task(client.request_shutdown())
    await asyncio.sleep(0)  # the first call now waits on the kept connection
    assert await client.request_shutdown() == 1  # the gate held the first call's statement
    kept, borrowed = engine.pooled
    assert borrowed.fate == "returned"
    assert borrowed.driver_connection.autocommit_log == [True, False]
    gate.set()
    assert await first == 2
    assert await client.request_shutdown() == 3
    assert len(engine.pooled) == 2  # back on the kept one
    assert kept.fate is None
    assert len(kept.driver_connection.executions) == 2


async def test_a_derived_client_shares_the_kept_connection() -> None:
    client = SqlDatabaseClient("postgresql://u@localhost/db", retry=FAST)
    derived = client.with_abort(asyncio.Event())
    engine = StubEngine([(1,)], [(2,)])
    client.engine = derived.engine = engine  # type: ignore[assignment]
    await client.request_shutdown()
    await derived.request_shutdown()
    assert len(engine.pooled) == 1
    await derived.close()
    assert engine.pooled[0].fate == "returned"
    assert not engine.disposed  # the engine is the first client's


async def test_a_pool_of_one_is_never_kept() -> None:
    single = SqlDatabaseClient("postgresql://u@h/db", pool_size=1, max_overflow=0)
    assert single._can_keep() is False
    client, engine = client_with([(1,)], [(2,)])
    engine.sync_engine = single.engine.sync_engine  # type: ignore[assignment]
    await client.request_shutdown()
    await client.request_shutdown()
    assert [p.fate for p in engine.pooled] == ["returned", "returned"]
    await single.close()
    for pool_size, max_overflow in ((1, 1), (2, 0), (1, -1)):
        roomy = SqlDatabaseClient(
            "postgresql://u@h/db", pool_size=pool_size, max_overflow=max_overflow
        )
        assert roomy._can_keep() is True, (pool_size, max_overflow)
        await roomy.close()


async def test_prepare_false_never_prepares() -> None:
    client, engine = client_with([(1,)], prepare=False)
    await client.request_shutdown()
    assert engine.pooled[0].driver_connection.executions[0]["prepare"] is False
    real = SqlDatabaseClient("postgresql://u@h/db", prepare=False)
    assert real.with_abort(None).prepare is False
    await real.close()


async def test_other_drivers_run_through_sqlalchemy() -> None:
    client, engine = client_with([(3,)], driver="asyncpg")
    assert await client.release_orchestrator(OID) == 3
    assert engine.pooled == []
    assert engine.sqlalchemy_connections == 1
    assert engine.executed[0][0] == (
        "SELECT pgconductor.release_orchestrator("
        "CAST(:orchestrator_id AS uuid), CAST(:keep AS uuid[]))"
    )


def test_both_spellings_bind_the_same_names() -> None:
    for call in CALLS.values():
        names = sorted(call.text.compile().params)
        spelled = call.driver.replace(")b", ")s") % {name: f"<{name}>" for name in names}
        assert all(f"<{name}>" in spelled for name in names), call.name


# -- failures -------------------------------------------------------------------------------


async def test_a_sql_error_gives_the_connection_back_and_keeps_its_diagnostics() -> None:
    error = from_server(pg_errors.NoDataFound, "unknown orchestrator", "P0002", "register it")
    client, engine = client_with(error, [(0,)])
    with pytest.raises(NotFound) as caught:
        await client.cancel(OID)
    assert (caught.value.sqlstate, caught.value.hint) == ("P0002", "register it")
    assert str(caught.value) == "unknown orchestrator"
    assert caught.value.__cause__ is error
    (pooled,) = engine.pooled  # not retried
    assert pooled.fate == "returned"  # forgotten, and given back as it came
    assert pooled.driver_connection.autocommit_log == [True, False]
    await client.request_shutdown()
    assert len(engine.pooled) == 2  # the next call keeps a fresh one
    assert engine.pooled[1].fate is None


async def test_a_lost_connection_invalidates_the_pool_and_is_retried() -> None:
    lost = psycopg.OperationalError("server closed the connection unexpectedly")
    client, engine = client_with(Broken(lost), [(5,)])
    assert await client.request_shutdown() == 5
    first, second = engine.pooled
    assert first.fate == "invalidated with the pool"
    assert engine.pool.invalidations == [lost]
    assert second.fate is None  # the retry kept a fresh one


async def test_a_connection_left_in_a_transaction_is_dropped_alone() -> None:
    client, engine = client_with(pg_errors.InvalidParameterValue("bad"))

    original = engine.raw_connection

    async def in_transaction() -> Any:
        pooled = await original()
        pooled.driver_connection.info.transaction_status = psycopg.pq.TransactionStatus.ACTIVE
        return pooled

    engine.raw_connection = in_transaction  # type: ignore[method-assign]
    with pytest.raises(InvalidInput):
        await client.create_queue("x")
    assert engine.pooled[0].fate == "invalidated"
    assert engine.pool.invalidations == []


async def test_a_connection_that_cannot_leave_autocommit_is_dropped() -> None:
    client, engine = client_with(pg_errors.InvalidParameterValue("bad"), [(2,)])

    original = engine.raw_connection

    async def stuck() -> Any:
        pooled = await original()
        pooled.driver_connection.fail_autocommit_off = True
        return pooled

    engine.raw_connection = stuck  # type: ignore[method-assign]
    with pytest.raises(InvalidInput):
        await client.create_queue("x")
    assert await client.request_shutdown() == 2
    await client.close()
    assert [p.fate for p in engine.pooled] == ["invalidated", "invalidated"]
    assert len(engine.executed) == 2


async def test_a_kept_connection_that_cannot_go_into_autocommit_is_dropped() -> None:
    client, engine = client_with([(1,)])
    original = engine.raw_connection

    async def broken() -> Any:
        pooled = await original()
        pooled.driver_connection.broken = len(engine.pooled) == 1
        return pooled

    engine.raw_connection = broken  # type: ignore[method-assign]
    assert await client.request_shutdown() == 1  # the first try failed: transient, retried
    assert [p.fate for p in engine.pooled] == ["invalidated with the pool", None]
    assert len(engine.executed) == 1


async def test_cancellation_drops_the_connection_and_propagates() -> None:
    client, engine = client_with(asyncio.CancelledError(), [(1,)])
    with pytest.raises(asyncio.CancelledError):
        await client.request_shutdown()
    assert [p.fate for p in engine.pooled] == ["invalidated"]  # its state is in doubt
    assert len(engine.executed) == 1
    assert await client.request_shutdown() == 1
    assert [p.fate for p in engine.pooled] == ["invalidated", None]


async def test_a_cancelled_borrowed_call_drops_only_its_connection() -> None:
    client, engine = client_with(asyncio.CancelledError(), [(1,)])
    gate = asyncio.Event()
    engine.gates.append(gate)
    first = asyncio.create_task(client.request_shutdown())
    await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await client.request_shutdown()
    gate.set()
    assert await first == 1
    assert [p.fate for p in engine.pooled] == [None, "invalidated"]


# -- the blocking path ----------------------------------------------------------------------


def sync_client(*plan: Any) -> tuple[SqlDatabaseClient, SyncStubEngine]:
    client = SqlDatabaseClient("postgresql://u@localhost/db", retry=FAST)
    engine = SyncStubEngine(*plan)
    client._sync_engine = engine  # type: ignore[assignment]
    return client, engine


def test_sync_calls_run_on_the_driver_too() -> None:
    client, engine = sync_client([(uuid.UUID(int=3),)], [(uuid.UUID(int=4),)])
    assert client.invoke_sync("t", {}) == uuid.UUID(int=3)
    assert client.invoke_batch_sync(["t"], [{}], run_ats=[None]) == [uuid.UUID(int=4)]
    assert [p.fate for p in engine.pooled] == ["returned", "returned"]
    driver = engine.pooled[0].driver_connection
    assert driver.autocommit_log == [True, False]
    assert driver.executions[0] == {"autocommit": True, "prepare": True, "binary": True}
    assert engine.executed[1][1]["run_ats"] is None


@pytest.mark.parametrize(
    ("failure", "fate", "pool_wide"),
    [
        (pg_errors.InvalidParameterValue("bad"), "returned", False),
        (Broken(psycopg.OperationalError("gone")), "invalidated with the pool", True),
        (KeyboardInterrupt(), "invalidated", False),
    ],
)
def test_sync_failures_give_the_connection_back_like_async(
    failure: BaseException, fate: str, pool_wide: bool
) -> None:
    client, engine = sync_client(failure, [(uuid.UUID(int=1),)])
    with contextlib.suppress(BaseException):  # the connection's fate is what is tested
        client.create_queue_sync("q")
    assert engine.pooled[0].fate == fate
    assert bool(engine.pool.invalidations) is pool_wide


def test_sync_connection_that_cannot_leave_autocommit_is_dropped() -> None:
    client, engine = sync_client(pg_errors.InvalidParameterValue("bad"))
    original = engine.raw_connection

    def stuck() -> Any:
        pooled = original()
        pooled.driver_connection.fail_autocommit_off = True
        return pooled

    engine.raw_connection = stuck  # type: ignore[method-assign]
    with pytest.raises(InvalidInput):
        client.create_queue_sync("q")
    assert engine.pooled[0].fate == "invalidated"


def test_sync_other_drivers_run_through_sqlalchemy() -> None:
    client, _ = sync_client()
    engine = SyncStubEngine([(True,)], driver="pg8000")
    client._sync_engine = engine  # type: ignore[assignment]
    assert client.create_queue_sync("q") is True
    assert engine.pooled == []
    assert engine.sqlalchemy_connections == 1


# -- engines this client makes ------------------------------------------------------------


async def test_prepare_false_turns_off_psycopgs_automatic_preparation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[dict[str, Any]] = []
    real = runner.create_async_engine

    def spy(url: Any, **options: Any) -> Any:
        made.append(options)
        return real(url, **options)

    monkeypatch.setattr(runner, "create_async_engine", spy)
    options = {"connect_args": {"application_name": "x"}}
    client = SqlDatabaseClient("postgresql://u@h/db", prepare=False, engine_options=options)
    assert made[-1]["connect_args"] == {"prepare_threshold": None, "application_name": "x"}
    assert client._sync().url.drivername == "postgresql+psycopg"
    await client.close()
    prepared = SqlDatabaseClient("postgresql://u@h/db")
    assert "connect_args" not in made[-1]
    await prepared.close()


# -- what the hot calls send and read ------------------------------------------------------


def test_return_params_send_null_for_all_null_arrays() -> None:
    results = [ExecutionResult(uuid.UUID(int=i), i, ResultStatus.COMPLETED) for i in range(3)]
    params = rows.return_params(OID, results)
    assert params["ids"] == [uuid.UUID(int=i) for i in range(3)]
    assert params["leases"] == [0, 1, 2]
    assert params["statuses"] == ["completed"] * 3
    assert type(params["statuses"][0]) is str
    assert params["errors"] is params["results"] is params["delays_ms"] is None
    mixed = [*results, ExecutionResult(OID, 9, ResultStatus.FAILED, "boom", {"a": 1}, 250)]
    params = rows.return_params(OID, mixed)
    assert params["errors"] == [None, None, None, "boom"]
    assert params["results"] == [None, None, None, '{"a":1}']
    assert params["delays_ms"] == [None, None, None, 250]


@pytest.mark.parametrize(
    ("values", "sent"),
    [(None, None), ([], None), ([None, None], None), ((1, None), [1, None]), ([0], [0])],
)
def test_optional_arrays(values: Any, sent: Any) -> None:
    assert rows.optional_array(values) == sent


@pytest.mark.parametrize("payload", ['{"a": [1, 2.5, null, "x"]}', '"text"', "7", "null", "[]"])
def test_claimed_rows_build_the_same_dataclass(payload: str) -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    row = (uuid.UUID(int=1), "t", "q", payload, 2, 3, -1, now, None, 9)
    built = rows.claimed_execution(row)
    expected = ClaimedExecution(row[0], "t", "q", json.loads(payload), 2, 3, -1, now, None, 9)
    assert type(built) is ClaimedExecution
    assert built == expected
    assert repr(built) == repr(expected)
    assert dataclasses.replace(built, attempt=3).attempt == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.attempt = 5  # type: ignore[misc]
    assert rows.claimed_execution((*row[:3], None, *row[4:])).payload is None


async def test_get_executions_reads_claimed_rows() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    client, engine = client_with([(OID, "t", "q", '{"n":1}', 1, 3, 0, now, 100, 4)] * 2)
    claimed = await client.get_executions(OID, "q", None, 2)
    assert [(c.payload, c.lease) for c in claimed] == [({"n": 1}, 4), ({"n": 1}, 4)]
    assert engine.executed[0][1]["task_keys"] is None


async def test_transient_errors_from_the_driver_are_retried() -> None:
    client, engine = client_with(pg_errors.AdminShutdown("terminating"), [(7,)])
    assert await client.prune_finished(dt.timedelta(days=1)) == 7
    assert [p.fate for p in engine.pooled] == ["returned", None]
    client, _ = client_with(*[pg_errors.DeadlockDetected("d")] * 9)
    with pytest.raises(TransientError):
        await client.prune_finished(dt.timedelta(days=1))
