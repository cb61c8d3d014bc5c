"""`Conductor`: the task registry and the invocation API.

Handlers are registered with `@conductor.task(...)`; payloads are validated with pydantic
before any SQL runs, and again by the worker when it receives them (`Task.parse_payload`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields, is_dataclass
from datetime import datetime, time, timedelta
from typing import Any, TypeVar, Unpack, cast
from uuid import UUID

from sqlalchemy import Connection
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pgconductor.batching import BATCH_OPTIONS, BatchOptions, task_batch
from pgconductor.clock import Clock, SystemClock
from pgconductor.db import RetryPolicy, SqlDatabaseClient
from pgconductor.errors import InvalidInput, PgConductorError
from pgconductor.flow import (
    BATCH_CHUNK,
    BatchFlow,
    Flow,
    FlowControl,
    TaskLimits,
    batch_flow_args,
    batches,
    check_dedupe,
    flow_args,
    task_limits,
)
from pgconductor.protocol import DatabaseClient, SyncInvoker
from pgconductor.sources import (
    SOURCE_OPTIONS,
    SourceOptions,
    task_sources,
    unique_schedule_names,
)
from pgconductor.task import (
    Backoff,
    Task,
    TaskContext,
    clock_time,
    seconds,
    settings_made_in_sql,
)
from pgconductor.types import ExecutionInfo, TaskSpec
from pgconductor.workflow import check_name

__all__ = ["Backoff", "Conductor", "Task", "TaskContext", "TaskOptions"]

R = TypeVar("R")
#: SQLSTATE of a call to a function the installed extension does not have.
UNDEFINED_FUNCTION = "42883"


class TaskOptions(TaskLimits, SourceOptions, BatchOptions, total=False):
    """The keyword settings of `@conductor.task(...)` beyond the basic ones: flow-control
    limits (0.7.0), schedules and event sources (0.8.0), batching (`batch_size`)."""


def _context_mapping(context: Mapping[str, Any] | object | None) -> dict[str, Any]:
    """Turn a mapping, a dataclass or any object into the extra-context mapping."""
    if context is None:
        return {}
    if isinstance(context, Mapping):
        return dict(context)
    if is_dataclass(context) and not isinstance(context, type):
        return {f.name: getattr(context, f.name) for f in fields(context)}
    names = vars(context) if hasattr(context, "__dict__") else dir(context)
    return {name: getattr(context, name) for name in names if not name.startswith("_")}


class Conductor(FlowControl):
    """Task registry plus `invoke`; hand it to an `Orchestrator` to run the handlers.

    Flow control (extension 0.7.0): the enqueue options of `pgconductor.flow.Flow` on every
    invoke form, the task limits of `TaskLimits` on `task()`, and `FlowControl`'s calls.

    The first argument is a database URL (plain `postgresql://` works), an `AsyncEngine`,
    a `DatabaseClient`, or None to read `DATABASE_URL` when the database is first needed.
    """

    def __init__(
        self,
        database: str | URL | AsyncEngine | DatabaseClient | None = None,
        *,
        context: Mapping[str, Any] | object | None = None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._database = database
        self._retry = retry
        self._client: DatabaseClient | None = None
        self._owns_client = False
        self.tasks: dict[str, Task[Any]] = {}
        self.context: dict[str, Any] = _context_mapping(context)
        self.clock: Clock = clock or SystemClock()
        self._queues: set[str] = set()

    @property
    def client(self) -> DatabaseClient:
        """The `DatabaseClient`, created on first use."""
        if self._client is None:
            database = self._database or os.environ.get("DATABASE_URL")
            if database is None:
                raise PgConductorError(
                    "no database given", hint="pass a URL to Conductor() or set DATABASE_URL"
                )
            if isinstance(database, str | URL | AsyncEngine):
                self._client = SqlDatabaseClient(database, retry=self._retry)
                self._owns_client = True
            else:
                self._client = database
        return self._client

    @client.setter
    def client(self, client: DatabaseClient) -> None:
        """Use `client` (owned by the caller, so `close()` leaves it open)."""
        self._client, self._owns_client = client, False

    def task(
        self,
        key: str,
        *,
        queue: str | None = None,
        max_attempts: int | None = None,
        backoff: Backoff | tuple[timedelta | float, timedelta | float] | None = None,
        window: tuple[str | time, str | time] | None = None,
        timezone: str | None = None,
        timeout: timedelta | float | None = None,
        max_retry_after: int | None = None,
        payload: Any = None,
        **options: Unpack[TaskOptions],
    ) -> Callable[[Callable[..., R]], Task[R]]:
        """Register a handler `(ctx, payload)` (async or plain) under `key`; returns a `Task`.

        A setting left out (None) is not sent: the worker keeps what SQL has for it (set
        with `register_task`/`declare_task`), or the default for a new task (queue
        `default`, 3 attempts, backoff 1 s to 10 min, UTC, no window, no timeout, 20
        `RetryAfter`s; no flow-control limit, keep completed 7 days and failed 30).
        Schedules and event sources (`cron`, `on_event`, `on_table`, ...: `SourceOptions`)
        are declared as static ones at each worker start. With `batch_size` (and
        `batch_timeout`: `batching.BatchOptions`) the handler gets a list of payloads.
        """
        if not key or not isinstance(key, str):
            raise InvalidInput("a task key must be a non-empty string", sqlstate="22023")
        if key in self.tasks:
            raise InvalidInput(f"task {key!r} is already registered", sqlstate="22023")
        if max_attempts is not None and max_attempts < 1:
            raise InvalidInput("max_attempts must be at least 1", sqlstate="22023")
        if max_retry_after is not None and max_retry_after < 0:
            raise InvalidInput("max_retry_after must not be negative", sqlstate="22023")
        given: dict[str, Any] = {
            "queue": queue,
            "max_attempts": max_attempts,
            "timezone": timezone,
            "timeout": None if timeout is None else seconds(timeout, "timeout"),
            "max_retry_after": max_retry_after,
        }
        if backoff is not None:
            if not isinstance(backoff, Backoff):
                backoff = Backoff(seconds(backoff[0], "backoff base"), seconds(backoff[1], "cap"))
            given["backoff_base"], given["backoff_cap"] = backoff.base, backoff.cap
        if window is not None:
            given["window_start"], given["window_end"] = (
                clock_time(v, "window bound") for v in window
            )
        limits = {
            n: v for n, v in options.items() if n not in SOURCE_OPTIONS and n not in BATCH_OPTIONS
        }
        given |= task_limits(cast(TaskLimits, limits))
        given = {name: value for name, value in given.items() if value is not None}
        spec = TaskSpec(key=key, **given, declared=frozenset(given))
        sources = task_sources(key, options)
        unique_schedule_names(self.tasks.values(), key, sources)
        batch = task_batch(key, options, sources)

        def register(handler: Callable[..., R]) -> Task[R]:
            if not callable(handler):
                raise TypeError("@conductor.task must decorate a function")
            task = Task(self, handler, spec, payload, sources, batch)
            for schedule in sources.schedules:  # the payload each run will get, checked now
                task.dump_payload({} if schedule.payload is None else schedule.payload)
            self.tasks[key] = task
            return task

        return register

    async def register_tasks(self) -> dict[str, dict[str, Any]]:
        """Declare every task in the database with only the settings given in Python.

        Each task's `spec` becomes the effective settings SQL returns (`declare_task`).
        Returns, per task, the settings SQL kept: made there, not given in Python, and
        not the defaults. An extension without `declare_task` (before 0.4.0) gets
        `register_task` with every setting instead.
        """
        kept: dict[str, dict[str, Any]] = {}
        declare = True
        for task in self.tasks.values():
            if declare:
                try:
                    task.spec = await self.client.declare_task(task.spec)
                except PgConductorError as exc:
                    if exc.sqlstate != UNDEFINED_FUNCTION:
                        raise
                    declare = False
            if not declare:
                await self.client.register_task(task.spec)
                continue
            made = settings_made_in_sql(task.spec)
            if made:
                kept[task.key] = made
        return kept

    def _resolve(self, task: Task[Any] | str) -> tuple[str, Task[Any] | None]:
        if isinstance(task, Task):
            return task.key, task
        return task, self.tasks.get(task)

    def _when(self, run_at: datetime | None, delay: timedelta | float | None) -> datetime | None:
        if delay is None:
            return run_at
        if run_at is not None:
            raise InvalidInput("pass run_at or delay, not both", sqlstate="22023")
        return self.clock.now() + seconds(delay, "delay")

    def _prepare(
        self, task: Task[Any] | str, payloads: Iterable[Any], queue: str | None
    ) -> tuple[str, list[Any], str | None]:
        """Validate payloads before any SQL; default the queue to the one the task was given
        in Python (a task given none goes where SQL has it: NULL lets `invoke` decide)."""
        key, known = self._resolve(task)
        if known is None:
            return key, [{} if p is None else p for p in payloads], queue
        if queue is None and "queue" in known.spec.declared:
            queue = known.spec.queue
        return key, [known.dump_payload(p) for p in payloads], queue

    async def _ensure_queue(self, queue: str | None, conn: object | None) -> None:
        """Create a queue in its own short transaction before enqueueing on a caller's conn.

        Creating the queue's partition inside the caller's transaction would hold an exclusive
        lock on `pgconductor.executions` (blocking every worker) until the caller commits.
        """
        if conn is not None and queue is not None and queue not in self._queues:
            await self.client.create_queue(queue)
            self._queues.add(queue)

    def _ensure_queue_sync(self, queue: str | None, conn: object | None) -> None:
        """Blocking `_ensure_queue`."""
        if conn is not None and queue is not None and queue not in self._queues:
            self._sync_client().create_queue_sync(queue)
            self._queues.add(queue)

    async def invoke(
        self,
        task: Task[Any] | str,
        payload: Any = None,
        *,
        queue: str | None = None,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        priority: int = 0,
        dedupe_key: str | None = None,
        conn: AsyncConnection | None = None,
        **flow: Unpack[Flow],
    ) -> UUID:
        """Enqueue one execution; with `conn` it commits or rolls back with the caller.
        Flow-control options (`concurrency_key`, `on_conflict`, `throttle`, ...): `Flow`."""
        key, (body,), queue = self._prepare(task, [payload], queue)
        when, options = self._when(run_at, delay), flow_args(flow)
        await self._ensure_queue(queue, conn)
        return await self.client.invoke(
            key,
            body,
            queue=queue,
            run_at=when,
            priority=priority,
            dedupe_key=dedupe_key,
            conn=conn,
            **options,
        )

    async def invoke_many(
        self,
        task: Task[Any] | str,
        payloads: Iterable[Any],
        *,
        queue: str | None = None,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        priority: int = 0,
        dedupe_keys: Sequence[str | None] | None = None,
        conn: AsyncConnection | None = None,
        chunk_size: int = BATCH_CHUNK,
        **flow: Unpack[BatchFlow],
    ) -> list[UUID]:
        """Enqueue many executions of one task, `chunk_size` per `invoke_batch` call.
        Flow-control options: `BatchFlow`."""
        key, bodies, queue = self._prepare(task, payloads, queue)
        when = self._when(run_at, delay)
        keys = check_dedupe(dedupe_keys, len(bodies))
        extra = batch_flow_args(flow, len(bodies))
        if bodies:
            await self._ensure_queue(queue, conn)
        ids: list[UUID] = []
        for args, options in batches(key, bodies, queue, when, priority, keys, chunk_size, extra):
            ids += await self.client.invoke_batch(*args, **options, conn=conn)
        return ids

    def _sync_client(self) -> SyncInvoker:
        client = self.client
        if not isinstance(client, SyncInvoker):
            raise PgConductorError(f"{type(client).__name__} has no blocking invoke")
        return client

    def invoke_sync(
        self,
        task: Task[Any] | str,
        payload: Any = None,
        *,
        queue: str | None = None,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        priority: int = 0,
        dedupe_key: str | None = None,
        conn: Connection | None = None,
        **flow: Unpack[Flow],
    ) -> UUID:
        """Blocking `invoke`; with a sync `conn` it commits or rolls back with the caller."""
        key, (body,), queue = self._prepare(task, [payload], queue)
        when, options = self._when(run_at, delay), flow_args(flow, "invoke_sync")
        self._ensure_queue_sync(queue, conn)
        return self._sync_client().invoke_sync(
            key,
            body,
            queue=queue,
            run_at=when,
            priority=priority,
            dedupe_key=dedupe_key,
            conn=conn,
            **options,
        )

    def invoke_many_sync(
        self,
        task: Task[Any] | str,
        payloads: Iterable[Any],
        *,
        queue: str | None = None,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        priority: int = 0,
        dedupe_keys: Sequence[str | None] | None = None,
        conn: Connection | None = None,
        chunk_size: int = BATCH_CHUNK,
        **flow: Unpack[BatchFlow],
    ) -> list[UUID]:
        """Blocking `invoke_many`."""
        key, bodies, queue = self._prepare(task, payloads, queue)
        when = self._when(run_at, delay)
        keys = check_dedupe(dedupe_keys, len(bodies))
        extra = batch_flow_args(flow, len(bodies), "invoke_many_sync")
        client = self._sync_client()
        if bodies:
            self._ensure_queue_sync(queue, conn)
        ids: list[UUID] = []
        for args, options in batches(key, bodies, queue, when, priority, keys, chunk_size, extra):
            ids += client.invoke_batch_sync(*args, **options, conn=conn)
        return ids

    async def get(self, execution_id: UUID) -> ExecutionInfo | None:
        """Read one execution, live or finished: state, result, errors, times, workflow steps
        (None for an unknown id)."""
        return await self.client.get_execution(execution_id)

    async def wait(
        self,
        execution_id: UUID,
        *,
        timeout: timedelta | float | None = None,
        poll_interval: float = 1.0,
    ) -> ExecutionInfo:
        """Return the execution once it has ended (at once if it has); woken by NOTIFY, with a
        poll every `poll_interval` s. Raises `NotFound`, or `TimeoutError` after `timeout`."""
        from pgconductor.awaiting import wait_for_execution

        return await wait_for_execution(
            self.client, execution_id, timeout, poll_interval=poll_interval
        )

    async def emit(
        self, name: str, payload: Any = None, *, conn: AsyncConnection | None = None
    ) -> int:
        """Emit event `name`: every `ctx.wait_for_event` on it whose `match` the payload
        contains gets the payload. With `conn` it commits or rolls back with the caller.
        Returns the event id."""
        check_name(name, "event name")
        return await self.client.emit_event(name, {} if payload is None else payload, conn=conn)

    async def close(self) -> None:
        """Close the database client this Conductor created (a caller's is left alone)."""
        if self._client is not None and self._owns_client:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> Conductor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
