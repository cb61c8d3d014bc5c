"""Migration failures: an update script with a syntax error, orchestrators migrating at
the same moment, and an extension version the package does not support.

Throwaway update scripts are written into the server's extension directory (named after
this process, so parallel runs never collide) and removed afterwards.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from chaos.app import make_conductor
from chaos.support import (
    TESTS_DIR,
    finished_count,
    invoke,
    make_orchestrator,
    prepare,
    running,
    scalar,
)
from pgconductor.errors import PgConductorError, TransientError, VersionMismatch
from pgconductor.schema import PACKAGE_VERSION, SchemaManager
from pgtest import EXTENSION_VERSION, execute, wait_until

BASE = EXTENSION_VERSION  # the version tests start from (see conftest.extension_script)


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


async def test_update_script_with_a_syntax_error_rolls_back_and_says_why(
    fresh_db_url: str, extension_script: Callable[[str, str], str]
) -> None:
    broken = extension_script(
        "broken",
        "CREATE TABLE pgconductor.chaos_canary (id int);\n"
        "ALTER TABLE pgconductor.tasks ADD COLUMN chaos_canary int;\n"
        "SELEC 'this is not SQL';\n",
    )
    prepare(fresh_db_url)
    orch = make_orchestrator(make_conductor(fresh_db_url, "A"))
    async with running(orch):  # live workers must not notice the failed migration
        before = invoke(fresh_db_url, [{"n": i} for i in range(3)])
        await wait_until(lambda: finished_count(fresh_db_url, before) == 3, timeout=10)

        manager = SchemaManager(fresh_db_url)
        try:
            with pytest.raises(PgConductorError) as raised:
                await manager.upgrade(to=broken)
            assert await manager.check() == BASE
        finally:
            await manager.close()
        error = raised.value
        assert not isinstance(error, TransientError)  # a broken script is never retried
        assert error.sqlstate == "42601"
        assert 'syntax error at or near "SELEC"' in str(error)

        # Rolled back as a whole: the version and every statement before the error.
        assert (
            scalar(
                fresh_db_url,
                "SELECT extversion FROM pg_extension WHERE extname = 'pgconductor'",
            )
            == BASE
        )
        assert scalar(fresh_db_url, "SELECT to_regclass('pgconductor.chaos_canary')") is None
        assert not execute(
            fresh_db_url,
            "SELECT 1 FROM information_schema.columns"
            " WHERE table_schema = 'pgconductor' AND column_name = 'chaos_canary'",
        )

        after = invoke(fresh_db_url, [{"n": 10 + i} for i in range(3)])
        await wait_until(lambda: finished_count(fresh_db_url, after) == 3, timeout=10)

    # The CLI says the same in one line, with the SQLSTATE, and exits 1.
    result = await asyncio.to_thread(cli, "schema", "upgrade", "--to", broken, url=fresh_db_url)
    assert result.returncode == 1
    assert 'error: syntax error at or near "SELEC" (SQLSTATE 42601)' in result.stderr
    assert "Traceback" not in result.stderr


async def test_concurrent_installs_serialise_and_only_one_does_the_work(
    bare_db_url: str,
) -> None:
    """Six orchestrators install at once on a bare database: one CREATE EXTENSION creates
    it, the others find it there; nobody errors."""
    execute(bare_db_url, "CREATE TABLE ddl_log (tag text, created int)")
    execute(
        bare_db_url,
        "CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN"
        " INSERT INTO public.ddl_log SELECT tg_tag, count(*)"
        " FROM pg_event_trigger_ddl_commands() AS c"
        " WHERE c.object_type = 'extension' AND c.command_tag = tg_tag; END $$",
    )
    execute(
        bare_db_url,
        "CREATE EVENT TRIGGER log_ext ON ddl_command_end"
        " WHEN TAG IN ('CREATE EXTENSION') EXECUTE FUNCTION log_ddl()",
    )
    managers = [SchemaManager(bare_db_url) for _ in range(6)]
    try:
        versions = await asyncio.gather(*(m.install() for m in managers))
    finally:
        await asyncio.gather(*(m.close() for m in managers))
    assert versions == [BASE] * 6
    log = execute(bare_db_url, "SELECT created FROM ddl_log")
    assert sorted(log) == [(0,)] * 5 + [(1,)]  # six commands ran, exactly one created it


async def test_concurrent_upgrades_serialise_and_only_one_runs_the_script(
    fresh_db_url: str, extension_script: Callable[[str, str], str]
) -> None:
    execute(fresh_db_url, "CREATE TABLE upgrade_log (pid int)")
    target = extension_script(
        "chaos",
        "INSERT INTO public.upgrade_log VALUES (pg_backend_pid());\n"
        "SELECT pg_sleep(0.3);\n",  # long enough for every other upgrade to queue up
    )
    managers = [SchemaManager(fresh_db_url) for _ in range(5)]
    try:
        versions = await asyncio.gather(*(m.upgrade(to=target) for m in managers))
    finally:
        await asyncio.gather(*(m.close() for m in managers))
    assert versions == [target] * 5
    assert scalar(fresh_db_url, "SELECT count(*) FROM upgrade_log") == 1


async def test_orchestrator_refuses_an_extension_version_it_does_not_support(
    fresh_db_url: str,
    extension_script: Callable[[str, str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Installed older than supported: the package asks for `schema upgrade`. (The default of
    # SchemaManager's `supported` is bound at definition time: patching the module constant
    # SUPPORTED_EXTENSION_VERSIONS alone would not reach it.)
    with monkeypatch.context() as patch:
        patch.setitem(SchemaManager.__init__.__kwdefaults__, "supported", ("9.9.0",))
        old = make_orchestrator(make_conductor(fresh_db_url, "A"))
        try:
            with pytest.raises(VersionMismatch) as raised:
                await old.start()
        finally:
            await old.conductor.close()
    assert str(raised.value) == (
        f"pgconductor extension {BASE} is installed, but this package"
        f" (pgconductor {PACKAGE_VERSION}) supports 9.9.0"
    )
    assert raised.value.hint == (
        "run `pgconductor schema upgrade` (ALTER EXTENSION pgconductor UPDATE TO '9.9.0')"
    )

    # Installed newer than supported: the package asks to be upgraded itself.
    newer = extension_script("newer", "SELECT 1;\n")
    manager = SchemaManager(fresh_db_url)
    try:
        assert await manager.upgrade(to=newer) == newer
    finally:
        await manager.close()
    orch = make_orchestrator(make_conductor(fresh_db_url, "A"))
    try:
        with pytest.raises(VersionMismatch) as raised:
            await orch.start()
    finally:
        await orch.conductor.close()
    assert f"pgconductor extension {newer} is installed" in str(raised.value)
    assert raised.value.hint == "upgrade the Python package: pip install --upgrade pgconductor"
    assert not orch.started
    # Refused before touching anything: no task registered, no orchestrator row.
    assert scalar(fresh_db_url, "SELECT count(*) FROM pgconductor.tasks") == 0
    assert scalar(fresh_db_url, "SELECT count(*) FROM pgconductor.orchestrators") == 0

    # The worker CLI refuses too, with the same message and hint, exit status 1.
    result = await asyncio.to_thread(
        cli,
        "worker",
        "start",
        "--app",
        "chaos.app:build",
        "--stats-interval",
        "0",
        url=fresh_db_url,
    )
    assert result.returncode == 1
    assert f"error: pgconductor extension {newer} is installed, but this package" in result.stderr
    assert "hint: upgrade the Python package" in result.stderr
    assert "Traceback" not in result.stderr
