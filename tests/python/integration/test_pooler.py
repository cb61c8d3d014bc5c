"""Behind a transaction-mode pooler: the URL option `?pooler=transaction`, on a real server.

The option is taken out of the URL before connecting and turns preparation off for every
path a worker uses (its calls on the kept connection, borrowed ones, the sync enqueue path);
the same calls without it do prepare (so the check can fail). An orchestrator on such a URL
polls unless it has a direct `listen_url`, and then LISTENs there. The claim position one
session keeps is shared, behind a pooler, by every client whose transactions land on it: two
workers alternating on one session still claim every row exactly once, in key order.
(PgBouncer itself runs in the e2e scenario `17-pgbouncer`.)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from pgconductor.conductor import Conductor, TaskContext
from pgconductor.db import RetryPolicy, SqlDatabaseClient
from pgconductor.errors import InvalidInput
from pgconductor.orchestrator import Orchestrator
from pgconductor.types import ExecutionResult, ResultStatus
from pgtest import execute, libpq_url, wait_until


def pooled(url: str) -> str:
    """`url` with the pooler option."""
    return libpq_url(url) + ("&" if "?" in libpq_url(url) else "?") + "pooler=transaction"


async def worker_calls(client: SqlDatabaseClient) -> None:
    """Every call a worker makes, more often than psycopg's preparation threshold (5)."""
    oid = uuid.uuid4()
    await client.heartbeat(oid, "test", dt.timedelta(seconds=30), {})
    for n in range(8):
        await client.invoke("pool.t", {"n": n}, queue="pool_q")
        claimed = await client.get_executions(oid, "pool_q", ["pool.t"], 5)
        results = [ExecutionResult(c.id, c.lease, ResultStatus.COMPLETED) for c in claimed]
        await client.return_executions(oid, results)
        await client.heartbeat(oid, "test", dt.timedelta(seconds=30), {})
        await client.queue_stats()
    for n in range(8):
        client.invoke_sync("pool.t", {"n": n}, queue="pool_q")


async def prepared_counts(client: SqlDatabaseClient) -> tuple[int, int]:
    """Statements prepared on the async pool's one connection and on the sync engine's.

    A pool of one is never kept checked out: every call borrowed this same connection.
    """
    query = "SELECT count(*) FROM pg_prepared_statements"
    async with client.engine.connect() as conn:
        on_async = (await conn.execute(text(query))).scalar()
    with client._sync().connect() as conn:
        on_sync = conn.exec_driver_sql(query).scalar()
    return int(on_async or 0), int(on_sync or 0)


async def test_the_pooler_option_prepares_nothing_anywhere(db_url: str) -> None:
    client = SqlDatabaseClient(pooled(db_url), pool_size=1, max_overflow=0)
    try:
        assert client.behind_pooler
        assert "pooler" not in client.engine.url.query
        await worker_calls(client)
        assert await prepared_counts(client) == (0, 0)
    finally:
        await client.close()


async def test_without_the_option_the_same_calls_prepare(db_url: str) -> None:
    client = SqlDatabaseClient(db_url, pool_size=1, max_overflow=0)
    try:
        assert not client.behind_pooler
        await worker_calls(client)
        on_async, on_sync = await prepared_counts(client)
        assert on_async > 0
        assert on_sync > 0
    finally:
        await client.close()


def test_an_unknown_pooler_mode_is_refused(db_url: str) -> None:
    with pytest.raises(InvalidInput, match="unknown pooler mode 'statement'") as caught:
        SqlDatabaseClient(libpq_url(db_url) + "?pooler=statement")
    assert caught.value.hint is not None
    assert "?pooler=transaction" in caught.value.hint


def make_conductor(url: str) -> Conductor:
    conductor = Conductor(url, retry=RetryPolicy(max_attempts=5, base=0.01, cap=0.1))

    @conductor.task("pool.run")
    async def run(ctx: TaskContext, payload: Any) -> str:
        return "done"

    return conductor


async def listeners(url: str) -> int:
    rows = execute(
        url,
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = 'pgconductor-notifier'",
    )
    return int(rows[0][0])


async def test_an_orchestrator_behind_a_pooler_polls_without_a_listen_url(
    fresh_db_url: str,
) -> None:
    conductor = make_conductor(pooled(fresh_db_url))
    orchestrator = Orchestrator(conductor, poll_interval=0.05)
    await orchestrator.start()
    try:
        assert orchestrator.notifier is not None
        assert not orchestrator.notifier.use_listen
        await conductor.invoke_many("pool.run", [{}] * 20)
        await wait_until(
            lambda: (
                execute(fresh_db_url, "SELECT count(*) FROM pgconductor.finished_executions")
                == [(20,)]
            ),
            timeout=15,
        )
        assert await listeners(fresh_db_url) == 0
    finally:
        await orchestrator.stop()
        await conductor.close()


async def test_an_orchestrator_behind_a_pooler_listens_on_its_listen_url(
    fresh_db_url: str,
) -> None:
    conductor = make_conductor(pooled(fresh_db_url))
    orchestrator = Orchestrator(conductor, listen_url=libpq_url(fresh_db_url))
    await orchestrator.start()
    try:
        assert orchestrator.notifier is not None
        await asyncio.wait_for(orchestrator.notifier.wait_connected(), 10)
        assert await listeners(fresh_db_url) == 1
    finally:
        await orchestrator.stop()
        await conductor.close()


def test_workers_sharing_one_session_claim_each_row_once_in_order(db_url: str) -> None:
    """Two orchestrators alternate on one session (as a pooler may make them): the claim
    position one leaves is the other's starting point, and nothing is skipped or repeated."""
    execute(
        db_url,
        "SELECT pgconductor.invoke_batch('pool.shared', ARRAY(SELECT '{}'::jsonb"
        " FROM generate_series(1, 100)), p_queue => 'pool_shared')",
    )
    workers = [uuid.uuid4(), uuid.uuid4()]
    claimed: list[uuid.UUID] = []
    with psycopg.connect(libpq_url(db_url), autocommit=True) as session:
        for turn in range(12):  # 10 full batches, then claims that find nothing
            rows = session.execute(
                "SELECT id FROM pgconductor.get_executions(%s, %s, 10, 'pool_shared')",
                (["pool.shared"], workers[turn % 2]),
            ).fetchall()
            claimed += [row[0] for row in rows]
    in_key_order = [
        row[0]
        for row in execute(
            db_url,
            "SELECT id FROM pgconductor.executions WHERE queue = 'pool_shared'"
            " ORDER BY priority, run_at, id",
        )
    ]
    assert claimed == in_key_order
    assert len(set(claimed)) == 100
