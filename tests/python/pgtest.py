"""Helpers for tests against a real PostgreSQL: URLs, one-off SQL, polling.

`execute(url, sql, *params)` runs SQL with psycopg directly (autocommit) for assertions;
`wait_until(predicate, timeout)` / `wait_until_sync(...)` poll a condition instead of sleeping.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from pgconductor.db import to_sqlalchemy_url

#: The extension version a fresh `CREATE EXTENSION pgconductor` installs (the control file's).
EXTENSION_VERSION: str = re.search(  # type: ignore[union-attr]
    r"default_version\s*=\s*'([^']+)'",
    (Path(__file__).resolve().parents[2] / "pgconductor.control").read_text(),
).group(1)


def libpq_url(url: str) -> str:
    """A URL psycopg/libpq accepts (drops a SQLAlchemy `+driver` suffix)."""
    parsed = to_sqlalchemy_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    return make_url(libpq_url(url)).set(database=database).render_as_string(hide_password=False)


def execute(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement in autocommit with psycopg; return its rows ([] when none).

    A 5 s lock timeout turns a test that would block on a lock into a clear failure.
    """
    with psycopg.connect(libpq_url(url), autocommit=True, options="-c lock_timeout=5s") as conn:
        cur = conn.execute(query.encode(), params or None)  # type: ignore[call-overload]
        return cur.fetchall() if cur.description else []


async def wait_until(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float = 10.0,
    interval: float = 0.02,
) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        await asyncio.sleep(interval)


def wait_until_sync(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """Blocking `wait_until`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)
