"""Process failures: a worker killed mid-execution (SIGKILL) and an orchestrator that hangs
(SIGSTOP) until its heartbeat expires. The victim is a real `pgconductor worker start`
subprocess; the survivor, an in-process orchestrator, recovers the work after stale_after.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable

from chaos.app import make_conductor
from chaos.support import (
    WorkerProcess,
    check_invariants,
    finished_count,
    invoke,
    ledger,
    locked_by,
    make_orchestrator,
    prepare,
    running,
    scalar,
    started,
)
from pgtest import wait_until


async def test_worker_killed_mid_execution_is_recovered_by_another(
    fresh_db_url: str, worker_process: Callable[..., WorkerProcess]
) -> None:
    prepare(fresh_db_url)
    ids = invoke(fresh_db_url, [{"n": i, "hang_on": [1]} for i in range(5)])
    a = worker_process(fresh_db_url, "A")
    await wait_until(lambda: started(fresh_db_url, ids, "A") == 5, timeout=30)
    a_id = a.orchestrator_id()
    assert a_id is not None
    a.signal(signal.SIGKILL)  # mid-execution: all five handlers are running
    assert a.wait(10) == -signal.SIGKILL
    assert set(locked_by(fresh_db_url, ids).values()) == {a_id}

    b = make_orchestrator(make_conductor(fresh_db_url, "B"))
    async with running(b):
        await wait_until(lambda: finished_count(fresh_db_url, ids) == 5, timeout=15)

    report = check_invariants(fresh_db_url, ids, orchestrators={"A": a_id, "B": b.id})
    for eid in ids:
        assert report.attempts[eid] == 2  # the crashed attempt counts
        assert report.starts[eid] == [(1, "A"), (2, "B")]
        assert report.effects[eid] == [(2, "B")]  # the killed attempt had no side effect
        assert report.finished_by[eid] == b.id
        assert re.match(
            rf"attempt 1 of 3 lost: orchestrator {a_id} stopped sending heartbeats",
            report.errors[eid] or "",
        )
    assert {row[4] for row in ledger(fresh_db_url, "start") if row[2] == "A"} == {a.pid}
    assert scalar(
        fresh_db_url,
        "SELECT expired_at IS NOT NULL AND drained FROM pgconductor.orchestrators WHERE id = %s",
        a_id,
    )


async def test_hung_orchestrator_loses_its_leases_and_its_late_results_are_fenced(
    fresh_db_url: str, worker_process: Callable[..., WorkerProcess]
) -> None:
    """SIGSTOP freezes A mid-execution: its heartbeat expires and B runs the work again
    (attempt 2). SIGCONT wakes A: its handlers finish, but their results are refused
    (`stale`) or never sent (A got `lease_lost` first). A then goes on working and stops
    cleanly on SIGTERM."""
    prepare(fresh_db_url)
    ids = invoke(fresh_db_url, [{"n": i, "sleep": 2.0, "sleep_on": [1]} for i in range(4)])
    a = worker_process(fresh_db_url, "A")
    await wait_until(lambda: started(fresh_db_url, ids, "A") == 4, timeout=30)
    a.signal(signal.SIGSTOP)
    a_id = a.orchestrator_id()
    assert a_id is not None

    b = make_orchestrator(make_conductor(fresh_db_url, "B"))
    async with running(b):
        await wait_until(lambda: finished_count(fresh_db_url, ids) == 4, timeout=15)
        assert finished_count(fresh_db_url, ids) == 4
        a.signal(signal.SIGCONT)

        def fenced() -> bool:
            log = a.log()
            return all(
                re.search(rf"{eid} was stale|aborting execution {eid} \(lease_lost\)", log)
                for eid in ids
            )

        await wait_until(fenced, timeout=15)
        after = invoke(fresh_db_url, [{"n": 10 + i} for i in range(6)])
        await wait_until(lambda: finished_count(fresh_db_url, after) == 6, timeout=15)
        a.signal(signal.SIGTERM)
        assert await asyncio.to_thread(a.wait, 15) == 0  # a clean stop after all that

    report = check_invariants(fresh_db_url, ids + after, orchestrators={"A": a_id, "B": b.id})
    for eid in ids:
        assert report.attempts[eid] == 2
        assert report.finished_by[eid] == b.id
        assert (2, "B") in report.effects[eid]
        # A's attempt 1 may have reached its side effect after SIGCONT (its lease was
        # already gone); it was never applied: B's attempt 2 is the one that completed.
        assert set(report.effects[eid]) <= {(1, "A"), (2, "B")}
    assert scalar(
        fresh_db_url,
        "SELECT stopped_at IS NOT NULL FROM pgconductor.orchestrators WHERE id = %s",
        a_id,
    )
