"""SqlDatabaseClient's own calls on the pooled psycopg connection, against a real server.

The pool stays SQLAlchemy's and every connection goes back as it came; the client's calls
share the one connection it keeps checked out until `close()`, a kept connection that died
is replaced by the retry, and a pool of two serves concurrent calls; statements are prepared
once per connection (or never, with `prepare=False`); a pool whose connections all died is
renewed after one failure; a cancelled call leaves no connection checked out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pgconductor.db import RetryPolicy, SqlDatabaseClient, to_sqlalchemy_url
from pgconductor.errors import InvalidInput
from pgconductor.types import ExecutionResult, ResultStatus
from pgtest import execute, libpq_url, wait_until


@pytest.fixture
def app_name() -> str:
    """The application_name of the engine's connections (to find their backends)."""
    return f"shared_{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def engine(db_url: str, app_name: str) -> AsyncIterator[AsyncEngine]:
    """An application's engine, shared with a client."""
    made = create_async_engine(
        to_sqlalchemy_url(db_url),
        pool_size=3,
        max_overflow=0,
        connect_args={"application_name": app_name},
    )
    try:
        yield made
    finally:
        await made.dispose()


async def prepared_statements(engine: AsyncEngine) -> list[str]:
    """The statements prepared on the connection `engine.connect()` hands out."""
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT statement FROM pg_prepared_statements"))
        return [str(row[0]) for row in rows]


async def test_connections_go_back_as_they_came(engine: AsyncEngine, db_url: str) -> None:
    client = SqlDatabaseClient(engine)
    eid = await client.invoke("driver.t", {"n": 1}, queue="driver_q")
    with pytest.raises(InvalidInput):
        await client.invoke("driver.t", {}, queue="NOT A QUEUE")
    await client.queue_stats()
    assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]  # the kept one
    await client.close()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    async with engine.connect() as conn:  # the application's transaction is a transaction
        raw = await conn.get_raw_connection()
        assert raw.driver_connection.autocommit is False  # type: ignore[union-attr]
        await conn.execute(text("DELETE FROM pgconductor.executions WHERE id = :id"), {"id": eid})
        await conn.rollback()
    assert (await client.get_execution(eid)) is not None
    await client.close()  # a caller's engine is left open
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1


async def test_statements_are_prepared_once_per_connection(engine: AsyncEngine) -> None:
    client = SqlDatabaseClient(engine, retry=RetryPolicy(max_attempts=1))
    oid = uuid.uuid4()
    for _ in range(3):
        await client.get_executions(oid, "driver_q", ["driver.none"], 5)
    await client.close()  # the kept connection goes back: the pool's only one
    statements = await prepared_statements(engine)
    assert sum("pgconductor.get_executions" in s for s in statements) == 1
    results = [ExecutionResult(uuid.uuid4(), 1, ResultStatus.COMPLETED)]
    await client.heartbeat(oid, "test", dt.timedelta(seconds=30), {})
    assert [o.outcome for o in await client.return_executions(oid, results)] == ["stale"]
    await client.close()


async def test_prepare_false_prepares_nothing(db_url: str) -> None:
    client = SqlDatabaseClient(db_url, prepare=False, pool_size=1, max_overflow=0)
    try:
        for _ in range(8):  # more than psycopg's automatic preparation threshold (5)
            await client.get_executions(uuid.uuid4(), "driver_q", ["driver.none"], 5)
            await client.queue_stats()
        assert await prepared_statements(client.engine) == []
        client.invoke_sync("driver.sync", {})
        sync = client._sync()
        with sync.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar() == 0
    finally:
        await client.close()


async def test_a_pool_that_died_is_renewed_after_one_failure(
    engine: AsyncEngine, app_name: str, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = SqlDatabaseClient(engine, retry=RetryPolicy(max_attempts=5, base=0.01, cap=0.05))
    conns = [await engine.connect() for _ in range(3)]  # open every pooled connection
    for conn in conns:
        await conn.close()
    killed = execute(
        db_url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
        app_name,
    )
    assert killed == [(3,)]
    caplog.set_level(logging.WARNING, logger="pgconductor.db")
    assert await client.queue_stats() is not None
    retries = [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()]
    assert len(retries) == 1, retries  # the first dead one condemned the other two
    await client.close()


async def test_a_cancelled_call_leaves_no_connection_behind(
    engine: AsyncEngine, db_url: str
) -> None:
    client = SqlDatabaseClient(engine)
    locker = psycopg.connect(libpq_url(db_url))
    try:
        locker.execute("LOCK TABLE pgconductor.queues IN ACCESS EXCLUSIVE MODE")
        call = asyncio.create_task(client.create_queue("driver_locked"))

        def waiting() -> Any:
            rows = execute(
                db_url,
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND query LIKE '%create_queue%'",
            )
            return rows[0][0]

        await wait_until(waiting)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    finally:
        locker.rollback()
        locker.close()
    await wait_until(lambda: engine.pool.checkedout() == 0)  # type: ignore[attr-defined]
    assert await client.create_queue("driver_locked") is True
    await client.close()


def backends(db_url: str, app_name: str) -> list[int]:
    """The pids of the server backends of connections named `app_name`."""
    rows = execute(
        db_url,
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s ORDER BY pid",
        app_name,
    )
    return [int(row[0]) for row in rows]


async def test_sequential_calls_share_the_kept_connection(
    engine: AsyncEngine, app_name: str, db_url: str
) -> None:
    client = SqlDatabaseClient(engine)
    await client.queue_stats()
    held = backends(db_url, app_name)
    assert len(held) == 1
    for _ in range(5):
        await client.invoke("driver.t", {}, queue="driver_q")
        await client.queue_stats()
    assert backends(db_url, app_name) == held
    assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    await client.close()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    async with engine.connect() as conn:  # it went back out of autocommit
        raw = await conn.get_raw_connection()
        assert raw.driver_connection.autocommit is False  # type: ignore[union-attr]


async def test_a_terminated_kept_connection_is_replaced_by_the_retry(
    engine: AsyncEngine, app_name: str, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = SqlDatabaseClient(engine, retry=RetryPolicy(max_attempts=5, base=0.01, cap=0.05))
    await client.queue_stats()
    (kept,) = backends(db_url, app_name)
    assert execute(db_url, "SELECT pg_terminate_backend(%s)", kept) == [(True,)]
    await wait_until(lambda: kept not in backends(db_url, app_name))
    caplog.set_level(logging.WARNING, logger="pgconductor.db")
    assert await client.queue_stats() is not None
    retries = [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()]
    assert len(retries) == 1, retries
    (fresh,) = backends(db_url, app_name)
    assert fresh != kept
    assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    await client.close()


async def test_a_pool_of_two_serves_concurrent_calls(db_url: str) -> None:
    client = SqlDatabaseClient(db_url, pool_size=1, max_overflow=1)  # the CLI's sizing
    try:
        await client.create_queue("driver_q")
        calls = [client.invoke("driver.t", {"n": n}, queue="driver_q") for n in range(20)]
        ids = await asyncio.wait_for(asyncio.gather(*calls), timeout=20)
        assert len(set(ids)) == 20
        assert client.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
        await asyncio.wait_for(client.queue_stats(), timeout=10)
    finally:
        await client.close()
