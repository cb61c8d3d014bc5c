"""Upgrades while orchestrators run: a non-breaking one under a drain (nothing lost, work done
during and after it), a breaking one that first stops the orchestrators of older packages
(and applies nothing while one still runs), and three upgraders at once.

The databases start at a released version (`CREATE EXTENSION ... VERSION`). "Older package"
orchestrators run this package in-process with the version their heartbeat reports patched
(`pgconductor.orchestrator.PACKAGE_VERSION`); the upgrader compares with its own version.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import pgconductor.orchestrator as orchestrator_module
from chaos.app import make_conductor
from chaos.support import (
    TESTS_DIR,
    WorkerProcess,
    check_invariants,
    finished_count,
    invoke,
    make_orchestrator,
    prepare,
    running,
    scalar,
)
from pgconductor.errors import InvalidState, VersionMismatch
from pgconductor.schema import PACKAGE_VERSION, SchemaManager
from pgconductor.upgrade import is_breaking
from pgtest import EXTENSION_VERSION, execute, wait_until

OLD_PACKAGE = "0.3.0"


def at_version(url: str, version: str) -> None:
    """Install the released `version` and log each ALTER EXTENSION (when, how many objects)."""
    execute(url, f"CREATE EXTENSION pgconductor VERSION '{version}'")
    prepare(url)
    execute(url, "CREATE TABLE alter_log (at timestamptz, objects int)")
    execute(
        url,
        "CREATE FUNCTION log_alter() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN"
        " INSERT INTO public.alter_log SELECT clock_timestamp(), count(*)"
        " FROM pg_event_trigger_ddl_commands(); END $$",
    )
    execute(
        url,
        "CREATE EVENT TRIGGER log_alter ON ddl_command_end"
        " WHEN TAG IN ('ALTER EXTENSION') EXECUTE FUNCTION log_alter()",
    )


def extversion(url: str) -> str:
    return str(scalar(url, "SELECT extversion FROM pg_extension WHERE extname = 'pgconductor'"))


def finished_between(url: str, start: dt.datetime, end: dt.datetime) -> int:
    return int(
        scalar(
            url,
            "SELECT count(*) FROM pgconductor.finished_executions"
            " WHERE finished_at >= %s AND finished_at <= %s",
            start,
            end,
        )
    )


def now(url: str) -> dt.datetime:
    value = scalar(url, "SELECT clock_timestamp()")
    assert isinstance(value, dt.datetime)
    return value


def cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m pgconductor ARGS` against `url`."""
    return subprocess.run(
        [sys.executable, "-m", "pgconductor", *args],
        cwd=TESTS_DIR,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_non_breaking_upgrade_applies_while_a_drain_runs(
    bare_db_url: str,
    record_property: Callable[[str, Any], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """0.5.0 -> the current version under a drain by this package's workers: the workers are
    never stopped, every execution completes exactly once, and work is done during and after
    the upgrade. The orchestrator notices the upgrade and says a restart brings workflows."""
    url = bare_db_url
    assert not is_breaking("0.5.0", EXTENSION_VERSION)
    at_version(url, "0.5.0")
    ids = invoke(url, [{"n": i, "sleep": 0.002} for i in range(1500)])
    orch = make_orchestrator(make_conductor(url, "live"), concurrency=20)
    drain = asyncio.create_task(orch.drain())
    try:
        await wait_until(lambda: finished_count(url, ids) >= 200, timeout=30)
        started_at = now(url)
        manager = SchemaManager(url)
        try:
            assert await manager.upgrade() == EXTENSION_VERSION
        finally:
            await manager.close()
        ended_at = now(url)
        left = len(ids) - finished_count(url, ids)
        assert left > 0, "the drain ended before the upgrade: nothing was proven"
        noticed = (
            f"orchestrator {orch.id}: the extension was upgraded from 0.5.0 to"
            f" {EXTENSION_VERSION} while it ran; restart it to use durable workflows"
        )
        with caplog.at_level(logging.WARNING):
            await wait_until(lambda: noticed in caplog.text, timeout=10)
        await asyncio.wait_for(drain, timeout=120)
    finally:
        if not drain.done():
            orch.request_stop()
            await asyncio.wait((drain,))
        await orch.conductor.close()
        await orch.conductor.context["ledger"].close()
    assert extversion(url) == EXTENSION_VERSION
    check_invariants(url, ids, orchestrators={"live": orch.id})  # none lost, none run twice
    during = finished_between(url, started_at, ended_at)
    after = finished_between(url, ended_at, now(url))
    assert after > 0  # the same workers went on on the new version
    assert after + during >= left
    record_property("finished_during_upgrade", during)
    record_property("finished_after_upgrade", after)
    record_property("left_at_upgrade_end", left)
    print(
        f"\nupgrade 0.5.0 -> {EXTENSION_VERSION} during a drain of {len(ids)}:"
        f" {during} finished during it ({(ended_at - started_at).total_seconds():.3f} s),"
        f" {after} after it, none lost"
    )


async def test_a_breaking_upgrade_stops_older_orchestrators_first(
    bare_db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    worker_process: Callable[..., WorkerProcess],
) -> None:
    """0.3.0 -> 0.4.0 (breaking): two orchestrators reporting package 0.3.0 are asked to stop,
    finish their work and stop before ALTER EXTENSION runs; one of this package (a worker
    process) is left running and processes through the upgrade; nothing is lost."""
    url = bare_db_url
    assert is_breaking("0.3.0", "0.4.0")
    at_version(url, "0.3.0")
    monkeypatch.setattr(orchestrator_module, "PACKAGE_VERSION", OLD_PACKAGE)
    olds = [make_orchestrator(make_conductor(url, f"old{i}")) for i in range(2)]
    current = worker_process(url, "current")
    async with running(*olds):
        await wait_until(
            lambda: (
                scalar(
                    url,
                    "SELECT count(*) FROM pgconductor.orchestrators"
                    " WHERE stopped_at IS NULL AND version = %s",
                    PACKAGE_VERSION,
                )
                == 1
            ),
            timeout=30,
        )
        ids = invoke(url, [{"n": i, "sleep": 0.3} for i in range(60)])
        await wait_until(lambda: any(w.in_flight for o in olds for w in o.workers), timeout=10)
        manager = SchemaManager(url)
        try:
            assert await manager.upgrade("0.4.0", timeout=30) == "0.4.0"
        finally:
            await manager.close()
        assert all(any(s.kind == "shutdown" for s in o.signals_received) for o in olds)
    rows = execute(
        url,
        "SELECT o.version, o.stopped_at, o.expired_at FROM pgconductor.orchestrators AS o",
    )
    stopped = sorted(r[1] for r in rows if r[0] == OLD_PACKAGE)
    assert len(stopped) == 2
    assert all(at is not None for at in stopped)  # stopped (released), not expired
    (altered_at,) = [
        at for at, objects in execute(url, "SELECT at, objects FROM alter_log") if objects > 0
    ]
    assert max(stopped) <= altered_at
    assert extversion(url) == "0.4.0"
    await wait_until(lambda: finished_count(url, ids) == len(ids), timeout=60)
    assert current.proc.poll() is None  # this package's orchestrator was left running
    live = execute(
        url,
        "SELECT version FROM pgconductor.orchestrators"
        " WHERE stopped_at IS NULL AND expired_at IS NULL",
    )
    assert live == [(PACKAGE_VERSION,)]
    check_invariants(url, ids)

    # The older package cannot come back: it does not support 0.4.0 and refuses to start.
    monkeypatch.setitem(
        SchemaManager.__init__.__kwdefaults__, "supported", ("0.1.0", "0.2.0", "0.3.0")
    )
    again = make_orchestrator(make_conductor(url, "old-again"))
    try:
        with pytest.raises(VersionMismatch) as raised:
            await again.start()
    finally:
        await again.conductor.close()
    assert str(raised.value) == (
        f"pgconductor extension 0.4.0 is installed, but this package"
        f" (pgconductor {PACKAGE_VERSION}) supports 0.1.0, 0.2.0, 0.3.0"
    )
    assert raised.value.hint == "upgrade the Python package: pip install --upgrade pgconductor"


async def installed(url: str) -> str | None:
    manager = SchemaManager(url)
    try:
        return await manager.installed()
    finally:
        await manager.close()


@pytest.mark.parametrize("sql_only", [False, True], ids=["extension", "sql-only"])
async def test_a_breaking_upgrade_waits_then_gives_up_naming_those_still_live(
    bare_db_url: str, sql_only: bool
) -> None:
    """An orchestrator of an older package that does not stop (it takes no signal, and it is
    not stale): nothing is applied, and the message names it; the CLI says it in one line.
    The same with the scripts run as plain SQL (`schema install --sql-only`)."""
    url = bare_db_url
    if sql_only:
        manager = SchemaManager(url)
        try:
            assert await manager.install("0.3.0", sql_only=True) == "0.3.0"
        finally:
            await manager.close()
    else:
        at_version(url, "0.3.0")
    stuck = uuid.uuid4()
    execute(
        url,
        "SELECT * FROM pgconductor.heartbeat(p_orchestrator_id => %s, p_version => %s,"
        ' p_stale_after => \'1 hour\', p_info => \'{"host": "h9", "pid": 99}\')',
        stuck,
        OLD_PACKAGE,
    )
    manager = SchemaManager(url)
    try:
        with pytest.raises(InvalidState) as raised:
            await manager.upgrade("0.4.0", timeout=0.5)
    finally:
        await manager.close()
    assert str(raised.value) == (
        "breaking upgrade to 0.4.0 not applied: 1 orchestrator(s) of packages older than"
        f" 0.4.0 still live after 0.5 s: {stuck} (package {OLD_PACKAGE} on h9 pid 99)"
    )
    assert await installed(url) == "0.3.0"
    assert scalar(url, "SELECT count(*) FROM pgconductor.signals WHERE kind = 'shutdown'") >= 1

    result = await asyncio.to_thread(
        cli, "schema", "upgrade", "--to", "0.4.0", "--timeout", "0.2", url=url
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: breaking upgrade to 0.4.0 not applied: 1 orchestrator(s)")
    assert f"{stuck} (package {OLD_PACKAGE} on h9 pid 99) (SQLSTATE 55006)" in lines[0]
    assert "Traceback" not in result.stderr
    assert await installed(url) == "0.3.0"


async def test_a_crashed_older_orchestrator_blocks_a_breaking_upgrade_until_it_is_stale(
    bare_db_url: str,
) -> None:
    """An older orchestrator that died without stopping (heartbeats, then nothing): the wait
    runs stale recovery, so it expires after its stale_after, its work is released, and the
    upgrade applies."""
    url = bare_db_url
    at_version(url, "0.3.0")
    crashed = uuid.uuid4()
    (held,) = invoke(url, [{"n": 1}])
    execute(
        url,
        "SELECT * FROM pgconductor.heartbeat(p_orchestrator_id => %s, p_version => %s,"
        " p_stale_after => '1 second')",
        crashed,
        OLD_PACKAGE,
    )
    claimed = execute(
        url,
        "SELECT id FROM pgconductor.get_executions(p_task_keys => NULL,"
        " p_orchestrator_id => %s, p_batch_size => 1, p_queue => 'default')",
        crashed,
    )
    assert claimed == [(held,)]
    manager = SchemaManager(url)
    try:
        assert await manager.upgrade("0.4.0", timeout=30) == "0.4.0"
    finally:
        await manager.close()
    (state,) = execute(
        url, "SELECT state FROM pgconductor.orchestrator_stats() WHERE id = %s", crashed
    )
    assert state == ("expired",)
    assert execute(url, "SELECT locked_by FROM pgconductor.executions WHERE id = %s", held) == [
        (None,)
    ]


async def test_three_concurrent_breaking_upgrades_one_applies_the_others_wait(
    bare_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three upgraders at once, with an older orchestrator live: all three wait for it to
    stop, one ALTER EXTENSION does the update, the other two find it done; nobody errors."""
    url = bare_db_url
    at_version(url, "0.3.0")
    monkeypatch.setattr(orchestrator_module, "PACKAGE_VERSION", OLD_PACKAGE)
    old = make_orchestrator(make_conductor(url, "old"))
    async with running(old):
        managers = [SchemaManager(url) for _ in range(3)]
        try:
            versions = await asyncio.gather(*(m.upgrade("0.4.0", timeout=30) for m in managers))
        finally:
            await asyncio.gather(*(m.close() for m in managers))
        assert versions == ["0.4.0"] * 3
        assert any(s.kind == "shutdown" for s in old.signals_received)
    assert extversion(url) == "0.4.0"
    changes = [objects for (objects,) in execute(url, "SELECT objects FROM alter_log")]
    assert len([n for n in changes if n > 0]) == 1, changes
