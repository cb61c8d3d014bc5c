"""Connection pool exhaustion: more concurrent client calls than the pool has connections.

Calls beyond the pool size wait for a connection (or, past `pool_timeout`, are retried as
transient errors); none fails. The proxy's counters show that the pool never opened more
connections than its size.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from chaos.app import make_conductor
from chaos.faultproxy import FaultProxy
from chaos.support import (
    check_invariants,
    invoke,
    make_orchestrator,
    prepare,
    running,
    scalar,
)
from pgconductor.db import RetryPolicy, SqlDatabaseClient
from pgtest import execute, wait_until


async def test_calls_beyond_the_pool_size_wait_and_all_succeed(
    proxy: FaultProxy, fresh_db_url: str
) -> None:
    proxy.latency(10)  # every call holds its connection a little while
    client = SqlDatabaseClient(proxy.url_for(fresh_db_url), pool_size=2, max_overflow=0)
    try:
        ids = await asyncio.gather(*(client.invoke("chaos.pool", {"n": i}) for i in range(20)))
    finally:
        await client.close()
    assert len(set(ids)) == 20
    assert (
        scalar(
            fresh_db_url,
            "SELECT count(*) FROM pgconductor.executions WHERE task_key = 'chaos.pool'",
        )
        == 20
    )
    stats = proxy.stats()
    assert stats.peak_active <= 2  # the pool never grew beyond its size
    assert stats.accepted <= 2  # and never had to reconnect


async def test_pool_timeouts_are_transient_and_retried(
    proxy: FaultProxy, fresh_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With a pool timeout shorter than the queue, waiting calls get SQLAlchemy's pool
    TimeoutError; the client retries it like any transient error and every call succeeds."""
    proxy.latency(20)
    caplog.set_level(logging.WARNING, "pgconductor.db")
    client = SqlDatabaseClient(
        proxy.url_for(fresh_db_url),
        pool_size=1,
        max_overflow=0,
        engine_options={"pool_timeout": 0.1},
        retry=RetryPolicy(max_attempts=50, base=0.05, cap=0.3),
    )
    try:
        ids = await asyncio.gather(*(client.invoke("chaos.pool", {"n": i}) for i in range(8)))
    finally:
        await client.close()
    assert len(set(ids)) == 8
    assert proxy.stats().peak_active == 1
    timeouts = [r for r in caplog.records if "QueuePool limit" in r.getMessage()]
    assert timeouts, "no call ever waited past the pool timeout: the test proves nothing"


async def test_orchestrator_on_a_tiny_pool_completes_everything(
    proxy: FaultProxy, fresh_db_url: str
) -> None:
    """20 handlers at once, each invoking 2 children through the same 2-connection pool that
    also carries the fetches, flushes and heartbeats: everything completes exactly once."""
    prepare(fresh_db_url)
    client = SqlDatabaseClient(proxy.url_for(fresh_db_url), pool_size=2, max_overflow=0)
    app = make_conductor(client, "A", ledger_url=fresh_db_url)
    parents = invoke(fresh_db_url, [{"n": i, "children": 2} for i in range(20)])
    orch = make_orchestrator(app, concurrency=20)
    try:
        async with running(orch):

            def done() -> bool:
                completed = scalar(
                    fresh_db_url,
                    "SELECT count(*) FROM pgconductor.finished_executions"
                    " WHERE state = 'completed'",
                )
                return bool(completed == 60)

            await wait_until(done, timeout=20)
    finally:
        await client.close()
    children = [
        row[0]
        for row in execute(
            fresh_db_url,
            "SELECT id FROM pgconductor.finished_executions WHERE payload ? 'parent'",
        )
    ]
    assert len(children) == 40
    report = check_invariants(fresh_db_url, parents + children, orchestrators={"A": orch.id})
    assert set(report.attempts.values()) == {1}  # no call failed, so no attempt was retried
    stats = proxy.stats()
    assert stats.peak_active <= 3  # 2 pooled connections + the LISTEN connection
    assert stats.accepted <= 3  # none was ever dropped and reopened
