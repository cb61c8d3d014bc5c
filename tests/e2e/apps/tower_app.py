"""The app every e2e tower runs: `pgconductor worker start --config tower.json` with
`"app": "tower_app:conductor"` (the tower's working directory is this folder).

Every handler records what it does in `e2e.ledger` (created by lib/db.sh `setup_test_db`),
one row per event of one handler run (`run_id`):

| kind      | written when                                                             |
|-----------|--------------------------------------------------------------------------|
| start     | the handler was entered                                                  |
| effect    | the side effect happened (the last thing before returning successfully)  |
| fail      | the handler is about to raise on purpose                                 |
| aborted   | the handler was stopped (cancel, shutdown, lost lease) before its effect |

The value a handler returns (`finished_executions.result`) names its run, so the invariant
checks can tell which run's completion SQL applied. Ledger writes survive a database restart:
they reconnect and retry for up to LEDGER_DEADLINE seconds and are idempotent
(`UNIQUE (run_id, kind)`), and an `effect` write is never torn by a cancel: the handler waits
for it and then returns normally, so "side effect recorded" and "completion reported" agree.

Environment: DATABASE_URL (the test database), E2E_TOWER (the tower's name),
E2E_WINDOW ("HH:MM-HH:MM", UTC: the window of task `windowed`), E2E_LEDGER_URL (where the
ledger is written, when DATABASE_URL is a pooler's: default DATABASE_URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import uuid
from typing import Any

import psycopg

from pgconductor import Conductor, TaskContext

TOWER = os.environ.get("E2E_TOWER", "unnamed")
PID = os.getpid()
LEDGER_DEADLINE = 120.0
ASSAULT_QUEUES = 8

INSERT = """
INSERT INTO e2e.ledger (run_id, kind, execution_id, task_key, queue, attempt, max_attempts,
                        tower, pid, payload)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (run_id, kind) DO NOTHING
"""

#: A workflow step's side effect (table e2e.steps, created by the workflow scenarios).
STEP_INSERT = "INSERT INTO e2e.steps (execution_id, key, tower, pid) VALUES (%s, %s, %s, %s)"

conductor = Conductor()


def _database_url() -> str:
    url = os.environ.get("E2E_LEDGER_URL") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("DATABASE_URL is not set")
    return url


def _row(run_id: uuid.UUID, kind: str, ctx: TaskContext, payload: Any) -> tuple[Any, ...]:
    return (
        run_id,
        kind,
        ctx.execution_id,
        ctx.task_key,
        ctx.queue,
        ctx.attempt,
        ctx.max_attempts,
        TOWER,
        PID,
        json.dumps(payload),
    )


class AsyncLedger:
    """A few autocommit connections, reconnected after a database restart."""

    def __init__(self, size: int = 4) -> None:
        self._size = size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots: asyncio.Semaphore | None = None

    async def _write(self, row: tuple[Any, ...], statement: str = INSERT) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)
        deadline = time.monotonic() + LEDGER_DEADLINE
        delay = 0.05
        while True:
            async with self._slots:
                conn = self._idle.pop() if self._idle else None
                try:
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(
                            _database_url(), autocommit=True, connect_timeout=5
                        )
                    await conn.execute(statement, row)
                    self._idle.append(conn)
                    return
                except psycopg.OperationalError:
                    if conn is not None:
                        await conn.close()
                    if time.monotonic() > deadline:
                        raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def record_step(self, ctx: TaskContext, key: str) -> None:
        """One row in `e2e.steps` (made by the workflow scenarios): a step's side effect."""
        await self._write((ctx.execution_id, key, TOWER, PID), STEP_INSERT)

    async def record(self, row: tuple[Any, ...]) -> bool:
        """Write one row; a cancel arriving meanwhile waits for the write, then re-raises.

        Returns normally once the row is durable. The write itself is shielded: it is never
        torn by the handler's cancellation.
        """
        write = asyncio.ensure_future(self._write(row))
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            await asyncio.wait({write})
            raise
        return True


class SyncLedger:
    """One autocommit connection per handler thread (sync handlers run on a thread pool)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def record(self, row: tuple[Any, ...]) -> None:
        deadline = time.monotonic() + LEDGER_DEADLINE
        delay = 0.05
        while True:
            conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
            try:
                if conn is None or conn.closed:
                    conn = psycopg.Connection.connect(
                        _database_url(), autocommit=True, connect_timeout=5
                    )
                    self._local.conn = conn
                conn.execute(INSERT, row)
                return
            except psycopg.OperationalError:
                if conn is not None:
                    conn.close()
                self._local.conn = None
                if time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


ledger = AsyncLedger()
sync_ledger = SyncLedger()


def _result(run_id: uuid.UUID, ctx: TaskContext) -> dict[str, Any]:
    return {"run_id": str(run_id), "attempt": ctx.attempt, "pid": PID, "tower": TOWER}


def _sleep_of(payload: Any, default: float) -> float:
    if isinstance(payload, dict) and isinstance(payload.get("sleep"), int | float):
        return float(payload["sleep"])
    return default


async def _work(ctx: TaskContext, payload: Any, *, default_sleep: float, fail: str | None) -> Any:
    """The common body: start, work (sleep), then fail on purpose or record the effect."""
    run_id = uuid.uuid4()
    try:
        await ledger.record(_row(run_id, "start", ctx, payload))
        await asyncio.sleep(_sleep_of(payload, default_sleep))
    except asyncio.CancelledError:
        await ledger.record(_row(run_id, "aborted", ctx, payload))
        raise
    if fail is not None:
        await ledger.record(_row(run_id, "fail", ctx, payload))
        raise RuntimeError(fail)
    # A cancel during the effect write waits for it; the effect is then durable and the
    # work done, so the handler reports it done (see the docstring).
    with contextlib.suppress(asyncio.CancelledError):
        await ledger.record(_row(run_id, "effect", ctx, payload))
    return _result(run_id, ctx)


@conductor.task("hello", max_attempts=25)
async def hello(ctx: TaskContext, payload: Any) -> Any:
    """The plain job: a short sleep, then its side effect."""
    return await _work(ctx, payload, default_sleep=0.02, fail=None)


@conductor.task("hello-sync", max_attempts=25)
def hello_sync(ctx: TaskContext, payload: Any) -> Any:
    """The same job as a plain function (runs on the worker's thread pool)."""
    run_id = uuid.uuid4()
    sync_ledger.record(_row(run_id, "start", ctx, payload))
    end = time.monotonic() + _sleep_of(payload, 0.02)
    while time.monotonic() < end:
        if ctx.is_cancelled():
            sync_ledger.record(_row(run_id, "aborted", ctx, payload))
            raise RuntimeError("stopped: asked to abort")
        time.sleep(min(0.01, max(end - time.monotonic(), 0)))
    sync_ledger.record(_row(run_id, "effect", ctx, payload))
    return _result(run_id, ctx)


@conductor.task("flaky", max_attempts=3, backoff=(0.1, 0.5))
async def flaky(ctx: TaskContext, payload: Any) -> Any:
    """Fails its first `fail_times` (default 2) attempts, then succeeds."""
    fail_times = payload.get("fail_times", 2) if isinstance(payload, dict) else 2
    fail = None
    if ctx.attempt <= fail_times:
        fail = f"flaky: attempt {ctx.attempt} of {ctx.max_attempts} fails on purpose"
    return await _work(ctx, payload, default_sleep=0.01, fail=fail)


@conductor.task("doomed", max_attempts=3, backoff=(0.1, 0.5))
async def doomed(ctx: TaskContext, payload: Any) -> Any:
    """Always fails; ends `failed` with the last attempt's error."""
    fail = f"doomed: attempt {ctx.attempt} of {ctx.max_attempts} fails on purpose"
    return await _work(ctx, payload, default_sleep=0.01, fail=fail)


@conductor.task("sleeper", max_attempts=25)
async def sleeper(ctx: TaskContext, payload: Any) -> Any:
    """A long job (default 60 s) that stops as soon as it is cancelled."""
    return await _work(ctx, payload, default_sleep=60.0, fail=None)


@conductor.task("slowpoke", max_attempts=2, timeout=0.5, backoff=(0.1, 0.5))
async def slowpoke(ctx: TaskContext, payload: Any) -> Any:
    """Runs past its 0.5 s timeout every time; ends `failed` ("timed out")."""
    return await _work(ctx, payload, default_sleep=5.0, fail=None)


def _window() -> tuple[str, str]:
    start, _, end = os.environ.get("E2E_WINDOW", "09:00-10:00").partition("-")
    return start, end


@conductor.task("windowed", max_attempts=25, window=_window(), timezone="UTC")
async def windowed(ctx: TaskContext, payload: Any) -> Any:
    """Only claimed while UTC time (the database's clock) is inside E2E_WINDOW."""
    return await _work(ctx, payload, default_sleep=0.01, fail=None)


async def _assault(ctx: TaskContext, payload: Any) -> Any:
    return await _work(ctx, payload, default_sleep=0.02, fail=None)


for _i in range(1, ASSAULT_QUEUES + 1):
    # One task per queue: a worker runs only the tasks registered for its queue.
    conductor.task(f"assault-{_i}", queue=f"assault-{_i}", max_attempts=25)(_assault)


async def _finish(ctx: TaskContext, payload: Any, **extra: Any) -> Any:
    """The ledger rows of a workflow's last run (a run that suspends writes none: it has
    not ended), and its result naming that run."""
    run_id = uuid.uuid4()
    await ledger.record(_row(run_id, "start", ctx, payload))
    with contextlib.suppress(asyncio.CancelledError):
        await ledger.record(_row(run_id, "effect", ctx, payload))
    return {**_result(run_id, ctx), **extra}


async def _step_effect(ctx: TaskContext, key: str, pause: float) -> str:
    await asyncio.sleep(pause)
    await ledger.record_step(ctx, key)
    return f"{key} by {TOWER}"


@conductor.task("workflow", max_attempts=25)
async def workflow(ctx: TaskContext, payload: Any) -> Any:
    """Five durable steps (each records its side effect in e2e.steps) with a durable sleep
    after the third: every run after a suspension or a crash replays the stored steps."""
    pause = _sleep_of(payload, 0.05)
    done: list[str] = []
    for n in range(1, 6):
        done.append(await ctx.step(f"step-{n}", _step_effect, ctx, f"step-{n}", pause))
        if n == 3:
            await ctx.sleep("breather", 0.2)
    return await _finish(ctx, payload, steps=done)


@conductor.task("fan-parent", max_attempts=25)
async def fan_parent(ctx: TaskContext, payload: Any) -> Any:
    """Fans out `children` (default 500) children, half in queue fan-a and half in fan-b,
    in one suspension, and joins them."""
    half = int(payload.get("children", 500)) // 2 if isinstance(payload, dict) else 250
    a, b = await ctx.gather(
        ctx.invoke_many("a", "fan-child-a", [{"i": i} for i in range(half)]),
        ctx.invoke_many("b", "fan-child-b", [{"i": i} for i in range(half)]),
    )
    towers = sorted({r["tower"] for r in [*a, *b]})
    return await _finish(ctx, payload, children=len(a) + len(b), child_towers=towers)


conductor.task("fan-child-a", queue="fan-a", max_attempts=25)(_assault)
conductor.task("fan-child-b", queue="fan-b", max_attempts=25)(_assault)
