"""Tasks: `Task` (a handler plus its settings and payload type), `TaskContext`, `Backoff`.

`Conductor.task(...)` builds these; the worker constructs a `TaskContext` per execution and
calls `Task.parse_payload` on what it claimed (an invalid payload fails the execution).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast
from uuid import UUID

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from pgconductor.durable import DurableContext
from pgconductor.errors import Cancelled, InvalidInput, PayloadValidationError
from pgconductor.sources import OccurrenceReader, Sources
from pgconductor.types import TaskSpec

if TYPE_CHECKING:
    from pgconductor.batching import BatchSettings
    from pgconductor.conductor import Conductor
    from pgconductor.types import Submitted

__all__ = ["Backoff", "ExecutionLogger", "StopFlag", "Task", "TaskContext", "settings_made_in_sql"]

R = TypeVar("R")
#: `TaskContext._occurs_at` before the occurrence time was read.
_UNREAD = object()


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry delay of a task: `base * 2**(attempt-1)`, capped at `cap` (computed in SQL)."""

    base: timedelta = timedelta(seconds=1)
    cap: timedelta = timedelta(minutes=10)


_TASK_LOG = logging.getLogger("pgconductor.task")


class ExecutionLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """`ctx.logger`: every line starts with the task and the execution id.

    The same values are on each record as `task_key` and `execution_id` (for a structured
    formatter).
    """

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        """Prefix the message and attach the execution's identity to the record."""
        extra = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"{extra['task_key']} {extra['execution_id']}: {msg}", kwargs


class StopFlag:
    """The "asked to stop" flag of a handler's context (`TaskContext`, `BatchContext`).

    The subclass has the `_cancel_event` and `_stop_requested` slots. `cancel_event` is made
    on first use (most handlers never look), set at once if a stop was already requested.
    """

    __slots__ = ()

    _cancel_event: asyncio.Event | None
    _stop_requested: bool

    @property
    def cancel_event(self) -> asyncio.Event:
        """Set when the execution is cancelled, times out, or the worker shuts down."""
        event = self._cancel_event
        if event is None:
            # The subclass's slot (mypy checks a mixin's assignments against its own slots).
            event = self._cancel_event = asyncio.Event()  # type: ignore[misc]
            # Published before the flag is read: a stop requested meanwhile on another
            # thread either sees this event or is seen here.
            if self._stop_requested:
                event.set()
        return event

    @property
    def cancelled(self) -> bool:
        """True once the execution has been asked to stop (cancel, timeout, shutdown)."""
        return self.is_cancelled()

    def is_cancelled(self) -> bool:
        """True once the execution has been asked to stop."""
        event = self._cancel_event
        return self._stop_requested if event is None else event.is_set()

    def request_stop(self) -> None:
        """Ask the handler to stop: `is_cancelled()` turns true and `cancel_event` is set.

        The worker calls it (on the event loop) for a cancel, a shutdown, a lost lease or a
        timeout.
        """
        self._stop_requested = True  # type: ignore[misc]
        event = self._cancel_event
        if event is not None:
            event.set()


class TaskContext(DurableContext, StopFlag):
    """What a handler receives as `ctx`: the execution's identity plus the extra context.

    The durable methods (`ctx.step`, `ctx.sleep`, `ctx.invoke`, `ctx.wait_for_event`, ...)
    come from `DurableContext`. `await ctx.scheduled_at()` is the occurrence time of a run
    a schedule made.

    Attributes of the Conductor's `context` are reachable directly (`ctx.db`) or through
    `ctx.extra["db"]`. `cancel_event` is made on first use (most handlers never look), set
    at once if the execution was already asked to stop. `logger` is made on first use too.
    """

    __slots__ = (
        "_base_logger",
        "_cancel_event",
        "_logger",
        "_occurrence",
        "_occurs_at",
        "_stop_requested",
        "attempt",
        "execution_id",
        "extra",
        "max_attempts",
        "queue",
        "task_key",
    )

    def __init__(
        self,
        execution_id: UUID,
        task_key: str,
        queue: str,
        attempt: int,
        max_attempts: int,
        cancel_event: asyncio.Event | None = None,
        extra: Mapping[str, Any] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.task_key = task_key
        self.queue = queue
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.extra: Mapping[str, Any] = {} if extra is None else extra
        self._base_logger = _TASK_LOG if logger is None else logger
        self._logger: ExecutionLogger | None = None
        self._cancel_event = cancel_event
        self._stop_requested = False
        self._run = None
        self._run_factory = None
        self._claim = None
        #: In a worker, what reads the occurrence time (`scheduled_at`); set by the worker.
        self._occurrence: OccurrenceReader | None = None
        self._occurs_at: datetime | object | None = _UNREAD

    def __repr__(self) -> str:
        return (
            f"TaskContext(execution_id={self.execution_id!r}, task_key={self.task_key!r},"
            f" queue={self.queue!r}, attempt={self.attempt}, max_attempts={self.max_attempts})"
        )

    @property
    def logger(self) -> ExecutionLogger:
        """A logger whose lines name the task and the execution (`pgconductor.task`)."""
        logger = self._logger
        if logger is None:
            extra = {"task_key": self.task_key, "execution_id": str(self.execution_id)}
            logger = self._logger = ExecutionLogger(self._base_logger, extra)
        return logger

    def raise_if_cancelled(self) -> None:
        """Raise `Cancelled` once the execution has been asked to stop; else do nothing.

        A sync handler's thread cannot be interrupted: calling this between steps is how it
        stops early. Safe from any thread.
        """
        if self.is_cancelled():
            raise Cancelled(f"execution {self.execution_id} was asked to stop")

    async def scheduled_at(self) -> datetime | None:
        """When the schedule occurrence that made this execution was due (its cron time, an
        aware datetime), or None for an execution no schedule made.

        Read from the database (`occurrence_of`) at the first call, then remembered; None
        outside a worker and on an extension before 0.8.0. A sync handler calls
        `scheduled_at_sync()` instead.
        """
        found = self._occurs_at
        if found is _UNREAD:
            reader = self._occurrence
            found = None if reader is None else await reader.read(self.execution_id)
            self._occurs_at = found
        return cast("datetime | None", found)

    def scheduled_at_sync(self) -> datetime | None:
        """`scheduled_at` for a sync handler: blocks its thread while the worker's event loop
        reads it (refused on the event loop itself)."""
        found = self._occurs_at
        if found is _UNREAD:
            reader = self._occurrence
            found = None if reader is None else reader.read_blocking(self.execution_id)
            self._occurs_at = found
        return cast("datetime | None", found)

    def __getattr__(self, name: str) -> Any:
        """Look up names of the extra context (`ctx.db` for `context={"db": ...}`)."""
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self.extra[name]
        except KeyError:
            raise AttributeError(
                f"TaskContext has no attribute or extra context {name!r}"
            ) from None


_DEFAULTS = TaskSpec(key="-")
_SETTINGS = tuple(f.name for f in fields(TaskSpec) if f.name not in ("key", "declared"))


def settings_made_in_sql(spec: TaskSpec) -> dict[str, Any]:
    """The settings of an effective spec that Python did not give and that differ from the
    defaults: they were made in SQL and are kept."""
    return {
        name: getattr(spec, name)
        for name in _SETTINGS
        if name not in spec.declared and getattr(spec, name) != getattr(_DEFAULTS, name)
    }


def seconds(value: timedelta | float | int, what: str) -> timedelta:
    """Accept a timedelta or a number of seconds; reject negative durations."""
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta < timedelta(0):
        raise InvalidInput(f"{what} must not be negative", sqlstate="22023")
    return delta


def clock_time(value: str | time, what: str) -> time:
    """Parse "HH:MM" / "HH:MM:SS" (or take a `time`)."""
    if isinstance(value, time):
        return value
    try:
        return time.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{what} {value!r} is not a time of day", sqlstate="22023", hint='use "HH:MM"'
        ) from None


class Task(Generic[R]):
    """A registered handler with its `TaskSpec` and payload type; invocable directly."""

    def __init__(
        self,
        conductor: Conductor,
        handler: Callable[..., R],
        spec: TaskSpec,
        payload: Any,
        sources: Sources | None = None,
        batch: BatchSettings | None = None,
    ) -> None:
        self.conductor = conductor
        self.handler = handler
        self.spec = spec
        #: Its schedules, event subscriptions and table triggers, declared at worker start.
        self.sources = sources or Sources()
        #: A batch task's `batch_size` and `batch_timeout` (the handler gets a list), or None.
        self.batch = batch
        self.payload_type = payload
        self.is_async = inspect.iscoroutinefunction(handler)
        self._adapter: TypeAdapter[Any] | None = None if payload is None else TypeAdapter(payload)
        self.__doc__ = handler.__doc__
        self.__name__ = getattr(handler, "__name__", spec.key)

    @property
    def key(self) -> str:
        """The task key."""
        return self.spec.key

    def __repr__(self) -> str:
        return f"Task({self.spec.key!r}, queue={self.spec.queue!r})"

    def __call__(self, ctx: TaskContext, payload: Any) -> R:
        """Call the handler directly (no database involved)."""
        return self.handler(ctx, payload)

    def parse_payload(self, raw: Any) -> Any:
        """Validate a payload read from the database into the declared type.

        Returns `raw` unchanged when the task declares no payload type; raises
        `PayloadValidationError` when it does not match (the worker fails the execution).
        """
        if self._adapter is None:
            return raw
        try:
            return self._adapter.validate_python(raw)
        except PydanticValidationError as exc:
            raise PayloadValidationError(
                f"payload for task {self.key!r} is invalid: {exc.error_count()} error(s): "
                + "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()
                ),
                errors=exc.errors(include_url=False, include_context=False),
            ) from None

    def dump_payload(self, payload: Any) -> Any:
        """Validate a payload before it is sent and return its JSON-ready form."""
        if self._adapter is None:
            return {} if payload is None else payload
        return self._adapter.dump_python(self.parse_payload(payload), mode="json")

    async def invoke(self, payload: Any = None, **options: Any) -> UUID:
        """Enqueue one execution of this task (see `Conductor.invoke`)."""
        return await self.conductor.invoke(self, payload, **options)

    async def invoke_many(self, payloads: Iterable[Any], **options: Any) -> list[UUID]:
        """Enqueue many executions of this task (see `Conductor.invoke_many`)."""
        return await self.conductor.invoke_many(self, payloads, **options)

    def invoke_sync(self, payload: Any = None, **options: Any) -> UUID:
        """Blocking `invoke` (see `Conductor.invoke_sync`)."""
        return self.conductor.invoke_sync(self, payload, **options)

    async def submit(self, payload: Any = None, **options: Any) -> Submitted:
        """Enqueue one execution and say what the call did (see `Conductor.submit`)."""
        return await self.conductor.submit(self, payload, **options)
