"""Deadlocks, serialization failures, statement and lock timeouts, provoked for real.

Each is produced by a second connection holding row locks against a `SqlDatabaseClient`
call. Transient ones (40P01, 40001, 55P03) must be retried by the client until they pass;
a statement timeout (57014) is not transient: the client surfaces it at once, changes
nothing, and a worker whose flush hits it keeps re-sending until the flush goes through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql

from chaos.app import GATES, make_conductor
from chaos.support import (
    check_invariants,
    finished_count,
    invoke,
    make_orchestrator,
    prepare,
    running,
    scalar,
    started,
)
from pgconductor.db import SCHEMA_LOCK_KEY, RetryPolicy, SqlDatabaseClient
from pgconductor.errors import PgConductorError, TransientError
from pgconductor.schema import SchemaManager
from pgtest import EXTENSION_VERSION, execute, wait_until


def set_for_database(url: str, setting: str, value: str) -> None:
    """`ALTER DATABASE <this one> SET setting = value` (new sessions only)."""
    name = scalar(url, "SELECT current_database()")
    execute(
        url,
        sql.SQL("ALTER DATABASE {} SET {} = {}")
        .format(sql.Identifier(name), sql.Identifier(setting), sql.Literal(value))
        .as_string(),
    )


def waiting_on_locks(url: str) -> int:
    """Sessions of this database waiting for a lock now."""
    return int(
        scalar(
            url,
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
    )


def retries(caplog: pytest.LogCaptureFixture, call: str, sqlstate: str) -> list[str]:
    """The client's retry warnings for `call` that quote `sqlstate`."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith(f"db.{call}:") and f"SQLSTATE {sqlstate}" in r.getMessage()
    ]


@pytest.fixture
async def client(fresh_db_url: str) -> AsyncIterator[SqlDatabaseClient]:
    db = SqlDatabaseClient(fresh_db_url, retry=RetryPolicy(max_attempts=10, base=0.05, cap=0.5))
    yield db
    await db.close()


@pytest.fixture
async def blocker(fresh_db_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """The other side: a plain connection the test drives statement by statement."""
    conn = await psycopg.AsyncConnection.connect(fresh_db_url)
    yield conn
    await conn.close()


async def test_deadlock_is_detected_and_the_client_retries(
    client: SqlDatabaseClient,
    blocker: psycopg.AsyncConnection[Any],
    fresh_db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """release_orchestrator locks the execution, then the orchestrator row; the blocker
    locks them in the opposite order. The client's side is the deadlock victim (its
    deadlock_timeout is the shorter), gets 40P01, retries, and completes."""
    orchestrator = uuid4()
    (eid,) = invoke(fresh_db_url, [{"n": 1}])
    execute(
        fresh_db_url,
        "SELECT * FROM pgconductor.get_executions(ARRAY['chaos.work'], %s, 1, 'default')",
        orchestrator,
    )
    set_for_database(fresh_db_url, "deadlock_timeout", "50ms")
    await blocker.execute("SET deadlock_timeout = '10s'")
    await blocker.execute(
        "SELECT 1 FROM pgconductor.orchestrators WHERE id = %s FOR UPDATE",
        (orchestrator,),
    )
    caplog.set_level(logging.WARNING, "pgconductor.db")
    release = asyncio.ensure_future(client.release_orchestrator(orchestrator))
    await wait_until(lambda: waiting_on_locks(fresh_db_url) == 1, timeout=10)
    # Now the opposite order: the execution row, held by the waiting release.
    await blocker.execute(
        "SELECT 1 FROM pgconductor.executions WHERE id = %s FOR UPDATE", (eid,)
    )  # returns once the deadlock detector has aborted the release's transaction
    await blocker.commit()
    assert await asyncio.wait_for(release, 10) == 1
    assert retries(caplog, "release_orchestrator", "40P01"), "no deadlock was retried"
    row = execute(
        fresh_db_url,
        "SELECT locked_by, attempts FROM pgconductor.executions WHERE id = %s",
        eid,
    )
    assert row == [(None, 0)]  # released, the attempt given back
    assert scalar(
        fresh_db_url,
        "SELECT stopped_at IS NOT NULL FROM pgconductor.orchestrators WHERE id = %s",
        orchestrator,
    )


async def test_serialization_failure_is_retried(
    client: SqlDatabaseClient,
    blocker: psycopg.AsyncConnection[Any],
    fresh_db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under SERIALIZABLE, cancel() waits for a concurrent update of its row; when that
    commits, cancel() fails with 40001; the client retries with a new snapshot and wins."""
    (eid,) = invoke(fresh_db_url, [{"n": 1}])
    set_for_database(fresh_db_url, "default_transaction_isolation", "serializable")
    assert await client.version() == EXTENSION_VERSION  # the client's sessions are SERIALIZABLE now
    await blocker.execute("UPDATE pgconductor.executions SET priority = 5 WHERE id = %s", (eid,))
    caplog.set_level(logging.WARNING, "pgconductor.db")
    cancel = asyncio.ensure_future(client.cancel(eid, "chaos"))
    await wait_until(lambda: waiting_on_locks(fresh_db_url) == 1, timeout=10)
    await blocker.commit()
    assert await asyncio.wait_for(cancel, 10) == "cancelled"
    assert retries(caplog, "cancel", "40001"), "no serialization failure was retried"
    assert execute(
        fresh_db_url,
        "SELECT state, priority, last_error FROM pgconductor.finished_executions WHERE id = %s",
        eid,
    ) == [("cancelled", 5, "chaos")]  # the concurrent update was kept, not overwritten


async def test_lock_timeout_is_transient_and_retried(
    client: SqlDatabaseClient,
    blocker: psycopg.AsyncConnection[Any],
    fresh_db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (eid,) = invoke(fresh_db_url, [{"n": 1}])
    set_for_database(fresh_db_url, "lock_timeout", "100ms")
    await blocker.execute("SELECT 1 FROM pgconductor.executions WHERE id = %s FOR UPDATE", (eid,))
    caplog.set_level(logging.WARNING, "pgconductor.db")
    cancel = asyncio.ensure_future(client.cancel(eid))
    await wait_until(lambda: len(retries(caplog, "cancel", "55P03")) >= 2, timeout=10)
    assert not cancel.done()
    await blocker.commit()
    assert await asyncio.wait_for(cancel, 10) == "cancelled"


async def test_statement_timeout_is_surfaced_at_once_and_changes_nothing(
    client: SqlDatabaseClient,
    blocker: psycopg.AsyncConnection[Any],
    fresh_db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (eid,) = invoke(fresh_db_url, [{"n": 1}])
    set_for_database(fresh_db_url, "statement_timeout", "300ms")
    await blocker.execute("UPDATE pgconductor.executions SET priority = 7 WHERE id = %s", (eid,))
    caplog.set_level(logging.WARNING, "pgconductor.db")
    with pytest.raises(PgConductorError) as raised:
        await client.cancel(eid)
    assert not isinstance(raised.value, TransientError)
    assert raised.value.sqlstate == "57014"
    assert "statement timeout" in str(raised.value)
    assert not [r for r in caplog.records if r.getMessage().startswith("db.cancel:")]  # no retry
    await blocker.commit()
    row = execute(
        fresh_db_url,
        "SELECT priority, cancel_reason, locked_by FROM pgconductor.executions WHERE id = %s",
        eid,
    )
    assert row == [(7, None, None)]  # the timed-out call changed nothing
    assert await client.cancel(eid) == "cancelled"  # and works once the lock is gone


async def test_statement_timeout_inside_a_migration_transaction_rolls_it_back(
    blocker: psycopg.AsyncConnection[Any],
    fresh_db_url: str,
    extension_script: Callable[[str, str], str],
) -> None:
    """An upgrade is a real multi-statement transaction (schema lock, then ALTER EXTENSION).
    Another session holds the schema lock; the upgrade times out waiting (57014): the error
    is surfaced, nothing changed; once the lock is free the same upgrade goes through."""
    target = extension_script("timeout", "CREATE TABLE pgconductor.timeout_canary (id int);\n")
    set_for_database(fresh_db_url, "statement_timeout", "300ms")
    await blocker.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
    await blocker.commit()  # a session-level lock: held until unlocked
    manager = SchemaManager(fresh_db_url)
    try:
        with pytest.raises(PgConductorError) as raised:
            await manager.upgrade(to=target)
        assert raised.value.sqlstate == "57014"
        assert await manager.installed() == EXTENSION_VERSION
        assert scalar(fresh_db_url, "SELECT to_regclass('pgconductor.timeout_canary')") is None
        await blocker.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))
        await blocker.commit()
        assert await manager.upgrade(to=target) == target
    finally:
        await manager.close()
    assert scalar(fresh_db_url, "SELECT to_regclass('pgconductor.timeout_canary')") is not None


async def test_flush_hitting_statement_timeouts_is_resent_until_it_passes(
    blocker: psycopg.AsyncConnection[Any], fresh_db_url: str
) -> None:
    """A worker's flush waits on a row lock and times out (57014) several times in a row;
    the worker keeps the batch and re-sends it; once the lock is gone it applies once."""
    prepare(fresh_db_url)
    set_for_database(fresh_db_url, "statement_timeout", "200ms")
    GATES["timeout"] = asyncio.Event()
    ids = invoke(fresh_db_url, [{"n": i, "gate": "timeout"} for i in range(2)])
    orch = make_orchestrator(make_conductor(fresh_db_url, "A"))
    try:
        async with running(orch):
            await wait_until(lambda: started(fresh_db_url, ids) == 2, timeout=10)
            await blocker.execute(
                "SELECT 1 FROM pgconductor.executions WHERE id = ANY(%s) FOR UPDATE",
                (ids,),
            )
            GATES["timeout"].set()
            stats = orch.stats["default"]
            await wait_until(lambda: stats.flush_errors >= 3, timeout=10)
            assert finished_count(fresh_db_url, ids) == 0
            await blocker.commit()
            await wait_until(lambda: finished_count(fresh_db_url, ids) == 2, timeout=10)
    finally:
        del GATES["timeout"]
    report = check_invariants(fresh_db_url, ids, orchestrators={"A": orch.id})
    assert set(report.attempts.values()) == {1}
    assert stats.stale == 0
