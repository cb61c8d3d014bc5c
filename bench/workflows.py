"""Section `workflow` of bench.py: pgconductor's durable workflows beside DBOS Transact.

Both run on the same server, each in its own database (bench_pgconductor, bench_dbos), with
2 worker processes started the same way as the drain's (READY, then GO):

- throughput: N 10-step no-op workflows enqueued first (not timed), then drained; workflows/s
  and steps/s (10 per workflow), every workflow verified completed with its result;
- latency: one idle worker, one `wf1` (a single no-op step) at a time through each system's
  client; "enqueue → step durable" = from before the enqueue call to the moment the step
  call returned in the workflow (its result is then committed, in both systems), and the
  step call alone (step called → returned);
- fan-out: one `fanout` workflow starts 1,000 `child` workflows and joins them: parent start
  (the first entry into its body) to parent end (after the join), 2 worker processes.

Round trips are counted by pg_stat_statements (track = top: a PL/pgSQL function call is one
statement; BEGIN and COMMIT are statements of their own): reset after the workers are
READY, read after the run, the harness's own monitor query left out.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from typing import Any

import systems
from common import LOG_DIR, latency_stats

# pgconductor for workflows: the drain's tuned settings, and the Orchestrator's defaults.
WF_PLAN: list[tuple[str, str, int, dict[str, Any]]] = [
    (
        "pgconductor tuned 2p",
        "pgconductor-wf",
        2,
        {"concurrency": 2000, "fetch_batch": 1000, "flush_batch": 1000, "flush_interval": 0.005},
    ),
    ("pgconductor default 2p", "pgconductor-wf", 2, {}),
    ("dbos 2p", "dbos", 2, {}),
]
FANOUT_PGC: dict[str, Any] = {}  # Orchestrator defaults
FANOUT_DBOS: dict[str, Any] = {}


def _b() -> Any:
    import bench

    return bench


# ------------------------------------------------------------------------------------------
# pg_stat_statements


def reset_stats(db: str) -> None:
    _b().sql(db, "select pg_stat_statements_reset()")


def _short(query: str) -> str:
    q = re.sub(r"\s+", " ", query).strip()
    fn = re.search(r"pgconductor\.(\w+)\s*\(", q)
    if fn and q.lower().startswith("select"):
        return f"pgconductor.{fn.group(1)}()"
    return q[:90]


def statements(db: str) -> list[tuple[int, str]]:
    """(calls, statement) since the last reset in `db`, without the harness's own queries."""
    rows = _b().sql(
        db,
        "select calls, query from pg_stat_statements"
        " where dbid = (select oid from pg_database where datname = current_database())",
    )[0]
    out: dict[str, int] = {}
    for calls, query in rows:
        q = query.strip().lower()
        if q.startswith("select exists(") or "pg_stat_" in q:
            continue
        key = _short(query)
        out[key] = out.get(key, 0) + calls
    return sorted(((c, q) for q, c in out.items()), reverse=True)


def per_unit(rows: list[tuple[int, str]], units: int, top: int = 12) -> dict[str, Any]:
    total = sum(c for c, _ in rows)
    return {
        "total": total,
        "per_unit": total / units,
        "top": [(q, c, round(c / units, 3)) for c, q in rows[:top]],
    }


# ------------------------------------------------------------------------------------------
# throughput


def throughput(m: dict[str, Any]) -> list[dict[str, Any]]:
    b = _b()
    n = m["wf_n"]
    out = []
    for label, system, nprocs, cfg in WF_PLAN:
        db = systems.get(system).db
        runs = []
        # DBOS drains at tens of workflows/s here: one run (like procrastinate in the drain)
        for i in range(1 if system.startswith("dbos") else m["repeats"]):
            tag = re.sub(r"\W+", "-", f"wf {label}") + f"-run{i}"
            r = b.drain_once(
                system, n, nprocs, cfg, tag, on_ready=lambda procs, db=db: reset_stats(db)
            )
            r["statements"] = per_unit(statements(db), n)
            r["workflows_per_s"] = r.pop("jobs_per_s")
            r["steps_per_s"] = r["workflows_per_s"] * systems.WF_STEPS
            runs.append(r)
            b.log(
                f"  {label} run {i}: {r['workflows_per_s']:.0f} workflows/s,"
                f" {r['steps_per_s']:.0f} steps/s ({r['elapsed_s']:.2f}s; cpu busy"
                f" {r['busy_cores']:.2f}, workers {r['worker_cores']:.2f});"
                f" {r['statements']['per_unit']:.2f} statements/workflow;"
                f" verified={r['verified']}" + ("" if r["verified"] else f" {r['verify']}")
            )
        s = b.summary([r["workflows_per_s"] for r in runs])
        b.log(f"RESULT workflow {label}: {s['median']:.0f} workflows/s (10 steps each)")
        out.append(
            {
                "label": label,
                "system": system,
                "procs": nprocs,
                "cfg": systems.get(system).cfg(cfg),
                "n": n,
                "summary": s,
                "runs": runs,
                "verified": all(r["verified"] for r in runs),
            }
        )
    return out


# ------------------------------------------------------------------------------------------
# latency of one step


def latency(m: dict[str, Any]) -> list[dict[str, Any]]:
    b = _b()
    out = []
    plans = [
        ("pgconductor (defaults)", "pgconductor-wf", {}),
        ("dbos", "dbos", {}),
    ]
    for label, system_name, cfg in plans:
        system = systems.get(system_name)
        asyncio.run(system.reset())
        tag = re.sub(r"\W+", "-", "wflat " + label)
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        host, port = sock.getsockname()
        procs, logs = b.start_workers(
            system_name, cfg, 1, tag, env={"BENCH_REC_ADDR": f"{host}:{port}"}
        )
        extra: dict[str, list[float]] = {}
        try:
            b.go(procs)
            time.sleep(2.0)
            reset_stats(system.db)
            call_ms, ret_ms, missing = asyncio.run(
                b._latency_loop(system, m["wf_latency"], 20, sock, (0.005, 0.015), extra)
            )
            time.sleep(0.5)  # the last workflow's end is flushed
            stmts = per_unit(statements(system.db), m["wf_latency"] + 20)
        finally:
            b.stop_workers(procs, logs)
            sock.close()
        # extra[seq] = [step returned, step called] (time.time() in the workflow)
        step_ms = [(v[0] - v[1]) * 1000 for q, v in extra.items() if int(q) >= 0 and len(v) > 1]
        a, r, st = latency_stats(call_ms), latency_stats(ret_ms), latency_stats(step_ms)
        b.log(
            f"RESULT workflow latency {label}: enqueue -> step durable p50 {a['p50']:.2f}"
            f" p99 {a['p99']:.2f} ms | step call alone p50 {st['p50']:.2f} p99 {st['p99']:.2f}"
            f" ms | {stmts['per_unit']:.2f} statements/workflow (missing {missing})"
        )
        out.append(
            {
                "label": label,
                "system": system_name,
                "cfg": system.cfg(cfg),
                "enqueue_to_step": a,
                "returned_to_step": r,
                "step_call": st,
                "missing": missing,
                "statements": stmts,
                "samples_ms": call_ms,
            }
        )
    return out


# ------------------------------------------------------------------------------------------
# fan-out and join


async def _fanout_once(system: systems.System, n: int, sock: Any) -> dict[str, float] | None:
    loop = asyncio.get_running_loop()
    b = _b()
    transport, marks = await loop.create_datagram_endpoint(b._Starts, sock=sock)
    try:
        async with system.enqueuer() as enq:
            t0 = time.time()
            await enq.fanout(n)
            start = await marks.wait("start", 60.0)
            end = await marks.wait("end", 180.0)
    finally:
        transport.close()
    if start is None or end is None:
        return None
    return {"parent_ms": (end - start) * 1000, "enqueue_to_end_ms": (end - t0) * 1000}


def fanout(m: dict[str, Any]) -> list[dict[str, Any]]:
    b = _b()
    n = m["fanout_n"]
    out = []
    for label, system_name, cfg in (
        ("pgconductor (defaults) 2p", "pgconductor-wf", FANOUT_PGC),
        ("dbos 2p", "dbos", FANOUT_DBOS),
    ):
        system = systems.get(system_name)
        runs: list[dict[str, Any]] = []
        stuck: list[dict[str, Any]] = []
        for i in range(m["fanout_repeats"]):
            asyncio.run(system.reset())
            tag = re.sub(r"\W+", "-", f"fanout {label}") + f"-run{i}"
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            host, port = sock.getsockname()
            procs, logs = b.start_workers(
                system_name, cfg, 2, tag, env={"BENCH_REC_ADDR": f"{host}:{port}"}
            )
            try:
                b.go(procs)
                time.sleep(1.0)
                reset_stats(system.db)
                r = asyncio.run(_fanout_once(system, n, sock))
                time.sleep(0.5)
                stmts = per_unit(statements(system.db), 1)
            finally:
                b.stop_workers(procs, logs)
                sock.close()
            ok, msg = asyncio.run(_verify_fanout(system, n))
            if r is None:  # kept: a run that never ended is a finding, not noise
                stuck.append({"run": i, "verify": msg, "parent": asyncio.run(_parent(system))})
                b.log(f"  fan-out {label} run {i}: did not end ({msg}; {stuck[-1]['parent']})")
                continue
            r.update({"statements": stmts, "verified": ok, "verify": msg})
            runs.append(r)
            b.log(
                f"  fan-out {label} run {i}: parent start -> end {r['parent_ms']:.0f} ms"
                f" (enqueue -> end {r['enqueue_to_end_ms']:.0f} ms); {stmts['total']} statements;"
                f" verified={ok}" + ("" if ok else f" {msg}")
            )
        s = b.summary([r["parent_ms"] for r in runs]) if runs else None
        if s:
            b.log(f"RESULT fan-out {label}: {s['median']:.0f} ms for {n} children")
        if stuck:
            b.log(f"RESULT fan-out {label}: {len(stuck)} of {m['fanout_repeats']} runs never ended")
        out.append(
            {
                "label": label,
                "system": system_name,
                "cfg": system.cfg(cfg),
                "n": n,
                "summary": s,
                "runs": runs,
                "stuck": stuck,
            }
        )
    return out


async def _parent(system: systems.System) -> str:
    """Where the parent of a fan-out that never ended is left (state, child steps)."""
    if system.name == "dbos":
        rows = await systems._rows(
            system.db,
            "select status, count(*) from dbos.workflow_status where name = 'fanout' group by 1",
        )
        return f"parent {rows}"
    rows = await systems._rows(
        system.db,
        "select e.waiting, (select jsonb_object_agg(state, n) from (select s.state, count(*) n"
        " from pgconductor.steps s where s.execution_id = e.id group by 1) x)::text"
        " from pgconductor.executions e where e.task_key = 'fanout'",
    )
    return f"parent waiting={rows[0][0]} its steps {rows[0][1]}" if rows else "parent not live"


async def _verify_fanout(system: systems.System, n: int) -> tuple[bool, str]:
    if system.name == "dbos":
        rows = await systems._rows(
            system.db, "select name, status, count(*) from dbos.workflow_status group by 1, 2"
        )
        want = {("child", "SUCCESS"): n, ("fanout", "SUCCESS"): 1}
    else:
        rows = await systems._rows(
            system.db,
            "select task_key, state, count(*) from pgconductor.finished_executions group by 1, 2",
        )
        want = {("child", "completed"): n, ("fanout", "completed"): 1}
    got = {(r[0], r[1]): r[2] for r in rows}
    return got == want, str(got)


# ------------------------------------------------------------------------------------------


def section(res: Any, m: dict[str, Any]) -> None:
    out: dict[str, Any] = {}
    out["throughput"] = throughput(m)
    res.put("workflow", out)
    out["latency"] = latency(m)
    res.put("workflow", out)
    out["fanout"] = fanout(m)
    res.put("workflow", out)
