"""Batch tasks: `@conductor.task(..., batch_size=100, batch_timeout=0.5)`.

The handler of a batch task is called as `handler(ctx, payloads)`: `payloads` is a list of
the validated payloads of up to `batch_size` executions, and `ctx` a `BatchContext` whose
`items[i]` is the `TaskContext` of the execution of `payloads[i]` (its id, attempt, logger,
its own `cancelled`). Claims stay rows: the worker claims executions as for any task and
groups those of one batch task it claimed (`batch_run.py`), waiting at most `batch_timeout`
after the first for the group to fill.

What the handler returns: a list (or tuple) is one result per execution, in order (another
length fails every execution of the batch); an item that is an exception instance fails
that execution alone (`Fatal`: no retry; `RetryAfter`: later, attempt not counted). Any
other value is the result of every execution. A raise fails them all, each by its own
attempts rule. This module holds the declaration and the context; no database access.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypedDict
from uuid import UUID

from pgconductor.errors import Cancelled
from pgconductor.sources import Sources, bad_option
from pgconductor.task import StopFlag, TaskContext

__all__ = [
    "BATCH_OPTIONS",
    "DEFAULT_BATCH_TIMEOUT",
    "BatchContext",
    "BatchLogger",
    "BatchOptions",
    "BatchSettings",
    "task_batch",
]

#: How long a batch waits for more executions after its first one, when not given.
DEFAULT_BATCH_TIMEOUT = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """A batch task's grouping: at most `size` executions per handler call, the call made at
    the latest `timeout` after the first of them was claimed."""

    size: int
    timeout: timedelta = DEFAULT_BATCH_TIMEOUT


class BatchOptions(TypedDict, total=False):
    """The batch keywords of `@conductor.task(...)`."""

    #: The most executions one handler call gets (an int, at least 1): the handler then
    #: receives a list of payloads.
    batch_size: int | None
    #: How long to wait for a batch to fill after its first execution (timedelta or
    #: seconds, at least 0; default 1 s). 0: what one claim brought.
    batch_timeout: timedelta | float | None


BATCH_OPTIONS = frozenset(BatchOptions.__annotations__)


def task_batch(key: str, options: Mapping[str, Any], sources: Sources) -> BatchSettings | None:
    """The `BatchSettings` of task `key` from its options (None: not a batch task).

    Refused (`InvalidInput` 22023, one line): a size that is not an integer of at least 1,
    a negative, infinite or non-numeric timeout, a timeout without a size, and a schedule
    (`cron`): it makes one execution per occurrence, which a batch would only delay.
    """
    size, timeout = options.get("batch_size"), options.get("batch_timeout")
    if size is None:
        if timeout is not None:
            raise bad_option(f"task {key!r}: batch_timeout needs batch_size")
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise bad_option(f"task {key!r}: batch_size must be an integer of at least 1, got {size!r}")
    if sources.schedules:
        raise bad_option(
            f"task {key!r}: a batch task cannot have a schedule (cron): a schedule makes one"
            " execution per occurrence, which a batch would only delay"
        )
    if timeout is None:
        return BatchSettings(size)
    if isinstance(timeout, bool) or not isinstance(timeout, timedelta | int | float):
        raise bad_option(f"task {key!r}: batch_timeout must be seconds or a timedelta")
    try:
        delta = timeout if isinstance(timeout, timedelta) else timedelta(seconds=timeout)
    except (ValueError, OverflowError):  # NaN, infinite, too large
        raise bad_option(
            f"task {key!r}: batch_timeout must be a finite number of seconds"
        ) from None
    if delta < timedelta(0):
        raise bad_option(f"task {key!r}: batch_timeout must not be negative")
    return BatchSettings(size, delta)


class BatchLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """`ctx.logger` of a batch: lines start with the task and the batch's size; the records
    carry `task_key` and `execution_ids` (each item's own logger names its execution)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        """Prefix the message and attach the batch's identity to the record."""
        extra: Mapping[str, Any] = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        size = len(extra["execution_ids"])
        return f"{extra['task_key']} batch of {size}: {msg}", kwargs


class BatchContext(StopFlag):
    """What a batch handler receives as `ctx`: the batch's items and the extra context.

    `items[i]` is the `TaskContext` of the execution whose payload is `payloads[i]`: its
    `execution_id`, `attempt`, `max_attempts`, `logger`, and `cancelled` once that execution
    alone was cancelled (the handler may skip it; the others go on). `ctx.cancelled` is the
    batch's: the worker shuts down, the batch timed out, or every execution of it was
    cancelled. Durable calls (`step`, `sleep`, ...) are not available in a batch.
    """

    __slots__ = (
        "_base_logger",
        "_cancel_event",
        "_logger",
        "_stop_requested",
        "extra",
        "items",
        "queue",
        "task_key",
    )

    def __init__(
        self,
        task_key: str,
        queue: str,
        items: Sequence[TaskContext],
        extra: Mapping[str, Any] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.task_key = task_key
        self.queue = queue
        self.items: tuple[TaskContext, ...] = tuple(items)
        self.extra: Mapping[str, Any] = {} if extra is None else extra
        self._base_logger = logger or logging.getLogger("pgconductor.task")
        self._logger: BatchLogger | None = None
        self._cancel_event: asyncio.Event | None = None
        self._stop_requested = False

    def __repr__(self) -> str:
        return f"BatchContext(task_key={self.task_key!r}, queue={self.queue!r}, size={len(self)})"

    def __len__(self) -> int:
        return len(self.items)

    @property
    def execution_ids(self) -> list[UUID]:
        """The executions of the batch, in the order of the payloads."""
        return [item.execution_id for item in self.items]

    @property
    def logger(self) -> BatchLogger:
        """A logger whose lines name the task and the batch (`pgconductor.task`)."""
        logger = self._logger
        if logger is None:
            extra = {
                "task_key": self.task_key,
                "execution_ids": [str(i) for i in self.execution_ids],
            }
            logger = self._logger = BatchLogger(self._base_logger, extra)
        return logger

    def raise_if_cancelled(self) -> None:
        """Raise `Cancelled` once the batch has been asked to stop; else do nothing (safe from
        any thread: how a sync handler stops early)."""
        if self.is_cancelled():
            raise Cancelled(f"batch of {len(self)} executions of {self.task_key} was asked to stop")

    def __getattr__(self, name: str) -> Any:
        """Look up names of the extra context (`ctx.db` for `context={"db": ...}`)."""
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self.extra[name]
        except KeyError:
            raise AttributeError(
                f"BatchContext has no attribute or extra context {name!r}"
            ) from None
