"""Latency spikes longer than 10 s (and longer than `stale_after`) on the database link.

Two cases run side by side (two databases, two proxies) so the layer pays for one spike:

- alone: nobody else runs recovery, so the orchestrator keeps its leases through the spike;
  its late results apply (attempt 1) and it goes on working afterwards;
- with a peer: a second orchestrator (direct link) sees the heartbeat lapse and takes the
  work over (attempt 2); the spiked one's late results come back `stale` (fencing), it gets
  `lease_lost`, and it goes on working afterwards.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from chaos.app import GATES, make_conductor
from chaos.faultproxy import FaultProxy
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
from pgtest import wait_until

SPIKE_SECONDS = 11.0  # > 10 s and > stale_after (3 s)


def stats_before_end(orch: Any) -> int:
    """Results the orchestrator got answered so far (stale or not)."""
    return int(orch.stats["default"].flushed)


async def spike_alone(proxy: FaultProxy, url: str) -> dict[str, Any]:
    """One orchestrator behind the spiked link keeps its leases."""
    prepare(url)
    GATES["alone"] = asyncio.Event()
    ids = invoke(url, [{"n": i, "gate": "alone"} for i in range(3)])
    orch = make_orchestrator(make_conductor(proxy.url_for(url), "A", ledger_url=url))
    async with running(orch):
        await wait_until(lambda: started(url, ids) == 3, timeout=10)
        proxy.latency(SPIKE_SECONDS * 1000)  # both directions
        GATES["alone"].set()  # the handlers finish during the spike; their flush is held
        await asyncio.sleep(SPIKE_SECONDS)  # holding the fault
        assert finished_count(url, ids) == 0  # nothing got through during the spike
        proxy.reset()
        await wait_until(lambda: finished_count(url, ids) == 3, timeout=15)
        after = invoke(url, [{"n": 10 + i} for i in range(3)])  # it goes on working
        await wait_until(lambda: finished_count(url, after) == 3, timeout=10)
    report = check_invariants(url, ids + after, orchestrators={"A": orch.id})
    return {"report": report, "ids": ids, "orch": orch}


async def spike_with_peer(proxy: FaultProxy, url: str) -> dict[str, Any]:
    """The spiked orchestrator's work is recovered by a peer; its late results are fenced."""
    prepare(url)
    GATES["peer"] = asyncio.Event()
    a = make_orchestrator(make_conductor(proxy.url_for(url), "A", ledger_url=url))
    b = make_orchestrator(make_conductor(url, "B"))
    async with running(a):
        ids = invoke(url, [{"n": i, "gate": "peer"} for i in range(3)])
        await wait_until(lambda: started(url, ids, "A") == 3, timeout=10)
        async with running(b):
            proxy.latency(SPIKE_SECONDS * 1000)
            spike_end = time.monotonic() + SPIKE_SECONDS
            GATES["peer"].set()  # A's handlers finish now; their results wait in the proxy
            # B sees A's heartbeat lapse, recovers the three and completes them (attempt 2)
            # while the spike still holds A's traffic.
            await wait_until(lambda: finished_count(url, ids) == 3, timeout=SPIKE_SECONDS - 1)
            expired = scalar(
                url,
                "SELECT expired_at IS NOT NULL FROM pgconductor.orchestrators WHERE id = %s",
                a.id,
            )
            assert stats_before_end(a) == 0  # A's results are still held by the spike
            await asyncio.sleep(max(0.0, spike_end - time.monotonic()))  # holding the fault
            proxy.reset()
            stats = a.stats["default"]
            await wait_until(lambda: stats.stale >= 3, timeout=15)  # A's late flush: fenced
            await wait_until(
                lambda: sum(s.kind == "lease_lost" for s in a.signals_received) >= 3,
                timeout=10,
            )
            after = invoke(url, [{"n": 10 + i} for i in range(6)])  # both go on working
            await wait_until(lambda: finished_count(url, after) == 6, timeout=10)
    report = check_invariants(url, ids + after, orchestrators={"A": a.id, "B": b.id})
    return {"report": report, "ids": ids, "a": a, "b": b, "expired": expired}


async def test_latency_spike_over_10s(
    upstream: tuple[str, int], fresh_db_url: str, db_url: str
) -> None:
    with FaultProxy(*upstream) as proxy_a, FaultProxy(*upstream) as proxy_b:
        try:
            alone, peer = await asyncio.gather(
                spike_alone(proxy_a, fresh_db_url), spike_with_peer(proxy_b, db_url)
            )
        finally:
            GATES.pop("alone", None)
            GATES.pop("peer", None)

    # Alone: the leases held; every execution completed on its first attempt, by A.
    report = alone["report"]
    assert all(report.attempts[i] == 1 for i in alone["ids"])
    assert not [s for s in alone["orch"].signals_received if s.kind == "lease_lost"]
    assert alone["orch"].stats["default"].stale == 0

    # With a peer: A's heartbeat expired, B finished the work on attempt 2; A's side effects
    # of attempt 1 happened (its lease was lost, not its process) but were never applied.
    report, a, b = peer["report"], peer["a"], peer["b"]
    assert peer["expired"]
    lost = {s.execution_id for s in a.signals_received if s.kind == "lease_lost"}
    assert lost >= set(peer["ids"])
    assert a.stats["default"].stale == 3  # exactly A's three late results, all fenced
    for eid in peer["ids"]:
        assert report.attempts[eid] == 2
        assert report.finished_by[eid] == b.id
        assert sorted(report.effects[eid]) == [(1, "A"), (2, "B")]
        assert "lost" in (report.errors[eid] or "")
