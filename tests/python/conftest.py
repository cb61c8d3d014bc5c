"""Shared fixtures: real, cheaply isolated databases for integration tests.

`DATABASE_URL` (exported by the Makefile) names a server where `CREATE EXTENSION pgconductor`
works. A session-wide template database gets the extension once; each test module
(`db_url`) or test (`fresh_db_url`) gets a clone made with `CREATE DATABASE ... TEMPLATE`.
Tests under `integration/` and `chaos/` fail (never skip) when `DATABASE_URL` is unset.

Helpers live in `pgtest.py` (`execute`, `wait_until`, `wait_until_sync`) and are also
offered as fixtures of the same names; the unit tests' fake client is in `fakes.py`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgconductor.db import RetryPolicy, SqlDatabaseClient
from pgconductor.schema import SchemaManager

sys.path.insert(0, str(Path(__file__).parent))  # tests import `fakes` and `pgtest`
from pgtest import execute, libpq_url, wait_until, wait_until_sync, with_database

_DB_DIRS = ("integration", "chaos", "upgrade")
#: `make test-sql-only`: the template gets a plain-SQL install (managed Postgres) instead of
#: CREATE EXTENSION.
SQL_ONLY = os.environ.get("PGCONDUCTOR_TEST_SQL_ONLY") == "1"
_counter = itertools.count(1)


def _needs_db(path: Path) -> bool:
    return any(part in _DB_DIRS for part in path.parts)


@pytest.fixture(autouse=True)
def _require_database_url(request: pytest.FixtureRequest) -> None:
    """Integration and chaos tests fail loudly without a database."""
    if _needs_db(Path(str(request.node.path))) and not os.environ.get("DATABASE_URL"):
        pytest.fail(
            "DATABASE_URL is not set: integration tests need a PostgreSQL server with the "
            "pgconductor extension available (run them with `make test-python`)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def server_url() -> str:
    """The server's maintenance URL, from `DATABASE_URL`."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        pytest.fail("DATABASE_URL is not set", pytrace=False)
    return libpq_url(url)


def _create_database(server: str, name: str, template: str | None = None) -> str:
    ident = sql.Identifier(name)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        if template is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        else:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(ident, sql.Identifier(template))
            )
        # Tests move time with pgconductor.fake_now, which only a test-clock database honours.
        conn.execute(sql.SQL("ALTER DATABASE {} SET pgconductor.test_clock = on").format(ident))
    return with_database(server, name)


def _drop_database(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    """Name of a session template database with the extension installed."""
    name = f"pgconductor_tpl_{os.getpid()}"
    url = _create_database(server_url, name)
    if SQL_ONLY:
        asyncio.run(_install_sql_only(url))
    else:
        execute(url, "CREATE EXTENSION pgconductor")
    yield name
    _drop_database(server_url, name)


async def _install_sql_only(url: str) -> None:
    manager = SchemaManager(url)
    try:
        await manager.install(sql_only=True)
    finally:
        await manager.close()


def _clone(server_url: str, template_db: str, label: str) -> Iterator[str]:
    name = f"pgconductor_t{os.getpid()}_{next(_counter)}_{label}"[:63]
    url = _create_database(server_url, name, template=template_db)
    try:
        yield url
    finally:
        _drop_database(server_url, name)


@pytest.fixture(scope="module")
def db_url(server_url: str, template_db: str) -> Iterator[str]:
    """URL of a database with the extension, fresh for each test module."""
    yield from _clone(server_url, template_db, "m")


@pytest.fixture
def fresh_db_url(server_url: str, template_db: str) -> Iterator[str]:
    """URL of a database with the extension, fresh for each test."""
    yield from _clone(server_url, template_db, "f")


@pytest.fixture
def bare_db_url(server_url: str) -> Iterator[str]:
    """URL of an empty database without the extension, fresh for each test."""
    name = f"pgconductor_b{os.getpid()}_{next(_counter)}"
    url = _create_database(server_url, name)
    try:
        yield url
    finally:
        _drop_database(server_url, name)


@pytest.fixture
async def sql_client(db_url: str) -> AsyncIterator[SqlDatabaseClient]:
    """A `SqlDatabaseClient` on the module's database (fast retries), closed afterwards."""
    client = SqlDatabaseClient(db_url, retry=RetryPolicy(max_attempts=5, base=0.01, cap=0.1))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(name="execute")
def execute_fixture() -> Callable[..., list[tuple[Any, ...]]]:
    """The `execute(url, sql, *params)` helper as a fixture."""
    return execute


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., Awaitable[Any]]:
    """The async `wait_until(predicate, timeout)` helper as a fixture."""
    return wait_until


@pytest.fixture(name="wait_until_sync")
def wait_until_sync_fixture() -> Callable[..., Any]:
    """The blocking `wait_until_sync(predicate, timeout)` helper as a fixture."""
    return wait_until_sync
