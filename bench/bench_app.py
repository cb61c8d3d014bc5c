"""The pgconductor app the benchmark runs: one no-op task `noop` on queue `bench`.

Usable by the CLI too: `pgconductor worker start --app bench_app:conductor --queue bench`
(from this directory, with DATABASE_URL set). With BENCH_REC_FILE set, the handler appends
"<seq> <time.time()>" for payloads that carry a `seq` (the latency measurement).
"""

from __future__ import annotations

import os
import time
from typing import Any

from pgconductor import Conductor

conductor = Conductor()  # DATABASE_URL, read when the database is first needed

_rec_path = os.environ.get("BENCH_REC_FILE")
_rec = open(_rec_path, "a", buffering=1) if _rec_path else None  # noqa: SIM115 - process lifetime


@conductor.task("noop", queue="bench")
async def noop(ctx: Any, payload: Any) -> None:
    if _rec is not None and payload and "seq" in payload:
        _rec.write(f"{payload['seq']} {time.time()}\n")
