"""Helpers shared by the benchmark scripts: connection strings, CPU counters, statistics."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LOG_DIR = RESULTS_DIR / "logs"
HOST = os.environ.get("BENCH_PGHOST", "127.0.0.1")
PORT = os.environ.get("BENCH_PGPORT", "55499")
USER = os.environ.get("BENCH_PGUSER", "postgres")
TICKS = os.sysconf("SC_CLK_TCK")


def url(db: str) -> str:
    """libpq URL of database `db` on the benchmark cluster."""
    return f"postgresql://{USER}@{HOST}:{PORT}/{db}"


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid` (nan once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            tail = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return float("nan")
    return (int(tail[11]) + int(tail[12])) / TICKS


def pct(values: list[float], p: float) -> float:
    """Percentile with linear interpolation between closest ranks."""
    s = sorted(values)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * p / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(values: list[float]) -> dict:
    """Median, min, max and the values themselves."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": values,
    }


def latency_stats(ms: list[float]) -> dict:
    """p50/p95/p99/max/mean of a list of milliseconds."""
    return {
        "n": len(ms),
        "p50": pct(ms, 50),
        "p95": pct(ms, 95),
        "p99": pct(ms, 99),
        "max": max(ms) if ms else float("nan"),
        "mean": sum(ms) / len(ms) if ms else float("nan"),
    }
