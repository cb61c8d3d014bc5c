"""Durable workflows survive SIGKILL: a worker killed between two steps, and one killed while
a parent waits for its child. A ledger file written by the step bodies proves that no step
whose result was stored runs again and that every workflow finishes.
"""

from __future__ import annotations

import collections
import signal
from collections.abc import Callable
from pathlib import Path

from chaos.app import make_conductor
from chaos.support import (
    WorkerProcess,
    finished_count,
    invoke,
    make_orchestrator,
    prepare,
    running,
    scalar,
)
from pgtest import wait_until


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def count(path: Path, needle: str) -> int:
    return sum(needle in line for line in lines(path))


async def test_a_worker_killed_between_two_steps_does_not_run_the_first_again(
    fresh_db_url: str, worker_process: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    prepare(fresh_db_url)
    path = tmp_path / "ledger.txt"
    ids = invoke(fresh_db_url, [{"ledger": str(path), "hang_between": True}] * 5, "chaos.flow")
    victim = worker_process(fresh_db_url, "victim")
    await wait_until(lambda: count(path, "between victim") == 5, timeout=30)
    victim.signal(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL

    rescuer = make_orchestrator(make_conductor(fresh_db_url, "rescuer"))
    async with running(rescuer):
        await wait_until(lambda: finished_count(fresh_db_url, ids) == 5, timeout=30)

    per_line = collections.Counter(lines(path))
    for eid in ids:
        assert per_line[f"{eid} step a"] == 1  # stored before the kill: never again
        assert per_line[f"{eid} between victim"] == 1
        # Code outside steps runs on every replay: after the recovery and after the nap.
        assert per_line[f"{eid} between rescuer"] == 2
        assert per_line[f"{eid} step b"] == 1
        assert per_line[f"{eid} step c"] == 1
        result = scalar(
            fresh_db_url, "SELECT result FROM pgconductor.finished_executions WHERE id = %s", eid
        )
        assert result == [f"{eid} step a", f"{eid} step b", None, f"{eid} step c"]


async def test_a_worker_killed_while_a_parent_waits_for_its_child(
    fresh_db_url: str, worker_process: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    prepare(fresh_db_url)
    path = tmp_path / "ledger.txt"
    ids = invoke(fresh_db_url, [{"ledger": str(path), "child": True}] * 3, "chaos.flow")
    victim = worker_process(fresh_db_url, "victim")
    await wait_until(lambda: count(path, "child start victim") == 3, timeout=30)
    parked = scalar(
        fresh_db_url,
        "SELECT count(*) FROM pgconductor.executions WHERE waiting = 'children' AND id = ANY(%s)",
        ids,
    )
    assert parked == 3  # the parents hold no slot while their children run
    victim.signal(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL

    rescuer = make_orchestrator(make_conductor(fresh_db_url, "rescuer"))
    async with running(rescuer):
        await wait_until(lambda: finished_count(fresh_db_url, ids) == 3, timeout=40)

    per_line = collections.Counter(lines(path))
    for eid in ids:
        for step in ("a", "b", "c"):
            assert per_line[f"{eid} step {step}"] == 1
    assert count(path, "child start victim") == 3
    assert count(path, "child effect victim") == 0
    assert count(path, "child effect rescuer") == 3
    for eid in ids:
        result = scalar(
            fresh_db_url, "SELECT result FROM pgconductor.finished_executions WHERE id = %s", eid
        )
        assert result[2] == "child done"
