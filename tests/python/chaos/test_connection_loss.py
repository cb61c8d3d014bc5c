"""Connection loss between an orchestrator and PostgreSQL, during fetch and during flush.

The orchestrator talks to the database only through a `FaultProxy`; the test enqueues and
checks directly. Triggers place the fault exactly: a cut as the claim statement goes out;
a claim, then a flush, that the server commits while its reply is lost (the client cannot
know the outcome).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from chaos.app import GATES, make_conductor
from chaos.faultproxy import EXECUTE, FaultProxy
from chaos.support import (
    check_invariants,
    finished_count,
    invoke,
    locked_by,
    make_orchestrator,
    prepare,
    running,
    started,
)
from pgtest import wait_until


async def test_cut_while_claiming_then_everything_completes(
    proxy: FaultProxy, fresh_db_url: str
) -> None:
    """The connection dies as the claim statement goes out (whatever the server did with
    it), then a 1 s outage fails every fetch and heartbeat. After restore everything
    completes, each on its first attempt (a claim lost with its connection is given back
    without spending one)."""
    prepare(fresh_db_url)
    ids = invoke(fresh_db_url, [{"n": i} for i in range(20)])
    claim = proxy.trigger([b"get_executions", EXECUTE], action="cut")
    orch = make_orchestrator(
        make_conductor(proxy.url_for(fresh_db_url), "A", ledger_url=fresh_db_url)
    )
    async with running(orch):
        assert await claim.wait_async(10)
        proxy.cut()
        await asyncio.sleep(1.0)  # the outage lasts a while: fetches and heartbeats fail
        proxy.restore()
        await wait_until(lambda: finished_count(fresh_db_url, ids) == len(ids), timeout=15)
        stats = orch.stats["default"]
    report = check_invariants(fresh_db_url, ids, orchestrators={"A": orch.id})
    assert set(report.attempts.values()) == {1}  # the lost claim cost no attempt
    assert stats.fetch_errors >= 1
    assert not [s for s in orch.signals_received if s.kind == "lease_lost"]


async def test_claim_committed_but_its_reply_lost_then_everything_completes(
    proxy: FaultProxy, fresh_db_url: str
) -> None:
    """The claim commits on the server but its reply never reaches the worker. The rows are
    locked by a live orchestrator that does not know it holds them: its next heartbeats,
    which list what it really holds, must get them back, and everything completes."""
    prepare(fresh_db_url)
    ids = invoke(fresh_db_url, [{"n": i} for i in range(5)])
    claim = proxy.trigger([b"get_executions", EXECUTE], action="lose_reply")
    orch = make_orchestrator(
        make_conductor(proxy.url_for(fresh_db_url), "A", ledger_url=fresh_db_url)
    )
    async with running(orch):
        assert await claim.wait_async(10)
        await wait_until(
            lambda: set(locked_by(fresh_db_url, ids).values()) == {orch.id}, timeout=10
        )
        proxy.cut()  # the claim is committed; the worker gets an error instead of rows
        await asyncio.sleep(0.5)
        proxy.restore()
        deadline = time.monotonic() + 10
        while finished_count(fresh_db_url, ids) < len(ids):
            if time.monotonic() > deadline:
                held = locked_by(fresh_db_url, ids)
                raise AssertionError(
                    f"{sum(v == orch.id for v in held.values())} of {len(ids)} executions stay"
                    f" locked by the live orchestrator {orch.id}, which lost the claim's reply;"
                    f" its handlers never started them ({started(fresh_db_url, ids)} started)"
                )
            await asyncio.sleep(0.05)
    check_invariants(fresh_db_url, ids, orchestrators={"A": orch.id})


async def test_claim_reply_delayed_past_heartbeats_runs_each_attempt_once(
    proxy: FaultProxy, fresh_db_url: str
) -> None:
    """The claim commits and its reply is only slow: held on its connection for three
    heartbeat intervals (other connections flow). The heartbeats in between must not give
    the claim back as "lost": when the reply arrives the worker runs the rows, and no
    attempt may run twice."""
    prepare(fresh_db_url)
    ids = invoke(fresh_db_url, [{"n": i} for i in range(3)])
    claim = proxy.trigger([b"get_executions", EXECUTE], action="stall")
    orch = make_orchestrator(
        make_conductor(proxy.url_for(fresh_db_url), "A", ledger_url=fresh_db_url)
    )
    async with running(orch):
        assert await claim.wait_async(10)
        await asyncio.sleep(3 * orch.heartbeat_interval)  # holding the reply
        proxy.unstall()
        await wait_until(lambda: finished_count(fresh_db_url, ids) == len(ids), timeout=10)
    report = check_invariants(fresh_db_url, ids, orchestrators={"A": orch.id})
    assert set(report.attempts.values()) == {1}


async def test_flush_commit_outcome_unknown_is_retried_and_reported_stale(
    proxy: FaultProxy, fresh_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A flush commits on the server, the reply is lost, the connection dies. The worker
    re-sends the same batch: SQL answers `stale` for every row already applied. No result is
    lost, none is applied twice, no handler runs twice."""
    prepare(fresh_db_url)
    GATES["flush"] = asyncio.Event()
    n = 10
    ids = invoke(fresh_db_url, [{"n": i, "gate": "flush"} for i in range(n)])
    orch = make_orchestrator(
        make_conductor(proxy.url_for(fresh_db_url), "A", ledger_url=fresh_db_url),
        concurrency=n,
        flush_interval=0.3,  # gather every result into one batch
    )
    try:
        async with running(orch):
            await wait_until(lambda: started(fresh_db_url, ids) == n, timeout=10)
            flush = proxy.trigger([b"return_executions", EXECUTE], action="lose_reply")
            GATES["flush"].set()
            assert await flush.wait_async(10)
            # The server applied the batch and committed; the worker waits for the reply.
            await wait_until(lambda: finished_count(fresh_db_url, ids) > 0, timeout=10)
            applied = finished_count(fresh_db_url, ids)
            proxy.cut()
            await asyncio.sleep(0.3)
            proxy.restore()
            await wait_until(lambda: finished_count(fresh_db_url, ids) == n, timeout=15)
            stats = orch.stats["default"]
            await wait_until(lambda: stats.stale >= applied, timeout=10)
    finally:
        del GATES["flush"]
    report = check_invariants(fresh_db_url, ids, orchestrators={"A": orch.id})
    assert set(report.attempts.values()) == {1}
    # The lost commit was retried (by the DatabaseClient, or by the worker's flush loop once
    # the client gave up) with the very same batch.
    retried = [r for r in caplog.records if r.getMessage().startswith("db.return_executions:")]
    assert retried or stats.flush_errors >= 1
    assert stats.stale == applied  # exactly the rows the lost commit had applied
    assert all(len(e) == 1 for e in report.effects.values())
