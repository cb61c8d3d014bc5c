"""Retries on the database's fake clock: a one-hour backoff waits until time moves.

`pgconductor.fake_now` is set for the whole database; moving it and cutting the pool's
connections (the client reconnects: a transient error) is how the test moves time for the
running worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pgconductor.conductor import Conductor, TaskContext
from pgconductor.orchestrator import Orchestrator
from pgtest import execute

T0 = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)


def set_clock(url: str, when: datetime) -> None:
    """Move the database's fake clock and make every session pick it up."""
    name = execute(url, "SELECT current_database()")[0][0]
    execute(url, f"ALTER DATABASE \"{name}\" SET pgconductor.fake_now = '{when.isoformat()}'")
    execute(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )


@pytest.fixture
async def conductor(fresh_db_url: str) -> AsyncIterator[Conductor]:
    set_clock(fresh_db_url, T0)
    conductor = Conductor(fresh_db_url)
    yield conductor
    await conductor.close()


async def test_backoff_waits_for_the_fake_clock(
    conductor: Conductor, fresh_db_url: str, wait_until: Callable[..., Any]
) -> None:
    attempts: list[int] = []

    @conductor.task("hourly-retry", max_attempts=3, backoff=(3600, 3600))
    async def flaky(ctx: TaskContext, payload: Any) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    orchestrator = Orchestrator(conductor, poll_interval=0.05, stale_after=7200)
    await orchestrator.start()
    try:
        execution_id = await conductor.invoke("hourly-retry", {})

        def retry_scheduled() -> list[tuple[Any, ...]]:
            return execute(
                fresh_db_url,
                "SELECT run_at FROM pgconductor.executions WHERE id = %s AND locked_by IS NULL"
                " AND attempts = 1",
                execution_id,
            )

        [(run_at,)] = await wait_until(retry_scheduled)
        # Backoff for attempt 1 with base = cap = 1 h: drawn from [30 min, 1 h] after T0.
        assert T0 + timedelta(minutes=30) <= run_at <= T0 + timedelta(hours=1)
        # The worker keeps polling, but on the database's clock the retry is not due.
        stats = orchestrator.workers[0].stats
        claimed, fetches = stats.claimed, stats.fetches
        await wait_until(lambda: stats.fetches >= fetches + 5)
        assert (attempts, stats.claimed) == ([1], claimed)

        set_clock(fresh_db_url, T0 + timedelta(hours=2))
        await wait_until(
            lambda: execute(
                fresh_db_url,
                "SELECT state FROM pgconductor.get_execution(%s) WHERE state = 'completed'",
                execution_id,
            ),
            timeout=20.0,
        )
        assert attempts == [1, 2]
        [(finished_at,)] = execute(
            fresh_db_url, "SELECT finished_at FROM pgconductor.finished_executions"
        )
        assert finished_at == T0 + timedelta(hours=2)
    finally:
        await orchestrator.stop()
