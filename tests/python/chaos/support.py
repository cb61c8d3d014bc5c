"""Helpers shared by the chaos scenarios (no fixtures here: see conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb
from sqlalchemy.engine import make_url

from chaos.app import LEDGER_DDL
from pgconductor import Conductor
from pgconductor.orchestrator import Orchestrator
from pgtest import execute


def upstream_of(url: str) -> tuple[str, int]:
    """(host, port) of a postgres URL; the proxy only ever targets loopback addresses."""
    parsed = make_url(url)
    host = parsed.host or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"chaos tests only proxy loopback servers, not {host!r}")
    return ("127.0.0.1" if host == "localhost" else host), int(parsed.port or 5432)


class EchoServer:
    """A blocking TCP echo server on 127.0.0.1 (one thread per connection).

    `close_after_first` makes it close each connection after echoing the first chunk, so a
    test can watch how the proxy propagates a server-side close.
    """

    def __init__(self, close_after_first: bool = False) -> None:
        self.close_after_first = close_after_first
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._closed = False
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
                    if self.close_after_first:
                        return
            except OSError:
                return

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=2)
        self._accepter.join(timeout=2)


# -- the work, the ledger and the invariants -------------------------------------------------

TESTS_DIR = Path(__file__).resolve().parent.parent  # tests/python: cwd of subprocess workers

#: Fast timings so the whole chaos layer fits its budget.
FAST: dict[str, Any] = {
    "heartbeat_interval": 0.5,
    "stale_after": 3.0,
    "poll_interval": 0.2,
    "grace_period": 2.0,
    "abort_grace": 1.0,
    "start_timeout": 20.0,
}


def prepare(url: str) -> None:
    """Create the ledger table in the test database."""
    execute(url, LEDGER_DDL)


def make_orchestrator(conductor: Conductor, **overrides: Any) -> Orchestrator:
    """An orchestrator with the fast chaos timings (`overrides` win)."""
    return Orchestrator(conductor, **{**FAST, **overrides})


@contextlib.asynccontextmanager
async def running(*orchestrators: Orchestrator) -> AsyncIterator[None]:
    """Start the orchestrators; stop them (and close their conductors) afterwards."""
    started: list[Orchestrator] = []
    try:
        for orch in orchestrators:
            await orch.start()
            started.append(orch)
        yield
    finally:
        await asyncio.gather(*(o.stop() for o in started), return_exceptions=True)
        for orch in orchestrators:
            await orch.conductor.close()
            await orch.conductor.context["ledger"].close()


def invoke(url: str, payloads: Sequence[dict[str, Any]], task: str = "chaos.work") -> list[UUID]:
    """Enqueue executions directly (never through a proxy); ids in payload order."""
    rows = execute(
        url,
        "SELECT id FROM pgconductor.invoke_batch(%s::text, %s::jsonb[]) WITH ORDINALITY AS b(id, n)"
        " ORDER BY n",
        task,
        [Jsonb(p) for p in payloads],
    )
    return [row[0] for row in rows]


def scalar(url: str, query: str, *params: Any) -> Any:
    """The single value a query returns."""
    return execute(url, query, *params)[0][0]


def finished_count(url: str, ids: Sequence[UUID], state: str = "completed") -> int:
    return int(
        scalar(
            url,
            "SELECT count(*) FROM pgconductor.finished_executions"
            " WHERE id = ANY(%s) AND state = %s",
            list(ids),
            state,
        )
    )


def locked_by(url: str, ids: Sequence[UUID]) -> dict[UUID, UUID | None]:
    rows = execute(
        url,
        "SELECT id, locked_by FROM pgconductor.executions WHERE id = ANY(%s)",
        list(ids),
    )
    return dict(rows)


def ledger(url: str, phase: str | None = None) -> list[tuple[UUID, int, str, str, int]]:
    """Ledger rows (execution_id, attempt, label, phase, pid) in the order written."""
    rows = execute(
        url,
        "SELECT execution_id, attempt, label, phase, pid FROM chaos_ledger"
        " WHERE %s::text IS NULL OR phase = %s ORDER BY seq",
        phase,
        phase,
    )
    return [tuple(r) for r in rows]  # type: ignore[misc]


def started(url: str, ids: Sequence[UUID], label: str | None = None) -> int:
    """How many of `ids` have a `start` row in the ledger (by `label`, when given)."""
    wanted = set(ids)
    return len(
        {
            row[0]
            for row in ledger(url, "start")
            if row[0] in wanted and (label is None or row[2] == label)
        }
    )


@dataclass
class Report:
    """What the invariant check found, for scenario-specific assertions."""

    attempts: dict[UUID, int]  # execution -> attempts recorded when it finished
    finished_by: dict[UUID, UUID | None]  # execution -> orchestrator that finished it
    effects: dict[UUID, list[tuple[int, str]]]  # execution -> [(attempt, label)] side effects
    starts: dict[UUID, list[tuple[int, str]]]  # execution -> [(attempt, label)] handler runs
    errors: dict[UUID, str | None]


def check_invariants(
    url: str,
    ids: Sequence[UUID],
    *,
    state: str = "completed",
    orchestrators: dict[str, UUID] | None = None,
) -> Report:
    """The invariants every chaos scenario ends with.

    - none lost: every execution is finished, in `state`; none is left live or locked;
    - no attempt ran twice: at most one `start` and one `effect` per (execution, attempt);
    - a completed execution's side effect comes from the attempt it completed with, and a
      side effect ran more than once only for earlier attempts (their lease was lost: the
      execution was not finished by them);
    - fencing: the orchestrator recorded as finishing it is the one that ran that attempt
      (when `orchestrators` maps ledger labels to orchestrator ids).
    """
    ids = list(ids)
    assert len(set(ids)) == len(ids)
    live = execute(
        url,
        "SELECT id, locked_by, attempts FROM pgconductor.executions WHERE id = ANY(%s)",
        ids,
    )
    assert live == [], f"executions still live (lost or locked): {live}"
    rows = execute(
        url,
        "SELECT id, state, attempts, orchestrator_id, last_error"
        " FROM pgconductor.finished_executions WHERE id = ANY(%s)",
        ids,
    )
    assert len(rows) == len(ids), f"{len(ids) - len(rows)} execution(s) missing"
    states = Counter(r[1] for r in rows)
    assert states == {state: len(ids)}, f"expected every execution {state}: {dict(states)}"
    report = Report(
        attempts={r[0]: r[2] for r in rows},
        finished_by={r[0]: r[3] for r in rows},
        effects=defaultdict(list),
        starts=defaultdict(list),
        errors={r[0]: r[4] for r in rows},
    )
    wanted = set(ids)
    seen: Counter[tuple[UUID, int, str]] = Counter()
    for eid, attempt, label, phase, _pid in ledger(url):
        if eid not in wanted:
            continue
        seen[(eid, attempt, phase)] += 1
        (report.effects if phase == "effect" else report.starts)[eid].append((attempt, label))
    twice = {k: n for k, n in seen.items() if n > 1}
    assert not twice, f"an attempt ran its handler twice: {twice}"
    for eid in ids:
        final = report.attempts[eid]
        for attempt, _label in report.effects[eid]:
            assert attempt <= final, f"{eid}: a side effect of attempt {attempt} > {final}"
        if state != "completed":
            continue
        final_effects = [label for attempt, label in report.effects[eid] if attempt == final]
        assert len(final_effects) == 1, f"{eid}: no side effect for its completing attempt"
        if orchestrators is not None:
            assert report.finished_by[eid] == orchestrators[final_effects[0]], (
                f"{eid}: finished by {report.finished_by[eid]}, but attempt {final} ran on"
                f" {final_effects[0]} ({orchestrators[final_effects[0]]}): fencing broken"
            )
    return report


# -- subprocess workers ----------------------------------------------------------------------


class WorkerProcess:
    """`python -m pgconductor worker start --app chaos.app:build` in a subprocess.

    Output goes to a log file (read it with `log()`); `close()` kills what is still alive.
    """

    def __init__(self, url: str, label: str, log_dir: Path, *args: str) -> None:
        self.label = label
        self.log_path = log_dir / f"worker-{label}.log"
        self._log = self.log_path.open("wb")
        command = [
            sys.executable,
            "-m",
            "pgconductor",
            "worker",
            "start",
            "--app",
            "chaos.app:build",
            "--heartbeat-interval",
            "0.5",
            "--stale-after",
            "2",
            "--grace-period",
            "2",
            "--concurrency",
            "10",
            "--stats-interval",
            "0",
            *args,
        ]
        env = {**os.environ, "DATABASE_URL": url, "CHAOS_LABEL": label}
        self.proc = subprocess.Popen(
            command, cwd=TESTS_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def orchestrator_id(self) -> UUID | None:
        """The id the worker logged when it started (None before that)."""
        found = re.search(r"orchestrator ([0-9a-f-]{36}): started", self.log())
        return UUID(found.group(1)) if found else None

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
