"""Per-call cost of the Python database layer on the worker's hot calls (not part of make bench).

    python client_overhead.py [--calls 2000]

Times, back to back on one connection, an empty claim (`get_executions` on an empty queue:
what a woken worker does first) and a single `invoke`, each
  (a) through `pgconductor.db.SqlDatabaseClient` (SQLAlchemy AsyncEngine, own transaction),
  (b) as one psycopg statement in autocommit (one round trip),
  (c) as psycopg BEGIN; statement; COMMIT (what (a) sends on the wire),
and counts the statements the server saw per call (pg_stat_statements), so the difference
between (a) and (b) is the client layer's share of the enqueue->start latency.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import psycopg
from common import latency_stats, url

DB = "bench_pgconductor"
CLAIM = "select * from pgconductor.get_executions(%s::text[], %s::uuid, %s::int, %s)"
INVOKE = "select pgconductor.invoke('noop', %s::jsonb, 'bench')"


async def timed(n: int, call) -> dict:
    for _ in range(50):
        await call()
    ms = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        ms.append((time.perf_counter() - t) * 1000)
    return latency_stats(ms)


async def main(n: int) -> None:
    from pgconductor.db import SqlDatabaseClient

    oid = uuid.uuid4()
    client = SqlDatabaseClient(url(DB))
    conn = await psycopg.AsyncConnection.connect(url(DB), autocommit=True)
    tx = await psycopg.AsyncConnection.connect(url(DB))
    admin = await psycopg.AsyncConnection.connect(url(DB), autocommit=True)
    await admin.execute(
        "truncate pgconductor.executions, pgconductor.finished_executions,"
        " pgconductor.signals, pgconductor.orchestrators"
    )

    async def claim_sa():
        await client.get_executions(oid, "bench", ["noop"], 1)

    async def claim_ac():
        await (await conn.execute(CLAIM, (["noop"], oid, 1, "bench"), prepare=True)).fetchall()

    async def claim_tx():
        async with tx.transaction():
            await (await tx.execute(CLAIM, (["noop"], oid, 1, "bench"), prepare=True)).fetchall()

    async def invoke_sa():
        await client.invoke("noop", {}, queue="bench")

    async def invoke_ac():
        await conn.execute(INVOKE, ("{}",), prepare=True)

    async def invoke_tx():
        async with tx.transaction():
            await tx.execute(INVOKE, ("{}",), prepare=True)

    for name, fn in (
        ("empty claim, SqlDatabaseClient", claim_sa),
        ("empty claim, psycopg autocommit", claim_ac),
        ("empty claim, psycopg BEGIN/stmt/COMMIT", claim_tx),
        ("invoke, SqlDatabaseClient", invoke_sa),
        ("invoke, psycopg autocommit", invoke_ac),
        ("invoke, psycopg BEGIN/stmt/COMMIT", invoke_tx),
    ):
        await admin.execute("select pg_stat_statements_reset()")
        s = await timed(n, fn)
        rows = await (
            await admin.execute(
                "select coalesce(sum(calls), 0) from pg_stat_statements where dbid ="
                " (select oid from pg_database where datname = current_database())"
                " and query !~* 'pg_stat_statements'"
            )
        ).fetchone()
        per_call = rows[0] / (n + 50)
        print(
            f"{name:42s} p50 {s['p50']:.3f} ms  p99 {s['p99']:.3f} ms  mean {s['mean']:.3f} ms"
            f"  statements/call {per_call:.1f}",
            flush=True,
        )
    await admin.execute("truncate pgconductor.executions")
    await client.close()
    for c in (conn, tx, admin):
        await c.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    asyncio.run(main(ap.parse_args().calls))
