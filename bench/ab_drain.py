"""Paired A/B drain of pgconductor worker packages (issue 10's plain drain bar).

    BENCH_PGPORT=... python ab_drain.py old=/tmp/pgc-old/python new=../python@0.6.1
                     [--n 50000] [--rounds 3] [--version 0.2.0] [--procs 2] [--profile]

Each variant is a directory holding a `pgconductor` package; its workers run with that
directory first on PYTHONPATH (bench_app.py and worker_proc.py are this directory's). A
variant drains database `ab_drain_<version>`, whose extension is created at that version
(`@VERSION` after the variant, else `--version`; an older package knows only its own
schema). Each round runs every variant once, in an order rotated and reversed from round to
round, so none always runs first: the bench's tuned drain of N no-op jobs, timed as
`bench.py` times it (t0 = GO, t1 = the monitor's first "nothing left"), every job verified.
Prints each run with the workers' CPU per job and the load average, then the medians and
the ratios to the first variant. `LABEL=pgqueuer` puts the peer's tuned drain in the same
rotation, so the ratio against it is paired as well. `--profile`: one drain per variant
with py-spy on worker 0, self and inclusive shares printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import systems
from bench import (
    PGC_TUNED,
    _PySpy,
    drain_once,
    fold_profile,
    go,
    prepare_table,
    start_workers,
    stop_workers,
)
from common import RESULTS_DIR, machine_ticks, process_cpu, url


class AbSystem(systems.PgConductor):
    """The bench's pgconductor adapter on one A/B database (one per extension version)."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.db = "ab_drain_" + re.sub(r"\W", "_", version)


def install(system: AbSystem) -> None:
    db, version = system.db, system.version
    with psycopg.connect(url("postgres"), autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (db,)).fetchone():
            conn.execute(f"create database {db}")
    with psycopg.connect(url(db), autocommit=True) as conn:
        conn.execute("drop extension if exists pgconductor cascade")
        conn.execute(f"create extension pgconductor version '{version}'")
        conn.execute("select pgconductor.register_task('noop', 'bench')")


def package_file(path: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import pgconductor; print(pgconductor.__file__)"],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def drain(
    system: AbSystem,
    path: str,
    n: int,
    procs_n: int,
    cfg: dict[str, Any],
    tag: str,
    profile: Path | None = None,
) -> dict:
    prepare_table(system, n)
    env = {"PYTHONPATH": path, "DATABASE_URL": url(system.db)}
    procs, logs = start_workers("pgconductor", cfg, procs_n, tag, env=env)
    spy = None
    try:
        if profile is not None:
            spy = PySpy(procs[0].pid, profile)
        mon = psycopg.connect(url(system.db), autocommit=True)
        busy0, total0 = machine_ticks()
        cpu0 = sum(process_cpu(p.pid) for p in procs)
        t0 = time.perf_counter()
        go(procs)
        while mon.execute(system.remaining_sql).fetchone()[0]:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{tag}: a worker exited")
            time.sleep(0.02)
        t1 = time.perf_counter()
        busy1, total1 = machine_ticks()
        cpu1 = sum(process_cpu(p.pid) for p in procs)
        mon.close()
    finally:
        if spy is not None:
            spy.finish()
        stop_workers(procs, logs)
    time.sleep(0.3)
    ok, msg = asyncio.run(system.verify(n, cfg))
    if not ok:
        time.sleep(1.0)
        ok, msg = asyncio.run(system.verify(n, cfg))
    if not ok:
        raise RuntimeError(f"{tag}: not verified: {msg}")
    return {
        "jobs_per_s": n / (t1 - t0),
        "busy_cores": (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1),
        "load": os.getloadavg()[0],
        # the workers' own CPU per job: what a slower Python path costs, less noisy than
        # jobs/s on a shared machine
        "worker_us_per_job": (cpu1 - cpu0) / n * 1e6,
    }


class PySpy(_PySpy):
    """bench.py's py-spy recorder at 1000 samples/s (a drain lasts a few seconds)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        exe = str(Path(sys.executable).parent / "py-spy")
        argv = [exe, "record", "--pid", str(pid), "--rate", "1000", "--format", "raw"]
        argv += ["--output", str(out), "--nonblocking"]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        time.sleep(0.8)


#: pgqueuer as bench.py's drain plan runs it tuned (1 QueueManager a process, batch 200).
PGQ_TUNED: dict[str, Any] = {"qms": 1, "batch": 200}


def peer_drain(n: int, procs_n: int, tag: str) -> dict:
    """One pgqueuer drain in the same sequence, so its ratio is paired too."""
    r = drain_once("pgqueuer", n, procs_n, PGQ_TUNED, tag)
    if not r["verified"]:
        raise RuntimeError(f"{tag}: not verified: {r['verify']}")
    return {
        "jobs_per_s": r["jobs_per_s"],
        "busy_cores": r["busy_cores"],
        "load": os.getloadavg()[0],
        "worker_us_per_job": r["worker_cores"] / r["jobs_per_s"] * 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "variants",
        nargs="+",
        metavar="LABEL=DIR[@VERSION]",
        help="a directory holding a pgconductor package, on extension VERSION (default"
        " --version), or LABEL=pgqueuer (its tuned drain, as bench.py runs it, in database"
        " bench_pgqueuer made by a bench run); ratios are against the first",
    )
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--version", default="0.2.0", help="extension version to create")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--no-install", action="store_true", help="keep the database as it is")
    ap.add_argument(
        "--profile", action="store_true", help="one drain each under py-spy (worker 0), then stop"
    )
    args = ap.parse_args()
    variants: dict[str, str] = {}
    peers: set[str] = set()
    systems_of: dict[str, AbSystem] = {}
    by_version: dict[str, AbSystem] = {}
    for v in args.variants:
        label, _, spec = v.partition("=")
        if spec == "pgqueuer":
            peers.add(label)
            print(f"{label}: pgqueuer tuned ({PGQ_TUNED}), bench.py's drain_once", flush=True)
            continue
        path, _, version = spec.partition("@")
        variants[label] = str(Path(path).resolve())
        version = version or args.version
        if version not in by_version:
            by_version[version] = AbSystem(version)
            if not args.no_install:
                install(by_version[version])
        systems_of[label] = by_version[version]
        print(f"{label}: {package_file(variants[label])} on {version}", flush=True)
    cfg = dict(PGC_TUNED)
    if args.profile:
        for k, path in variants.items():
            out = RESULTS_DIR / f"ab-pyspy-{k}.txt"
            res = drain(systems_of[k], path, args.n, args.procs, cfg, f"ab-prof-{k}", profile=out)
            # a frame name may hold newlines (py-spy prints some docstrings): keep whole lines
            text = out.read_text().splitlines()
            out.write_text("".join(x + "\n" for x in text if re.search(r" \d+$", x)))
            prof = fold_profile(out, top=25)
            print(f"== {k} {res['jobs_per_s']:.0f} jobs/s, {prof['samples']} samples ({out})")
            for what in ("self", "inclusive"):
                print(f"-- {what}")
                for f, share in prof[what]:
                    print(f"  {share:5.1f}  {f}")
        return
    labels = [v.partition("=")[0] for v in args.variants]
    got: dict[str, list[float]] = {k: [] for k in labels}
    cpu: dict[str, list[float]] = {k: [] for k in labels}
    for r in range(args.rounds):
        # rotate and reverse the order each round: no variant always runs first or last
        shift = r % len(labels)
        order = labels[shift:] + labels[:shift]
        if r % 2:
            order.reverse()
        for k in order:
            if k in peers:
                res = peer_drain(args.n, args.procs, f"ab-{k}-{r}")
            else:
                res = drain(systems_of[k], variants[k], args.n, args.procs, cfg, f"ab-{k}-{r}")
            got[k].append(res["jobs_per_s"])
            cpu[k].append(res["worker_us_per_job"])
            print(
                f"round {r} {k:>8}: {res['jobs_per_s']:8.0f} jobs/s  workers"
                f" {res['worker_us_per_job']:5.1f} us CPU/job  busy {res['busy_cores']:.2f}"
                f" cores  load {res['load']:.2f}",
                flush=True,
            )
    base_j, base_c = statistics.median(got[labels[0]]), statistics.median(cpu[labels[0]])
    print(f"medians of {args.rounds} rounds, N = {args.n}, {args.procs} procs:")
    for k in labels:
        mj, mc = statistics.median(got[k]), statistics.median(cpu[k])
        print(
            f"  {k:>8}: {mj:8.0f} jobs/s [{min(got[k]):.0f}-{max(got[k]):.0f}]"
            f" ({mj / base_j:.3f}x)  {mc:5.1f} us worker CPU/job ({mc / base_c:.3f}x)"
        )
    if peers:
        # each round's ratio to the peer, then their median: the load moves both drains of
        # a round alike, so this is steadier than the ratio of the medians
        peer = next(iter(peers))
        for k in labels:
            if k not in peers:
                ratios = [a / b for a, b in zip(got[k], got[peer], strict=True)]
                print(
                    f"  {k:>8} / {peer}: median of the rounds' ratios"
                    f" {statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"
                )
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
