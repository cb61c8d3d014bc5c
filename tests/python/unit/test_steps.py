"""`StepWriter`: one save_steps call per cycle, each handler waits for its group's commit."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from fakes import FakeDatabaseClient
from pgconductor.errors import TransientError
from pgconductor.steps import StepWriter
from pgconductor.workflow import LeaseLost


async def test_saves_of_one_cycle_go_in_one_call_and_each_waits_for_it() -> None:
    fake = FakeDatabaseClient()
    orchestrator = uuid.uuid4()
    writer = StepWriter(fake, orchestrator, interval=0.01)
    ids = [uuid.uuid4() for _ in range(5)]
    await asyncio.gather(*(writer.save(i, 7, f"k{n}", n, {"n": n}) for n, i in enumerate(ids)))
    assert fake.call_count("save_steps") == 1
    ((args, _),) = fake.calls_to("save_steps")
    assert args == (
        orchestrator,
        ids,
        [7] * 5,
        [f"k{n}" for n in range(5)],
        list(range(5)),
        [{"n": n} for n in range(5)],
    )
    assert (writer.saved, writer.stale, writer.calls) == (5, 0, 1)
    assert await writer.close() == 0


async def test_a_stale_step_raises_lease_lost_and_tells_the_worker() -> None:
    fake = FakeDatabaseClient()
    stale_id, fine_id = uuid.uuid4(), uuid.uuid4()
    fake.responses["save_steps"] = lambda o, ids, leases, keys, seqs, results: [
        (i, k, "stale" if i == stale_id else "saved") for i, k in zip(ids, keys, strict=True)
    ]
    told: list[uuid.UUID] = []
    writer = StepWriter(fake, uuid.uuid4(), interval=0.01, on_stale=told.append)
    outcomes = await asyncio.gather(
        writer.save(stale_id, 1, "a", 0, 1),
        writer.save(fine_id, 1, "a", 0, 1),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], LeaseLost)
    assert outcomes[1] is None
    assert told == [stale_id]
    await writer.close()


async def test_a_failed_call_is_retried_with_the_same_group() -> None:
    fake = FakeDatabaseClient()
    fake.simulate_error("save_steps", TransientError("down", sqlstate="57P01"), times=2)
    writer = StepWriter(fake, uuid.uuid4(), interval=0.001)
    writer._batcher.retry_base = 0.001
    await writer.save(uuid.uuid4(), 1, "a", 0, "x")
    calls = fake.calls_to("save_steps")
    assert len(calls) == 3
    assert calls[0] == calls[2]
    await writer.close()


async def test_after_close_nothing_is_written() -> None:
    fake = FakeDatabaseClient()
    writer = StepWriter(fake, uuid.uuid4())
    assert await writer.close() == 0
    with pytest.raises(LeaseLost):
        await writer.save(uuid.uuid4(), 1, "a", 0, None)
    assert fake.calls == []


async def test_close_gives_up_on_a_group_that_cannot_be_written() -> None:
    fake = FakeDatabaseClient()
    fake.simulate_error("save_steps", TransientError("down", sqlstate="57P01"))
    writer = StepWriter(fake, uuid.uuid4(), interval=0.001)
    writer._batcher.retry_base = 0.001
    pending: Any = asyncio.ensure_future(writer.save(uuid.uuid4(), 1, "a", 0, None))
    await fake.wait_for_call("save_steps")
    assert await writer.close(0.05) == 1
    with pytest.raises(LeaseLost):
        await pending
