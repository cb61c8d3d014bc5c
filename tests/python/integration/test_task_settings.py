"""Extension 0.4.0 from the worker's side: settings made in SQL survive a worker's start,
RetryAfter reschedules (bounded), a cancelled handler that returns anyway ends cancelled,
and every attempt's error is kept."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from integration.support import finished
from pgconductor import Conductor, RetryAfter, TaskContext
from pgconductor.testing import connected, run_inline
from pgtest import execute

WaitUntil = Callable[..., Any]


def _messages(caplog: pytest.LogCaptureFixture, needle: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if str(needle) in r.getMessage()]


async def test_a_worker_keeps_the_settings_made_in_sql(
    conductor: Conductor,
    fresh_db_url: str,
    start: Callable[[], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    execute(
        fresh_db_url,
        "SELECT pgconductor.register_task('send-email', p_queue => 'mail', p_max_attempts => 5,"
        " p_backoff_base => '2 seconds', p_backoff_cap => '5 minutes')",
    )

    @conductor.task("send-email", max_attempts=4, timeout=30)
    async def send_email(ctx: TaskContext, payload: Any) -> str:
        return ctx.queue

    caplog.set_level(logging.INFO, logger="pgconductor")
    orchestrator = await start()
    row = execute(
        fresh_db_url,
        "SELECT queue, max_attempts, backoff_base, backoff_cap, timeout, max_retry_after"
        " FROM pgconductor.tasks WHERE key = 'send-email'",
    )
    assert row == [
        ("mail", 4, timedelta(seconds=2), timedelta(minutes=5), timedelta(seconds=30), 20)
    ]
    assert [w.queue for w in orchestrator.workers] == ["mail"]  # the queue SQL has
    assert send_email.spec.backoff_cap == timedelta(minutes=5)
    assert (
        "task send-email: keeping settings made in SQL (not given in Python):"
        " queue=mail, backoff_base=2s, backoff_cap=300s"
    ) in caplog.messages


async def test_retry_after_puts_the_execution_back_without_counting_the_attempt(
    conductor: Conductor,
    start: Callable[[], Any],
    wait_until: WaitUntil,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    @conductor.task("poll-export", max_attempts=1)
    async def poll_export(ctx: TaskContext, payload: Any) -> str:
        calls.append(ctx.attempt)
        if len(calls) < 3:
            raise RetryAfter(0.05, "export not ready")
        return "ready"

    caplog.set_level(logging.INFO, logger="pgconductor")
    await start()
    execution_id = await conductor.invoke(poll_export, {})
    info = await wait_until(lambda: finished(conductor, execution_id))
    assert (info.state, info.attempts, info.result) == ("completed", 1, "ready")
    assert calls == [1, 1, 1]  # max_attempts 1, yet it ran three times
    lines = _messages(caplog, execution_id)
    assert len([m for m in lines if "rescheduled in 0.05s for " in m]) == 2
    assert all(m.endswith("attempt 1/1 not counted: export not ready") for m in lines)


async def test_retry_after_past_max_retry_after_fails(
    conductor: Conductor,
    start: Callable[[], Any],
    wait_until: WaitUntil,
    caplog: pytest.LogCaptureFixture,
) -> None:
    @conductor.task("always-later", max_retry_after=2)
    def always_later(ctx: TaskContext, payload: Any) -> None:
        raise RetryAfter(0, "still busy")

    caplog.set_level(logging.INFO, logger="pgconductor")
    await start()
    execution_id = await conductor.invoke(always_later, {})
    info = await wait_until(lambda: finished(conductor, execution_id))
    assert info.state == "failed"
    assert info.last_error == "rescheduled more than 2 times: still busy"
    await wait_until(lambda: any("failed for good" in m for m in _messages(caplog, execution_id)))
    assert (
        f"always-later {execution_id}: failed for good: asked to retry later more often than"
        " the task allows (max_retry_after): still busy"
    ) in caplog.messages


async def test_a_cancelled_sync_handler_that_returns_ends_cancelled_with_its_result(
    conductor: Conductor,
    start: Callable[[], Any],
    wait_until: WaitUntil,
    caplog: pytest.LogCaptureFixture,
) -> None:
    contexts: list[TaskContext] = []
    entered = threading.Event()
    go = threading.Event()

    @conductor.task("stubborn")
    def stubborn(ctx: TaskContext, payload: Any) -> str:
        contexts.append(ctx)
        entered.set()
        go.wait(30)  # never checks ctx.cancelled
        return "done anyway"

    caplog.set_level(logging.INFO, logger="pgconductor")
    await start()
    execution_id = await conductor.invoke(stubborn, {})
    await asyncio.to_thread(entered.wait, 10)
    assert await conductor.client.cancel(execution_id, "not needed") == "cancelling"
    await wait_until(lambda: contexts[0].cancelled)
    go.set()
    info = await wait_until(lambda: finished(conductor, execution_id))
    assert (info.state, info.result, info.last_error) == ("cancelled", "done anyway", "not needed")
    await wait_until(lambda: _messages(caplog, f"{execution_id}: cancelled"))
    assert (
        f"stubborn {execution_id}: cancelled during attempt 1/3, its result kept"
    ) in caplog.messages


async def test_every_attempt_error_is_kept_and_each_retry_logs_its_time(
    conductor: Conductor,
    start: Callable[[], Any],
    wait_until: WaitUntil,
    caplog: pytest.LogCaptureFixture,
) -> None:
    @conductor.task("flaky", max_attempts=3, backoff=(0.01, 0.01))
    async def flaky(ctx: TaskContext, payload: Any) -> None:
        raise ValueError(f"bad attempt {ctx.attempt}")

    caplog.set_level(logging.INFO, logger="pgconductor")
    await start()
    execution_id = await conductor.invoke(flaky, {})
    info = await wait_until(lambda: finished(conductor, execution_id))
    assert (info.state, info.attempts) == ("failed", 3)
    assert [(e["attempt"], e["outcome"]) for e in info.errors] == [
        (1, "retry_scheduled"),
        (2, "retry_scheduled"),
        (3, "failed"),
    ]
    assert [e["error"].splitlines()[-1] for e in info.errors] == [
        f"ValueError: bad attempt {n}" for n in (1, 2, 3)
    ]
    await wait_until(lambda: any("for good" in m for m in _messages(caplog, execution_id)))
    warnings = [m for m in _messages(caplog, execution_id) if "retry scheduled for " in m]
    assert [w.split(" UTC: ")[1] for w in warnings] == [
        "ValueError: bad attempt 1",
        "ValueError: bad attempt 2",
    ]


async def test_run_inline_reports_a_reschedule(conductor: Conductor, fresh_db_url: str) -> None:
    inline = Conductor()

    @inline.task("later")
    async def later(ctx: TaskContext, payload: Any) -> None:
        raise RetryAfter(3600, "tomorrow")

    async with connected(inline, fresh_db_url):
        ran = await run_inline(inline, later, {})
    assert (ran.outcome, ran.state, ran.attempts) == ("rescheduled", "pending", 0)
