"""The pgconductor app the benchmark runs: one no-op task `noop` on queue `bench`.

Also the workflows of the durable-workflow section (queue `bench_wf`): `wf10` (10 no-op
steps), `wf1` (one step, reports its timing by UDP), `fanout` (children `child` and the join).

Usable by the CLI too: `pgconductor worker start --app bench_app:conductor --queue bench`
(from this directory, with DATABASE_URL set). With BENCH_REC_ADDR ("host:port") set, the
handler sends "<seq> <time.time()>" by UDP for payloads that carry a `seq` (the latency
measurement).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from pgconductor import Conductor

conductor = Conductor()  # DATABASE_URL, read when the database is first needed

_rec_addr = os.environ.get("BENCH_REC_ADDR")
_rec_to = (_rec_addr.rsplit(":", 1)[0], int(_rec_addr.rsplit(":", 1)[1])) if _rec_addr else None
_rec = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if _rec_addr else None


@conductor.task("noop", queue="bench")
async def noop(ctx: Any, payload: Any) -> None:
    if _rec is not None and _rec_to is not None and payload and "seq" in payload:
        _rec.sendto(f"{payload['seq']} {time.time()}".encode(), _rec_to)


# ------------------------------------------------------------------------------------------
# Durable workflows (queue `bench_wf`), the peers of dbos_app.py's workflows. A step's body
# is a no-op; what is measured is the durable machinery around it.


def _send(msg: str) -> None:
    if _rec is not None and _rec_to is not None:
        _rec.sendto(msg.encode(), _rec_to)


async def _noop_step_async(i: int) -> int:
    return i


@conductor.task("wf10", queue="bench_wf")
async def wf10(ctx: Any, payload: Any) -> int:
    """`n` (10) no-op steps in a row, each durable before the next starts."""
    total = 0
    for i in range(payload.get("n", 10) if payload else 10):
        total += await ctx.step(f"s{i}", _noop_step_async, i)
    return total


@conductor.task("wf1", queue="bench_wf")
async def wf1(ctx: Any, payload: Any) -> int:
    """One step; sends "<seq> <step returned> <step called>" (time.time()) by UDP."""
    t0 = time.time()
    out: int = await ctx.step("s0", _noop_step_async, 0)
    _send(f"{payload['seq']} {time.time()} {t0}")
    return out


@conductor.task("child", queue="bench_wf")
async def child(ctx: Any, payload: Any) -> int:
    """A fan-out child: returns its number."""
    return int(payload["i"]) if payload else 0


@conductor.task("fanout", queue="bench_wf")
async def fanout(ctx: Any, payload: Any) -> int:
    """`n` children in one statement, then the join; sends "start <t>" at every run of the
    handler (the client keeps the first) and "end <t>" after the join."""
    _send(f"start {time.time()}")
    results = await ctx.invoke_many("kids", "child", [{"i": i} for i in range(payload["n"])])
    _send(f"end {time.time()}")
    return len(results)
