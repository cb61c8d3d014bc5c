"""Handlers steer their retries (Fatal, RetryAfter), sync handlers stop on request
(`ctx.raise_if_cancelled()`), and the worker logs what SQL did with each result."""

from __future__ import annotations

import asyncio
import logging
import pickle
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from fakes import FakeDatabaseClient
from pgconductor import Cancelled, Fatal, RetryAfter
from pgconductor.conductor import Conductor, TaskContext
from pgconductor.executor import Abort, Execution, error_summary, error_text, execute
from pgconductor.lib.threadpool import DaemonThreadPool
from pgconductor.orchestrator import Orchestrator, _release
from pgconductor.types import ExecutionResult, ResultStatus, ReturnOutcome
from pgconductor.worker import Worker

from .engine_helpers import Backlog, claimed, context, flushed


@pytest.fixture
def fake() -> FakeDatabaseClient:
    return FakeDatabaseClient()


@pytest.fixture
def conductor(fake: FakeDatabaseClient) -> Conductor:
    return Conductor(fake)


# -- Fatal and RetryAfter in the executor ------------------------------------------------


@pytest.mark.parametrize("is_async", [True, False])
async def test_fatal_fails_now_with_its_traceback(conductor: Conductor, is_async: bool) -> None:
    def body(ctx: TaskContext, payload: Any) -> None:
        raise Fatal("the account is closed")

    async def async_body(ctx: TaskContext, payload: Any) -> None:
        body(ctx, payload)

    task = conductor.task("t")(async_body if is_async else body)
    row = claimed()
    result = await execute(task, row, context(row), pool=DaemonThreadPool())
    assert result is not None
    assert result.status is ResultStatus.FATAL
    assert result.error is not None
    assert result.error.startswith("Traceback (most recent call last):")
    assert error_summary(result.error) == "pgconductor.errors.Fatal: the account is closed"


@pytest.mark.parametrize("is_async", [True, False])
async def test_retry_after_asks_for_a_delay(conductor: Conductor, is_async: bool) -> None:
    def body(ctx: TaskContext, payload: Any) -> None:
        raise RetryAfter(timedelta(seconds=90), "rate limited")

    async def async_body(ctx: TaskContext, payload: Any) -> None:
        body(ctx, payload)

    task = conductor.task("t")(async_body if is_async else body)
    row = claimed()
    result = await execute(task, row, context(row), pool=DaemonThreadPool())
    assert result == ExecutionResult(
        row.id, row.lease, ResultStatus.RETRY_AFTER, error="rate limited", delay_ms=90_000
    )


async def test_retry_after_without_a_reason_sends_no_error(conductor: Conductor) -> None:
    @conductor.task("t")
    async def handler(ctx: TaskContext, payload: Any) -> None:
        raise RetryAfter(0.25)

    row = claimed()
    result = await execute(handler, row, context(row))
    assert result is not None
    assert (result.status, result.error, result.delay_ms) == (ResultStatus.RETRY_AFTER, None, 250)


@pytest.mark.parametrize("delay", [-1, float("nan"), 3e6])
def test_retry_after_rejects_impossible_delays(delay: float) -> None:
    with pytest.raises(ValueError, match="RetryAfter needs a delay"):
        RetryAfter(delay)


def test_retry_after_pickles_and_reads() -> None:
    again = pickle.loads(pickle.dumps(RetryAfter(2, "later")))
    assert (again.delay, again.reason, again.delay_ms, str(again)) == (
        timedelta(seconds=2),
        "later",
        2000,
        "later",
    )
    assert str(RetryAfter(1.5)) == "retry after 1.5 s"


async def test_an_abort_decides_over_fatal(conductor: Conductor) -> None:
    started = threading.Event()
    go = threading.Event()

    @conductor.task("t")
    def handler(ctx: TaskContext, payload: Any) -> None:
        started.set()
        go.wait(10)
        raise Fatal("raised after the cancel")

    row = claimed()
    ctx = context(row)
    control = Execution(row, ctx)
    run = asyncio.ensure_future(execute(handler, row, ctx, control, pool=DaemonThreadPool()))
    await asyncio.to_thread(started.wait, 10)
    control.abort(Abort.CANCEL)
    go.set()
    result = await run
    assert result is not None
    assert (result.status, result.error) == (ResultStatus.FAILED, "cancelled")


# -- cancelling a sync handler -----------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "status", "error"),
    [
        (Abort.CANCEL, ResultStatus.FAILED, "cancelled"),
        (Abort.SHUTDOWN, ResultStatus.RELEASED, None),
    ],
)
async def test_a_sync_handler_stops_at_raise_if_cancelled(
    conductor: Conductor, reason: Abort, status: ResultStatus, error: str | None
) -> None:
    steps: list[int] = []
    started = threading.Event()

    @conductor.task("t")
    def handler(ctx: TaskContext, payload: Any) -> str:
        started.set()
        for step in range(10_000):
            ctx.raise_if_cancelled()
            steps.append(step)
            threading.Event().wait(0.01)
        return "ran to the end"

    row = claimed()
    ctx = context(row)
    control = Execution(row, ctx)
    run = asyncio.ensure_future(execute(handler, row, ctx, control, pool=DaemonThreadPool()))
    await asyncio.to_thread(started.wait, 10)
    control.abort(reason)
    result = await run
    assert result is not None
    assert (result.status, result.error) == (status, error)
    assert len(steps) < 10_000
    assert ctx.cancelled


async def test_a_sync_handler_past_its_timeout_stops_at_raise_if_cancelled(
    conductor: Conductor,
) -> None:
    @conductor.task("t", timeout=0.05)
    def handler(ctx: TaskContext, payload: Any) -> str:
        while True:
            ctx.raise_if_cancelled()
            threading.Event().wait(0.01)

    row = claimed()
    result = await execute(handler, row, context(row), pool=DaemonThreadPool())
    assert result is not None
    assert (result.status, result.error) == (ResultStatus.FAILED, "timed out after 0.05 s")


async def test_cancelled_raised_without_a_stop_is_an_ordinary_failure(
    conductor: Conductor,
) -> None:
    @conductor.task("t")
    async def handler(ctx: TaskContext, payload: Any) -> None:
        raise Cancelled("my own")

    row = claimed()
    result = await execute(handler, row, context(row))
    assert result is not None
    assert result.status is ResultStatus.FAILED
    assert error_summary(result.error) == "pgconductor.errors.Cancelled: my own"


# -- error_summary -----------------------------------------------------------------------


def _traceback_of(exc: BaseException) -> str:
    try:
        raise exc
    except BaseException as raised:
        return error_text(raised)


def test_error_summary_finds_the_exception_line() -> None:
    text = _traceback_of(ValueError("first line\nsecond line"))
    assert error_summary(text) == "ValueError: first line"
    assert error_summary("timed out after 5 s") == "timed out after 5 s"
    assert error_summary("two\nlines") == "two"
    assert error_summary(None) == ""
    assert error_summary("Traceback (most recent call last):") == (
        "Traceback (most recent call last):"
    )


def test_error_summary_of_a_chained_error_is_the_last_one() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as exc:
        text = error_text(exc)
    assert error_summary(text) == "RuntimeError: outer"


# -- the worker's log lines --------------------------------------------------------------


@pytest.fixture
async def run_worker(
    fake: FakeDatabaseClient, conductor: Conductor
) -> AsyncIterator[Callable[..., Any]]:
    """Drain a worker over `rows`, SQL answering each result with `outcomes[i]`."""
    workers: list[Worker] = []

    async def run(rows: list[Any], outcomes: list[str]) -> list[ExecutionResult]:
        answers = dict(zip((r.id for r in rows), outcomes, strict=True))
        fake.responses["get_executions"] = Backlog(rows)
        fake.responses["return_executions"] = lambda oid, results: [
            ReturnOutcome(r.id, answers[r.id]) for r in results
        ]
        worker = Worker(fake, "default", conductor.tasks, uuid.uuid4(), poll_interval=0.01)
        workers.append(worker)
        await worker.drain()
        return flushed(fake)

    yield run
    for worker in workers:
        await worker.stop()


async def test_the_worker_logs_each_failed_attempt_and_the_final_failure(
    conductor: Conductor, run_worker: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    @conductor.task("send-email")
    async def send(ctx: TaskContext, payload: Any) -> None:
        raise ConnectionError("smtp refused")

    first = claimed("send-email", attempt=1, max_attempts=3)
    last = claimed("send-email", attempt=3, max_attempts=3)
    with caplog.at_level(logging.DEBUG, logger="pgconductor.worker"):
        await run_worker([first, last], ["retry_scheduled", "failed"])
    lines = {r.getMessage().split("\n")[0]: r for r in caplog.records}
    retry = lines[
        f"send-email {first.id}: attempt 1/3 failed, retry scheduled: ConnectionError: smtp refused"
    ]
    assert retry.levelno == logging.WARNING
    final = lines[f"send-email {last.id}: attempt 3/3 failed for good (no attempt left):"]
    assert final.levelno == logging.ERROR
    assert "Traceback (most recent call last):" in final.getMessage()
    assert final.getMessage().endswith("ConnectionError: smtp refused")


async def test_the_worker_logs_fatal_retry_after_and_cancel(
    conductor: Conductor, run_worker: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    @conductor.task("steer")
    async def steer(ctx: TaskContext, payload: Any) -> str:
        if payload["do"] == "fatal":
            raise Fatal("no such account")
        if payload["do"] == "later":
            raise RetryAfter(30, "rate limited")
        return "done"

    rows = [
        claimed("steer", {"do": "fatal"}),
        claimed("steer", {"do": "later"}),
        claimed("steer", {"do": "later"}),
        claimed("steer", {"do": "return"}),
        claimed("steer", {"do": "return"}),
        claimed("steer", {"do": "return"}, attempt=2),
    ]
    outcomes = ["failed", "rescheduled", "failed", "cancelled", "stale", "released"]
    with caplog.at_level(logging.DEBUG, logger="pgconductor.worker"):
        results = await run_worker(rows, outcomes)
    assert [r.status for r in results] == [
        ResultStatus.FATAL,
        ResultStatus.RETRY_AFTER,
        ResultStatus.RETRY_AFTER,
        ResultStatus.COMPLETED,
        ResultStatus.COMPLETED,
        ResultStatus.COMPLETED,
    ]
    by_id = {" ".join(r.getMessage().split()[:2]).rstrip(":"): r for r in caplog.records}

    def line(n: int) -> tuple[int, str]:
        record = by_id[f"steer {rows[n].id}"]
        return record.levelno, record.getMessage().split("\n")[0]

    assert line(0) == (
        logging.ERROR,
        f"steer {rows[0].id}: attempt 1/3 failed for good (fatal error, no retry):",
    )
    assert line(1) == (
        logging.INFO,
        f"steer {rows[1].id}: rescheduled in 30s, attempt 1/3 not counted: rate limited",
    )
    assert line(2) == (
        logging.ERROR,
        f"steer {rows[2].id}: failed for good: asked to retry later more often than the task"
        " allows (max_retry_after): rate limited",
    )
    assert line(3) == (
        logging.INFO,
        f"steer {rows[3].id}: cancelled during attempt 1/3, its result kept",
    )
    assert line(4) == (
        logging.WARNING,
        f"steer {rows[4].id} was stale: the result of attempt 1/3 came after its lease ended;"
        " nothing was applied",
    )
    assert line(5) == (logging.DEBUG, f"steer {rows[5].id}: attempt 2/3 released")


async def test_the_next_run_is_in_the_line_when_sql_says_it(
    fake: FakeDatabaseClient, conductor: Conductor, caplog: pytest.LogCaptureFixture
) -> None:
    @conductor.task("flaky")
    async def flaky(ctx: TaskContext, payload: Any) -> None:
        if payload["later"]:
            raise RetryAfter(60, "busy")
        raise KeyError("missing")

    rows = [claimed("flaky", {"later": False}), claimed("flaky", {"later": True})]
    when = datetime(2030, 1, 1, 13, 0, 5, tzinfo=timezone(timedelta(hours=1)))
    outcome = {False: "retry_scheduled", True: "rescheduled"}
    fake.responses["get_executions"] = Backlog(rows)
    fake.responses["return_executions"] = lambda oid, results: [
        ReturnOutcome(r.id, outcome[r.status is ResultStatus.RETRY_AFTER], when) for r in results
    ]
    worker = Worker(fake, "default", conductor.tasks, uuid.uuid4(), poll_interval=0.01)
    with caplog.at_level(logging.INFO, logger="pgconductor.worker"):
        await worker.drain()
    assert (
        f"flaky {rows[0].id}: attempt 1/3 failed, retry scheduled for 2030-01-01 12:00:05 UTC:"
        " KeyError: 'missing'"
    ) in caplog.messages
    assert (
        f"flaky {rows[1].id}: rescheduled in 60s for 2030-01-01 12:00:05 UTC,"
        " attempt 1/3 not counted: busy"
    ) in caplog.messages


async def test_completed_results_log_nothing(
    conductor: Conductor, run_worker: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    conductor.task("ok")(lambda ctx, payload: "fine")
    rows = [claimed("ok") for _ in range(5)]
    with caplog.at_level(logging.DEBUG, logger="pgconductor.worker"):
        await run_worker(rows, ["completed"] * 5)
    assert not [r for r in caplog.records if "ok " in r.getMessage()]


async def test_before_0_4_0_a_retry_after_is_sent_as_a_failed_attempt(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    @conductor.task("later")
    async def later(ctx: TaskContext, payload: Any) -> None:
        raise RetryAfter(5, "busy" if payload else "")

    rows = [claimed("later", {"why": 1}), claimed("later", {})]
    fake.responses["get_executions"] = Backlog(rows)
    worker = Worker(fake, "default", conductor.tasks, uuid.uuid4(), retry_after=False)
    await worker.drain()
    assert [(r.status, r.error, r.delay_ms) for r in flushed(fake)] == [
        (ResultStatus.FAILED, "RetryAfter needs pgconductor extension 0.4.0 or newer: busy", None),
        (ResultStatus.FAILED, "RetryAfter needs pgconductor extension 0.4.0 or newer", None),
    ]


@pytest.mark.parametrize(("installed", "supported"), [("0.3.0", False), ("0.4.0", True)])
async def test_the_orchestrator_tells_its_workers_whether_sql_takes_retry_after(
    fake: FakeDatabaseClient, conductor: Conductor, installed: str, supported: bool
) -> None:
    conductor.task("t")(lambda ctx, payload: None)
    fake.installed_version = installed
    orchestrator = Orchestrator(
        conductor,
        heartbeat_interval=60.0,
        stale_after=7200.0,
        poll_interval=60.0,
        use_listen=False,
    )
    await orchestrator.start()
    try:
        assert [w.retry_after for w in orchestrator.workers] == [supported]
    finally:
        await orchestrator.stop()


def test_release_numbers() -> None:
    assert _release("0.4.0") == (0, 4, 0)
    assert _release("1.10") == (1, 10)
    assert _release("0.5.0-dev") == (0, 5)


async def test_a_sync_handlers_traceback_starts_in_the_handler(conductor: Conductor) -> None:
    @conductor.task("t")
    def handler(ctx: TaskContext, payload: Any) -> None:
        raise ValueError("in a thread")

    row = claimed()
    result = await execute(handler, row, context(row), pool=DaemonThreadPool())
    assert result is not None
    assert result.error is not None
    frames = [line for line in result.error.splitlines() if line.startswith("  File ")]
    assert frames
    assert all(__file__ in frame for frame in frames)  # no executor or thread-pool frame
