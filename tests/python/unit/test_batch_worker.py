"""Batch tasks in the worker, against the fake client: grouping, the timeout, results per
item or one for all, failures, and what a stop, a cancel or a lost lease does (G21)."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import BaseModel

from fakes import FakeDatabaseClient
from pgconductor.batching import BatchContext
from pgconductor.conductor import Conductor
from pgconductor.errors import Cancelled, Fatal, RetryAfter
from pgconductor.types import ClaimedExecution, ExecutionResult, ResultStatus
from pgconductor.worker import Worker

from .engine_helpers import Backlog, claimed, flushed

WaitUntil = Callable[..., Any]
COMPLETED, FAILED, FATAL = ResultStatus.COMPLETED, ResultStatus.FAILED, ResultStatus.FATAL
RELEASED, RETRY_AFTER = ResultStatus.RELEASED, ResultStatus.RETRY_AFTER


@pytest.fixture
def fake() -> FakeDatabaseClient:
    return FakeDatabaseClient()


@pytest.fixture
def conductor(fake: FakeDatabaseClient) -> Conductor:
    return Conductor(fake)


@pytest.fixture
async def make_worker(
    fake: FakeDatabaseClient, conductor: Conductor
) -> AsyncIterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def make(**options: Any) -> Worker:
        options.setdefault("poll_interval", 60.0)
        options.setdefault("grace_period", 5.0)
        worker = Worker(fake, "default", conductor.tasks, uuid.uuid4(), **options)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.force()
        await worker.stop()


def rows(n: int, task_key: str = "index") -> list[ClaimedExecution]:
    return [claimed(task_key, {"n": i}) for i in range(n)]


def results(fake: FakeDatabaseClient) -> dict[uuid.UUID, ExecutionResult]:
    return {r.id: r for r in flushed(fake)}


async def start(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker], due: list[Any], **options: Any
) -> Worker:
    fake.responses["get_executions"] = Backlog(due)
    worker = make_worker(**options)
    await worker.start()
    return worker


# -- grouping ----------------------------------------------------------------------------


async def test_250_executions_make_batches_of_at_most_100_with_each_result_on_its_execution(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    calls: list[list[Any]] = []

    @conductor.task("index", batch_size=100, batch_timeout=0.05)
    async def index(ctx: BatchContext, payloads: list[Any]) -> list[int]:
        calls.append(payloads)
        assert [item.execution_id for item in ctx.items] == ctx.execution_ids
        return [p["n"] * 2 for p in payloads]

    due = rows(250)
    await start(fake, make_worker, due, concurrency=100)
    await wait_until(lambda: len(flushed(fake)) == 250)
    assert [len(c) for c in calls] == [100, 100, 50]
    assert [p["n"] for c in calls for p in c] == list(range(250))  # claim order kept
    got = results(fake)
    for row in due:
        assert (got[row.id].status, got[row.id].result) == (COMPLETED, row.payload["n"] * 2)
        assert got[row.id].lease == row.lease


async def test_a_batch_that_does_not_fill_runs_after_its_timeout(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    loop = asyncio.get_running_loop()
    called_at: list[float] = []

    @conductor.task("index", batch_size=100, batch_timeout=0.3)
    async def index(ctx: BatchContext, payloads: list[Any]) -> str:
        called_at.append(loop.time())
        return "ok"

    began = loop.time()
    worker = await start(fake, make_worker, rows(3))
    await wait_until(lambda: worker.in_flight == 3)
    assert called_at == []  # waiting for more, each holding its slot and lease
    assert len(worker.held()) == 3
    await wait_until(lambda: len(flushed(fake)) == 3)
    assert len(called_at) == 1
    assert called_at[0] - began >= 0.29


async def test_claims_fill_one_batch_and_a_full_one_does_not_wait(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    sizes: list[int] = []

    @conductor.task("index", batch_size=4, batch_timeout=60)
    async def index(ctx: BatchContext, payloads: list[Any]) -> None:
        sizes.append(len(payloads))

    backlog = Backlog(rows(8))
    fake.responses["get_executions"] = backlog
    await make_worker(concurrency=8, fetch_batch=2).start()
    await wait_until(lambda: len(flushed(fake)) == 8, timeout=5.0)
    assert sizes == [4, 4]
    assert set(backlog.requests[:4]) == {2}


async def test_other_tasks_of_the_queue_run_one_by_one_beside_the_batches(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    sizes: list[int] = []

    @conductor.task("index", batch_size=10, batch_timeout=0)
    def index(ctx: BatchContext, payloads: list[Any]) -> str:  # a sync one, on a thread
        sizes.append(len(payloads))
        return threading.current_thread().name

    @conductor.task("single")
    async def single(ctx: Any, payload: Any) -> Any:
        return payload

    due = [*rows(3), *rows(2, "single")]
    await start(fake, make_worker, due)
    await wait_until(lambda: len(flushed(fake)) == 5)
    assert sizes == [3]
    got = results(fake)
    assert [got[r.id].result for r in due[3:]] == [{"n": 0}, {"n": 1}]
    assert all(got[r.id].result != threading.current_thread().name for r in due[:3])


async def test_a_draining_worker_runs_every_batch_and_stops(
    fake: FakeDatabaseClient, conductor: Conductor, make_worker: Callable[..., Worker]
) -> None:
    sizes: list[int] = []

    @conductor.task("index", batch_size=10, batch_timeout=0.01)
    async def index(ctx: BatchContext, payloads: list[Any]) -> None:
        sizes.append(len(payloads))

    fake.responses["get_executions"] = Backlog(rows(25))
    worker = make_worker(concurrency=10, poll_interval=0.01)
    await asyncio.wait_for(worker.drain(), 10.0)
    assert sizes == [10, 10, 5]
    assert len(flushed(fake)) == 25
    assert worker.stats.finished == 25


# -- results -----------------------------------------------------------------------------


async def run_one_batch(
    fake: FakeDatabaseClient,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
    n: int = 3,
    **options: Any,
) -> tuple[list[ClaimedExecution], dict[uuid.UUID, ExecutionResult]]:
    due = rows(n)
    await start(fake, make_worker, due, **options)
    await wait_until(lambda: len(flushed(fake)) == n)
    return due, results(fake)


async def test_one_value_is_the_result_of_every_execution(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    @conductor.task("index", batch_size=3)
    async def index(ctx: BatchContext, payloads: list[Any]) -> dict[str, int]:
        return {"indexed": len(payloads)}

    due, got = await run_one_batch(fake, make_worker, wait_until)
    assert [(got[r.id].status, got[r.id].result) for r in due] == [(COMPLETED, {"indexed": 3})] * 3


async def test_a_list_of_another_length_fails_the_whole_batch(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    @conductor.task("index", batch_size=3)
    async def index(ctx: BatchContext, payloads: list[Any]) -> list[int]:
        return [1, 2]

    due, got = await run_one_batch(fake, make_worker, wait_until)
    message = (
        "the batch handler of task 'index' returned 2 results for 3 executions"
        " (a list is one result per execution, in order)"
    )
    assert [(got[r.id].status, got[r.id].error) for r in due] == [(FAILED, message)] * 3


@pytest.mark.parametrize(
    ("error", "status"),
    [(RuntimeError("index down"), FAILED), (Fatal("bad index"), FATAL)],
)
async def test_a_raise_fails_every_execution_of_the_batch(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
    error: Exception,
    status: ResultStatus,
) -> None:
    @conductor.task("index", batch_size=3)
    async def index(ctx: BatchContext, payloads: list[Any]) -> None:
        raise error

    due, got = await run_one_batch(fake, make_worker, wait_until)
    assert {got[r.id].status for r in due} == {status}
    text = got[due[0].id].error
    assert text is not None
    assert text.endswith(f"{type(error).__name__}: {error}")
    assert "in index" in text
    assert "batch_run.py" not in text  # the stored traceback starts at the handler
    assert {got[r.id].error for r in due} == {text}


async def test_retry_after_from_a_batch_reschedules_each_execution(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    @conductor.task("index", batch_size=2)
    async def index(ctx: BatchContext, payloads: list[Any]) -> None:
        raise RetryAfter(5, "index busy")

    due, got = await run_one_batch(fake, make_worker, wait_until, 2)
    assert [(got[r.id].status, got[r.id].delay_ms, got[r.id].error) for r in due] == [
        (RETRY_AFTER, 5000, "index busy")
    ] * 2


async def test_an_exception_among_the_results_fails_that_execution_alone(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    @conductor.task("index", batch_size=5)
    async def index(ctx: BatchContext, payloads: list[Any]) -> list[Any]:
        return ["ok", ValueError("no title"), Fatal("never"), RetryAfter(2, "later"), object()]

    due, got = await run_one_batch(fake, make_worker, wait_until, 5)
    ended = [(got[r.id].status, got[r.id].result, got[r.id].error) for r in due]
    assert ended[:4] == [
        (COMPLETED, "ok", None),
        (FAILED, None, "ValueError: no title"),
        (FATAL, None, "pgconductor.errors.Fatal: never"),
        (RETRY_AFTER, None, "later"),
    ]
    assert ended[4][0] is FATAL  # an object() is not JSON
    assert "not JSON serialisable" in str(ended[4][2])


async def test_one_value_that_is_not_json_is_fatal_for_all(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    @conductor.task("index", batch_size=2)
    async def index(ctx: BatchContext, payloads: list[Any]) -> object:
        return object()

    due, got = await run_one_batch(fake, make_worker, wait_until, 2)
    assert {got[r.id].status for r in due} == {FATAL}


class Doc(BaseModel):
    n: int


async def test_an_invalid_payload_fails_alone_and_the_others_run(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    seen: list[list[Doc]] = []

    @conductor.task("index", batch_size=3, payload=Doc)
    async def index(ctx: BatchContext, payloads: list[Doc]) -> list[int]:
        seen.append(payloads)
        return [doc.n for doc in payloads]

    due = [claimed("index", {"n": 1}), claimed("index", {"n": "x"}), claimed("index", {"n": 3})]
    await start(fake, make_worker, due)
    await wait_until(lambda: len(flushed(fake)) == 3)
    got = results(fake)
    assert seen == [[Doc(n=1), Doc(n=3)]]
    assert [got[r.id].status for r in due] == [COMPLETED, FATAL, COMPLETED]
    assert str(got[due[1].id].error).startswith("invalid payload: payload for task 'index'")
    assert [got[due[0].id].result, got[due[2].id].result] == [1, 3]


@pytest.mark.parametrize("sync", [False, True])
async def test_a_batch_past_the_task_timeout_fails_every_execution(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
    sync: bool,
) -> None:
    async def waits(ctx: BatchContext, payloads: list[Any]) -> None:
        await asyncio.Event().wait()

    def polls(ctx: BatchContext, payloads: list[Any]) -> None:
        while not ctx.cancelled:  # the timeout asks it to stop
            threading.Event().wait(0.005)

    conductor.task("index", batch_size=2, timeout=0.05)(polls if sync else waits)

    due, got = await run_one_batch(fake, make_worker, wait_until, 2)
    assert [(got[r.id].status, got[r.id].error) for r in due] == [
        (FAILED, "timed out after 0.05 s")
    ] * 2


async def test_durable_calls_are_refused_in_a_batch(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    @conductor.task("index", batch_size=1)
    async def index(ctx: BatchContext, payloads: list[Any]) -> None:
        await ctx.items[0].step("fetch", lambda: 1)

    due, got = await run_one_batch(fake, make_worker, wait_until, 1)
    assert got[due[0].id].status is FAILED
    assert "InvalidState: durable calls (step, sleep, invoke, wait_for_event) are not" in str(
        got[due[0].id].error
    )


async def test_a_batch_above_the_concurrency_is_warned_about(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    conductor.task("index", batch_size=50)(lambda ctx, payloads: None)
    with caplog.at_level(logging.WARNING, logger="pgconductor.worker"):
        await make_worker(concurrency=20).start()
    assert [r.getMessage() for r in caplog.records] == [
        "worker[default]: task index has batch_size 50 above the concurrency 20:"
        " its batches hold at most 20 executions"
    ]


# -- stop, cancel, lost lease ------------------------------------------------------------


async def test_a_stop_releases_a_batch_still_collecting_without_running_it(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    calls: list[int] = []

    @conductor.task("index", batch_size=100, batch_timeout=60)
    async def index(ctx: BatchContext, payloads: list[Any]) -> None:
        calls.append(len(payloads))

    due = rows(3)
    worker = await start(fake, make_worker, due, grace_period=30.0)
    await wait_until(lambda: worker.in_flight == 3)
    await asyncio.wait_for(worker.stop(), 5.0)  # no wait for a grace period: nothing ran
    got = results(fake)
    assert [got[r.id].status for r in due] == [RELEASED] * 3
    assert calls == []
    assert worker.stats.released == 3


async def test_a_stop_releases_a_running_batch_once_the_handler_stopped(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    running = asyncio.Event()
    stopped: list[bool] = []

    @conductor.task("index", batch_size=3)
    async def index(ctx: BatchContext, payloads: list[Any]) -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.append(ctx.cancelled)
            raise

    due = rows(3)
    worker = await start(fake, make_worker, due, grace_period=0.05)
    await asyncio.wait_for(running.wait(), 5.0)
    assert worker.held() == {r.id for r in due}  # every lease of the batch is kept
    await worker.stop()
    assert stopped == [True]
    assert [results(fake)[r.id].status for r in due] == [RELEASED] * 3


async def test_a_sync_batch_that_stops_at_a_shutdown_is_released(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    started = threading.Event()

    @conductor.task("index", batch_size=2)
    def index(ctx: BatchContext, payloads: list[Any]) -> None:
        started.set()
        while True:
            ctx.raise_if_cancelled()
            threading.Event().wait(0.005)

    due = rows(2)
    worker = await start(fake, make_worker, due, grace_period=0.05)
    await wait_until(started.is_set)
    await worker.stop()
    assert [results(fake)[r.id].status for r in due] == [RELEASED] * 2


async def test_a_cancel_of_one_execution_asks_only_that_item_to_stop(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    running, go_on = asyncio.Event(), asyncio.Event()

    @conductor.task("index", batch_size=3)
    async def index(ctx: BatchContext, payloads: list[Any]) -> list[Any]:
        running.set()
        await go_on.wait()
        assert not ctx.cancelled  # the batch goes on for the others
        return [Cancelled("skipped") if item.cancelled else "done" for item in ctx.items]

    due = rows(3)
    worker = await start(fake, make_worker, due)
    await asyncio.wait_for(running.wait(), 5.0)
    assert worker.cancel(due[1].id)
    go_on.set()
    await wait_until(lambda: len(flushed(fake)) == 3)
    got = results(fake)
    assert [got[r.id].status for r in due] == [COMPLETED, FAILED, COMPLETED]
    assert "Cancelled: skipped" in str(got[due[1].id].error)  # SQL ends it cancelled


async def test_a_cancel_of_every_execution_stops_the_handler(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    running = asyncio.Event()

    @conductor.task("index", batch_size=2)
    async def index(ctx: BatchContext, payloads: list[Any]) -> None:
        running.set()
        await asyncio.Event().wait()

    due = rows(2)
    worker = await start(fake, make_worker, due)
    await asyncio.wait_for(running.wait(), 5.0)
    worker.cancel(due[0].id)
    await asyncio.sleep(0)
    assert worker.in_flight == 2  # one cancel alone does not stop the batch
    worker.cancel(due[1].id)
    await wait_until(lambda: len(flushed(fake)) == 2)
    got = results(fake)
    assert [(got[r.id].status, got[r.id].error) for r in due] == [(FAILED, "cancelled")] * 2


async def test_a_cancel_while_collecting_leaves_that_execution_out_of_the_batch(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    seen: list[list[Any]] = []

    @conductor.task("index", batch_size=10, batch_timeout=0.2)
    async def index(ctx: BatchContext, payloads: list[Any]) -> None:
        seen.append(payloads)

    due = rows(3)
    worker = await start(fake, make_worker, due)
    await wait_until(lambda: worker.in_flight == 3)
    worker.cancel(due[0].id)
    await wait_until(lambda: len(flushed(fake)) == 3)
    assert seen == [[{"n": 1}, {"n": 2}]]
    got = results(fake)
    assert [(got[r.id].status, got[r.id].error) for r in due] == [
        (FAILED, "cancelled"),
        (COMPLETED, None),
        (COMPLETED, None),
    ]


async def test_a_lost_lease_drops_that_result_and_the_batch_goes_on(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    running, go_on = asyncio.Event(), asyncio.Event()

    @conductor.task("index", batch_size=3)
    async def index(ctx: BatchContext, payloads: list[Any]) -> str:
        running.set()
        await go_on.wait()
        return "done"

    due = rows(3)
    worker = await start(fake, make_worker, due)
    await asyncio.wait_for(running.wait(), 5.0)
    worker.lose_lease(due[0].id)
    go_on.set()
    await wait_until(lambda: worker.in_flight == 0 and len(flushed(fake)) == 2)
    assert set(results(fake)) == {due[1].id, due[2].id}


async def test_every_lease_lost_stops_the_handler_and_reports_nothing(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    running = asyncio.Event()
    stopped: list[bool] = []

    @conductor.task("index", batch_size=2)
    async def index(ctx: BatchContext, payloads: list[Any]) -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.append(True)

    due = rows(2)
    worker = await start(fake, make_worker, due)
    await asyncio.wait_for(running.wait(), 5.0)
    for row in due:
        worker.lose_lease(row.id)
    await wait_until(lambda: worker.in_flight == 0)
    assert stopped == [True]
    assert flushed(fake) == []


async def test_on_an_extension_without_retry_after_it_is_an_ordinary_failure(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    @conductor.task("index", batch_size=2)
    async def index(ctx: BatchContext, payloads: list[Any]) -> None:
        raise RetryAfter(1, "busy")

    due, got = await run_one_batch(fake, make_worker, wait_until, 2, retry_after=False)
    assert [(got[r.id].status, got[r.id].error) for r in due] == [
        (FAILED, "RetryAfter needs pgconductor extension 0.4.0 or newer: busy")
    ] * 2
