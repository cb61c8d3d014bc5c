"""Flow control from Python (extension 0.7.0): enqueue options, task limits, operations.

Every rule lives in SQL (`docs/sql-api.md`); this module names the options, checks what
Python can check before any SQL runs, and hands them to the `FlowClient` calls. `Conductor`
inherits `FlowControl`: `submit`, `submit_many`, pause and resume, `cancel_by_key`, fair
share, `flow_status`, `maintain`. The enqueue options (`Flow`, `BatchFlow`) are keyword
arguments of `Conductor.invoke`/`invoke_many`/`submit`/`submit_many` and their sync forms;
the task settings (`TaskLimits`) are keyword arguments of `@conductor.task(...)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, Unpack

from pgconductor.db.flow import FLOW_SINCE
from pgconductor.errors import InvalidInput, InvalidState, PgConductorError
from pgconductor.protocol import FlowClient
from pgconductor.task import Task, seconds
from pgconductor.types import FlowStatus, Submitted

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from pgconductor.protocol import DatabaseClient

__all__ = [
    "BATCH_CHUNK",
    "BatchFlow",
    "Flow",
    "FlowControl",
    "OnConflict",
    "TaskLimits",
    "batch_flow_args",
    "batches",
    "check_dedupe",
    "check_task_limits",
    "flow_args",
    "task_limits",
]

#: What an enqueue does when a live execution holds its dedupe key: `replace` (take the new
#: payload while pending; the default), `keep` (return the live one unchanged), `supersede`
#: (cancel a running one, signalled, and create a new one).
OnConflict = Literal["replace", "keep", "supersede"]
_ON_CONFLICT = ("replace", "keep", "supersede")


class Flow(TypedDict, total=False):
    """Flow-control options of one enqueue (extension 0.7.0); durations in seconds or
    timedeltas. Throttle and debounce key on the dedupe key (without one: the whole task)."""

    #: Groups executions for `max_running_per_key`, `rate_limit_per_key` and fair share
    #: (a tenant, a user): 1-250 characters.
    concurrency_key: str | None
    on_conflict: OnConflict | None
    #: At most one execution per key per period: later calls get the existing id back.
    throttle: timedelta | float | None
    #: Calls within the period coalesce into one execution that runs one period after the
    #: last call, with the last payload; `debounce_max` bounds the wait from the first call.
    debounce: timedelta | float | None
    debounce_max: timedelta | float | None
    #: Not started by then, the execution ends `expired` (default: the task's start_within).
    start_by: datetime | None


class BatchFlow(TypedDict, total=False):
    """`Flow` for many payloads of one task: one concurrency key per payload."""

    concurrency_keys: Sequence[str | None] | None
    on_conflict: OnConflict | None
    throttle: timedelta | float | None
    debounce: timedelta | float | None
    debounce_max: timedelta | float | None
    start_by: datetime | None


class TaskLimits(TypedDict, total=False):
    """Flow-control settings of a task (extension 0.7.0); None leaves SQL's value."""

    #: Running executions of the task across every worker (>= 1).
    max_running: int | None
    #: Running executions per concurrency key (>= 1).
    max_running_per_key: int | None
    #: Starts per `rate_period` of the whole task / per concurrency key (>= 1).
    rate_limit: int | None
    rate_limit_per_key: int | None
    #: The period of both rate limits (default 1 s).
    rate_period: timedelta | float | None
    #: An execution not started within this of its run_at ends `expired`.
    start_within: timedelta | float | None
    #: Retention of completed executions (default 7 days; 0 deletes them at the next pass).
    keep_completed: timedelta | float | None
    #: Retention of failed, cancelled and expired executions (default 30 days).
    keep_failed: timedelta | float | None


#: How many payloads one `invoke_batch` / `submit_batch` call carries at most.
BATCH_CHUNK = 5000

_COUNTS = ("max_running", "max_running_per_key", "rate_limit", "rate_limit_per_key")
_PERIODS = ("rate_period", "start_within")
_KEEPS = ("keep_completed", "keep_failed")


def _unknown(given: Mapping[str, Any], known: type, where: str) -> None:
    """A misspelt keyword is a TypeError, as for any Python function."""
    for name in given:
        if name not in known.__annotations__:
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}")


def _duration(value: timedelta | float | None, what: str) -> timedelta | None:
    return None if value is None else seconds(value, what)


def _common(flow: Flow | BatchFlow) -> dict[str, Any]:
    """The options one value of which serves every payload, checked."""
    on_conflict = flow.get("on_conflict")
    if on_conflict is not None and on_conflict not in _ON_CONFLICT:
        raise InvalidInput(
            f"on_conflict must be one of {', '.join(_ON_CONFLICT)}, got {on_conflict!r}",
            sqlstate="22023",
        )
    return {
        "on_conflict": on_conflict,
        "throttle": _duration(flow.get("throttle"), "throttle"),
        "debounce": _duration(flow.get("debounce"), "debounce"),
        "debounce_max": _duration(flow.get("debounce_max"), "debounce_max"),
    }


def flow_args(flow: Flow, where: str = "invoke") -> dict[str, Any]:
    """The keyword arguments of `FlowClient.submit` / `DatabaseClient.invoke` for `flow`:
    only the options given, so a call without any is the call of before 0.7.0 (a client
    written for the older protocol keeps working)."""
    _unknown(flow, Flow, where)
    every = {
        "concurrency_key": flow.get("concurrency_key"),
        **_common(flow),
        "start_by": flow.get("start_by"),
    }
    return {name: value for name, value in every.items() if value is not None}


def batch_flow_args(flow: BatchFlow, count: int, where: str = "invoke_many") -> dict[str, Any]:
    """The keyword arguments of `submit_batch` / `invoke_batch` for `count` payloads
    (`concurrency_keys` and `start_bys` as whole lists: `batches` cuts them)."""
    _unknown(flow, BatchFlow, where)
    keys = flow.get("concurrency_keys")
    if keys is not None and len(keys) != count:
        raise InvalidInput(f"{len(keys)} concurrency keys for {count} payloads", sqlstate="22023")
    start_by = flow.get("start_by")
    return {
        "concurrency_keys": None if keys is None else list(keys),
        **_common(flow),
        "start_bys": None if start_by is None else [start_by] * count,
    }


def task_limits(limits: TaskLimits) -> dict[str, Any]:
    """`TaskSpec` fields for the limits given (None ones left out), checked as SQL does."""
    _unknown(limits, TaskLimits, "task")
    values: dict[str, Any] = dict(limits)
    given: dict[str, Any] = {}
    for name in _COUNTS:
        count = values.get(name)
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise InvalidInput(f"{name} must be a whole number >= 1", sqlstate="22023")
            given[name] = count
    for name in (*_PERIODS, *_KEEPS):
        value = _duration(values.get(name), name)
        if value is not None:
            if name in _PERIODS and value <= timedelta(0):
                raise InvalidInput(f"{name} must be longer than zero", sqlstate="22023")
            given[name] = value
    return given


#: The `TaskSpec` fields that need extension 0.7.0.
FLOW_SETTINGS = (*_COUNTS, *_PERIODS, *_KEEPS)


def check_task_limits(tasks: Iterable[Task[Any]], installed: tuple[int, ...]) -> None:
    """Refuse to start on an extension before 0.7.0 when a task sets a flow-control limit
    (the older `declare_task` would reject the key with a less telling message)."""
    if installed >= tuple(int(part) for part in FLOW_SINCE.split(".")):
        return
    for task in tasks:
        used = [name for name in FLOW_SETTINGS if name in task.spec.declared]
        if used:
            raise InvalidState(
                f"task {task.key!r} sets {', '.join(used)}, which needs pgconductor extension "
                f"{FLOW_SINCE} or later (installed: {'.'.join(map(str, installed))})",
                sqlstate="55000",
                hint="upgrade the extension: pgconductor schema upgrade",
            )


def check_dedupe(keys: Sequence[str | None] | None, count: int) -> list[str | None] | None:
    """Dedupe keys, when given, must pair with the payloads one to one."""
    if keys is None:
        return None
    if len(keys) != count:
        raise InvalidInput(f"{len(keys)} dedupe keys for {count} payloads", sqlstate="22023")
    return list(keys)


def batches(
    key: str,
    bodies: Sequence[Any],
    queue: str | None,
    when: datetime | None,
    priority: int,
    keys: Sequence[str | None] | None,
    chunk_size: int,
    flow: Mapping[str, Any] | None = None,
) -> Iterator[tuple[tuple[list[str], Sequence[Any]], dict[str, Any]]]:
    """The `invoke_batch`/`submit_batch` arguments for each chunk of `chunk_size` executions
    of one task; `flow` from `batch_flow_args` (its lists cut per chunk)."""
    flow = flow or {}
    for lo in range(0, len(bodies), chunk_size):
        hi = lo + chunk_size
        chunk = bodies[lo:hi]
        n = len(chunk)
        options = {
            "queues": [queue] * n,
            "run_ats": [when] * n,
            "priorities": [priority] * n,
            "dedupe_keys": None if keys is None else keys[lo:hi],
        }
        for name, value in flow.items():
            if value is not None:  # none given: the call records and sends what it did before
                options[name] = value[lo:hi] if isinstance(value, list) else value
        yield ([key] * n, chunk), options


class _Host(Protocol):
    """What `FlowControl` needs from `Conductor`."""

    @property
    def client(self) -> DatabaseClient: ...

    def _prepare(
        self, task: Task[Any] | str, payloads: Iterable[Any], queue: str | None
    ) -> tuple[str, list[Any], str | None]: ...

    def _when(
        self, run_at: datetime | None, delay: timedelta | float | None
    ) -> datetime | None: ...

    async def _ensure_queue(self, queue: str | None, conn: object | None) -> None: ...

    def _flow_client(self) -> FlowClient: ...


class FlowControl:
    """The flow-control half of `Conductor` (extension 0.7.0; an older one answers with an
    error naming the version needed)."""

    def _flow_client(self: _Host) -> FlowClient:
        client = self.client
        if not isinstance(client, FlowClient):
            raise PgConductorError(f"{type(client).__name__} has no flow-control calls")
        return client

    async def submit(
        self: _Host,
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
    ) -> Submitted:
        """`invoke` that also says what happened: `Submitted(id, outcome)`, outcome one of
        created, updated, kept, superseded, throttled, debounced. Options: `Flow`."""
        key, (body,), queue = self._prepare(task, [payload], queue)
        when = self._when(run_at, delay)
        options = flow_args(flow, "submit")
        await self._ensure_queue(queue, conn)
        return await self._flow_client().submit(
            key,
            body,
            queue=queue,
            run_at=when,
            priority=priority,
            dedupe_key=dedupe_key,
            conn=conn,
            **options,
        )

    async def submit_many(
        self: _Host,
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
    ) -> list[Submitted]:
        """`invoke_many` that also says what happened to each payload (input order).
        Options: `BatchFlow`."""
        key, bodies, queue = self._prepare(task, payloads, queue)
        when = self._when(run_at, delay)
        keys = check_dedupe(dedupe_keys, len(bodies))
        options = batch_flow_args(flow, len(bodies), "submit_many")
        client = self._flow_client()
        if bodies:
            await self._ensure_queue(queue, conn)
        done: list[Submitted] = []
        for args, chunk in batches(key, bodies, queue, when, priority, keys, chunk_size, options):
            done += await client.submit_batch(*args, **chunk, conn=conn)
        return done

    async def pause_queue(self: _Host, queue: str) -> bool:
        """Claims skip `queue` (running executions go on; invoke still enqueues); True when
        it was not paused."""
        return await self._flow_client().pause_queue(queue)

    async def resume_queue(self: _Host, queue: str) -> bool:
        """Claims take `queue` again; True when it was paused."""
        return await self._flow_client().resume_queue(queue)

    async def pause_task(self: _Host, task: Task[Any] | str) -> bool:
        """Claims skip the task; True when it was not paused."""
        return await self._flow_client().pause_task(_key(task))

    async def resume_task(self: _Host, task: Task[Any] | str) -> bool:
        """Claims take the task again; True when it was paused."""
        return await self._flow_client().resume_task(_key(task))

    async def cancel_by_key(
        self: _Host,
        task: Task[Any] | str,
        *,
        dedupe_key: str | None = None,
        concurrency_key: str | None = None,
        reason: str = "cancelled by user",
    ) -> int:
        """Cancel the task's live executions with this dedupe key or concurrency key
        (exactly one): pending ones at once, running ones through their worker. How many."""
        if (dedupe_key is None) == (concurrency_key is None):
            raise InvalidInput(
                "pass exactly one of dedupe_key and concurrency_key", sqlstate="22023"
            )
        return await self._flow_client().cancel_by_key(
            _key(task), dedupe_key=dedupe_key, concurrency_key=concurrency_key, reason=reason
        )

    async def set_fair_share(self: _Host, queue: str, enabled: bool = True) -> None:
        """Within `queue`, concurrency keys take turns at the claim (weighted, see
        `set_key_weight`), so a key with a large backlog cannot starve the others."""
        await self._flow_client().set_fair_share(queue, enabled)

    async def set_key_weight(self: _Host, queue: str, key: str, weight: int | None) -> None:
        """A concurrency key's weight (1-100; None: 1) in a fair-share queue."""
        await self._flow_client().set_key_weight(queue, key, weight)

    async def flow_status(self: _Host, queue: str | None = None) -> list[FlowStatus]:
        """What the limits hold now: running and pending per task and key, the limits, and
        whether the task is paused."""
        return await self._flow_client().flow_status(queue)

    async def maintain(self: _Host, limit: int = 10000) -> dict[str, Any]:
        """Run one maintenance pass now (the orchestrator runs them every 10 s): counts of
        what it did, `{"skipped": True}` when another pass was running."""
        return await self._flow_client().maintain(limit)


def _key(task: Task[Any] | str) -> str:
    return task.key if isinstance(task, Task) else task
