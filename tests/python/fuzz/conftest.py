"""Fixtures of the fuzz layer: a seeded database, its routines and pools; the run summary.

The summary (calls, passes, errors by SQLSTATE, findings) is printed at the end of the
pytest run, also when the run passes; PGCONDUCTOR_FUZZ_REPORT=path also writes the findings
as Markdown with their reproductions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from fuzz.catalog import Routine, discover
from fuzz.report import SUMMARY
from fuzz.seed import SEED_SQL, Pools, load_pools
from pgtest import execute, with_database


@pytest.fixture(scope="module")
def fuzz_db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The module's database: a clone of the session template (`db_url`), or with
    PGCONDUCTOR_FUZZ_EXTENSION_VERSION a fresh one with that installed version (to fuzz an
    older release, e.g. 0.2.0)."""
    version = os.environ.get("PGCONDUCTOR_FUZZ_EXTENSION_VERSION")
    if not version:
        yield request.getfixturevalue("db_url")
        return
    server = request.getfixturevalue("server_url")
    db = f"pgconductor_fuzz_{os.getpid()}"
    name = sql.Identifier(db)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    url = with_database(server, db)
    try:
        execute(url, f"CREATE EXTENSION pgconductor VERSION '{version}'")
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


@pytest.fixture(scope="module")
def seeded_url(fuzz_db_url: str) -> str:
    """The fuzz database with the fuzz seed applied."""
    with psycopg.connect(fuzz_db_url, autocommit=True) as conn:
        conn.execute(SEED_SQL.encode())
    return fuzz_db_url


@pytest.fixture(scope="module")
def seeded(seeded_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection to the seeded database."""
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def routines(seeded: psycopg.Connection[tuple[object, ...]]) -> list[Routine]:
    """Every public routine the catalog lists."""
    return discover(seeded)


@pytest.fixture(scope="module")
def pools(seeded: psycopg.Connection[tuple[object, ...]]) -> Pools:
    """Values that exist in the seeded database."""
    return load_pools(seeded)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fuzz tally (the test stores it in SUMMARY)."""
    if SUMMARY:
        terminalreporter.section("pgconductor fuzz")
        for line in SUMMARY:
            terminalreporter.write_line(line)
