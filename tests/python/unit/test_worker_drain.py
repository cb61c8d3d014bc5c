"""A draining worker's empty claim against the fake client: it ends the drain only when
`has_due_work` says nothing due waits for a limit (G13 with concurrency and rate limits)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fakes import FakeDatabaseClient
from pgconductor.conductor import Conductor, TaskContext
from pgconductor.errors import TransientError
from pgconductor.types import ClaimedExecution, ResultStatus
from pgconductor.worker import Worker

from .engine_helpers import Backlog, claimed, flushed


class HeldElsewhere:
    """A limited task whose slots other workers hold for the first `held` claims: those
    claims come back empty while `has_due_work` says the rows still wait."""

    def __init__(self, rows: list[ClaimedExecution], held: int) -> None:
        self.backlog = Backlog(rows)
        self.held = held
        self.claims = 0
        self.answers: list[bool] = []

    def claim(
        self, orchestrator_id: Any, queue: str, task_keys: Any, batch_size: int
    ) -> list[ClaimedExecution]:
        self.claims += 1
        if self.claims <= self.held:
            return []
        return self.backlog(orchestrator_id, queue, task_keys, batch_size)

    def due(self, queue: str, task_keys: Any) -> bool:
        self.answers.append(bool(self.backlog.rows))
        return self.answers[-1]


@pytest.fixture
def fake() -> FakeDatabaseClient:
    return FakeDatabaseClient()


@pytest.fixture
async def make_worker(fake: FakeDatabaseClient) -> AsyncIterator[Callable[..., Worker]]:
    conductor = Conductor(fake)

    @conductor.task("quick")
    async def quick(ctx: TaskContext, payload: Any) -> Any:
        return payload

    @conductor.task("other")
    async def other(ctx: TaskContext, payload: Any) -> Any:
        return payload

    workers: list[Worker] = []

    def make(**options: Any) -> Worker:
        options.setdefault("poll_interval", 0.01)
        worker = Worker(fake, "default", conductor.tasks, uuid.uuid4(), **options)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        await worker.stop()


async def test_an_empty_claim_while_a_limit_holds_due_work_keeps_draining(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker]
) -> None:
    limited = HeldElsewhere([claimed("quick") for _ in range(3)], held=4)
    fake.responses["get_executions"] = limited.claim
    fake.responses["has_due_work"] = limited.due
    worker = make_worker()
    await asyncio.wait_for(worker.drain(), 5.0)
    results = flushed(fake)
    assert len(results) == 3
    assert all(r.status is ResultStatus.COMPLETED for r in results)
    assert limited.backlog.rows == []
    # each of the four empty claims asked and was told to go on; the one after the rows ran
    # was told that nothing waits any more
    assert limited.answers == [True, True, True, True, False]
    assert fake.calls_to("has_due_work")[0] == (("default", ["other", "quick"]), {})


async def test_an_empty_claim_with_nothing_due_ends_the_drain(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker]
) -> None:
    backlog = Backlog([claimed("quick") for _ in range(2)])
    fake.responses["get_executions"] = backlog
    worker = make_worker(concurrency=2)
    await asyncio.wait_for(worker.drain(), 5.0)
    assert len(flushed(fake)) == 2
    # only the empty claim of the idle worker asks (not one made while results were still
    # unflushed), once: nothing due, so the drain ends right there
    asked = [name for name, _, _ in fake.calls if name in ("get_executions", "has_due_work")]
    assert asked.count("has_due_work") == 1
    assert asked[-2:] == ["get_executions", "has_due_work"]


async def test_a_stop_ends_a_drain_that_waits_for_a_limit(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker]
) -> None:
    fake.responses["has_due_work"] = True  # the slots stay held elsewhere
    worker = make_worker(poll_interval=60.0)
    draining = asyncio.ensure_future(worker.drain())
    await fake.wait_for_call("has_due_work")
    assert not draining.done()
    await worker.stop()
    await asyncio.wait_for(draining, 5.0)
    assert fake.call_count("get_executions") == 1  # waiting its poll interval when stopped


async def test_a_failed_has_due_work_claims_again(
    fake: FakeDatabaseClient, make_worker: Callable[..., Worker]
) -> None:
    fake.simulate_error("has_due_work", TransientError("connection lost"), times=1)
    worker = make_worker()
    await asyncio.wait_for(worker.drain(), 5.0)
    assert fake.call_count("get_executions") == 2
    assert fake.call_count("has_due_work") == 2
    assert worker.stats.fetch_errors == 1
