"""TaskContext's cancel event made on first use, and the executor's cheap path per job.

A handler that never looks at `ctx.cancel_event` costs no Event; a handler without a timeout
runs without `asyncio.timeout`. Aborts, timeouts and cancellation behave as before
(test_executor.py covers every outcome; these tests cover the lazy parts).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest

from fakes import FakeDatabaseClient
from pgconductor import executor as executor_module
from pgconductor.conductor import Conductor, TaskContext
from pgconductor.executor import Abort, Execution, execute
from pgconductor.lib.threadpool import DaemonThreadPool
from pgconductor.types import ResultStatus

from .engine_helpers import claimed


def bare_context() -> TaskContext:
    return TaskContext(uuid.UUID(int=1), "t", "q", 1, 3)


def test_a_stop_before_the_event_exists_sets_it_when_made() -> None:
    ctx = bare_context()
    assert not ctx.is_cancelled()
    assert ctx._cancel_event is None
    ctx.request_stop()
    assert ctx.is_cancelled()
    assert ctx._cancel_event is None  # still not needed
    assert ctx.cancel_event.is_set()
    assert ctx.cancelled


def test_a_stop_after_the_event_exists_sets_it() -> None:
    ctx = bare_context()
    event = ctx.cancel_event
    assert not event.is_set()
    ctx.request_stop()
    assert event.is_set()
    assert ctx.is_cancelled()


def test_a_given_event_is_the_one_used() -> None:
    event = asyncio.Event()
    ctx = TaskContext(uuid.UUID(int=1), "t", "q", 1, 3, event)
    assert ctx.cancel_event is event
    event.set()  # set by hand: cancelled too
    assert ctx.is_cancelled()


def test_defaults_and_repr() -> None:
    ctx = bare_context()
    assert ctx.extra == {}
    assert ctx.logger.name == "pgconductor.task"
    assert repr(ctx) == (
        "TaskContext(execution_id=UUID('00000000-0000-0000-0000-000000000001'),"
        " task_key='t', queue='q', attempt=1, max_attempts=3)"
    )
    with pytest.raises(AttributeError, match="nope"):
        _ = ctx.nope


def test_a_stop_racing_the_events_creation_on_another_thread_is_not_lost() -> None:
    for _ in range(200):
        ctx = bare_context()
        made: list[asyncio.Event] = []
        reader = threading.Thread(target=lambda ctx=ctx, made=made: made.append(ctx.cancel_event))
        reader.start()
        ctx.request_stop()
        reader.join()
        assert made[0].is_set()
        assert ctx.cancel_event is made[0]


@pytest.fixture
def conductor() -> Conductor:
    return Conductor(FakeDatabaseClient())


async def test_no_timeout_means_no_asyncio_timeout(
    conductor: Conductor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(delay: float | None) -> Any:
        raise AssertionError("asyncio.timeout used without a timeout")

    monkeypatch.setattr(executor_module.asyncio, "timeout", forbidden)
    seen: list[TaskContext] = []

    @conductor.task("t")
    async def handler(ctx: TaskContext, payload: Any) -> int:
        seen.append(ctx)
        return 1

    row = claimed()
    ctx = TaskContext(row.id, row.task_key, row.queue, row.attempt, row.max_attempts)
    result = await execute(handler, row, ctx)
    assert result is not None
    assert result.status is ResultStatus.COMPLETED
    assert seen[0]._cancel_event is None  # never looked at: never made


async def test_an_abort_wakes_a_handler_waiting_on_the_lazy_event(conductor: Conductor) -> None:
    started = asyncio.Event()

    @conductor.task("t")
    async def handler(ctx: TaskContext, payload: Any) -> str:
        started.set()
        try:
            await ctx.cancel_event.wait()
        except asyncio.CancelledError:
            assert ctx.cancel_event.is_set()  # set before the task was cancelled
            raise
        return "unreachable"

    row = claimed()
    ctx = TaskContext(row.id, row.task_key, row.queue, row.attempt, row.max_attempts)
    control = Execution(row, ctx)
    run = asyncio.ensure_future(execute(handler, row, ctx, control))
    await started.wait()
    control.abort(Abort.CANCEL)
    result = await run
    assert result is not None
    assert (result.status, result.error) == (ResultStatus.FAILED, "cancelled")


async def test_sync_handlers_find_the_event_made_before_they_start(conductor: Conductor) -> None:
    seen: list[bool] = []

    @conductor.task("t")
    def handler(ctx: TaskContext, payload: Any) -> None:
        seen.append(ctx._cancel_event is not None)

    row = claimed()
    ctx = TaskContext(row.id, row.task_key, row.queue, row.attempt, row.max_attempts)
    await execute(handler, row, ctx, pool=DaemonThreadPool())
    assert seen == [True]


async def test_a_sync_timeout_sets_the_event(conductor: Conductor) -> None:
    @conductor.task("t", timeout=0.05)
    def handler(ctx: TaskContext, payload: Any) -> None:
        while not ctx.is_cancelled():
            threading.Event().wait(0.005)

    row = claimed()
    ctx = TaskContext(row.id, row.task_key, row.queue, row.attempt, row.max_attempts)
    result = await execute(handler, row, ctx, pool=DaemonThreadPool())
    assert result is not None
    assert result.status is ResultStatus.FAILED
    assert result.error == "timed out after 0.05 s"
    assert ctx.cancel_event.is_set()
