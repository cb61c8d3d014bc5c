"""The pgconductor app the benchmark runs: one no-op task `noop` on queue `bench`.

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
