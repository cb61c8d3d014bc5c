"""The DBOS Transact app the benchmark runs: the peer of bench_app.py's workflows.

Same shapes as pgconductor's: `wf10` (10 no-op steps), `wf1` (one step, reports its timing
by UDP to BENCH_REC_ADDR), `fanout` (n children on the child queue, then the join) and
`child`. Workflows and steps are async (`@DBOS.workflow()` / `@DBOS.step()` on coroutines);
their sync twins `wf10s` / `wf1s` are the system `dbos-sync` of systems.py.

`configure()` and `launch()` start DBOS in a worker process; the workflow queues are
registered with worker_concurrency 0 (nothing is dequeued) until `go()` sets the
configured concurrency, so a run starts at the harness's GO, not at the launch.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from dbos import DBOS, DBOSConfig

QUEUE = "bench_wf"
CHILD_QUEUE = "bench_children"
APP = "bench"

_rec_addr = os.environ.get("BENCH_REC_ADDR")
_rec_to = (_rec_addr.rsplit(":", 1)[0], int(_rec_addr.rsplit(":", 1)[1])) if _rec_addr else None
_rec = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if _rec_addr else None


def _send(msg: str) -> None:
    if _rec is not None and _rec_to is not None:
        _rec.sendto(msg.encode(), _rec_to)


@DBOS.step()
async def noop_step(i: int) -> int:
    return i


@DBOS.step()
def noop_step_sync(i: int) -> int:
    return i


@DBOS.workflow()
async def wf10(n: int) -> int:
    total = 0
    for i in range(n):
        total += await noop_step(i)
    return total


@DBOS.workflow()
def wf10s(n: int) -> int:
    total = 0
    for i in range(n):
        total += noop_step_sync(i)
    return total


@DBOS.workflow()
async def wf1(seq: int) -> int:
    t0 = time.time()
    out = await noop_step(0)
    _send(f"{seq} {time.time()} {t0}")
    return out


@DBOS.workflow()
def wf1s(seq: int) -> int:
    t0 = time.time()
    out = noop_step_sync(0)
    _send(f"{seq} {time.time()} {t0}")
    return out


@DBOS.workflow()
async def child(i: int) -> int:
    return i


@DBOS.workflow()
async def fanout(n: int) -> int:
    _send(f"start {time.time()}")
    handles = [await DBOS.enqueue_workflow_async(CHILD_QUEUE, child, i) for i in range(n)]
    results = [await h.get_result() for h in handles]
    _send(f"end {time.time()}")
    return len(results)


def configure(url: str, executor_id: str, pool: int | None = None) -> None:
    """Build the DBOS instance (before `launch`)."""
    config: DBOSConfig = {
        "name": APP,
        "system_database_url": url,
        "executor_id": executor_id,
        "log_level": "WARNING",
    }
    if pool:
        config["sys_db_pool_size"] = pool
    DBOS(config=config)


def launch(polling: float) -> None:
    """Launch DBOS and register both queues paused (worker_concurrency 0)."""
    DBOS.launch()
    for name in (QUEUE, CHILD_QUEUE):
        DBOS.register_queue(
            name, worker_concurrency=0, polling_interval_sec=polling, on_conflict="always_update"
        )


def go(worker_concurrency: int | None) -> None:
    """Let this process dequeue: the queues' worker_concurrency from 0 to the configured one."""
    for name in (QUEUE, CHILD_QUEUE):
        DBOS.retrieve_queue(name).set_worker_concurrency(worker_concurrency)


def migrate(url: str) -> None:
    """Create or migrate the DBOS system database (a launch does it), then stop."""
    configure(url, "migrate")
    DBOS.launch()
    DBOS.destroy()


def enqueue_many(url: str, workflow: str, args: list[Any], queue: str = QUEUE) -> None:
    """Enqueue one workflow per argument in one transaction (DBOSClient.enqueue_in_transaction)."""
    from dbos import DBOSClient

    client = DBOSClient(system_database_url=url, application_name=APP)
    try:
        with client._sys_db.engine.begin() as conn:  # the client's own engine
            for arg in args:
                client.enqueue_in_transaction(
                    conn, {"workflow_name": workflow, "queue_name": queue}, arg
                )
    finally:
        client.destroy()
