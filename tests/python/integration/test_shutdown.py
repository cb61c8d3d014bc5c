"""A real `pgconductor worker start` process receiving SIGTERM/SIGINT: nothing is lost.

- SIGTERM while handlers run: they finish within the grace period and complete.
- SIGTERM with handlers longer than the grace period: they are cancelled, and released
  (attempt not counted) only after they stopped.
- A handler that ignores cancellation is never released while it runs (G5): a second
  SIGINT forces the exit and its lease is left to stale recovery.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgtest import execute

from .worker_process import WorkerProcess, running_count, states

WaitUntilSync = Callable[..., Any]


@pytest.fixture
def spawn(tmp_path: Path, fresh_db_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    processes: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        process = WorkerProcess(tmp_path, fresh_db_url, *args)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.kill()


def invoke(url: str, task: str, seconds: float, count: int) -> None:
    execute(
        url,
        "SELECT pgconductor.invoke_batch(%s, array_fill(%s::jsonb, ARRAY[%s]))",
        task,
        f'{{"seconds": {seconds}}}',
        count,
    )


def test_sigterm_lets_running_handlers_finish(
    spawn: Callable[..., WorkerProcess],
    fresh_db_url: str,
    wait_until_sync: WaitUntilSync,
) -> None:
    invoke(fresh_db_url, "nap", 1.0, 4)
    worker = spawn("--concurrency", "4", "--grace-period", "30")
    wait_until_sync(lambda: running_count(fresh_db_url) == 4, timeout=20)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output
    assert states(fresh_db_url) == {"completed": 4}
    assert "stopping gracefully" in worker.output
    stopped = execute(
        fresh_db_url,
        "SELECT count(*) FROM pgconductor.orchestrators WHERE stopped_at IS NOT NULL",
    )
    assert stopped == [(1,)]


def test_sigterm_past_the_grace_period_releases_without_losing_attempts(
    spawn: Callable[..., WorkerProcess],
    fresh_db_url: str,
    wait_until_sync: WaitUntilSync,
) -> None:
    invoke(fresh_db_url, "nap", 3600, 3)
    worker = spawn("--concurrency", "3", "--grace-period", "0.2")
    wait_until_sync(lambda: running_count(fresh_db_url) == 3, timeout=20)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output
    assert states(fresh_db_url) == {"pending": 3}
    attempts = execute(fresh_db_url, "SELECT DISTINCT attempts FROM pgconductor.executions")
    assert attempts == [(0,)]  # the interrupted attempt was not counted


def test_second_sigint_forces_but_never_releases_a_running_handler(
    spawn: Callable[..., WorkerProcess],
    fresh_db_url: str,
    wait_until_sync: WaitUntilSync,
) -> None:
    invoke(fresh_db_url, "stubborn", 3600, 1)
    worker = spawn("--grace-period", "60")
    wait_until_sync(lambda: running_count(fresh_db_url) == 1, timeout=20)
    worker.signal(signal.SIGINT)
    wait_until_sync(lambda: "stopping gracefully" in worker.output, timeout=10)
    worker.signal(signal.SIGINT)
    assert worker.wait(30) == 0, worker.output
    assert "forcing" in worker.output
    # The thread was still running when the process exited: its lease is not released but
    # left to stale recovery, so no other worker could start it while it ran.
    assert running_count(fresh_db_url) == 1
    assert "leaving its lease to recovery" in worker.output
