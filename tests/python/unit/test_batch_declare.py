"""Batch tasks declared on `@conductor.task(...)` (what a task carries, the checks at
decoration) and the `BatchContext` a batch handler gets."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest

from fakes import FakeDatabaseClient
from pgconductor.batching import DEFAULT_BATCH_TIMEOUT, BatchContext, BatchSettings
from pgconductor.conductor import Conductor, TaskContext
from pgconductor.errors import Cancelled, InvalidInput


@pytest.fixture
def conductor() -> Conductor:
    return Conductor(FakeDatabaseClient())


async def handler(ctx: BatchContext, payloads: list[Any]) -> None:
    return None


def test_batch_size_makes_a_batch_task_with_the_default_timeout(conductor: Conductor) -> None:
    task = conductor.task("index", batch_size=100)(handler)
    assert task.batch == BatchSettings(100, DEFAULT_BATCH_TIMEOUT)
    assert timedelta(seconds=1) == DEFAULT_BATCH_TIMEOUT
    assert "batch_size" not in task.spec.declared  # nothing of it goes to SQL
    assert conductor.task("plain")(handler).batch is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (0.5, timedelta(seconds=0.5)),
        (0, timedelta(0)),
        (timedelta(seconds=3), timedelta(3 / 86400)),
    ],
)
def test_batch_timeout_takes_seconds_or_a_timedelta(
    conductor: Conductor, given: Any, expected: timedelta
) -> None:
    task = conductor.task("index", batch_size=10, batch_timeout=given)(handler)
    assert task.batch == BatchSettings(10, expected)


def test_event_and_table_sources_may_feed_a_batch_task(conductor: Conductor) -> None:
    task = conductor.task("audit", on_table="public.orders", batch_size=50, max_running=2)(handler)
    assert task.batch is not None
    assert task.batch.size == 50
    assert task.sources.tables[0].table == "public.orders"
    assert task.spec.max_running == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "task 'b': batch_size must be an integer of at least 1, got 0"),
        ({"batch_size": -3}, "batch_size must be an integer of at least 1, got -3"),
        ({"batch_size": True}, "batch_size must be an integer of at least 1, got True"),
        ({"batch_size": 2.5}, "batch_size must be an integer of at least 1, got 2.5"),
        ({"batch_size": "10"}, "batch_size must be an integer of at least 1, got '10'"),
        ({"batch_size": 5, "batch_timeout": -0.1}, "task 'b': batch_timeout must not be negative"),
        ({"batch_size": 5, "batch_timeout": float("nan")}, "must be a finite number of seconds"),
        ({"batch_size": 5, "batch_timeout": float("inf")}, "must be a finite number of seconds"),
        ({"batch_size": 5, "batch_timeout": "1s"}, "batch_timeout must be seconds or a timedelta"),
        ({"batch_timeout": 1.0}, "task 'b': batch_timeout needs batch_size"),
        ({"batch_size": 5, "cron": "* * * * *"}, "task 'b': a batch task cannot have a schedule"),
    ],
)
def test_bad_batch_settings_are_one_line_errors_and_register_nothing(
    conductor: Conductor, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        conductor.task("b", **options)(handler)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert raised.value.sqlstate == "22023"
    assert conductor.tasks == {}


def items(n: int) -> list[TaskContext]:
    return [TaskContext(uuid.uuid4(), "index", "default", 1, 3) for _ in range(n)]


def test_the_batch_context_lists_its_items_and_reads_the_extra_context() -> None:
    mine = items(3)
    ctx = BatchContext("index", "default", mine, {"db": "the db"})
    assert len(ctx) == 3
    assert ctx.items == tuple(mine)
    assert ctx.execution_ids == [item.execution_id for item in mine]
    assert ctx.db == "the db"
    assert ctx.extra["db"] == "the db"
    assert repr(ctx) == "BatchContext(task_key='index', queue='default', size=3)"
    with pytest.raises(AttributeError, match="no attribute or extra context 'nope'"):
        _ = ctx.nope


def test_the_batch_logger_names_the_task_and_the_size(caplog: pytest.LogCaptureFixture) -> None:
    mine = items(2)
    ctx = BatchContext("index", "default", mine, logger=logging.getLogger("test.batch"))
    with caplog.at_level(logging.INFO, logger="test.batch"):
        ctx.logger.info("indexed %d", 2)
    [record] = caplog.records
    assert record.getMessage() == "index batch of 2: indexed 2"
    assert record.task_key == "index"  # type: ignore[attr-defined]
    assert record.execution_ids == [str(i.execution_id) for i in mine]  # type: ignore[attr-defined]


async def test_a_stop_request_reaches_the_batch_context() -> None:
    ctx = BatchContext("index", "default", items(1))
    ctx.raise_if_cancelled()  # not asked: nothing
    event = ctx.cancel_event
    assert not ctx.cancelled
    ctx.request_stop()
    assert ctx.cancelled
    assert ctx.is_cancelled()
    await asyncio.wait_for(event.wait(), 1.0)
    with pytest.raises(Cancelled, match="batch of 1 executions of index was asked to stop"):
        ctx.raise_if_cancelled()
    late = BatchContext("index", "default", items(1))
    late.request_stop()
    assert late.cancel_event.is_set()  # made after the request: set at once


def test_the_batch_context_is_exported_by_the_package() -> None:
    import pgconductor

    assert pgconductor.BatchContext is BatchContext
    assert "BatchContext" in pgconductor.__all__
