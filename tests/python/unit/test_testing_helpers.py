"""pgconductor.testing's in-process runners against the fake client (the fixtures and the
clock need a server: tests/python/integration/test_testing_plugin.py)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from fakes import FakeDatabaseClient
from pgconductor.batching import BatchContext
from pgconductor.conductor import Conductor, TaskContext
from pgconductor.db import SqlDatabaseClient
from pgconductor.errors import NotFound, PgConductorError
from pgconductor.testing import (
    CLAIM_BATCH,
    DatabaseClock,
    Ran,
    connected,
    drain,
    run_execution,
    run_inline,
    server_url,
)
from pgconductor.types import ExecutionInfo, ResultStatus

from .engine_helpers import Backlog, claimed, flushed


@pytest.fixture
def fake() -> FakeDatabaseClient:
    return FakeDatabaseClient()


@pytest.fixture
def conductor(fake: FakeDatabaseClient) -> Conductor:
    conductor = Conductor(fake, context={"greeting": "hello"})

    @conductor.task("greet", queue="mail")
    async def greet(ctx: TaskContext, payload: Any) -> str:
        return f"{ctx.greeting} {payload['name']}"

    return conductor


def info(execution_id: uuid.UUID, state: str, result: Any = None) -> ExecutionInfo:
    return ExecutionInfo(execution_id, "greet", "mail", state, 1, 0, None, None, None, result, None)


async def test_run_inline_claims_its_own_execution_and_gives_back_the_others(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    mine = claimed("greet", {"name": "ada"}, queue="mail")
    others = [claimed("greet", {"name": "bob"}, queue="mail") for _ in range(CLAIM_BATCH + 1)]
    fake.responses["invoke"] = lambda *args, **kwargs: mine.id
    fake.responses["get_executions"] = Backlog([*others, mine])
    states = iter(["pending", "completed"])
    fake.responses["get_execution"] = lambda execution_id: info(
        execution_id, next(states), "hello ada"
    )
    ran = await run_inline(conductor, "greet", {"name": "ada"})
    assert ran == Ran(mine.id, "completed", "completed", 1, "hello ada", None)
    assert ran.completed
    assert fake.call_count("declare_task") == 1  # declared first, as a worker does
    results = flushed(fake)
    assert results[0].id == mine.id
    assert results[0].result == "hello ada"
    assert [r.status for r in results[1:]] == [ResultStatus.RELEASED] * len(others)
    assert {r.id for r in results[1:]} == {o.id for o in others}
    [(args, _kwargs)] = fake.calls_to("release_orchestrator")
    assert args[0] == fake.calls_to("get_executions")[0][0][0]


async def test_run_execution_refuses_what_is_not_due(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    execution_id = uuid.uuid4()
    fake.responses["get_execution"] = lambda i: info(i, "pending")
    with pytest.raises(PgConductorError, match="is not due") as raised:
        await run_execution(conductor, execution_id)
    assert raised.value.hint is not None
    assert "move the clock" in raised.value.hint
    assert fake.call_count("release_orchestrator") == 1


async def test_run_execution_of_an_unknown_id_or_task(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        await run_execution(conductor, uuid.uuid4())
    fake.responses["get_execution"] = lambda i: dataclasses.replace(
        info(i, "pending"), task_key="unknown"
    )
    with pytest.raises(PgConductorError, match="no task 'unknown'"):
        await run_execution(conductor, uuid.uuid4())


async def test_drain_runs_every_queue_of_the_tasks(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    conductor.task("other", queue="default")(lambda ctx, payload: None)
    backlog = Backlog([claimed("greet", {"name": str(n)}, queue="mail") for n in range(3)])
    queues: list[str] = []

    def get(oid: Any, queue: str, keys: Any, size: int) -> Any:
        queues.append(queue)
        return backlog(oid, queue, keys, size) if queue == "mail" else []

    fake.responses["get_executions"] = get
    assert await drain(conductor) == 3
    assert sorted(set(queues)) == ["default", "mail"]
    assert [r.result for r in flushed(fake)] == ["hello 0", "hello 1", "hello 2"]
    assert fake.call_count("release_orchestrator") == 1
    assert await drain(conductor, queue="mail") == 0


async def test_connected_swaps_the_client_for_a_block(conductor: Conductor) -> None:
    before = conductor.client
    async with connected(conductor, "postgresql://u@127.0.0.1:1/db") as same:
        assert same is conductor
        assert isinstance(conductor.client, SqlDatabaseClient)
    assert conductor.client is before


def test_server_url_prefers_the_option_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def config(option: str | None) -> Any:
        return SimpleNamespace(getoption=lambda name, default=None: option)

    monkeypatch.delenv("PGCONDUCTOR_TEST_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert server_url(config(None)) is None
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/one")
    assert server_url(config(None)) == "postgresql://db/one"
    monkeypatch.setenv("PGCONDUCTOR_TEST_URL", "postgresql://db/two")
    assert server_url(config(None)) == "postgresql://db/two"
    assert server_url(config("postgresql://db/three")) == "postgresql://db/three"


def test_the_clock_needs_an_aware_time() -> None:
    clock = DatabaseClock.__new__(DatabaseClock)
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2030, 1, 1))


def of(task_key: str, found: ExecutionInfo) -> ExecutionInfo:
    return dataclasses.replace(found, task_key=task_key)


async def test_run_inline_hands_the_handler_the_occurrence_of_a_scheduled_run(
    conductor: Conductor,
) -> None:
    fake = FakeDatabaseClient("0.8.0")
    conductor.client = fake
    due = datetime(2030, 1, 1, 6, tzinfo=UTC)
    seen: list[datetime | None] = []

    @conductor.task("report", queue="mail")
    async def report(ctx: TaskContext, payload: Any) -> None:
        seen.append(await ctx.scheduled_at())

    mine = claimed("report", queue="mail")
    fake.responses["invoke"] = lambda *args, **kwargs: mine.id
    fake.responses["get_executions"] = Backlog([mine])
    fake.responses["get_execution"] = lambda i: of("report", info(i, "completed"))
    fake.responses["occurrence_of"] = lambda execution_id: due
    await run_inline(conductor, "report")
    assert seen == [due]
    assert fake.calls_to("occurrence_of") == [((mine.id,), {})]


async def test_run_inline_on_an_extension_before_sources_has_no_occurrence(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    seen: list[datetime | None] = []

    @conductor.task("report", queue="mail")
    async def report(ctx: TaskContext, payload: Any) -> None:
        seen.append(await ctx.scheduled_at())

    mine = claimed("report", queue="mail")
    fake.responses["invoke"] = lambda *args, **kwargs: mine.id
    fake.responses["get_executions"] = Backlog([mine])
    fake.responses["get_execution"] = lambda i: of("report", info(i, "completed"))
    await run_inline(conductor, "report")  # the fake says 0.1.0
    assert seen == [None]
    assert fake.call_count("occurrence_of") == 0


async def test_run_inline_of_a_batch_task_runs_a_batch_of_that_execution(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    seen: list[tuple[list[Any], list[uuid.UUID], str]] = []

    @conductor.task("index", queue="mail", batch_size=50)
    async def index(ctx: BatchContext, payloads: list[Any]) -> list[int]:
        seen.append((payloads, ctx.execution_ids, ctx.greeting))
        return [p["n"] + 1 for p in payloads]

    mine = claimed("index", {"n": 41}, queue="mail")
    other = claimed("index", {"n": 0}, queue="mail")
    fake.responses["invoke"] = lambda *args, **kwargs: mine.id
    fake.responses["get_executions"] = Backlog([other, mine])
    fake.responses["get_execution"] = lambda i: of("index", info(i, "completed", 42))
    ran = await run_inline(conductor, "index", {"n": 41})
    assert seen == [([{"n": 41}], [mine.id], "hello")]
    assert ran.result == 42
    assert [(r.id, r.status, r.result) for r in flushed(fake)] == [
        (mine.id, ResultStatus.COMPLETED, 42),
        (other.id, ResultStatus.RELEASED, None),
    ]
