"""Worker pipeline against the fake client: backpressure, batching, abort, drain (G2, G5, G13)."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fakes import FakeDatabaseClient
from pgconductor.conductor import Conductor, TaskContext
from pgconductor.errors import TransientError
from pgconductor.types import ResultStatus, ReturnOutcome
from pgconductor.worker import Worker

from .engine_helpers import Backlog, claimed, flushed

WaitUntil = Callable[..., Any]


class Gate:
    """Handlers block on it; counts how many run at once."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.running = 0
        self.peak = 0
        self.started = 0
        self.finished: list[uuid.UUID] = []


@pytest.fixture
def fake() -> FakeDatabaseClient:
    return FakeDatabaseClient()


@pytest.fixture
def conductor(fake: FakeDatabaseClient) -> Conductor:
    return Conductor(fake)


@pytest.fixture
def gate(conductor: Conductor) -> Gate:
    gate = Gate()

    @conductor.task("gated")
    async def gated(ctx: TaskContext, payload: Any) -> str:
        gate.started += 1
        gate.running += 1
        gate.peak = max(gate.peak, gate.running)
        try:
            await gate.open.wait()
        finally:
            gate.running -= 1
            gate.finished.append(ctx.execution_id)
        return "ok"

    @conductor.task("quick")
    async def quick(ctx: TaskContext, payload: Any) -> Any:
        return payload

    @conductor.task("broken")
    async def broken(ctx: TaskContext, payload: Any) -> None:
        raise RuntimeError("broken handler")

    return gate


@pytest.fixture
async def make_worker(
    fake: FakeDatabaseClient, conductor: Conductor, gate: Gate
) -> AsyncIterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def make(**options: Any) -> Worker:
        options.setdefault("poll_interval", 60.0)
        options.setdefault("grace_period", 5.0)
        worker = Worker(fake, "default", conductor.tasks, uuid.uuid4(), **options)
        workers.append(worker)
        return worker

    yield make
    gate.open.set()
    for worker in workers:
        await worker.stop()


def rows(n: int, task_key: str = "gated", **kw: Any) -> list[Any]:
    return [claimed(task_key, **kw) for _ in range(n)]


async def test_never_claims_more_than_free_slots(
    fake: FakeDatabaseClient,
    make_worker: Callable[..., Worker],
    gate: Gate,
    wait_until: WaitUntil,
) -> None:
    backlog = Backlog(rows(10))
    worker = make_worker(concurrency=3)
    seen: list[tuple[int, int]] = []

    def answer(*args: Any) -> Any:
        seen.append((worker.in_flight, args[3]))
        return backlog(*args)

    fake.responses["get_executions"] = answer
    await worker.start()
    await wait_until(lambda: gate.running == 3)
    calls_when_full = fake.call_count("get_executions")
    worker.notify()  # a wake-up while every slot is taken must not claim anything
    await asyncio.sleep(0.02)
    assert fake.call_count("get_executions") == calls_when_full
    gate.open.set()
    await wait_until(lambda: len(flushed(fake)) == 10)
    assert all(running + n <= 3 for running, n in seen)
    assert gate.peak == 3


async def test_fetch_batch_caps_each_claim(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker], wait_until: WaitUntil
) -> None:
    backlog = Backlog(rows(10, "quick"))
    fake.responses["get_executions"] = backlog
    worker = make_worker(concurrency=10, fetch_batch=4)
    await worker.start()
    await wait_until(lambda: len(flushed(fake)) == 10)
    assert backlog.requests[:2] == [4, 4]
    assert max(backlog.requests) == 4


async def test_full_batch_fetches_again_without_waiting(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker], wait_until: WaitUntil
) -> None:
    backlog = Backlog(rows(12, "quick"))
    fake.responses["get_executions"] = backlog
    worker = make_worker(concurrency=20, fetch_batch=4, poll_interval=60.0)
    await worker.start()
    await wait_until(lambda: len(flushed(fake)) == 12, timeout=2.0)
    assert backlog.requests[:4] == [4, 4, 4, 4]  # the 4th came back short


async def test_notify_wakes_the_fetch_loop(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker], wait_until: WaitUntil
) -> None:
    backlog = Backlog()
    fake.responses["get_executions"] = backlog
    worker = make_worker(poll_interval=60.0)
    await worker.start()
    await wait_until(lambda: backlog.requests)
    backlog.add(*rows(2, "quick"))
    worker.notify()
    await wait_until(lambda: len(flushed(fake)) == 2, timeout=2.0)


async def test_short_claim_that_took_something_claims_again_after_its_flush(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker], wait_until: WaitUntil
) -> None:
    # A limit admits 2 a claim and no NOTIFY comes when they complete: the worker claims the
    # rest once their results are flushed, not at the next poll.
    backlog = Backlog(rows(6, "quick"))
    fake.responses["get_executions"] = lambda oid, queue, keys, n: backlog(
        oid, queue, keys, min(n, 2)
    )
    worker = make_worker(concurrency=10, poll_interval=60.0)
    await worker.start()
    await wait_until(lambda: len(flushed(fake)) == 6, timeout=2.0)
    assert backlog.requests[:3] == [2, 2, 2]


async def test_empty_claim_waits_for_notify_not_for_flushes(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker], wait_until: WaitUntil
) -> None:
    backlog = Backlog()
    fake.responses["get_executions"] = backlog
    worker = make_worker(concurrency=10, poll_interval=60.0)
    await worker.start()
    await wait_until(lambda: backlog.requests)
    backlog.add(*rows(3, "quick"))
    await asyncio.sleep(0.05)
    assert len(backlog.requests) == 1  # nothing wakes an idle worker but notify or the poll
    worker.notify()
    await wait_until(lambda: len(flushed(fake)) == 3, timeout=2.0)


async def test_polls_when_nobody_notifies(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker], wait_until: WaitUntil
) -> None:
    backlog = Backlog()
    fake.responses["get_executions"] = backlog
    worker = make_worker(poll_interval=0.02)
    await worker.start()
    await wait_until(lambda: len(backlog.requests) >= 2)
    backlog.add(*rows(1, "quick"))
    await wait_until(lambda: len(flushed(fake)) == 1)


async def test_results_are_completed_failed_and_fatal(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker], wait_until: WaitUntil
) -> None:
    ok, bad, unknown = claimed("quick", {"v": 1}), claimed("broken"), claimed("nope")
    fake.responses["get_executions"] = Backlog([ok, bad, unknown])
    worker = make_worker()
    await worker.start()
    await wait_until(lambda: len(flushed(fake)) == 3)
    by_id = {r.id: r for r in flushed(fake)}
    assert by_id[ok.id].status is ResultStatus.COMPLETED
    assert by_id[ok.id].result == {"v": 1}
    assert by_id[bad.id].status is ResultStatus.FAILED
    assert "broken handler" in (by_id[bad.id].error or "")
    assert by_id[unknown.id].status is ResultStatus.FATAL
    assert by_id[ok.id].lease == ok.lease


async def test_slots_come_back_after_failures(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker], wait_until: WaitUntil
) -> None:
    """G2: whatever a handler does, its slot is returned."""
    backlog = Backlog(rows(9, "broken") + rows(3, "quick", payload="not-a-dict"))
    fake.responses["get_executions"] = backlog
    worker = make_worker(concurrency=3)
    await worker.start()
    await wait_until(lambda: len(flushed(fake)) == 12)
    assert worker.in_flight == 0
    backlog.add(*rows(3, "quick"))
    worker.notify()
    await wait_until(lambda: len(flushed(fake)) == 15)
    assert backlog.requests[-2] == 3  # all three slots free again


async def test_flush_by_size(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker], wait_until: WaitUntil
) -> None:
    fake.responses["get_executions"] = Backlog(rows(10, "quick"))
    worker = make_worker(concurrency=10, flush_batch=5, flush_interval=60.0)
    await worker.start()
    await wait_until(lambda: len(flushed(fake)) == 10, timeout=2.0)
    assert [len(args[1]) for args, _ in fake.calls_to("return_executions")] == [5, 5]


async def test_flush_by_interval(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker], wait_until: WaitUntil
) -> None:
    fake.responses["get_executions"] = Backlog(rows(3, "quick"))
    worker = make_worker(concurrency=10, flush_batch=100, flush_interval=0.02)
    await worker.start()
    await wait_until(lambda: len(flushed(fake)) == 3)
    assert fake.call_count("return_executions") == 1


async def test_flush_retries_the_same_batch(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker], wait_until: WaitUntil
) -> None:
    fake.simulate_error("return_executions", TransientError("db gone", sqlstate="57P01"), times=2)
    fake.responses["get_executions"] = Backlog(rows(4, "quick"))
    worker = make_worker(concurrency=4, flush_batch=4)
    await worker.start()
    await fake.wait_for_call("return_executions", 3)
    batches = [args[1] for args, _ in fake.calls_to("return_executions")]
    assert len(batches[0]) == 4
    assert batches[0] == batches[1] == batches[2]
    await wait_until(lambda: worker.stats.flushed == 4)
    assert worker.stats.flush_errors == 2


async def test_stale_outcomes_are_logged(
    fake: FakeDatabaseClient,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.responses["get_executions"] = Backlog(rows(1, "quick"))
    fake.responses["return_executions"] = lambda oid, results: [
        ReturnOutcome(r.id, "stale") for r in results
    ]
    worker = make_worker()
    with caplog.at_level(logging.WARNING, logger="pgconductor.worker"):
        await worker.start()
        await wait_until(lambda: worker.stats.stale == 1)
    assert any("stale" in r.getMessage() for r in caplog.records)


async def test_fetch_errors_are_retried(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker], wait_until: WaitUntil
) -> None:
    fake.simulate_error("get_executions", TransientError("down", sqlstate="08006"), times=2)
    fake.responses["get_executions"] = Backlog(rows(1, "quick"))
    worker = make_worker()
    await worker.start()
    await wait_until(lambda: len(flushed(fake)) == 1, timeout=5.0)
    assert worker.stats.fetch_errors == 2


async def test_stop_releases_only_after_the_handler_stopped(
    fake: FakeDatabaseClient,
    make_worker: Callable[..., Worker],
    gate: Gate,
    wait_until: WaitUntil,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """G5: the released result is sent after the handler's own cleanup has run."""
    row = claimed("gated")
    fake.responses["get_executions"] = Backlog([row])
    finished_at_flush: list[bool] = []

    def record(oid: Any, results: Any) -> list[ReturnOutcome]:
        finished_at_flush.append(row.id in gate.finished)
        return [ReturnOutcome(r.id, "released") for r in results]

    fake.responses["return_executions"] = record
    worker = make_worker(grace_period=0.02, abort_grace=5.0)
    await worker.start()
    await wait_until(lambda: gate.running == 1)
    with caplog.at_level(logging.INFO, logger="pgconductor.worker"):
        await worker.stop()
    assert flushed(fake)[0].status is ResultStatus.RELEASED
    assert finished_at_flush == [True]
    assert worker.abandoned == 0
    assert (worker.stats.finished, worker.stats.released) == (0, 1)
    assert any("stopped (0 finished, 1 released," in r.getMessage() for r in caplog.records)


async def test_stop_waits_the_grace_period_for_handlers(
    fake: FakeDatabaseClient,
    make_worker: Callable[..., Worker],
    gate: Gate,
    wait_until: WaitUntil,
) -> None:
    fake.responses["get_executions"] = Backlog(rows(2))
    worker = make_worker(grace_period=10.0)
    await worker.start()
    await wait_until(lambda: gate.running == 2)
    stopping = asyncio.ensure_future(worker.stop())
    await wait_until(lambda: worker._stopping)
    gate.open.set()
    await stopping
    assert [r.status for r in flushed(fake)] == [ResultStatus.COMPLETED] * 2


async def test_stuck_sync_handler_is_abandoned_not_released(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
) -> None:
    release = threading.Event()
    entered = threading.Event()

    @conductor.task("stuck")
    def stuck(ctx: TaskContext, payload: Any) -> None:
        entered.set()
        release.wait(10)  # ignores ctx.cancelled

    try:
        fake.responses["get_executions"] = Backlog(rows(1, "stuck"))
        worker = make_worker(grace_period=0.01, abort_grace=0.05)
        await worker.start()
        await asyncio.to_thread(entered.wait, 5)
        await worker.stop()
        assert flushed(fake) == []
        assert worker.abandoned == 1
    finally:
        release.set()


async def test_force_skips_the_grace_period(
    fake: FakeDatabaseClient,
    make_worker: Callable[..., Worker],
    gate: Gate,
    wait_until: WaitUntil,
) -> None:
    fake.responses["get_executions"] = Backlog(rows(1))
    worker = make_worker(grace_period=60.0, abort_grace=60.0)
    await worker.start()
    await wait_until(lambda: gate.running == 1)
    stopping = asyncio.ensure_future(worker.stop())
    await wait_until(lambda: worker._stopping)
    worker.force()
    await asyncio.wait_for(stopping, 5.0)
    assert flushed(fake)[0].status is ResultStatus.RELEASED


async def test_cancel_one_running_handler(
    fake: FakeDatabaseClient,
    make_worker: Callable[..., Worker],
    gate: Gate,
    wait_until: WaitUntil,
) -> None:
    target, other = claimed("gated"), claimed("gated")
    fake.responses["get_executions"] = Backlog([target, other])
    worker = make_worker()
    await worker.start()
    await wait_until(lambda: gate.running == 2)
    assert worker.cancel(target.id)
    assert not worker.cancel(uuid.uuid4())
    await wait_until(lambda: len(flushed(fake)) == 1)
    result = flushed(fake)[0]
    assert (result.id, result.status, result.error) == (
        target.id,
        ResultStatus.FAILED,
        "cancelled",
    )
    assert gate.running == 1


async def test_lost_lease_reports_nothing(
    fake: FakeDatabaseClient,
    make_worker: Callable[..., Worker],
    gate: Gate,
    wait_until: WaitUntil,
) -> None:
    row = claimed("gated")
    fake.responses["get_executions"] = Backlog([row])
    worker = make_worker()
    await worker.start()
    await wait_until(lambda: gate.running == 1)
    assert worker.lose_lease(row.id)
    await wait_until(lambda: worker.in_flight == 0)
    await worker.stop()
    assert flushed(fake) == []


async def test_rows_claimed_during_stop_are_released(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker], wait_until: WaitUntil
) -> None:
    answer = asyncio.Event()
    late = claimed("quick")

    async def slow_fetch(*args: Any) -> list[Any]:
        await answer.wait()
        return [late]

    fake.responses["get_executions"] = slow_fetch
    worker = make_worker()
    await worker.start()
    await fake.wait_for_call("get_executions")
    stopping = asyncio.ensure_future(worker.stop())
    await wait_until(lambda: worker._stopping)
    answer.set()
    await stopping
    assert [(r.id, r.status) for r in flushed(fake)] == [(late.id, ResultStatus.RELEASED)]
    assert (worker.stats.finished, worker.stats.released) == (0, 1)


async def test_drain_does_not_stop_while_handlers_run(
    fake: FakeDatabaseClient,
    make_worker: Callable[..., Worker],
    gate: Gate,
    wait_until: WaitUntil,
) -> None:
    """G13: an empty fetch while handlers run is not the end of the work."""
    backlog = Backlog([*rows(2), claimed("quick")])
    fake.responses["get_executions"] = backlog
    worker = make_worker(concurrency=4, poll_interval=60.0)
    draining = asyncio.ensure_future(worker.drain())
    # The quick one finishes, its slot frees, and the next fetch comes back empty while the
    # two gated handlers still run: the original drain() stopped right there.
    await wait_until(lambda: gate.running == 2 and len(backlog.requests) >= 2)
    assert not draining.done()
    backlog.add(*rows(2))  # e.g. work that became due while the first two ran
    gate.open.set()
    await asyncio.wait_for(draining, 5.0)
    assert len(flushed(fake)) == 5
    assert all(r.status is ResultStatus.COMPLETED for r in flushed(fake))
    assert backlog.rows == []


async def test_drain_of_an_empty_queue_returns(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker()
    await asyncio.wait_for(worker.drain(), 5.0)
    assert not worker.started


async def test_start_and_stop_are_idempotent(
    make_worker: Callable[..., Worker],
) -> None:
    worker = make_worker()
    await worker.stop()  # before start: nothing happens
    await worker.start()
    await worker.start()
    assert worker.started
    await asyncio.gather(worker.stop(), worker.stop())
    await worker.stop()
    assert not worker.started
    with pytest.raises(RuntimeError, match="cannot be started again"):
        await worker.start()


def test_rejects_bad_sizes(fake: FakeDatabaseClient) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Worker(fake, "default", {}, uuid.uuid4(), concurrency=0)


async def test_unflushable_results_are_given_up_at_stop(
    fake: FakeDatabaseClient,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.simulate_error("return_executions", TransientError("db gone", sqlstate="57P01"))
    fake.responses["get_executions"] = Backlog(rows(2, "quick"))
    worker = make_worker(flush_timeout=0.05)
    await worker.start()
    await wait_until(lambda: worker.stats.finished == 2)
    with caplog.at_level(logging.ERROR, logger="pgconductor.worker"):
        await asyncio.wait_for(worker.stop(), 10.0)
    assert any("could not be flushed" in r.getMessage() for r in caplog.records)
    assert worker.stats.flushed == 0


async def test_an_executor_bug_fails_the_execution(
    fake: FakeDatabaseClient,
    make_worker: Callable[..., Worker],
    wait_until: WaitUntil,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken_execute(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("executor bug")

    monkeypatch.setattr("pgconductor.worker.execute", broken_execute)
    fake.responses["get_executions"] = Backlog(rows(1, "quick"))
    worker = make_worker()
    await worker.start()
    await wait_until(lambda: len(flushed(fake)) == 1)
    result = flushed(fake)[0]
    assert result.status is ResultStatus.FAILED
    assert "AssertionError: executor bug" in (result.error or "")
    assert worker.in_flight == 0
