"""executor.execute: how a handler's end maps to a result, and aborts that wait (G5)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from fakes import FakeDatabaseClient
from pgconductor.conductor import Conductor, TaskContext
from pgconductor.executor import (
    MAX_ERROR_CHARS,
    Abort,
    Execution,
    clean_text,
    execute,
    to_json_value,
)
from pgconductor.lib.threadpool import DaemonThreadPool
from pgconductor.types import ResultStatus

from .engine_helpers import claimed, context


class Item(BaseModel):
    """A typed payload."""

    name: str
    count: int


@pytest.fixture
def conductor() -> Conductor:
    return Conductor(FakeDatabaseClient())


def _handle(row: Any) -> tuple[Execution, TaskContext]:
    ctx = context(row)
    return Execution(row, ctx), ctx


async def test_async_handler_value_is_completed_result(conductor: Conductor) -> None:
    @conductor.task("t")
    async def handler(ctx: TaskContext, payload: Any) -> dict[str, Any]:
        return {"echo": payload, "attempt": ctx.attempt}

    row = claimed(payload={"x": 1}, attempt=2)
    result = await execute(handler, row, context(row))
    assert result is not None
    assert result.status is ResultStatus.COMPLETED
    assert (result.id, result.lease) == (row.id, row.lease)
    assert result.result == {"echo": {"x": 1}, "attempt": 2}


async def test_sync_handler_runs_in_a_thread(conductor: Conductor) -> None:
    main = threading.get_ident()

    @conductor.task("t")
    def handler(ctx: TaskContext, payload: Any) -> bool:
        return threading.get_ident() != main

    row = claimed()
    result = await execute(handler, row, context(row), pool=DaemonThreadPool())
    assert result is not None
    assert result.status is ResultStatus.COMPLETED
    assert result.result is True


async def test_exception_becomes_failed_with_traceback(conductor: Conductor) -> None:
    @conductor.task("t")
    async def exploding_handler(ctx: TaskContext, payload: Any) -> None:
        raise ValueError("boom 42")

    row = claimed()
    result = await execute(exploding_handler, row, context(row))
    assert result is not None
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.startswith("Traceback")
    assert "exploding_handler" in result.error
    assert result.error.rstrip().endswith("ValueError: boom 42")
    assert "pgconductor/executor.py" not in result.error


async def test_sync_exception_becomes_failed(conductor: Conductor) -> None:
    @conductor.task("t")
    def handler(ctx: TaskContext, payload: Any) -> None:
        raise KeyError("missing")

    row = claimed()
    result = await execute(handler, row, context(row))
    assert result is not None
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert "KeyError: 'missing'" in result.error


async def test_long_traceback_is_trimmed_keeping_the_end(conductor: Conductor) -> None:
    @conductor.task("t")
    async def handler(ctx: TaskContext, payload: Any) -> None:
        raise RuntimeError("x" * 50_000 + " the end")

    row = claimed()
    result = await execute(handler, row, context(row))
    assert result is not None
    assert result.error is not None
    assert len(result.error) <= MAX_ERROR_CHARS
    assert result.error.startswith("[... truncated ...]")
    assert result.error.endswith("the end")


def test_clean_text_removes_nul_bytes() -> None:
    assert clean_text("a\x00b") == "a\\0b"


async def test_invalid_payload_is_fatal(conductor: Conductor) -> None:
    ran = False

    @conductor.task("t", payload=Item)
    async def handler(ctx: TaskContext, payload: Item) -> None:
        nonlocal ran
        ran = True

    row = claimed(payload={"name": "a", "count": "many"})
    result = await execute(handler, row, context(row))
    assert result is not None
    assert result.status is ResultStatus.FATAL
    assert result.error is not None
    assert result.error.startswith("invalid payload")
    assert "count" in result.error
    assert not ran


async def test_valid_payload_is_parsed_into_the_model(conductor: Conductor) -> None:
    @conductor.task("t", payload=Item)
    async def handler(ctx: TaskContext, payload: Item) -> Item:
        return Item(name=payload.name.upper(), count=payload.count + 1)

    row = claimed(payload={"name": "a", "count": 1})
    result = await execute(handler, row, context(row))
    assert result is not None
    assert result.result == {"name": "A", "count": 2}


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("s", "s"),
        (3, 3),
        (1.5, 1.5),
        ((1, 2), [1, 2]),
        (Point(1, 2), {"x": 1, "y": 2}),
        ({"d": timedelta(0).__class__.__name__}, {"d": "timedelta"}),
    ],
)
def test_to_json_value(value: Any, expected: Any) -> None:
    assert to_json_value(value) == expected


@pytest.mark.parametrize("value", [object(), float("nan"), {"s": {1, object()}}])
def test_to_json_value_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="not JSON serialisable"):
        to_json_value(value)


async def test_unserialisable_result_is_fatal(conductor: Conductor) -> None:
    @conductor.task("t")
    async def handler(ctx: TaskContext, payload: Any) -> object:
        return object()

    row = claimed()
    result = await execute(handler, row, context(row))
    assert result is not None
    assert result.status is ResultStatus.FATAL
    assert result.error is not None
    assert "not JSON serialisable" in result.error


async def test_async_timeout_from_the_claim(conductor: Conductor) -> None:
    stopped = asyncio.Event()

    @conductor.task("t")
    async def handler(ctx: TaskContext, payload: Any) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    row = claimed(timeout_ms=50)
    result = await execute(handler, row, context(row))
    assert result is not None
    assert result.status is ResultStatus.FAILED
    assert result.error == "timed out after 0.05 s"
    assert stopped.is_set()


async def test_timeout_from_the_task_spec(conductor: Conductor) -> None:
    @conductor.task("t", timeout=0.02)
    async def handler(ctx: TaskContext, payload: Any) -> None:
        await asyncio.Event().wait()

    row = claimed()
    result = await execute(handler, row, context(row))
    assert result is not None
    assert result.error == "timed out after 0.02 s"


async def test_handlers_own_timeout_error_is_a_plain_failure(
    conductor: Conductor,
) -> None:
    @conductor.task("t", timeout=10)
    async def handler(ctx: TaskContext, payload: Any) -> None:
        raise TimeoutError("upstream timed out")

    row = claimed()
    result = await execute(handler, row, context(row))
    assert result is not None
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert "upstream timed out" in result.error


async def test_sync_timeout_waits_for_the_thread(conductor: Conductor) -> None:
    returned = threading.Event()

    @conductor.task("t")
    def handler(ctx: TaskContext, payload: Any) -> str:
        while not ctx.is_cancelled():
            time.sleep(0.001)
        returned.set()
        return "late"

    row = claimed(timeout_ms=30)
    result = await execute(handler, row, context(row))
    assert returned.is_set()  # the thread had returned before the result was made
    assert result is not None
    assert result.status is ResultStatus.FAILED
    assert result.error == "timed out after 0.03 s"


async def _started(conductor: Conductor, sync: bool = False) -> Any:
    """A handler that waits for cancellation; returns (task, started, finished events)."""
    started = asyncio.Event()
    finished = asyncio.Event()

    @conductor.task("t")
    async def handler(ctx: TaskContext, payload: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            finished.set()

    return handler, started, finished


@pytest.mark.parametrize(
    ("reason", "status", "error"),
    [
        (Abort.SHUTDOWN, ResultStatus.RELEASED, None),
        (Abort.CANCEL, ResultStatus.FAILED, "cancelled"),
    ],
)
async def test_abort_async_handler(
    conductor: Conductor, reason: Abort, status: ResultStatus, error: str | None
) -> None:
    handler, started, finished = await _started(conductor)
    row = claimed()
    execution, ctx = _handle(row)
    running = asyncio.ensure_future(execute(handler, row, ctx, execution))
    await started.wait()
    execution.abort(reason)
    result = await running
    assert finished.is_set()
    assert ctx.is_cancelled()
    assert result is not None
    assert (result.status, result.error) == (status, error)
    assert execution.done


async def test_abort_lease_lost_reports_nothing(conductor: Conductor) -> None:
    handler, started, _ = await _started(conductor)
    row = claimed()
    execution, ctx = _handle(row)
    running = asyncio.ensure_future(execute(handler, row, ctx, execution))
    await started.wait()
    execution.abort(Abort.LEASE_LOST)
    execution.abort(Abort.SHUTDOWN)  # a weaker reason does not replace a stronger one
    assert await running is None


async def test_abort_leaves_the_task_uncancelled(conductor: Conductor) -> None:
    handler, started, _ = await _started(conductor)
    row = claimed()
    execution, ctx = _handle(row)

    async def run_then_await() -> int:
        await execute(handler, row, ctx, execution)
        await asyncio.sleep(0)  # would raise if a cancellation were still pending
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    running = asyncio.ensure_future(run_then_await())
    await started.wait()
    execution.abort(Abort.SHUTDOWN)
    assert await running == 0


async def test_handler_that_finishes_after_abort_is_completed(
    conductor: Conductor,
) -> None:
    started = asyncio.Event()

    @conductor.task("t")
    async def handler(ctx: TaskContext, payload: Any) -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "finished anyway"
        return "unreachable"

    row = claimed()
    execution, ctx = _handle(row)
    running = asyncio.ensure_future(execute(handler, row, ctx, execution))
    await started.wait()
    execution.abort(Abort.SHUTDOWN)
    result = await running
    assert result is not None
    assert result.status is ResultStatus.COMPLETED
    assert result.result == "finished anyway"


async def test_abort_before_start_never_runs_the_handler(conductor: Conductor) -> None:
    ran = False

    @conductor.task("t")
    async def handler(ctx: TaskContext, payload: Any) -> None:
        nonlocal ran
        ran = True

    row = claimed()
    execution, ctx = _handle(row)
    execution.abort(Abort.SHUTDOWN)
    result = await execute(handler, row, ctx, execution)
    assert result is not None
    assert result.status is ResultStatus.RELEASED
    assert not ran


@pytest.mark.parametrize(
    ("reason", "status"),
    [(Abort.SHUTDOWN, ResultStatus.RELEASED), (Abort.CANCEL, "failed")],
)
async def test_sync_abort_waits_until_the_thread_returns(
    conductor: Conductor, reason: Abort, status: str
) -> None:
    """G5: a sync handler cannot be killed, so no result exists until it has returned."""
    entered = threading.Event()
    release = threading.Event()

    @conductor.task("t")
    def handler(ctx: TaskContext, payload: Any) -> None:
        entered.set()
        release.wait(10)
        if ctx.is_cancelled():
            raise RuntimeError("stopped on request")

    row = claimed()
    execution, ctx = _handle(row)
    running = asyncio.ensure_future(execute(handler, row, ctx, execution))
    await asyncio.to_thread(entered.wait, 10)
    execution.abort(reason)
    assert ctx.is_cancelled()
    done, _ = await asyncio.wait({running}, timeout=0.05)
    assert not done  # the thread still runs: nothing may be reported yet
    release.set()
    result = await running
    assert result is not None
    assert result.status == status


async def test_sync_handler_returning_after_cancel_is_completed(
    conductor: Conductor,
) -> None:
    entered = threading.Event()

    @conductor.task("t")
    def handler(ctx: TaskContext, payload: Any) -> int:
        entered.set()
        while not ctx.is_cancelled():
            time.sleep(0.001)
        return 7

    row = claimed()
    execution, ctx = _handle(row)
    running = asyncio.ensure_future(execute(handler, row, ctx, execution))
    await asyncio.to_thread(entered.wait, 10)
    execution.abort(Abort.CANCEL)
    result = await running
    assert result is not None
    assert (result.status, result.result) == (
        ResultStatus.COMPLETED,
        7,
    )


async def test_sync_lease_lost_reports_nothing(conductor: Conductor) -> None:
    @conductor.task("t")
    def handler(ctx: TaskContext, payload: Any) -> None:
        while not ctx.is_cancelled():
            time.sleep(0.001)

    row = claimed()
    execution, ctx = _handle(row)
    running = asyncio.ensure_future(execute(handler, row, ctx, execution))
    execution.abort(Abort.LEASE_LOST)
    assert await running is None


async def test_outside_cancellation_propagates(conductor: Conductor) -> None:
    handler, started, finished = await _started(conductor)
    row = claimed()
    running = asyncio.ensure_future(execute(handler, row, context(row)))
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert finished.is_set()


async def test_abort_after_done_is_ignored(conductor: Conductor) -> None:
    @conductor.task("t")
    async def handler(ctx: TaskContext, payload: Any) -> int:
        return 1

    row = claimed()
    execution, ctx = _handle(row)
    await execute(handler, row, ctx, execution)
    execution.abort(Abort.CANCEL)
    assert execution.reason is None
    assert not ctx.is_cancelled()


def test_to_json_value_encodes_common_types() -> None:
    when = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    ident = uuid.UUID(int=1)
    assert to_json_value({"at": when, "id": ident, "n": Decimal("1.5")}) == {
        "at": "2024-05-01T12:30:00+00:00",
        "id": "00000000-0000-0000-0000-000000000001",
        "n": "1.5",
    }


async def test_a_crashing_payload_parser_is_fatal(
    conductor: Conductor, monkeypatch: pytest.MonkeyPatch
) -> None:
    @conductor.task("t")
    async def handler(ctx: TaskContext, payload: Any) -> None:
        return None

    def explode(raw: Any) -> Any:
        raise LookupError("parser bug")

    monkeypatch.setattr(handler, "parse_payload", explode)
    row = claimed()
    result = await execute(handler, row, context(row))
    assert result is not None
    assert result.status is ResultStatus.FATAL
    assert "LookupError: parser bug" in (result.error or "")


async def test_a_handler_swallowing_its_timeout_still_timed_out(conductor: Conductor) -> None:
    @conductor.task("t", timeout=0.02)
    async def handler(ctx: TaskContext, payload: Any) -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "ignored the timeout"
        return "unreachable"

    row = claimed()
    result = await execute(handler, row, context(row))
    assert result is not None
    assert result.status is ResultStatus.FAILED
    assert result.error == "timed out after 0.02 s"
