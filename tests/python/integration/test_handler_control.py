"""Against a real database: failures are logged, `Fatal` fails at once, a sync handler
stops at `ctx.raise_if_cancelled()`, and heartbeats name the task keys each queue serves."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from integration.support import finished
from pgconductor import Conductor, Fatal, TaskContext

WaitUntil = Callable[..., Any]


def _lines(caplog: pytest.LogCaptureFixture, execution_id: Any) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage()) for r in caplog.records if str(execution_id) in r.getMessage()
    ]


async def test_each_failed_attempt_is_a_warning_and_the_last_an_error_with_the_traceback(
    conductor: Conductor,
    start: Callable[[], Any],
    wait_until: WaitUntil,
    caplog: pytest.LogCaptureFixture,
) -> None:
    @conductor.task("send-email", max_attempts=2, backoff=(0.01, 0.01))
    async def send_email(ctx: TaskContext, payload: Any) -> None:
        ctx.logger.info("connecting to %s", payload["host"])
        raise ConnectionError("smtp refused")

    caplog.set_level(logging.INFO, logger="pgconductor")
    await start()
    execution_id = await conductor.invoke(send_email, {"host": "mail.example.com"})
    info = await wait_until(lambda: finished(conductor, execution_id))
    assert (info.state, info.attempts) == ("failed", 2)
    await wait_until(lambda: any(n == logging.ERROR for n, _ in _lines(caplog, execution_id)))
    lines = _lines(caplog, execution_id)
    what = f"send-email {execution_id}"
    assert (logging.INFO, f"{what}: connecting to mail.example.com") in lines  # ctx.logger
    [retry] = [m for n, m in lines if n == logging.WARNING]
    assert re.fullmatch(
        rf"{what}: attempt 1/2 failed, retry scheduled for \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC:"
        r" ConnectionError: smtp refused",
        retry,
    )
    [final] = [m for n, m in lines if n == logging.ERROR]
    head, traceback = final.split("\n", 1)
    assert head == f"{what}: attempt 2/2 failed for good (no attempt left):"
    assert traceback.startswith("Traceback (most recent call last):")
    assert traceback.endswith("ConnectionError: smtp refused")


async def test_fatal_fails_at_the_first_attempt(
    conductor: Conductor,
    start: Callable[[], Any],
    wait_until: WaitUntil,
    caplog: pytest.LogCaptureFixture,
) -> None:
    @conductor.task("charge", max_attempts=5)
    def charge(ctx: TaskContext, payload: Any) -> None:
        raise Fatal("card declined for good")

    caplog.set_level(logging.INFO, logger="pgconductor")
    await start()
    execution_id = await conductor.invoke(charge, {})
    info = await wait_until(lambda: finished(conductor, execution_id))
    assert (info.state, info.attempts) == ("failed", 1)
    assert info.last_error.endswith("pgconductor.errors.Fatal: card declined for good")
    await wait_until(lambda: _lines(caplog, execution_id))
    [(level, message)] = _lines(caplog, execution_id)
    assert level == logging.ERROR
    assert message.startswith(
        f"charge {execution_id}: attempt 1/5 failed for good (fatal error, no retry):\n"
    )


async def test_a_sync_handler_stops_at_raise_if_cancelled(
    conductor: Conductor, start: Callable[[], Any], wait_until: WaitUntil
) -> None:
    entered = threading.Event()
    steps: list[int] = []

    @conductor.task("export")
    def export(ctx: TaskContext, payload: Any) -> str:
        entered.set()
        for step in range(6000):  # a minute of 10 ms steps
            ctx.raise_if_cancelled()
            steps.append(step)
            time.sleep(0.01)
        return "exported"

    await start()
    execution_id = await conductor.invoke(export, {})
    await asyncio.to_thread(entered.wait, 5.0)
    assert await conductor.client.cancel(execution_id, "not needed") == "cancelling"
    info = await wait_until(lambda: finished(conductor, execution_id))
    assert info.state == "cancelled"
    assert info.result is None
    assert len(steps) < 6000


async def test_heartbeats_name_the_tasks_of_each_queue(
    conductor: Conductor, start: Callable[[], Any]
) -> None:
    conductor.task("a", queue="one")(lambda ctx, payload: None)
    conductor.task("b", queue="two")(lambda ctx, payload: None)
    orchestrator = await start()
    [live] = [o for o in await conductor.client.orchestrator_stats() if o.id == orchestrator.id]
    assert live.info["queues"] == {
        "one": {"concurrency": 100, "running": 0, "tasks": ["a", "b"]},
        "two": {"concurrency": 100, "running": 0, "tasks": ["a", "b"]},
    }
