"""A worker subprocess: `python worker_proc.py --system NAME --cfg JSON`.

Imports the system, builds its app and connections, prints READY, waits for one line on
stdin (the harness's GO), then runs the system's worker loop until it is killed. With
cfg {"mode": "cli"} (pgconductor only) it instead replaces itself, after GO, with
`pgconductor worker start --app bench_app:conductor ...` (start-up then counts in the run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import systems


def cli_argv(cfg: dict) -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "pgconductor")
    argv = [
        exe,
        "worker",
        "start",
        "--app",
        "bench_app:conductor",
        "--queue",
        "bench",
        "--concurrency",
        str(cfg["concurrency"]),
        "--flush-batch",
        str(cfg["flush_batch"]),
        "--stats-interval",
        "0",
        "--log-level",
        "warning",
    ]
    if cfg.get("fetch_batch"):
        argv += ["--fetch-batch", str(cfg["fetch_batch"])]
    return argv


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--system", required=True)
    ap.add_argument("--cfg", default="{}")
    args = ap.parse_args()
    system = systems.get(args.system)
    cfg = system.cfg(json.loads(args.cfg))

    if cfg.get("mode") == "cli":
        print("READY", flush=True)
        sys.stdin.readline()
        os.chdir(os.path.dirname(os.path.abspath(__file__)))
        argv = cli_argv(cfg)
        os.execv(argv[0], argv)

    async def ready() -> None:
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    coro = system.worker(cfg, ready)
    if cfg.get("uvloop"):
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
