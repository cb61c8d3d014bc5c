"""SqlDatabaseClient without a server: retry, abort, cancellation, savepoints, parameters.

The stub engine (`db_stubs`) plays every statement from a plan of rows and exceptions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import errors as pg_errors
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import create_async_engine

from pgconductor.db import RetryPolicy, SqlDatabaseClient, to_json, to_sqlalchemy_url
from pgconductor.errors import (
    InvalidInput,
    NotFound,
    PgConductorError,
    TransientError,
)
from pgconductor.retry import retry_async, retry_sync
from pgconductor.types import ExecutionResult, ResultStatus, TaskSpec

from .db_stubs import (
    FAST,
    StubConn,
    StubEngine,
    SyncStubConn,
    SyncStubEngine,
    client_with,
    refused,
)

# -- RetryPolicy ------------------------------------------------------------------------


@given(
    retry=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0, max_value=10),
    cap=st.floats(min_value=0, max_value=100),
    rand=st.floats(min_value=0, max_value=1),
)
def test_delay_stays_within_half_and_full_ceiling(
    retry: int, base: float, cap: float, rand: float
) -> None:
    policy = RetryPolicy(max_attempts=3, base=base, cap=cap)
    ceiling = min(cap, base * 2.0 ** min(retry - 1, 60))
    delay = policy.delay(retry, rand=lambda: rand)
    assert ceiling / 2 - 1e-9 <= delay <= ceiling + 1e-9
    assert delay <= cap + 1e-9


def test_delay_grows_exponentially_until_the_cap() -> None:
    policy = RetryPolicy(base=1, cap=5)
    assert [policy.delay(n, rand=lambda: 1.0) for n in range(1, 6)] == [1, 2, 4, 5, 5]


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"base": -1}, {"cap": -1}])
def test_policy_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**kwargs)


# -- retry loop -------------------------------------------------------------------------


async def test_transient_errors_are_retried_then_succeed() -> None:
    client, engine = client_with(refused(), pg_errors.DeadlockDetected("d"), [(3,)])
    assert await client.release_orchestrator(uuid.uuid4()) == 3
    assert len(engine.executed) == 3


async def test_retries_stop_after_max_attempts() -> None:
    client, engine = client_with(*[refused()] * 10)
    with pytest.raises(TransientError) as caught:
        await client.cancel(uuid.uuid4())
    assert len(engine.executed) == FAST.max_attempts
    assert isinstance(caught.value.__cause__, sa_exc.OperationalError)


async def test_client_calls_are_retried_too() -> None:
    """G24: invoke and cancel get the same retry as worker calls."""
    client, engine = client_with(refused(), [(uuid.UUID(int=1),)])
    assert await client.invoke("t", {}) == uuid.UUID(int=1)
    assert len(engine.executed) == 2


async def test_non_transient_errors_are_raised_at_once() -> None:
    error = pg_errors.NoDataFound("unknown orchestrator")
    client, engine = client_with(error)
    with pytest.raises(NotFound, match="unknown orchestrator"):
        await client.return_executions(
            uuid.uuid4(), [ExecutionResult(uuid.uuid4(), 1, ResultStatus.COMPLETED)]
        )
    assert len(engine.executed) == 1


async def test_a_set_abort_event_stops_retrying() -> None:
    abort = asyncio.Event()
    abort.set()
    client, engine = client_with(refused(), [(1,)], abort=abort)
    with pytest.raises(TransientError):
        await client.request_shutdown()
    assert len(engine.executed) == 1


async def test_abort_during_backoff_wakes_and_raises() -> None:
    abort = asyncio.Event()
    slow = RetryPolicy(max_attempts=5, base=30, cap=30)
    attempts = 0

    async def call() -> int:
        nonlocal attempts
        attempts += 1
        asyncio.get_running_loop().call_soon(abort.set)
        raise refused()

    async with asyncio.timeout(5):
        with pytest.raises(TransientError):
            await retry_async("x", call, slow, abort)
    assert attempts == 1


async def test_unset_abort_event_lets_retries_run() -> None:
    abort = asyncio.Event()
    client, _ = client_with(refused(), [(2,)], abort=abort)
    assert await client.request_shutdown() == 2


async def test_cancellation_propagates_without_retry() -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await retry_async("x", call, FAST)
    assert calls == 1


async def test_cancelling_during_backoff_stops_the_call() -> None:
    slow = RetryPolicy(max_attempts=5, base=30, cap=30)

    async def call() -> None:
        raise refused()

    task = asyncio.create_task(retry_async("x", call, slow))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_sync_retry() -> None:
    outcomes: list[Any] = [refused(), 7]

    def call() -> int:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return int(outcome)

    assert retry_sync("x", call, FAST) == 7
    with pytest.raises(InvalidInput):
        retry_sync(
            "x",
            lambda: (_ for _ in ()).throw(pg_errors.InvalidParameterValue("no")),
            FAST,
        )


# -- the caller's connection ------------------------------------------------------------


@pytest.mark.parametrize(("in_tx", "kind"), [(True, "savepoint"), (False, "begin")])
async def test_callers_connection_gets_a_savepoint_or_a_transaction(in_tx: bool, kind: str) -> None:
    client, engine = client_with([(uuid.UUID(int=5),)])
    conn = StubConn(engine, in_tx=in_tx)
    assert await client.invoke("t", {"a": 1}, conn=conn) == uuid.UUID(int=5)  # type: ignore[arg-type]
    assert conn.opened == [kind]


async def test_callers_connection_is_never_retried() -> None:
    client, engine = client_with(refused(), [(1,)])
    conn = StubConn(engine, in_tx=True)
    with pytest.raises(TransientError):
        await client.invoke_batch(["t"], [{}], conn=conn)  # type: ignore[arg-type]
    assert len(engine.executed) == 1


@pytest.mark.parametrize(("in_tx", "kind"), [(True, "savepoint"), (False, "begin")])
def test_sync_invoke_on_the_callers_connection(in_tx: bool, kind: str) -> None:
    client, engine = client_with([(uuid.UUID(int=9),)], [(uuid.UUID(int=1),), (uuid.UUID(int=2),)])
    conn = SyncStubConn(engine, in_tx=in_tx)
    assert client.invoke_sync("t", {}, conn=conn) == uuid.UUID(int=9)  # type: ignore[arg-type]
    ids = client.invoke_batch_sync(["t", "t"], [{}, {}], conn=conn)  # type: ignore[arg-type]
    assert ids == [uuid.UUID(int=1), uuid.UUID(int=2)]
    assert conn.opened == [kind, kind]
    engine.plan.append(pg_errors.InvalidParameterValue("bad"))
    with pytest.raises(InvalidInput):
        client.invoke_sync("t", {}, conn=conn)  # type: ignore[arg-type]


async def test_sync_invoke_without_connection_uses_an_own_retried_engine() -> None:
    client, _ = client_with()
    sync_engine = SyncStubEngine(refused(), [(uuid.UUID(int=3),)])
    client._sync_engine = sync_engine  # type: ignore[assignment]
    assert client.invoke_sync("t", None) == uuid.UUID(int=3)
    assert sync_engine.executed[-1][1]["payload"] == "null"
    sync_engine.plan.append([(True,)])
    assert client.create_queue_sync("q") is True
    assert sync_engine.executed[-1] == (
        "SELECT pgconductor.create_queue(CAST(%(queue)b AS text))",
        {"queue": "q"},
    )
    await client.close()
    assert sync_engine.disposed


async def test_sync_engine_is_created_lazily_from_the_async_url() -> None:
    client = SqlDatabaseClient("postgres://u@localhost:1/db", retry=RetryPolicy(max_attempts=1))
    with pytest.raises(TransientError):
        client.invoke_sync("t", {})
    assert client._sync_engine is not None
    assert client._sync_engine.url.drivername == "postgresql+psycopg"
    await client.close()
    assert client._sync_engine is None


# -- parameters of each method ----------------------------------------------------------


async def test_each_method_binds_its_parameters() -> None:
    oid, eid = uuid.uuid4(), uuid.uuid4()
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    client, engine = client_with(
        [(eid,)],  # invoke
        [(eid,), (oid,)],  # invoke_batch
        [(None,)],  # register_task
        [(True,)],  # create_queue
        [(False,)],  # drop_queue
        [(eid, "t", "q", '{"a": 1}', 1, 3, 0, now, 500, 7)],  # get_executions
        [(eid, "completed")],  # return_executions
        [("cancel", eid), ("shutdown", None)],  # heartbeat
        [(eid, "released")],  # recover_stale
        [("cancelling",)],  # cancel
        [(eid,)],  # retry
        [(eid, "t", "q", "failed", 3, 0, now, None, "boom", None, now)],  # get_execution
        [],  # get_execution: unknown
        [("q", 1, 2, 3, 4, 5, 6)],  # queue_stats
        [(4,)],  # prune_finished
    )
    assert await client.invoke("t", {"a": now}, queue="q", run_at=now, dedupe_key="k") == eid
    assert await client.invoke_batch(["t", "t"], [{}, {"b": 1}], queues=["q", None]) == [eid, oid]
    await client.register_task(TaskSpec("t", window_start=dt.time(9), timeout=dt.timedelta(1)))
    assert await client.create_queue("q") is True
    assert await client.drop_queue("q", force=True) is False
    (claimed,) = await client.get_executions(oid, "q", ["t"], 5)
    assert (claimed.id, claimed.payload, claimed.attempt, claimed.timeout_ms, claimed.lease) == (
        eid,
        {"a": 1},
        1,
        500,
        7,
    )
    results = [ExecutionResult(eid, 1, ResultStatus.FAILED, error="x", delay_ms=10)]
    assert (await client.return_executions(oid, results))[0].outcome == "completed"
    signals = await client.heartbeat(oid, "0.1.0", dt.timedelta(seconds=30), {"pid": 1})
    assert [(s.kind, s.execution_id) for s in signals] == [
        ("cancel", eid),
        ("shutdown", None),
    ]
    assert (await client.recover_stale(10))[0].outcome == "released"
    assert await client.cancel(eid, "why") == "cancelling"
    assert await client.retry(eid) == eid
    info = await client.get_execution(eid)
    assert info is not None
    assert (info.state, info.last_error, info.finished_at) == ("failed", "boom", now)
    assert await client.get_execution(uuid.uuid4()) is None
    assert (await client.queue_stats())[0].cancelled == 6
    assert await client.prune_finished(dt.timedelta(days=1), limit=5) == 4

    params = {sql.split("(")[0].split(".")[-1]: p for sql, p in engine.executed}
    assert params["invoke"]["payload"] == f'{{"a":"{now.isoformat()}"}}'
    assert params["invoke"]["dedupe_key"] == "k"
    assert params["invoke_batch"]["payloads"] == ["{}", '{"b":1}']
    assert params["invoke_batch"]["run_ats"] is None
    assert params["register_task"]["window_start"] == dt.time(9)
    assert params["register_task"]["timeout"] == dt.timedelta(1)
    assert params["return_executions"]["statuses"] == ["failed"]
    assert params["return_executions"]["errors"] == ["x"]
    assert params["return_executions"]["results"] is None  # all NULL: sent as NULL
    assert params["return_executions"]["delays_ms"] == [10]
    assert params["heartbeat"]["info"] == '{"pid":1}'
    assert params["cancel"]["reason"] == "why"


async def test_return_executions_of_nothing_skips_the_database() -> None:
    client, engine = client_with()
    assert await client.return_executions(uuid.uuid4(), []) == []
    assert engine.executed == []


@pytest.mark.parametrize(
    "error",
    [pg_errors.InvalidSchemaName("no schema"), pg_errors.UndefinedFunction("no fn")],
)
async def test_version_is_none_without_the_extension(error: Exception) -> None:
    client, _ = client_with(error)
    assert await client.version() is None


async def test_version_reports_other_errors_and_values() -> None:
    client, _ = client_with(pg_errors.InsufficientPrivilege("no"), [("0.1.0",)], [(None,)])
    with pytest.raises(PgConductorError):
        await client.version()
    assert await client.version() == "0.1.0"
    assert await client.version() is None


async def test_schema_statements_take_the_advisory_lock() -> None:
    client, engine = client_with(
        [(None,)],
        [(None,)],
        [("0.1.0",)],
        [(None,)],
        [(None,)],
        [("0.2.0",)],
        [("0.1.0",), ("0.2.0",)],
    )
    assert await client.install_extension("0.1.0") == "0.1.0"
    assert await client.upgrade_extension("0.2.0") == "0.2.0"
    assert await client.available_versions() == ["0.1.0", "0.2.0"]
    statements = [sql for sql, _ in engine.executed]
    assert "pg_advisory_xact_lock" in statements[0]
    assert statements[1] == "CREATE EXTENSION IF NOT EXISTS pgconductor VERSION '0.1.0'"
    assert "pg_advisory_xact_lock" in statements[3]
    assert statements[4] == "ALTER EXTENSION pgconductor UPDATE TO '0.2.0'"


async def test_schema_statements_without_versions() -> None:
    client, engine = client_with([(None,)], [(None,)], [], [(None,)], [(None,)], [])
    assert await client.install_extension() is None
    assert await client.upgrade_extension() is None
    statements = [sql for sql, _ in engine.executed]
    assert statements[1] == "CREATE EXTENSION IF NOT EXISTS pgconductor"
    assert statements[4] == "ALTER EXTENSION pgconductor UPDATE"


@pytest.mark.parametrize("version", ["1.0'; DROP TABLE x; --", "", " 1"])
async def test_versions_are_checked_before_reaching_sql(version: str) -> None:
    client, engine = client_with()
    with pytest.raises(InvalidInput):
        await client.upgrade_extension(version)
    with pytest.raises(InvalidInput):
        await client.install_extension(version)
    assert engine.executed == []


# -- construction, JSON, URLs -----------------------------------------------------------


async def test_close_disposes_only_an_own_engine() -> None:
    client, engine = client_with()
    await client.close()
    assert engine.disposed
    callers = create_async_engine("postgresql+psycopg://u@localhost/db")
    shared = SqlDatabaseClient(callers)
    assert shared.engine is callers
    other = StubEngine()
    shared.engine = other  # type: ignore[assignment]
    await shared.close()
    assert not other.disposed
    await callers.dispose()


async def test_with_abort_shares_the_engine() -> None:
    client = SqlDatabaseClient("postgresql://u@localhost/db", pool_size=2)
    event = asyncio.Event()
    clone = client.with_abort(event)
    assert clone.engine is client.engine
    assert clone.abort is event
    assert clone.retry_policy is client.retry_policy
    await clone.close()
    await client.close()


async def test_engine_options_reach_the_pool() -> None:
    client = SqlDatabaseClient(
        "postgresql://u@localhost/db", pool_size=3, engine_options={"max_overflow": 7}
    )
    assert client.engine.pool.size() == 3  # type: ignore[attr-defined]
    assert client.engine.pool._max_overflow == 7  # type: ignore[attr-defined]
    await client.close()


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg"),
    ],
)
def test_urls_are_converted_to_psycopg(url: str, driver: str) -> None:
    assert to_sqlalchemy_url(url).drivername == driver
    assert to_sqlalchemy_url(url).database == "db"


def test_to_json_is_compact_and_handles_common_types() -> None:
    moment = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    value = {
        "at": moment,
        "day": moment.date(),
        "time": dt.time(9, 30),
        "id": uuid.UUID(int=1),
        "price": decimal.Decimal("1.50"),
        "tags": ("a",),
        "set": {1},
    }
    assert to_json(value) == (
        '{"at":"2030-01-02T03:04:05+00:00","day":"2030-01-02","time":"09:30:00",'
        '"id":"00000000-0000-0000-0000-000000000001","price":"1.50","tags":["a"],"set":[1]}'
    )


@pytest.mark.parametrize("value", [float("nan"), object(), {"x": float("inf")}])
def test_to_json_rejects_what_jsonb_cannot_hold(value: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        to_json(value)
    assert caught.value.sqlstate == "22023"
