"""Flow-control limits hold under real worker processes (issue 11).

Three worker subprocesses (each a real `Orchestrator`, polling every 20 ms so that a claim
cut short by a limit is retried quickly) drain executions whose task has a limit set in
SQL before they start; their own declaration at start must keep it. A sampler thread reads
the running executions every 10 ms for the whole drain:

- max_running_per_key 3 over 20 concurrency keys: never more than 3 of one key run at once,
  and 3 is reached (so a limit that was not applied would fail the test);
- max_running 4: never more than 4 of the task run, and 4 is reached;
- fair share: a tenant with 100k queued executions does not hold up a tenant with 10
  invoked after them: the 10 complete while at least 90 % of the 100k are still queued;
- rate_limit 20 per second (a token bucket of capacity 20): the claim times (`locked_at`,
  the claim's own clock) of 100 executions never exceed 20 + 20 per second in any span, and
  a rate-limited execution spends no attempt (each completes at attempt 1).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgtest import execute, libpq_url, wait_until_sync

#: The app every worker process serves: one napping handler under four task keys, and a
#: main that runs an Orchestrator over all of their queues.
APP = textwrap.dedent(
    """
    import asyncio
    import os

    from pgconductor import Conductor
    from pgconductor.orchestrator import Orchestrator

    conductor = Conductor()


    async def nap(ctx, payload):
        await asyncio.sleep(payload.get("sleep", 0.005))
        return None


    for key in ("per-key", "capped", "rated"):
        conductor.task(key)(nap)
    conductor.task("tenant", queue="fair")(nap)


    async def main():
        orchestrator = Orchestrator(
            conductor,
            concurrency=int(os.environ["FLOW_CONCURRENCY"]),
            poll_interval=0.02,
            heartbeat_interval=1.0,
            stale_after=60.0,
        )
        await orchestrator.serve()


    if __name__ == "__main__":
        asyncio.run(main())
    """
)

RUNNING_PER_KEY = """
SELECT coalesce(max(n), 0) FROM (
    SELECT count(*) AS n FROM pgconductor.executions
     WHERE locked_by IS NOT NULL AND task_key = %s GROUP BY concurrency_key) AS x
"""
RUNNING = (
    "SELECT count(*) FROM pgconductor.executions WHERE locked_by IS NOT NULL AND task_key = %s"
)


class Workers:
    """Worker subprocesses running APP, each logging to a file; all killed at the end."""

    def __init__(self, directory: Path, url: str) -> None:
        (directory / "flow_app.py").write_text(APP)
        self.directory = directory
        self.url = url
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, count: int, concurrency: int) -> None:
        """Start `count` workers and wait until each one's orchestrator row is there."""
        before = len(self.processes)
        env = {
            **os.environ,
            "DATABASE_URL": self.url,
            "FLOW_CONCURRENCY": str(concurrency),
            "PYTHONUNBUFFERED": "1",
        }
        for n in range(before, before + count):
            with (self.directory / f"worker-{n}.log").open("w") as log:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "flow_app.py"],
                        cwd=self.directory,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        wait_until_sync(
            lambda: (
                self.alive()
                and scalar(self.url, "SELECT count(*) FROM pgconductor.orchestrators")
                == len(self.processes)
            ),
            timeout=60,
        )

    def alive(self) -> bool:
        """True while every worker runs (fails with the logs when one exited)."""
        for n, process in enumerate(self.processes):
            if process.poll() is not None:
                log = (self.directory / f"worker-{n}.log").read_text()
                raise AssertionError(f"worker {n} exited with {process.returncode}:\n{log}")
        return True

    def stop(self) -> None:
        """SIGTERM every worker, SIGKILL the ones still running after 20 s."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


class Poller(threading.Thread):
    """Calls `sample(conn)` every 10 ms on a connection of its own until finished."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples = 0
        self.error: psycopg.Error | None = None
        self._stop_requested = threading.Event()

    def sample(self, conn: psycopg.Connection[Any]) -> None:
        """One reading."""
        raise NotImplementedError

    def run(self) -> None:
        try:
            with psycopg.connect(libpq_url(self.url), autocommit=True) as conn:
                while not self._stop_requested.is_set():
                    self.sample(conn)
                    self.samples += 1
                    time.sleep(0.01)
        except psycopg.Error as exc:
            self.error = exc

    def stop(self) -> None:
        """Stop polling; raises the database error that stopped it early, if any."""
        self._stop_requested.set()
        self.join(10)
        if self.error is not None:
            raise self.error


class Sampler(Poller):
    """Keeps the highest value a query returning one number gave."""

    def __init__(self, url: str, query: str, *params: Any) -> None:
        super().__init__(url)
        self.query, self.params = query, params
        self.highest = 0

    def sample(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute(self.query.encode(), self.params).fetchone()
        self.highest = max(self.highest, int(row[0]) if row else 0)


class ClaimTimes(Poller):
    """Keeps `locked_at` (the claim's time) of every running execution of a task seen."""

    def __init__(self, url: str, task: str) -> None:
        super().__init__(url)
        self.task = task
        self.seen: dict[Any, datetime] = {}

    def sample(self, conn: psycopg.Connection[Any]) -> None:
        rows = conn.execute(
            "SELECT id, locked_at FROM pgconductor.executions"
            " WHERE locked_by IS NOT NULL AND task_key = %s",
            (self.task,),
        ).fetchall()
        for execution_id, locked_at in rows:
            self.seen.setdefault(execution_id, locked_at)


def scalar(url: str, query: str, *params: Any) -> Any:
    """The single value a query returns."""
    return execute(url, query, *params)[0][0]


def enqueue(url: str, task: str, keys: list[str], sleep: float) -> None:
    """One invoke_batch of len(keys) executions of `task`, one per concurrency key given."""
    execute(
        url,
        "SELECT count(*) FROM pgconductor.invoke_batch("
        " array_fill(%s::text, ARRAY[%s::int]), array_fill(%s::jsonb, ARRAY[%s::int]),"
        " p_concurrency_keys => %s::text[])",
        task,
        len(keys),
        Jsonb({"sleep": sleep}),
        len(keys),
        keys,
    )


def finished_states(url: str, task: str) -> dict[tuple[str, int], int]:
    """(state, attempts) -> count of the task's finished executions."""
    rows = execute(
        url,
        "SELECT state, attempts, count(*) FROM pgconductor.finished_executions"
        " WHERE task_key = %s GROUP BY 1, 2",
        task,
    )
    return {(state, attempts): int(n) for state, attempts, n in rows}


def drained(url: str, task: str, count: int) -> bool:
    """No live execution of the task is left and `count` have finished."""
    live = scalar(url, "SELECT count(*) FROM pgconductor.executions WHERE task_key = %s", task)
    done = scalar(
        url,
        "SELECT count(*) FROM pgconductor.finished_executions WHERE task_key = %s",
        task,
    )
    return bool(live == 0 and done == count)


@pytest.fixture
def workers(tmp_path: Path, fresh_db_url: str) -> Iterator[Workers]:
    """The worker processes of one test; stopped (and killed if need be) afterwards."""
    made = Workers(tmp_path, fresh_db_url)
    try:
        yield made
    finally:
        made.stop()


def declare(url: str, task: str, settings: str) -> None:
    """Set task settings in SQL (declare_task: only the ones given)."""
    execute(url, "SELECT pgconductor.declare_task(%s, %s::jsonb)", task, settings)


def drain_under_sampler(
    url: str,
    workers: Workers,
    task: str,
    keys: list[str],
    sampler: Sampler,
    sleep: float,
) -> tuple[int, int]:
    """Invoke one execution per key (handlers nap `sleep` s), drain them all under
    `sampler`; (highest value, samples taken)."""
    sampler.start()
    enqueue(url, task, keys, sleep=sleep)
    wait_until_sync(lambda: workers.alive() and drained(url, task, len(keys)), timeout=180)
    sampler.stop()
    return sampler.highest, sampler.samples


def test_max_running_per_key_holds_across_three_workers(
    fresh_db_url: str, workers: Workers
) -> None:
    declare(fresh_db_url, "per-key", '{"max_running_per_key": 3}')
    workers.start(3, concurrency=30)
    # Each worker declared its tasks at start with no limit given: the SQL one stays.
    assert (
        scalar(
            fresh_db_url,
            "SELECT max_running_per_key FROM pgconductor.tasks WHERE key = 'per-key'",
        )
        == 3
    )
    # 1,000 executions over 20 keys, in runs of 10 of one key: a claim's pick of 30 holds
    # three keys 10 times each, so the trim has work to do.
    keys = [f"tenant-{(i // 10) % 20}" for i in range(1000)]
    sampler = Sampler(fresh_db_url, RUNNING_PER_KEY, "per-key")
    highest, samples = drain_under_sampler(
        fresh_db_url, workers, "per-key", keys, sampler, sleep=0.02
    )
    print(f"max running per key seen: {highest} over {samples} samples")
    assert highest == 3
    assert finished_states(fresh_db_url, "per-key") == {("completed", 1): 1000}
    assert (
        scalar(
            fresh_db_url,
            "SELECT count(DISTINCT orchestrator_id) FROM pgconductor.finished_executions",
        )
        == 3
    )


def test_max_running_holds_across_three_workers(fresh_db_url: str, workers: Workers) -> None:
    declare(fresh_db_url, "capped", '{"max_running": 4}')
    workers.start(3, concurrency=10)
    assert (
        scalar(
            fresh_db_url,
            "SELECT max_running FROM pgconductor.tasks WHERE key = 'capped'",
        )
        == 4
    )
    keys = [f"tenant-{i % 20}" for i in range(1000)]
    sampler = Sampler(fresh_db_url, RUNNING, "capped")
    highest, samples = drain_under_sampler(
        fresh_db_url, workers, "capped", keys, sampler, sleep=0.005
    )
    print(f"max running of the task seen: {highest} over {samples} samples")
    assert highest == 4
    assert finished_states(fresh_db_url, "capped") == {("completed", 1): 1000}


def test_fair_share_serves_a_small_tenant_behind_a_flood(
    fresh_db_url: str, workers: Workers
) -> None:
    declare(fresh_db_url, "tenant", '{"queue": "fair"}')  # invokes go to the task's queue
    execute(fresh_db_url, "SELECT pgconductor.set_fair_share('fair', true)")
    for _ in range(10):
        enqueue(fresh_db_url, "tenant", ["flood"] * 10_000, sleep=0.001)
    enqueue(fresh_db_url, "tenant", ["small"] * 10, sleep=0.001)  # last in FIFO order
    small_left = (
        "SELECT count(*) FROM pgconductor.executions WHERE task_key = 'tenant'"
        " AND concurrency_key = 'small'"
    )
    flood_queued = (
        "SELECT count(*) FROM pgconductor.executions WHERE task_key = 'tenant'"
        " AND concurrency_key = 'flood' AND locked_by IS NULL"
    )
    workers.start(3, concurrency=50)
    wait_until_sync(
        lambda: workers.alive() and scalar(fresh_db_url, small_left) == 0,
        timeout=60,
        interval=0.01,
    )
    queued = scalar(fresh_db_url, flood_queued)  # read after: never more than at that moment
    workers.stop()
    print(f"flood executions still queued when the small tenant's 10 were done: {queued}")
    assert queued >= 90_000
    assert (
        scalar(
            fresh_db_url,
            "SELECT count(*) FROM pgconductor.finished_executions"
            " WHERE task_key = 'tenant' AND state = 'completed'",
        )
        >= 10
    )


def within_rate(times: list[datetime], capacity: int, per_second: float) -> tuple[int, float]:
    """The worst span of sorted claim times: (starts in it, seconds it lasts) maximising
    starts - per_second * seconds (a token bucket admits at most capacity + that)."""
    worst = (0, 0.0)
    worst_excess = float("-inf")
    for i, first in enumerate(times):
        for j in range(i, len(times)):
            seconds = (times[j] - first).total_seconds()
            excess = (j - i + 1) - per_second * seconds
            if excess > worst_excess:
                worst_excess, worst = excess, (j - i + 1, seconds)
    return worst


def test_rate_limit_spaces_starts_and_spends_no_attempt(
    fresh_db_url: str, workers: Workers
) -> None:
    declare(fresh_db_url, "rated", '{"rate_limit": 20}')  # rate_period: 1 s
    workers.start(3, concurrency=10)
    claims = ClaimTimes(fresh_db_url, "rated")
    claims.start()
    # Each handler runs 100 ms, so the 10 ms sampler sees every claim.
    enqueue(fresh_db_url, "rated", [f"k{i % 5}" for i in range(100)], sleep=0.1)
    wait_until_sync(lambda: workers.alive() and drained(fresh_db_url, "rated", 100), timeout=60)
    claims.stop()
    seen = claims.seen
    assert len(seen) == 100
    times = sorted(seen.values())
    starts, seconds = within_rate(times, 20, 20.0)
    per_window = max(
        sum(1 for t in times if 0 <= (t - first).total_seconds() < 1.0) for first in times
    )
    print(
        f"rate 20/s, capacity 20: worst span {starts} starts in {seconds:.3f}s;"
        f" at most {per_window} starts in one second;"
        f" all in {(times[-1] - times[0]).total_seconds():.2f}s"
    )
    # Burst of 20, then 20 per second (one token of tolerance for the refill's rounding).
    assert starts <= 20 + 20 * seconds + 1
    assert per_window <= 40 + 1
    assert finished_states(fresh_db_url, "rated") == {("completed", 1): 100}
