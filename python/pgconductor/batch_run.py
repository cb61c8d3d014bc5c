"""How a worker runs batch tasks: group claimed executions, call the handler once, give
each execution its result. No database access (the worker claims and reports).

- `BatchCollector` keeps one open `Batch` per batch task: a claimed execution joins it as a
  `BatchMember` (the worker holds its lease, and its slot, like any running execution); the
  batch is launched when it holds `batch_size` executions, or `batch_timeout` after its
  first, whichever comes first. `close()` (the worker stops) hands back the members of the
  batches not launched: the worker releases them (pending again, the attempt not counted).
- `run_batch` calls the handler once with the payloads of the members still wanted (one
  cancelled or with a lost lease before the start gets its own result; one whose payload
  does not validate fails alone, `fatal`) and maps how it ended onto every member:

| how the handler ended                     | each member's result                            |
|-------------------------------------------|-------------------------------------------------|
| returned a list/tuple of the batch's size | its item: `completed`, or an exception's result |
| returned a list/tuple of another size     | `failed`, naming both sizes                     |
| returned anything else                    | `completed` with that value (JSON), or `fatal`  |
| raised (`Fatal`, `RetryAfter`, other)     | `fatal` / `retry_after` / `failed`, for each    |
| ran past the task's timeout               | `failed`, "timed out after X s"                 |
| stopped after the worker's shutdown       | `released` (pending again, attempt not counted) |

A cancel of one member asks only that item to stop (`ctx.items[i].cancelled`): the handler
goes on for the others and SQL ends the cancelled one `cancelled` whatever its result. The
handler itself is stopped (as a single handler is) at a shutdown, or once every member was
cancelled or lost its lease. A member whose lease was lost never gets a result.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from pgconductor.batching import BatchContext, BatchSettings
from pgconductor.clock import Clock
from pgconductor.errors import Fatal, InvalidState, PayloadValidationError, RetryAfter
from pgconductor.executor import (
    Abort,
    Execution,
    HandlerTask,
    _aborted,
    _completed,
    _default_pool,
    _result,
    _timeout_seconds,
    clean_text,
    error_text,
    to_json_value,
)
from pgconductor.lib.threadpool import DaemonThreadPool
from pgconductor.task import TaskContext
from pgconductor.types import ClaimedExecution, ExecutionResult, ResultStatus

__all__ = ["NO_DURABLE", "Batch", "BatchCollector", "BatchMember", "BatchTask", "run_batch"]

#: The error of a durable call (`ctx.items[i].step`, ...) in a batch handler.
NO_DURABLE = "durable calls (step, sleep, invoke, wait_for_event) are not available in a batch"


class BatchTask(HandlerTask, Protocol):
    """A registered task with batch settings (`pgconductor.conductor.Task` of a batch task)."""

    @property
    def batch(self) -> BatchSettings | None:
        """Its `batch_size` and `batch_timeout`."""
        ...


def refuse_durable(claim: ClaimedExecution) -> Any:
    """The durable-run factory of a batch item's context: every durable call is refused."""
    raise InvalidState(NO_DURABLE)


class BatchMember(Execution):
    """One claimed execution of a batch: the worker's handle on it (abort, lease, slot)."""

    __slots__ = ("batch",)

    def __init__(self, claimed: ClaimedExecution, ctx: TaskContext) -> None:
        super().__init__(claimed, ctx)
        self.batch: Batch | None = None

    def abort(self, reason: Abort) -> None:
        """Ask this item to stop; the batch stops at a shutdown or when no item is left."""
        if self.done:
            return
        super().abort(reason)
        if self.batch is not None:
            self.batch.member_aborted(reason)


class Batch:
    """One group of claimed executions of a batch task, collected, then run once."""

    __slots__ = (
        "_cancel_sent",
        "_task",
        "ctx",
        "live",
        "members",
        "reason",
        "runner",
        "task",
        "timer",
    )

    def __init__(self, task: BatchTask) -> None:
        self.task = task
        self.members: list[BatchMember] = []
        #: The members the handler was called with (None until it is).
        self.live: list[BatchMember] | None = None
        self.ctx: BatchContext | None = None
        #: Set once the handler was asked to stop.
        self.reason: Abort | None = None
        self.timer: asyncio.Task[None] | None = None
        self.runner: asyncio.Task[Any] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancel_sent = False

    def member_aborted(self, reason: Abort) -> None:
        """A member was asked to stop: stop the handler at a shutdown, or when every member
        it runs for was cancelled or lost its lease."""
        live = self.live
        if live is None or self.reason is not None:
            return  # collecting (the member is left out at the start), or stopping already
        if reason is Abort.SHUTDOWN or all(m.reason is not None for m in live):
            self.abort(reason)

    def abort(self, reason: Abort) -> None:
        """Ask the handler to stop (`ctx.request_stop()`); cancel it when it is async."""
        self.reason = reason
        if self.ctx is not None:
            self.ctx.request_stop()
        if self._task is not None and not self._cancel_sent:
            self._cancel_sent = True
            self._task.cancel()


class BatchCollector:
    """The open batch of each batch task of one worker; `launch(batch)` runs a full or
    expired one (the worker spawns its run)."""

    def __init__(self, launch: Callable[[Batch], None], clock: Clock) -> None:
        self._launch = launch
        self._clock = clock
        self._open: dict[str, Batch] = {}

    @property
    def collecting(self) -> int:
        """How many claimed executions wait in batches not launched yet."""
        return sum(len(batch.members) for batch in self._open.values())

    def add(self, member: BatchMember, task: BatchTask) -> None:
        """Put a claimed execution of `task` in its open batch (launched once full)."""
        settings = task.batch
        assert settings is not None
        key = member.claimed.task_key
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = Batch(task)
            delay = settings.timeout.total_seconds()
            batch.timer = asyncio.get_running_loop().create_task(self._expire(batch, delay))
        batch.members.append(member)
        member.batch = batch
        if len(batch.members) >= settings.size:
            self._close(batch, cancel_timer=True)
            self._launch(batch)

    async def _expire(self, batch: Batch, delay: float) -> None:
        await self._clock.sleep(delay)
        if self._open.get(batch.members[0].claimed.task_key) is batch:
            self._close(batch, cancel_timer=False)
            self._launch(batch)

    def _close(self, batch: Batch, *, cancel_timer: bool) -> None:
        del self._open[batch.members[0].claimed.task_key]
        if cancel_timer and batch.timer is not None:
            batch.timer.cancel()
        batch.timer = None

    def close(self) -> list[BatchMember]:
        """Stop collecting: the members of the batches not launched, to be released."""
        left: list[BatchMember] = []
        for batch in list(self._open.values()):
            self._close(batch, cancel_timer=True)
            left += batch.members
        return left


class _Ending(NamedTuple):
    """How the handler call ended: `value`, `error` (it raised), `timed_out` (the limit in
    seconds), or neither (it stopped after an abort)."""

    value: Any = None
    error: BaseException | None = None
    timed_out: float | None = None
    returned: bool = False


Ended = list[tuple[BatchMember, ExecutionResult | None]]


async def run_batch(
    task: BatchTask,
    batch: Batch,
    *,
    extra: Mapping[str, Any] | None = None,
    logger: logging.Logger | None = None,
    pool: DaemonThreadPool | None = None,
) -> Ended:
    """Call `task`'s handler once for `batch`; return each member with its result (None:
    report nothing). Cancelling the coroutine from outside propagates with no result."""
    ended: Ended = []
    live: list[BatchMember] = []
    payloads: list[Any] = []
    try:
        for member in batch.members:
            claimed = member.claimed
            if member.reason is not None:  # cancelled or lost before the start
                ended.append((member, _aborted(claimed, member.reason)))
                continue
            try:
                payloads.append(task.parse_payload(claimed.payload))
            except PayloadValidationError as exc:
                text = clean_text(f"invalid payload: {exc}")
                ended.append((member, _result(claimed, ResultStatus.FATAL, text)))
                continue
            except Exception as exc:
                text = "invalid payload: " + error_text(exc)
                ended.append((member, _result(claimed, ResultStatus.FATAL, text)))
                continue
            live.append(member)
        if not live:
            return ended
        first = live[0].claimed
        batch.ctx = BatchContext(first.task_key, first.queue, [m.ctx for m in live], extra, logger)
        batch.live = live
        limit = _timeout_seconds(task, first)
        if task.is_async:
            ending = await _call_async(task.handler, batch, payloads, limit)
        else:
            ending = await _call_sync(task.handler, batch, payloads, limit, pool)
        ended += _results(batch, live, ending)
        return ended
    finally:
        for member in batch.members:
            member.done = True


async def _call_async(
    handler: Callable[..., Any], batch: Batch, payloads: list[Any], limit: float | None
) -> _Ending:
    deadline = None if limit is None else asyncio.timeout(limit)
    batch._task = asyncio.current_task()
    try:
        try:
            if deadline is None:
                value = await handler(batch.ctx, payloads)
            else:
                async with deadline:
                    value = await handler(batch.ctx, payloads)
        finally:
            task, batch._task = batch._task, None
            aborted = batch._cancel_sent
            if task is not None and aborted:
                task.uncancel()
    except asyncio.CancelledError:
        if not aborted:
            raise  # cancelled from outside: no result
        return _Ending()
    except TimeoutError as exc:
        if deadline is not None and deadline.expired() and limit is not None:
            return _Ending(timed_out=limit)
        return _Ending(error=exc)
    except Exception as exc:
        return _Ending(error=exc)
    if deadline is not None and deadline.expired() and limit is not None:
        return _Ending(timed_out=limit)  # it swallowed the timeout's cancel
    return _Ending(value, returned=True)


async def _call_sync(
    handler: Callable[..., Any],
    batch: Batch,
    payloads: list[Any],
    limit: float | None,
    pool: DaemonThreadPool | None,
) -> _Ending:
    ctx = batch.ctx
    assert ctx is not None
    _ = ctx.cancel_event  # made here, on the loop, which alone sets it
    future = (pool or _default_pool()).submit(handler, ctx, payloads)
    done, _ = await asyncio.wait((future,), timeout=limit)
    if not done:
        ctx.request_stop()
        await asyncio.wait((future,))
        return _Ending(timed_out=limit)
    error = future.exception()
    if error is not None:
        return _Ending(error=error)
    return _Ending(future.result(), returned=True)


def _failure(claimed: ClaimedExecution, exc: BaseException, text: str | None = None) -> Any:
    """The result of an execution that ended with `exc` (raised, or an item of the results)."""
    if isinstance(exc, RetryAfter):
        return ExecutionResult(
            claimed.id,
            claimed.lease,
            ResultStatus.RETRY_AFTER,
            error=clean_text(exc.reason) or None,
            delay_ms=exc.delay_ms,
        )
    status = ResultStatus.FATAL if isinstance(exc, Fatal) else ResultStatus.FAILED
    return _result(claimed, status, text if text is not None else error_text(exc))


def _results(batch: Batch, live: Sequence[BatchMember], ending: _Ending) -> Ended:
    """Each member's result from how the handler call ended."""
    lost = Abort.LEASE_LOST
    ended: Ended = []
    if not ending.returned and ending.timed_out is None and batch.reason is not None:
        for m in live:  # stopped after an abort: each member's own reason decides
            ended.append((m, _aborted(m.claimed, m.reason or Abort.SHUTDOWN)))
        return ended
    if ending.timed_out is not None:
        message = f"timed out after {ending.timed_out:g} s"
        for m in live:
            failed = _result(m.claimed, ResultStatus.FAILED, message)
            ended.append((m, None if m.reason is lost else failed))
        return ended
    if ending.error is not None:
        text = error_text(ending.error)
        for m in live:
            ended.append((m, None if m.reason is lost else _failure(m.claimed, ending.error, text)))
        return ended
    value = ending.value
    if isinstance(value, list | tuple):
        if len(value) != len(live):
            message = (
                f"the batch handler of task {live[0].claimed.task_key!r} returned"
                f" {len(value)} results for {len(live)} executions (a list is one result"
                " per execution, in order)"
            )
            for m in live:
                failed = _result(m.claimed, ResultStatus.FAILED, message)
                ended.append((m, None if m.reason is lost else failed))
            return ended
        for m, item in zip(live, value, strict=True):
            if m.reason is lost:
                ended.append((m, None))
            elif isinstance(item, BaseException):
                ended.append((m, _failure(m.claimed, item)))
            else:
                ended.append((m, _completed(m.claimed, item)))
        return ended
    try:  # one value for all, made JSON once
        status, error, value = ResultStatus.COMPLETED, None, to_json_value(value)
    except ValueError as exc:
        status, error, value = ResultStatus.FATAL, clean_text(str(exc)), None
    for m in live:
        ended.append((m, None if m.reason is lost else _result(m.claimed, status, error, value)))
    return ended
