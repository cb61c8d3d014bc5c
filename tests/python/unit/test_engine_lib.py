"""pgconductor.lib: jittered delays, waiting on an event with a clock, the daemon pool."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgconductor.clock import SystemClock
from pgconductor.lib.backoff import exponential, jittered
from pgconductor.lib.event import wait_event
from pgconductor.lib.threadpool import DaemonThreadPool

unit = st.floats(min_value=0.0, max_value=1.0)


@given(
    st.floats(min_value=0.0, max_value=1e6),
    st.floats(min_value=0.0, max_value=1.0),
    unit,
)
def test_jittered_stays_within_the_spread(seconds: float, spread: float, r: float) -> None:
    value = jittered(seconds, spread, rand=lambda: r)
    assert value >= 0.0
    assert seconds * (1 - spread) - 1e-9 <= value <= seconds * (1 + spread) + 1e-9


def test_jittered_of_nothing_is_nothing() -> None:
    assert jittered(0.0) == 0.0
    assert jittered(-1.0) == 0.0


@given(
    st.integers(min_value=1, max_value=500),
    st.floats(0.001, 10.0),
    st.floats(0.0, 60.0),
    unit,
)
def test_exponential_is_capped_and_at_least_half(
    attempt: int, base: float, cap: float, r: float
) -> None:
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 60))
    value = exponential(attempt, base, cap, rand=lambda: r)
    assert ceiling / 2 - 1e-9 <= value <= ceiling + 1e-9


async def test_wait_event_variants() -> None:
    clock = SystemClock()
    event = asyncio.Event()
    assert await wait_event(event, 0, clock) is False
    assert await wait_event(event, 0.001, clock) is False
    event.set()
    assert await wait_event(event, 10.0, clock) is True
    other = asyncio.Event()
    asyncio.get_running_loop().call_soon(other.set)
    assert await wait_event(other, None, clock) is True


async def test_wait_event_lets_its_own_cancellation_through() -> None:
    waiting = asyncio.ensure_future(wait_event(asyncio.Event(), 3600.0, SystemClock()))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_pool_reuses_idle_threads_and_keeps_context() -> None:
    pool = DaemonThreadPool("test-pool")
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    var.set("caller")
    names = [
        await pool.submit(lambda: (threading.current_thread().name, var.get())) for _ in range(5)
    ]
    assert {n for n, _ in names} == {"test-pool-0"}
    assert {v for _, v in names} == {"caller"}
    assert pool.size == 1
    assert all(t.daemon for t in pool._threads)
    pool.close()
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(lambda: None)


async def test_pool_grows_while_threads_are_busy_and_passes_errors() -> None:
    pool = DaemonThreadPool()
    release = threading.Event()
    blocked = [pool.submit(release.wait, 10) for _ in range(3)]

    def fail() -> None:
        raise ZeroDivisionError("in a thread")

    with pytest.raises(ZeroDivisionError, match="in a thread"):
        await pool.submit(fail)
    assert pool.size == 4
    release.set()
    assert await asyncio.gather(*blocked) == [True, True, True]
    pool.close()


async def test_pool_tolerates_a_cancelled_future() -> None:
    pool = DaemonThreadPool()
    release = threading.Event()
    future = pool.submit(release.wait, 10)
    future.cancel()
    release.set()
    assert await pool.submit(lambda: 42) == 42  # the worker thread survived
    pool.close()


async def test_batcher_reports_buffered_and_in_flight_items_as_unsent() -> None:
    """unsent() covers the batch being sent too: its leases are still needed."""
    from pgconductor.lib.batcher import Batcher

    release, sending = asyncio.Event(), asyncio.Event()
    sent: list[list[int]] = []

    async def send(batch: list[int]) -> None:
        sending.set()
        await release.wait()
        sent.append(batch)

    batcher: Batcher[int] = Batcher(send, max_size=2, interval=0.001, clock=SystemClock())
    runner = asyncio.create_task(batcher.run())
    for item in (1, 2, 3):
        batcher.push(item)
    await sending.wait()  # the first batch is on its way
    assert sorted(batcher.unsent()) == [1, 2, 3]
    release.set()
    assert await batcher.close(runner, timeout=5.0) == 0
    assert (sent, batcher.unsent()) == ([[1, 2], [3]], [])
