"""`schema install --sql-only`: the released scripts run as plain SQL (managed Postgres).

The package's copy of the install script of the oldest release, then the update chain,
gives the same catalog as `CREATE EXTENSION` of the newest released version (less the
extension membership and the install record). A version with no released script of its own
(under development) is installed from the newest older one plus the updates. The installer
needs no superuser, only CREATE on the database, and what it installs works for that role;
installing twice changes nothing, a downgrade is refused, and the CLI does the same.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from pgconductor.db import SqlDatabaseClient
from pgconductor.errors import InvalidState
from pgconductor.schema import SUPPORTED_EXTENSION_VERSIONS, SchemaManager, _version_key
from pgconductor.types import ExecutionResult, ResultStatus
from pgtest import execute, libpq_url, with_database
from upgrade.test_upgrade import diff, snapshot  # tests/python is on sys.path (conftest)

NEWEST = max(SUPPORTED_EXTENSION_VERSIONS, key=_version_key)
OLDEST = min(SUPPORTED_EXTENSION_VERSIONS, key=_version_key)
RELEASED = max(
    (
        p.name.removeprefix("pgconductor--").removesuffix(".sql")
        for p in (Path(__file__).resolve().parents[3] / "extension" / "versions").glob("*.sql")
    ),
    key=_version_key,
)
CLI = Path(sys.executable).with_name("pgconductor")


def recorded(url: str) -> list[tuple[str, str]]:
    rows = execute(url, "SELECT version, script FROM pgconductor.sql_install ORDER BY applied_at")
    return [(str(v), str(s)) for v, s in rows]


def in_pg_extension(url: str) -> int:
    rows = execute(url, "SELECT count(*) FROM pg_extension WHERE extname = 'pgconductor'")
    return int(rows[0][0])


@pytest.fixture
def role_url(server_url: str, bare_db_url: str) -> Iterator[str]:
    """`bare_db_url` as a new login role that may only CREATE in that database."""
    role = f"pgc_sqlonly_{uuid.uuid4().hex[:8]}"
    name = make_url(libpq_url(bare_db_url)).database
    execute(server_url, f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB')
    execute(server_url, f'GRANT CREATE ON DATABASE "{name}" TO "{role}"')
    try:
        yield make_url(libpq_url(bare_db_url)).set(username=role).render_as_string(False)
    finally:
        execute(bare_db_url, f'DROP OWNED BY "{role}"')
        execute(server_url, f'REVOKE ALL ON DATABASE "{name}" FROM "{role}"')
        execute(server_url, f'DROP ROLE "{role}"')


async def test_the_update_chain_gives_the_catalog_of_a_fresh_install(
    bare_db_url: str, server_url: str
) -> None:
    manager = SchemaManager(bare_db_url)
    try:
        assert await manager.install(OLDEST, sql_only=True) == OLDEST
        assert await manager.upgrade(RELEASED) == RELEASED
        assert await manager.check() == RELEASED
    finally:
        await manager.close()
    assert in_pg_extension(bare_db_url) == 0
    scripts = [script for _, script in recorded(bare_db_url)]
    assert scripts[0] == f"pgconductor--{OLDEST}.sql"
    assert len(scripts) == 1 + SUPPORTED_EXTENSION_VERSIONS.index(RELEASED)
    assert scripts[-1].endswith(f"--{RELEASED}.sql")

    fresh_name = f"pgc_fresh_{uuid.uuid4().hex[:10]}"
    execute(server_url, f'CREATE DATABASE "{fresh_name}"')
    fresh = with_database(server_url, fresh_name)
    try:
        execute(fresh, f"CREATE EXTENSION pgconductor VERSION '{RELEASED}'")
        expected, got = snapshot(fresh), snapshot(bare_db_url)
    finally:
        execute(server_url, f'DROP DATABASE "{fresh_name}" WITH (FORCE)')
    assert expected["members"]
    assert got["members"] == []
    differences = [
        line
        for line in diff(expected, got)
        if not line.startswith("- members:") and "sql_install" not in line
    ]
    assert differences == []


async def test_a_role_with_create_on_the_database_installs_and_uses_it(role_url: str) -> None:
    manager = SchemaManager(role_url)
    try:
        assert await manager.install(sql_only=True) == NEWEST
        assert await manager.install(sql_only=True) == NEWEST  # there already: nothing runs
        with pytest.raises(InvalidState, match="cannot be downgraded"):
            await manager.upgrade(OLDEST)
    finally:
        await manager.close()
    record = recorded(role_url)
    assert record[0] == (RELEASED, f"pgconductor--{RELEASED}.sql")
    assert record[-1][0] == NEWEST
    assert len(record) == 1 + len(
        SUPPORTED_EXTENSION_VERSIONS[SUPPORTED_EXTENSION_VERSIONS.index(RELEASED) + 1 :]
    )
    assert execute(role_url, "SELECT pgconductor.version(), current_user <> 'postgres'") == [
        (NEWEST, True)
    ]

    client = SqlDatabaseClient(role_url)
    try:
        worker = uuid.uuid4()
        await client.heartbeat(worker, "test", dt.timedelta(seconds=30), {})
        eid = await client.invoke("plain.t", {"n": 1})
        claimed = await client.get_executions(worker, "default", ["plain.t"], 5)
        assert [c.id for c in claimed] == [eid]
        results = [ExecutionResult(eid, claimed[0].lease, ResultStatus.COMPLETED)]
        assert [o.outcome for o in await client.return_executions(worker, results)] == ["completed"]
    finally:
        await client.close()


def test_the_cli_installs_as_plain_sql(bare_db_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": bare_db_url}
    install = subprocess.run(
        [str(CLI), "schema", "install", "--sql-only"], env=env, capture_output=True, text=True
    )
    assert install.returncode == 0, install.stderr
    assert f"pgconductor {NEWEST} installed as plain SQL" in install.stdout
    check = subprocess.run([str(CLI), "schema", "check"], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert in_pg_extension(bare_db_url) == 0
