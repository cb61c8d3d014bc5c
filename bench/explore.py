"""Sweep pgconductor worker settings (how PGC_TUNED in bench.py was chosen).

python explore.py --n 100000 --procs 2 --cfgs '[{"concurrency": 1000, "fetch_batch": 500}, ...]'
"""

from __future__ import annotations

import argparse
import json

import bench


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--system", default="pgconductor")
    ap.add_argument("--cfgs", required=True, help="JSON list of worker configs")
    a = ap.parse_args()
    for cfg in json.loads(a.cfgs):
        bench.drain_series(
            f"{a.system} {a.procs}p {json.dumps(cfg)}", a.system, a.procs, cfg, a.n, a.repeat
        )


if __name__ == "__main__":
    main()
