"""pgconductor benchmark, side by side with its peers, on one PostgreSQL server.

    python bench.py --mode quick|full [--only enqueue,backlog,drain,...] (the sections below)

Run by bench/run.sh (`make bench`, `make bench-quick`), which starts the benchmark cluster,
installs the extension and this venv first. Sections (docs in bench/README.md):
  enqueue   single and batch enqueue rates (pgbench on the SQL API; Python API; peers' APIs)
  backlog   claim+complete rate at 10k / 100k / 1M pending executions (pgbench), with the
            claim's and the completion's plans (auto_explain, EXPLAIN ANALYZE BUFFERS)
  drain     drain throughput of N no-op jobs: pgconductor default and tuned, 1 and 2
            processes; pgqueuer and procrastinate at the shared harness's configs
  latency   enqueue -> handler start with an idle worker, p50/p95/p99
  xmin      drain with a REPEATABLE READ snapshot held open: throughput and dead tuples
  workflow  durable workflows vs DBOS Transact: 10-step workflows/s, one-step latency,
            fan-out of 1,000 children and the join, statements (round trips) per workflow
  profile   pg_stat_statements and a py-spy profile of one pgconductor worker during a drain
  flow      flow control (bench/flow.py): drains with a per-key limit and with fair share vs
            unlimited in the same run; claim cost with a per-key limit at a small and a large
            backlog
  sources   schedules and event sources (bench/sources.py): tick() cost with 10,000 schedules
            not due, emit_event fan-out to 3 subscribers, 10,000 rows into a subscribed table
Every section appends to results/results-<mode>.json; the report (REPORT.md for full,
REPORT-quick.md for quick) and the plots are written from it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import report
import systems
from common import (
    BENCH_DIR,
    LOG_DIR,
    RESULTS_DIR,
    latency_stats,
    machine_ticks,
    process_cpu,
    summary,
    url,
)

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
SQL_DIR = BENCH_DIR / "sql"
WORKER = str(BENCH_DIR / "worker_proc.py")

MODES: dict[str, dict[str, Any]] = {
    "quick": {
        "drain_n": 10_000,
        "repeats": 1,
        "procrastinate_n": 2_000,
        "latency_jobs": 100,
        "backlogs": [10_000, 100_000],
        "pgbench_s": 4,
        "enqueue_s": 1.5,
        "xmin_n": 10_000,
        "profile_n": 10_000,
        "wf_n": 2_000,  # 10-step workflows per throughput run
        "wf_latency": 100,
        "fanout_n": 1_000,
        "fanout_repeats": 1,
        "flow_n": 20_000,  # drains of the flow section (unlimited, per-key limit, fair share)
        "sources_emits": 2_000,  # emit_event calls per rate of the sources section
        "flow_backlogs": [10_000, 100_000],  # claim cost with a per-key limit: first vs last
    },
    "full": {
        "drain_n": 100_000,
        "repeats": 3,
        "procrastinate_n": 10_000,
        "latency_jobs": 500,
        "backlogs": [10_000, 100_000, 1_000_000],
        "pgbench_s": 10,
        "enqueue_s": 4.0,
        "xmin_n": 100_000,
        "profile_n": 100_000,
        "wf_n": 10_000,
        "wf_latency": 300,
        "fanout_n": 1_000,
        "fanout_repeats": 3,
        "flow_n": 100_000,
        "sources_emits": 10_000,
        "flow_backlogs": [10_000, 1_000_000],
    },
}

# Worker configurations. pgconductor "default" = the Orchestrator's defaults; "tuned" = the
# best found by the exploration in bench/README.md. Peers: the shared harness's configs.
PGC_DEFAULT: dict[str, Any] = {}
PGC_TUNED: dict[str, Any] = {
    "concurrency": 2000,
    "fetch_batch": 1000,
    "flush_batch": 1000,
    "flush_interval": 0.005,
    "uvloop": False,  # measured: no gain with uvloop (22.2k vs 25.6k, within noise)
}
DRAIN_PLAN: list[tuple[str, str, int, dict[str, Any]]] = [
    # (label, system, processes, cfg)
    ("pgconductor default 1p", "pgconductor", 1, PGC_DEFAULT),
    ("pgconductor default 2p", "pgconductor", 2, PGC_DEFAULT),
    ("pgconductor tuned 1p", "pgconductor", 1, PGC_TUNED),
    ("pgconductor tuned 2p", "pgconductor", 2, PGC_TUNED),
    ("pgqueuer default 1p", "pgqueuer", 1, {}),
    ("pgqueuer tuned 2p", "pgqueuer", 2, {"qms": 1, "batch": 200}),
    (
        "procrastinate tuned 2p",
        "procrastinate",
        2,
        {"concurrency": 4, "uvloop": True, "delete_jobs": "always"},
    ),
]


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------
# results file


class Results:
    def __init__(self, mode: str) -> None:
        self.path = RESULTS_DIR / f"results-{mode}.json"
        self.data: dict[str, Any] = {}
        if self.path.exists():
            self.data = json.loads(self.path.read_text())
        self.data["mode"] = mode

    def put(self, section: str, value: Any) -> None:
        self.data[section] = value
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1, default=str))


# ------------------------------------------------------------------------------------------
# small helpers


def sql(db: str, *statements: str) -> list[Any]:
    out = []
    with psycopg.connect(url(db), autocommit=True) as conn:
        for s in statements:
            cur = conn.execute(s)
            out.append(cur.fetchall() if cur.description else None)
    return out


def prepare_table(system: systems.System, n: int) -> float:
    """Empty the system's tables, enqueue n jobs, VACUUM ANALYZE, CHECKPOINT; return enqueue s."""
    asyncio.run(system.reset())
    t = time.perf_counter()
    asyncio.run(system.enqueue_bulk(n))
    took = time.perf_counter() - t
    sql(system.db, *[f"vacuum analyze {t}" for t in system.vacuum_tables], "checkpoint")
    return took


def pgbench(
    db: str,
    script: str,
    clients: int,
    seconds: float | None = None,
    transactions: int | None = None,
    k: int | None = None,
) -> dict[str, Any]:
    host_port = url(db).split("@")[1].split("/")[0]
    host, port = host_port.split(":")
    args = [
        PGBENCH,
        "-n",
        "-M",
        "prepared",
        "-c",
        str(clients),
        "-j",
        str(min(clients, 2)),
        "-f",
        str(SQL_DIR / script),
        "-h",
        host,
        "-p",
        port,
        "-U",
        "postgres",
    ]
    if seconds is not None:
        args += ["-T", str(int(seconds))]
    if transactions is not None:
        args += ["-t", str(transactions)]
    if k is not None:
        args += ["-D", f"k={k}"]
    args.append(db)
    busy0, total0 = machine_ticks()
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    busy1, total1 = machine_ticks()
    out = proc.stdout + proc.stderr
    tps = re.search(r"tps = ([0-9.]+) \(without initial", out)
    lat = re.search(r"latency average = ([0-9.]+) ms", out)
    failed = "aborted" in out or "error" in out.lower() or proc.returncode != 0
    if failed or not tps:
        raise RuntimeError(f"pgbench {script} failed:\n{out[-2000:]}")
    return {
        "tps": float(tps.group(1)),
        "latency_ms": float(lat.group(1)) if lat else None,
        "busy_cores": (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1),
    }


def start_workers(
    system: str, cfg: dict[str, Any], nprocs: int, tag: str, env: dict[str, str] | None = None
) -> tuple[list[subprocess.Popen], list[Any]]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    procs, logs = [], []
    penv = {**os.environ, "DATABASE_URL": url(systems.get(system).db), **(env or {})}
    for i in range(nprocs):
        logf = open(LOG_DIR / f"{tag}-w{i}.log", "w")  # noqa: SIM115
        logs.append(logf)
        procs.append(
            subprocess.Popen(
                [sys.executable, WORKER, "--system", system, "--cfg", json.dumps(cfg)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=logf,
                text=True,
                start_new_session=True,
                cwd=str(BENCH_DIR),
                env=penv,
            )
        )
    for p in procs:
        ready, _, _ = select.select([p.stdout], [], [], 60)
        line = p.stdout.readline().strip() if ready else ""
        if line != "READY":
            stop_workers(procs, logs)
            raise RuntimeError(f"{tag}: worker not ready ({line!r}); see {LOG_DIR}/{tag}-w*.log")
    return procs, logs


def go(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.stdin.write("GO\n")
        p.stdin.flush()


def stop_workers(procs: list[subprocess.Popen], logs: list[Any]) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=10)
    for f in logs:
        f.close()


def dead_tuples(system: systems.System) -> dict[str, int]:
    rows = sql(
        system.db,
        """
        select relname, n_dead_tup from pg_stat_user_tables
         where schemaname = 'pgconductor' or relname like 'pgqueuer%%'
            or relname like 'procrastinate%%' order by relname""".replace("%%", "%"),
    )[0]
    return {r[0]: r[1] for r in rows}


WAL_SQL = "select wal_records, wal_fpi, wal_bytes::bigint from pg_stat_wal"
VACUUM_TABLES = {
    "pgconductor": ["pgconductor.executions", "pgconductor.finished_executions"],
    "pgqueuer": ["pgqueuer", "pgqueuer_log"],
    "procrastinate": ["procrastinate_jobs"],
}


def vacuum_verbose(system: systems.System) -> dict[str, dict[str, int]]:
    """VACUUM (VERBOSE) the job tables now (snapshot holder still open): per table, tuples
    removed and dead-but-not-yet-removable (what a held xmin keeps)."""
    out: dict[str, dict[str, int]] = {}
    msgs: list[str] = []
    with psycopg.connect(url(system.db), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: msgs.append(d.message_primary or ""))
        for t in VACUUM_TABLES.get(system.name, []):
            conn.execute(f"vacuum (verbose) {t}")
    table = None
    for msg in msgs:
        for line in msg.splitlines():
            mt = re.search(r'vacuuming "([^"]+)"', line)
            if mt:
                table = mt.group(1).split(".")[-1]
            mr = re.search(
                r"tuples: (\d+) removed, (\d+) remain, (\d+) are dead but not yet removable", line
            )
            if mr and table and not table.startswith("pg_toast") and table != "executions_default$":
                out[table] = {
                    "removed": int(mr.group(1)),
                    "remain": int(mr.group(2)),
                    "dead_not_removable": int(mr.group(3)),
                }
    return out


# ------------------------------------------------------------------------------------------
# drain


def drain_once(
    system_name: str,
    n: int,
    nprocs: int,
    cfg: dict[str, Any],
    tag: str,
    hold_xmin: bool = False,
    timeout: float = 600,
    on_ready: Any = None,
    vacuum_after: bool = False,
) -> dict[str, Any]:
    system = systems.get(system_name)
    enqueue_s = prepare_table(system, n)
    # A system may run another's workers (flow.py: the same worker, other task settings).
    procs, logs = start_workers(getattr(system, "worker_system", system_name), cfg, nprocs, tag)
    holder = None
    extra: dict[str, Any] = {}
    try:
        if on_ready is not None:
            extra["hook"] = on_ready(procs)
        mon = psycopg.connect(url(system.db), autocommit=True)
        mon.execute(system.remaining_sql)
        if hold_xmin:
            holder = psycopg.connect(url(system.db))
            holder.execute("begin isolation level repeatable read")
            holder.execute("select 1")
        wal0 = mon.execute(WAL_SQL).fetchone()
        busy0, total0 = machine_ticks()
        cpu0 = sum(process_cpu(p.pid) for p in procs)
        t0 = time.perf_counter()
        go(procs)
        while mon.execute(system.remaining_sql).fetchone()[0]:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{tag}: a worker exited; see {LOG_DIR}/{tag}-w*.log")
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"{tag}: not drained after {timeout}s")
            time.sleep(0.02)
        t1 = time.perf_counter()
        busy1, total1 = machine_ticks()
        cpu1 = sum(process_cpu(p.pid) for p in procs)
        wal1 = mon.execute(WAL_SQL).fetchone()
        mon.close()
    finally:
        if on_ready is not None and "hook" in extra and hasattr(extra["hook"], "finish"):
            extra["hook"].finish()
        stop_workers(procs, logs)
    # Stopping the workers (their backends exit: stats flushed) leaves the finished state;
    # wait until the last completions are visible, then verify.
    time.sleep(0.3)
    ok, msg = asyncio.run(system.verify(n, cfg))
    if not ok:  # a flush may still have been in flight when the monitor saw an empty queue
        time.sleep(1.0)
        ok, msg = asyncio.run(system.verify(n, cfg))
    dead = dead_tuples(system)
    vacuum = vacuum_verbose(system) if vacuum_after else {}
    if holder is not None:
        holder.rollback()
        holder.close()
    elapsed = t1 - t0
    return {
        "jobs_per_s": n / elapsed,
        "elapsed_s": elapsed,
        "enqueue_s": enqueue_s,
        "busy_cores": (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1),
        "worker_cores": (cpu1 - cpu0) / elapsed,
        "verified": ok,
        "verify": msg,
        "dead_tuples": dead,
        "vacuum": vacuum,
        # WAL written by the whole cluster during the drain, per job (the monitor adds ~0).
        "wal_bytes_per_job": (wal1[2] - wal0[2]) / n,
        "wal_records_per_job": (wal1[0] - wal0[0]) / n,
        "wal_fpi_per_job": (wal1[1] - wal0[1]) / n,
    }


def drain_series(
    label: str,
    system: str,
    nprocs: int,
    cfg: dict[str, Any],
    n: int,
    repeats: int,
    hold_xmin: bool = False,
    vacuum_after: bool = False,
) -> dict[str, Any]:
    runs = []
    full_cfg = systems.get(system).cfg(cfg)
    for i in range(repeats):
        tag = re.sub(r"\W+", "-", label) + f"-run{i}"
        r = drain_once(system, n, nprocs, cfg, tag, hold_xmin=hold_xmin, vacuum_after=vacuum_after)
        runs.append(r)
        log(
            f"  {label} run {i}: {r['jobs_per_s']:.0f} jobs/s ({r['elapsed_s']:.2f}s; cpu busy"
            f" {r['busy_cores']:.2f} cores, workers {r['worker_cores']:.2f}; WAL/job"
            f" {r['wal_bytes_per_job']:.0f} B, FPI/job {r['wal_fpi_per_job']:.3f})"
            f" verified={r['verified']}" + ("" if r["verified"] else f" {r['verify']}")
        )
    s = summary([r["jobs_per_s"] for r in runs])
    log(f"RESULT drain {label}: {s['median']:.0f} jobs/s [{s['min']:.0f}-{s['max']:.0f}]")
    return {
        "label": label,
        "system": system,
        "procs": nprocs,
        "cfg": full_cfg,
        "n": n,
        "summary": s,
        "runs": runs,
        "verified": all(r["verified"] for r in runs),
    }


def section_drain(res: Results, m: dict[str, Any]) -> None:
    out = []
    for label, system, nprocs, cfg in DRAIN_PLAN:
        n = m["procrastinate_n"] if system == "procrastinate" else m["drain_n"]
        repeats = 1 if system == "procrastinate" else m["repeats"]
        out.append(drain_series(label, system, nprocs, cfg, n, repeats))
        res.put("drain", out)


# ------------------------------------------------------------------------------------------
# enqueue


async def _api_rate(system: systems.System, seconds: float, batch: int | None) -> dict[str, Any]:
    async with system.enqueuer() as enq:
        for _ in range(20):  # warm up: connections, prepared statements
            await (enq.one() if batch is None else enq.many(batch))
        calls = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            await (enq.one() if batch is None else enq.many(batch))
            calls += 1
        el = time.perf_counter() - t0
    rows = calls * (batch or 1)
    return {
        "calls": calls,
        "rows": rows,
        "seconds": el,
        "rows_per_s": rows / el,
        "calls_per_s": calls / el,
    }


def section_enqueue(res: Results, m: dict[str, Any]) -> None:
    out: dict[str, Any] = {}
    pgc = systems.get("pgconductor")
    secs = m["pgbench_s"]
    sql(
        pgc.db,
        "create table if not exists bench_raw_jobs (id uuid primary key default"
        " gen_random_uuid(), task_key text, queue text, payload jsonb,"
        " run_at timestamptz default now(), created_at timestamptz default now())",
    )
    for clients in (1, 2):
        asyncio.run(pgc.reset())
        r = pgbench(pgc.db, "invoke_single.sql", clients, seconds=secs)
        out[f"sql_invoke_c{clients}"] = {**r, "rows_per_s": r["tps"]}
        log(f"RESULT enqueue SQL invoke, {clients} client(s): {r['tps']:.0f} rows/s")
        asyncio.run(pgc.reset())
        r = pgbench(pgc.db, "invoke_batch.sql", clients, seconds=secs, k=1000)
        out[f"sql_invoke_batch1000_c{clients}"] = {**r, "rows_per_s": r["tps"] * 1000}
        log(
            f"RESULT enqueue SQL invoke_batch x1000, {clients} client(s):"
            f" {r['tps'] * 1000:.0f} rows/s"
        )
        sql(pgc.db, "truncate bench_raw_jobs")
        r = pgbench(pgc.db, "raw_insert_single.sql", clients, seconds=secs)
        out[f"raw_insert_c{clients}"] = {**r, "rows_per_s": r["tps"]}
        log(f"RESULT enqueue raw INSERT (reference), {clients} client(s): {r['tps']:.0f} rows/s")
    asyncio.run(pgc.reset())
    apis = [
        ("pgconductor", "pgconductor Python API (Conductor.invoke / invoke_many)"),
        ("pgconductor-sql", "pgconductor psycopg SELECT invoke() / invoke_batch()"),
        ("pgqueuer", "pgqueuer Queries.enqueue"),
        ("procrastinate", "procrastinate defer_async / batch_defer_async"),
    ]
    for name, what in apis:
        system = systems.get(name)
        for batch in (None, 1000):
            asyncio.run(system.reset())
            r = asyncio.run(_api_rate(system, m["enqueue_s"], batch))
            key = f"api_{name}_{'single' if batch is None else 'batch1000'}"
            out[key] = {**r, "what": what}
            log(
                f"RESULT enqueue {what}, {'single' if batch is None else 'batch 1000'}:"
                f" {r['rows_per_s']:.0f} rows/s ({r['calls_per_s']:.0f} calls/s)"
            )
        asyncio.run(system.reset())
    res.put("enqueue", out)


# ------------------------------------------------------------------------------------------
# backlog


def _auto_explain(db: str, statements: list[str]) -> list[str]:
    """Run statements with auto_explain (analyze, buffers, nested) in a rolled-back txn."""
    plans: list[str] = []
    with psycopg.connect(url(db)) as conn:
        conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
        conn.execute("load 'auto_explain'")
        for s in (
            "auto_explain.log_min_duration = 0",
            "auto_explain.log_analyze = on",
            "auto_explain.log_buffers = on",
            "auto_explain.log_nested_statements = on",
            "auto_explain.log_timing = on",
            "client_min_messages = log",
        ):
            conn.execute(f"set {s}")
        for s in statements:
            cur = conn.execute(s)
            if cur.description:
                cur.fetchall()
        conn.rollback()
    return plans


def claim_plans(db: str, k: int = 100) -> dict[str, str]:
    oid = "00000000-0000-4000-8000-00000000ffff"
    plans = _auto_explain(
        db,
        [
            f"create temp table claimed as select * from pgconductor.get_executions("
            f"array['noop'], '{oid}', {k}, 'bench')",
            f"select count(*) from pgconductor.return_executions('{oid}',"
            f" (select array_agg(id) from claimed), (select array_agg(attempt) from claimed),"
            f" array_fill('completed'::text, array[(select count(*)::int from claimed)]))",
        ],
    )

    def pick(marker: str) -> str:
        found = [p for p in plans if marker in p]
        return max(found, key=len) if found else ""

    return {
        "claim": pick("FOR UPDATE SKIP LOCKED"),
        "complete": pick("finished_executions"),
        "all": "\n\n".join(plans),
    }


def section_backlog(res: Results, m: dict[str, Any]) -> None:
    pgc = systems.get("pgconductor")
    out = []
    for backlog in m["backlogs"]:
        enq = prepare_table(pgc, backlog)
        plans = claim_plans(pgc.db)
        row: dict[str, Any] = {
            "backlog": backlog,
            "fill_s": enq,
            "fill_rows_per_s": backlog / enq,
            "plans": plans,
        }
        for k in (100, 500):
            sql(pgc.db, "vacuum analyze pgconductor.executions", "checkpoint")
            r = pgbench(pgc.db, "claim_complete.sql", 2, seconds=m["pgbench_s"], k=k)
            row[f"k{k}"] = {**r, "jobs_per_s": r["tps"] * k}
            log(
                f"RESULT backlog {backlog}: claim+complete+refill K={k}, 2 clients:"
                f" {r['tps'] * k:.0f} jobs/s"
            )
        left = sql(pgc.db, "select count(*) from pgconductor.executions")[0][0][0]
        row["backlog_after"] = left
        out.append(row)
        res.put("backlog", out)
    asyncio.run(pgc.reset())


# ------------------------------------------------------------------------------------------
# latency


class _Starts(asyncio.DatagramProtocol):
    """Receives "<seq> <time.time()>" datagrams sent by the handlers as they start."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.extra: dict[str, list[float]] = {}  # every time of the datagram (workflows)
        self.waiting: dict[str, asyncio.Future[float]] = {}

    def datagram_received(self, data: bytes, addr: Any) -> None:
        seq, ts, *more = data.decode().split()
        if seq in self.seen:  # a replayed handler sends again: the first one counts
            return
        self.seen[seq] = float(ts)
        self.extra[seq] = [float(ts), *(float(x) for x in more)]
        fut = self.waiting.pop(seq, None)
        if fut is not None and not fut.done():
            fut.set_result(float(ts))

    async def wait(self, seq: str, timeout: float) -> float | None:
        if seq in self.seen:
            return self.seen[seq]
        fut = asyncio.get_running_loop().create_future()
        self.waiting[seq] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None


async def _latency_loop(
    system: systems.System,
    jobs: int,
    warmup: int,
    sock: Any,
    gap: tuple[float, float],
    extra: dict[str, list[float]] | None = None,
) -> tuple[list[float], list[float], int]:
    import random

    loop = asyncio.get_running_loop()
    transport, starts = await loop.create_datagram_endpoint(_Starts, sock=sock)
    if extra is not None:
        starts.extra = extra
    call_ms, ret_ms, missing = [], [], 0
    try:
        async with system.enqueuer() as enq:
            for seq in [-(i + 1) for i in range(warmup)] + list(range(jobs)):
                ta = time.time()
                await enq.one(seq)
                tb = time.time()
                started = await starts.wait(str(seq), 10.0)
                if started is None:
                    missing += 1
                elif seq >= 0:
                    call_ms.append((started - ta) * 1000)
                    ret_ms.append((started - tb) * 1000)
                await asyncio.sleep(random.uniform(*gap))
    finally:
        transport.close()
    return call_ms, ret_ms, missing


def latency_run(
    label: str, worker_system: str, enq_system: str, cfg: dict[str, Any], jobs: int
) -> dict[str, Any]:
    system = systems.get(worker_system)
    asyncio.run(system.reset())
    tag = re.sub(r"\W+", "-", "lat " + label)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    # The handlers report their start by UDP to this socket: the client waits on it without
    # polling, so the measurement takes no CPU from the worker it measures.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    addr = f"{host}:{port}"
    procs, logs = start_workers(worker_system, cfg, 1, tag, env={"BENCH_REC_ADDR": addr})
    try:
        go(procs)
        time.sleep(2.0)
        call_ms, ret_ms, missing = asyncio.run(
            _latency_loop(systems.get(enq_system), jobs, 20, sock, (0.005, 0.015))
        )
    finally:
        stop_workers(procs, logs)
        sock.close()
    a, b = latency_stats(call_ms), latency_stats(ret_ms)
    log(
        f"RESULT latency {label}: enqueue call -> start p50 {a['p50']:.2f} p95 {a['p95']:.2f}"
        f" p99 {a['p99']:.2f} ms | enqueue returned -> start p50 {b['p50']:.2f} ms"
        f" (missing {missing})"
    )
    return {
        "label": label,
        "system": worker_system,
        "enqueuer": enq_system,
        "cfg": system.cfg(cfg),
        "call_to_start": a,
        "return_to_start": b,
        "missing": missing,
        "samples_ms": call_ms,
    }


def section_latency(res: Results, m: dict[str, Any]) -> None:
    jobs = m["latency_jobs"]
    out = [
        latency_run("pgconductor (Python API invoke)", "pgconductor", "pgconductor", {}, jobs),
        latency_run("pgconductor (SQL invoke)", "pgconductor", "pgconductor-sql", {}, jobs),
        latency_run("pgqueuer", "pgqueuer", "pgqueuer", {}, jobs),
        latency_run("procrastinate", "procrastinate", "procrastinate", {"concurrency": 4}, jobs),
    ]
    res.put("latency", out)


# ------------------------------------------------------------------------------------------
# held xmin


def section_xmin(res: Results, m: dict[str, Any]) -> None:
    n = m["xmin_n"]
    out = []
    plans = [("pgconductor tuned 2p", "pgconductor", 2, PGC_TUNED)]
    if m is MODES["full"]:
        plans.append(("pgqueuer tuned 2p", "pgqueuer", 2, {"qms": 1, "batch": 200}))
    for label, system, nprocs, cfg in plans:
        for hold in (False, True):
            lab = f"{label}{' held xmin' if hold else ''}"
            s = drain_series(
                lab,
                system,
                nprocs,
                cfg,
                n,
                max(1, m["repeats"] - 1),
                hold_xmin=hold,
                vacuum_after=True,
            )
            s["hold_xmin"] = hold
            s["dead_tuples"] = s["runs"][-1]["dead_tuples"]
            s["vacuum"] = s["runs"][-1]["vacuum"]
            log(f"  dead tuples after the last run: {s['dead_tuples']}; VACUUM: {s['vacuum']}")
            out.append(s)
            res.put("xmin", out)


# ------------------------------------------------------------------------------------------
# profile


class _PySpy:
    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        exe = str(Path(sys.executable).parent / "py-spy")
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.8)

    def finish(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def fold_profile(path: Path, top: int = 18) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's folded stacks."""
    selfc: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {"samples": 0}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        total += c
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        frames = [re.sub(r"\(.*/(site-packages|lib/python3\.\d+|python)/", "(", f) for f in frames]
        selfc[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
        last = frames[-1]
        if "sqlalchemy" in last:
            g = "sqlalchemy"
        elif "psycopg" in last:
            g = "psycopg"
        elif "pgconductor" in last:
            g = "pgconductor"
        elif "asyncio" in last or "uvloop" in last:
            g = "asyncio/uvloop"
        else:
            g = "other"
        groups[g] += c
    share = lambda c: round(100 * c / max(total, 1), 1)  # noqa: E731
    return {
        "samples": total,
        "self": [(f, share(c)) for f, c in selfc.most_common(top)],
        "inclusive": [(f, share(c)) for f, c in incl.most_common(top + 12)],
        "self_by_package": {g: share(c) for g, c in groups.most_common()},
    }


def section_profile(res: Results, m: dict[str, Any]) -> None:
    pgc = systems.get("pgconductor")
    n = m["profile_n"]
    out: dict[str, Any] = {}
    # 1. pg_stat_statements (nested statements too) over one tuned 2-process drain.
    sql(pgc.db, "alter database bench_pgconductor set pg_stat_statements.track = 'all'")
    try:

        def reset_stats(procs: list[Any]) -> None:
            sql(pgc.db, "select pg_stat_statements_reset()")

        r = drain_once("pgconductor", n, 2, PGC_TUNED, "profile-pgss", on_ready=reset_stats)
        rows = sql(
            pgc.db,
            """
            select calls, rows, round(total_exec_time::numeric, 1) as total_ms,
                   round(mean_exec_time::numeric, 3) as mean_ms,
                   shared_blks_hit, shared_blks_read, shared_blks_dirtied, wal_bytes,
                   regexp_replace(left(query, 160), '\\s+', ' ', 'g') as query
              from pg_stat_statements
             where dbid = (select oid from pg_database where datname = current_database())
             order by total_exec_time desc limit 16""",
        )[0]
    finally:
        sql(pgc.db, "alter database bench_pgconductor reset pg_stat_statements.track")
    out["pgss_drain"] = {
        "jobs_per_s": r["jobs_per_s"],
        "n": n,
        "busy_cores": r["busy_cores"],
        "worker_cores": r["worker_cores"],
        "rows": [list(x) for x in rows],
    }
    log(f"  pg_stat_statements over a tuned 2p drain ({r['jobs_per_s']:.0f} jobs/s):")
    for x in rows[:8]:
        log(f"    {x[2]:>9} ms {x[0]:>7} calls  {x[8][:90]}")
    # 2. py-spy on one tuned worker process.
    prof = RESULTS_DIR / "pyspy-worker.txt"
    r = drain_once(
        "pgconductor",
        n,
        1,
        PGC_TUNED,
        "profile-pyspy",
        on_ready=lambda procs: _PySpy(procs[0].pid, prof),
    )
    out["pyspy"] = {
        "jobs_per_s": r["jobs_per_s"],
        "n": n,
        "worker_cores": r["worker_cores"],
        "busy_cores": r["busy_cores"],
        **fold_profile(prof),
    }
    log(
        f"  py-spy (1 tuned worker, {r['jobs_per_s']:.0f} jobs/s, {r['worker_cores']:.2f} cores):"
        f" {out['pyspy'].get('self_by_package')}"
    )
    res.put("profile", out)


# ------------------------------------------------------------------------------------------


def section_env(res: Results) -> None:
    names = [
        "server_version",
        "shared_buffers",
        "synchronous_commit",
        "fsync",
        "full_page_writes",
        "wal_level",
        "max_wal_size",
        "autovacuum",
        "jit",
        "port",
    ]
    rows = sql(
        "postgres",
        "select name, current_setting(name) from pg_settings"
        f" where name in ({','.join(repr(x) for x in names)})",
    )[0]
    import importlib.metadata as md

    versions = {
        p: md.version(p)
        for p in (
            "pgqueuer",
            "procrastinate",
            "psycopg",
            "asyncpg",
            "uvloop",
            "sqlalchemy",
            "pgconductor",
            "dbos",
        )
    }
    ext = sql(
        "bench_pgconductor", "select extversion from pg_extension where extname = 'pgconductor'"
    )[0][0][0]
    commit = subprocess.run(
        ["git", "-C", str(BENCH_DIR), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(BENCH_DIR.parent), "status", "--porcelain", "extension", "python"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    res.put(
        "env",
        {
            "settings": dict(rows),
            "versions": versions,
            "extension": ext,
            "commit": commit
            + (" (+ uncommitted changes in extension/ or python/)" if dirty else ""),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },
    )


def section_workflow(res: Results, m: dict[str, Any]) -> None:
    import workflows

    workflows.section(res, m)


def section_flow(res: Results, m: dict[str, Any]) -> None:
    import flow

    flow.section(res, m)


def section_sources(res: Results, m: dict[str, Any]) -> None:
    import sources

    sources.section(res, m)


SECTIONS = [
    "enqueue",
    "backlog",
    "drain",
    "latency",
    "workflow",
    "xmin",
    "profile",
    "flow",
    "sources",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=list(MODES), default="quick")
    ap.add_argument("--only", default=",".join(SECTIONS))
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    m = MODES[args.mode]
    RESULTS_DIR.mkdir(exist_ok=True)
    res = Results(args.mode)
    if not args.report_only:
        t0 = time.perf_counter()
        for s in ("pgconductor", "pgqueuer", "procrastinate", "pgconductor-wf", "dbos"):
            asyncio.run(systems.get(s).install())
        section_env(res)
        only = args.only.split(",")
        for name in SECTIONS:
            if name in only:
                log(f"==> {name}")
                t = time.perf_counter()
                globals()[f"section_{name}"](res, m)
                log(f"    ({time.perf_counter() - t:.0f}s)")
        res.data["took_s"] = time.perf_counter() - t0
        res.save()
    path = report.write(res.data, RESULTS_DIR, args.mode)
    print(report.table(res.data))
    log(f"report: {path}")


if __name__ == "__main__":
    main()
