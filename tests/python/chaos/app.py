"""The chaos tests' application: one task whose handler records every side effect.

Used in-process (`make_conductor(url, label)`) and by subprocess workers
(`pgconductor worker start --app chaos.app:build`, run from tests/python, with
`DATABASE_URL` and `CHAOS_LABEL` in the environment).

The handler of `chaos.work` writes a `start` row to the ledger table `chaos_ledger` (over its
own connection, never through a fault proxy), then behaves as its payload says, then writes
an `effect` row (its side effect) and returns. Payload keys, all optional:

- `n`: returned as the result, to tell executions apart;
- `sleep`: seconds to sleep before the side effect (only on the attempts in `sleep_on`,
  when given);
- `hang_on`: attempts on which it blocks until aborted (a stuck handler, a crash victim);
- `gate`: name of an `asyncio.Event` in `GATES` to wait for (in-process tests only);
- `fail_on`: attempts on which it raises after `start`;
- `children`: how many child executions it invokes (through its Conductor's client).

`chaos.sync` is the same contract for a plain (thread-run) handler that honours
`ctx.cancel_event`: it loops until cancelled when its attempt is in `hang_on`.

`chaos.flow` is a durable workflow (steps a, b, an optional child `chaos.flow_child`, a sleep,
step c) whose step bodies append lines to the ledger file named by its payload; on a worker
labelled `victim` it hangs between steps a and b (`hang_between`), and its child hangs.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import psycopg

from pgconductor import Conductor
from pgconductor.conductor import TaskContext

__all__ = ["GATES", "LEDGER_DDL", "Ledger", "build", "make_conductor"]

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS chaos_ledger (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id uuid NOT NULL,
    attempt      integer NOT NULL,
    label        text NOT NULL,
    phase        text NOT NULL CHECK (phase IN ('start', 'effect')),
    pid          integer NOT NULL,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

#: Gates in-process handlers wait on (payload `gate`); tests create and set them.
GATES: dict[str, asyncio.Event] = {}


class Ledger:
    """Writes ledger rows on a private autocommit connection (async and sync callers)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock: asyncio.Lock | None = None
        self._sync_lock = threading.Lock()

    async def record(self, ctx: TaskContext, phase: str) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            await self._conn.execute(
                "INSERT INTO chaos_ledger (execution_id, attempt, label, phase, pid)"
                " VALUES (%s, %s, %s, %s, %s)",
                (ctx.execution_id, ctx.attempt, ctx.label, phase, os.getpid()),
            )

    def record_sync(self, ctx: TaskContext, phase: str) -> None:
        with self._sync_lock, psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO chaos_ledger (execution_id, attempt, label, phase, pid)"
                " VALUES (%s, %s, %s, %s, %s)",
                (ctx.execution_id, ctx.attempt, ctx.label, phase, os.getpid()),
            )

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def make_conductor(
    database: Any,
    label: str,
    *,
    ledger_url: str | None = None,
    timeout: float | None = None,
    max_attempts: int = 3,
) -> Conductor:
    """A Conductor with the chaos tasks; `label` names its runs in the ledger."""
    url = ledger_url or (database if isinstance(database, str) else os.environ["DATABASE_URL"])
    ledger = Ledger(url)
    app = Conductor(database, context={"label": label, "ledger": ledger})

    @app.task("chaos.work", max_attempts=max_attempts, backoff=(0.05, 0.2), timeout=timeout)
    async def work(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        await ledger.record(ctx, "start")
        if payload.get("gate"):
            await GATES[payload["gate"]].wait()
        if ctx.attempt in payload.get("hang_on", ()):
            await asyncio.sleep(3600)
        if ctx.attempt in payload.get("fail_on", ()):
            raise RuntimeError(f"planned failure on attempt {ctx.attempt}")
        if payload.get("sleep") and ctx.attempt in payload.get("sleep_on", [ctx.attempt]):
            await asyncio.sleep(float(payload["sleep"]))
        for k in range(int(payload.get("children", 0))):  # client calls from the handler
            await app.invoke("chaos.work", {"n": k, "parent": str(ctx.execution_id)})
        await ledger.record(ctx, "effect")
        return {"n": payload.get("n"), "by": label}

    @app.task("chaos.sync", max_attempts=max_attempts, backoff=(0.05, 0.2), timeout=timeout)
    def sync_work(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        ledger.record_sync(ctx, "start")
        if ctx.attempt in payload.get("hang_on", ()):
            while not ctx.cancel_event.is_set():  # cooperative: stops when aborted
                time.sleep(0.01)
            raise RuntimeError("stopped: the attempt was aborted")
        ledger.record_sync(ctx, "effect")
        return {"n": payload.get("n"), "by": label}

    def note(path: str, line: str) -> str:
        """Append one line to the workflow ledger file, on disk before returning."""
        with open(path, "a", encoding="utf-8") as ledger_file:
            ledger_file.write(line + "\n")
            ledger_file.flush()
            os.fsync(ledger_file.fileno())
        return line

    @app.task("chaos.flow", max_attempts=max_attempts, backoff=(0.05, 0.2))
    async def flow(ctx: TaskContext, payload: dict[str, Any]) -> list[Any]:
        path, me = payload["ledger"], str(ctx.execution_id)
        a = await ctx.step("a", note, path, f"{me} step a")
        note(path, f"{me} between {label}")
        if payload.get("hang_between") and label == "victim":
            await asyncio.sleep(3600)  # killed here: step a is stored, step b never ran
        b = await ctx.step("b", note, path, f"{me} step b")
        child = None
        if payload.get("child"):
            child = await ctx.invoke("child", "chaos.flow_child", {"ledger": path})
        await ctx.sleep("nap", 0.05)
        c = await ctx.step("c", note, path, f"{me} step c")
        return [a, b, child, c]

    @app.task("chaos.flow_child", max_attempts=max_attempts, backoff=(0.05, 0.2))
    async def flow_child(ctx: TaskContext, payload: dict[str, Any]) -> str:
        path, me = payload["ledger"], str(ctx.execution_id)
        note(path, f"{me} child start {label}")
        if label == "victim":
            await asyncio.sleep(3600)  # killed here, while its parent waits for it
        note(path, f"{me} child effect {label}")
        return "child done"

    return app


def build() -> Conductor:
    """The subprocess workers' app (`--app chaos.app:build`): database from DATABASE_URL,
    ledger label from CHAOS_LABEL."""
    return make_conductor(None, os.environ.get("CHAOS_LABEL", f"pid{os.getpid()}"))
