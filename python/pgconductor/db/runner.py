"""Where a statement runs: the caller's connection, or one of the pool's, with retries.

SQLAlchemy owns the engine and its pool. A call made on the client's own behalf borrows a
pooled connection and, when the driver is psycopg (the default), runs its statement on the
psycopg connection itself: autocommit (one statement is its own transaction), prepared
once per connection (unless `prepare=False`), parameters and rows in binary. That skips
SQLAlchemy's statement machinery, which cost more than the statement itself for the
worker's small, frequent calls. Other drivers go through SQLAlchemy in autocommit mode.

The runner keeps one pooled connection checked out, in autocommit, and runs a call there
whenever no other call of this client is on it; a call that finds it busy borrows another
connection for that one statement (and so does every call when the pool holds only one).
That skips a checkout and checkin per call, which cost a third of a millisecond when calls
come some milliseconds apart. Any failure on the kept connection forgets it (the next call
takes a fresh one); `close()` gives it back.

A pooled connection goes back as it came (not autocommit, idle). One the failure left
broken is invalidated like SQLAlchemy does after a disconnect: with every connection the
pool opened before it, since they most likely died together (a server restart). One left
in doubt (cancelled mid-statement) is closed alone.

A call given the caller's connection runs there, inside a savepoint when the caller has a
transaction open, and is never retried: the caller owns the transaction. Retries: see
`pgconductor.retry`.

Behind a pooler in transaction mode (PgBouncer, `pool_mode = transaction`) consecutive
transactions of one client connection may run on different server sessions, so a statement
prepared in one is missing (or already there) in the next. The URL says so with the query
parameter `pooler=transaction`, which is taken out before connecting: the runner then never
prepares a statement (psycopg sends every one unnamed) and `behind_pooler` tells the
orchestrator not to LISTEN over this URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar, cast

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import Pool, PoolProxiedConnection, QueuePool
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.util import greenlet_spawn

from pgconductor.db.rows import Fetch
from pgconductor.db.statements import (
    SCHEMA_LOCK,
    SCHEMA_LOCK_KEY,
    SCHEMA_LOCK_SQL,
    SQL_ONLY_RECORD,
    SQL_ONLY_RECORD_TABLE,
    SQL_ONLY_SCHEMA,
    SQL_ONLY_VERSION,
    Call,
)
from pgconductor.encoding import to_sqlalchemy_url
from pgconductor.errors import InvalidInput, from_db_error
from pgconductor.retry import DB_ERRORS, RetryPolicy, retry_async, retry_sync

__all__ = ["POOLER_PARAMETER", "StatementRunner", "split_pooler"]

T = TypeVar("T")
#: How a pooled connection is given back after a failure.
_KEEP, _DROP_ONE, _DROP_ALL = "keep", "drop one", "drop all"


#: The URL query parameter naming the pooler mode between this client and the server.
POOLER_PARAMETER = "pooler"


def split_pooler(url: URL) -> tuple[URL, bool]:
    """`url` without `?pooler=transaction`, and whether it had it (other values are refused)."""
    mode = url.query.get(POOLER_PARAMETER)
    if mode is None:
        return url, False
    if mode != "transaction":
        raise InvalidInput(
            f"unknown pooler mode {mode!r} in the database URL",
            sqlstate="22023",
            hint="write ?pooler=transaction for a pooler in transaction mode (PgBouncer); "
            "a pooler in session mode needs no parameter",
        )
    return url.difference_update_query([POOLER_PARAMETER]), True


def _uses_psycopg(engine: AsyncEngine | Engine) -> bool:
    """True when the engine's connections are psycopg connections."""
    return engine.dialect.driver in ("psycopg", "psycopg_async")


def _after_failure(driver: Any, exc: BaseException) -> str:
    """What to do with a pooled connection whose statement failed with `exc`."""
    if driver.closed or driver.broken:
        return _DROP_ALL
    if not isinstance(exc, Exception):  # cancelled or interrupted: the state is in doubt
        return _DROP_ONE
    return _KEEP if driver.info.transaction_status == TransactionStatus.IDLE else _DROP_ONE


def _release(pool: Pool, pooled: PoolProxiedConnection, verdict: str, exc: BaseException) -> None:
    """Give a failed connection back by `verdict`: to the pool, closed alone, or recycled."""
    if verdict == _DROP_ALL:
        pool._invalidate(pooled, exc)
    elif verdict == _DROP_ONE:
        pooled.invalidate(exc)
    else:
        pooled.close()


class _Kept:
    """The pooled connection a runner keeps for its own calls, and whether a call is on it."""

    __slots__ = ("busy", "pooled")

    def __init__(self) -> None:
        self.pooled: PoolProxiedConnection | None = None
        self.busy = False


class StatementRunner:
    """The engine, the retry policy and the ways one statement can run.

    `prepare=False` never prepares statements (for transaction-mode poolers such as
    PgBouncer before 1.21, which cannot keep them); on an engine this client creates it
    also turns off psycopg's automatic preparation of repeated statements. A URL with
    `?pooler=transaction` implies it; either way `behind_pooler` is then True.
    """

    def __init__(
        self,
        url_or_engine: str | URL | AsyncEngine,
        *,
        retry: RetryPolicy | None = None,
        abort: asyncio.Event | None = None,
        pool_size: int = 5,
        max_overflow: int = 5,
        engine_options: Mapping[str, Any] | None = None,
        prepare: bool = True,
    ) -> None:
        self.retry_policy = retry or RetryPolicy()
        self.abort = abort
        if isinstance(url_or_engine, AsyncEngine):
            self.engine, self._owns_engine = url_or_engine, False
        else:
            options: dict[str, Any] = {"pool_size": pool_size, "max_overflow": max_overflow}
            options.update(engine_options or {})
            url, pooled = split_pooler(to_sqlalchemy_url(url_or_engine))
            prepare = prepare and not pooled
            if not prepare and url.drivername.startswith("postgresql+psycopg"):
                options["connect_args"] = {
                    "prepare_threshold": None,
                    **options.get("connect_args", {}),
                }
            self.engine = create_async_engine(url, **options)
            self._owns_engine = True
        self.prepare = prepare
        #: True when a transaction-mode pooler stands between this client and the server:
        #: no statement is prepared, and LISTEN needs a direct URL (the notifier's).
        self.behind_pooler = not prepare
        self._kept = _Kept()
        self._sync_engine: Engine | None = None
        self._autocommit_of: tuple[AsyncEngine, AsyncEngine] | None = None

    @property
    def _autocommit(self) -> AsyncEngine:
        """`self.engine` in autocommit mode (same pool), derived once per engine."""
        if self._autocommit_of is None or self._autocommit_of[0] is not self.engine:
            self._autocommit_of = (
                self.engine,
                self.engine.execution_options(isolation_level="AUTOCOMMIT"),
            )
        return self._autocommit_of[1]

    def _sync(self) -> Engine:
        """The blocking engine of the sync enqueue path, made on first use from the URL."""
        if self._sync_engine is None:
            url = self.engine.url
            if url.drivername.startswith("postgresql+psycopg"):
                url = url.set(drivername="postgresql+psycopg")
            options: dict[str, Any] = {"pool_size": 1, "max_overflow": 2}
            if not self.prepare:
                options["connect_args"] = {"prepare_threshold": None}
            self._sync_engine = create_engine(url, **options)
        return self._sync_engine

    # -- async ------------------------------------------------------------------------------

    async def _run(
        self,
        call: Call,
        params: Mapping[str, Any],
        fetch: Fetch[T],
        conn: AsyncConnection | None = None,
    ) -> T:
        """Run one call: on `conn` (savepoint, no retry) or on a pooled connection, retried."""
        if conn is not None:
            try:
                async with conn.begin_nested() if conn.in_transaction() else conn.begin():
                    return fetch((await conn.execute(call.text, dict(params))).all())
            except DB_ERRORS as exc:
                raise from_db_error(exc) from exc
        if _uses_psycopg(self.engine):
            once = partial(self._on_driver, call.driver, params, fetch)
        else:
            once = partial(self._on_sqlalchemy, call.text, params, fetch)
        return await retry_async(call.name, once, self.retry_policy, self.abort)

    async def _on_driver(self, sql: str, params: Mapping[str, Any], fetch: Fetch[T]) -> T:
        """One statement on the kept connection, or on a borrowed one when that is busy."""
        kept = self._kept
        if kept.busy or (kept.pooled is None and not self._can_keep()):
            return await self._on_borrowed(sql, params, fetch)
        kept.busy = True
        try:
            return await self._on_kept(kept, sql, params, fetch)
        finally:
            kept.busy = False

    def _can_keep(self) -> bool:
        """False for a pool of one connection: keeping it would starve concurrent calls."""
        pool = self.engine.sync_engine.pool
        if isinstance(pool, QueuePool):
            overflow = pool._max_overflow
            return overflow < 0 or pool.size() + overflow > 1
        return True

    async def _on_kept(
        self, kept: _Kept, sql: str, params: Mapping[str, Any], fetch: Fetch[T]
    ) -> T:
        """One statement on the kept connection, taken from the pool (in autocommit) if none."""
        pooled = kept.pooled
        fresh = pooled is None
        if pooled is None:
            pooled = kept.pooled = await self.engine.raw_connection()
        driver = cast("psycopg.AsyncConnection[Any]", pooled.driver_connection)
        try:
            if fresh:
                await driver.set_autocommit(True)
            cursor = await driver.execute(sql, params, prepare=self.prepare, binary=True)
            rows = await cursor.fetchall()
        except BaseException as exc:
            kept.pooled = None
            await asyncio.shield(self._give_back_failed(pooled, exc))
            raise
        return fetch(rows)

    async def _on_borrowed(self, sql: str, params: Mapping[str, Any], fetch: Fetch[T]) -> T:
        """One statement on a connection borrowed from the pool for it, in autocommit."""
        pooled = await self.engine.raw_connection()
        driver = cast("psycopg.AsyncConnection[Any]", pooled.driver_connection)
        try:
            await driver.set_autocommit(True)
            cursor = await driver.execute(sql, params, prepare=self.prepare, binary=True)
            rows = await cursor.fetchall()
            await driver.set_autocommit(False)
        except BaseException as exc:
            await asyncio.shield(self._give_back_failed(pooled, exc))
            raise
        await greenlet_spawn(pooled.close)
        return fetch(rows)

    async def _give_back_failed(self, pooled: PoolProxiedConnection, exc: BaseException) -> None:
        """Return, close, or (with every older one) recycle a connection a failure left."""
        driver = cast("psycopg.AsyncConnection[Any]", pooled.driver_connection)
        verdict = _after_failure(driver, exc)
        if verdict == _KEEP:
            try:
                await driver.set_autocommit(False)
            except psycopg.Error:
                verdict = _DROP_ONE
        await greenlet_spawn(_release, self.engine.sync_engine.pool, pooled, verdict, exc)

    async def _on_sqlalchemy(
        self, stmt: TextClause, params: Mapping[str, Any], fetch: Fetch[T]
    ) -> T:
        """One statement through SQLAlchemy in autocommit (drivers other than psycopg)."""
        async with self._autocommit.connect() as own:
            return fetch((await own.execute(stmt, dict(params))).all())

    async def _run_locked(self, name: str, statement: TextClause) -> None:
        """Run DDL in a transaction that first takes the schema advisory lock; retried."""

        async def once() -> None:
            async with self.engine.begin() as own:
                await own.execute(SCHEMA_LOCK, {"key": SCHEMA_LOCK_KEY})
                await own.execute(statement)

        await retry_async(name, once, self.retry_policy, self.abort)

    async def _run_scripts_locked(
        self,
        name: str,
        scripts: Sequence[tuple[str, str, str]],
        *,
        create_schema: bool,
        expected: str | None = None,
    ) -> bool:
        """Run install or update scripts as plain SQL in one transaction under the schema lock
        (`CREATE SCHEMA pgconductor` first when `create_schema`), recording each as
        `(version, file name)` in `pgconductor.sql_install`; retried as a whole.

        `scripts` holds `(version, file name, SQL text)`; the text is sent without parameters
        (one simple-protocol query of many statements) on a psycopg connection of the pool.
        Once the lock is held, nothing runs (False) when another process got there first: the
        schema exists (`create_schema`), or the recorded version is no longer `expected`.
        """
        if not _uses_psycopg(self.engine):
            raise TypeError("plain-SQL installs need the psycopg driver")

        async def once() -> bool:
            pooled = await self.engine.raw_connection()
            driver = cast("psycopg.AsyncConnection[Any]", pooled.driver_connection)
            try:
                async with driver.transaction():
                    ran = await apply(driver)
            except BaseException as exc:
                await asyncio.shield(self._give_back_failed(pooled, exc))
                raise
            await greenlet_spawn(pooled.close)
            return ran

        async def apply(driver: psycopg.AsyncConnection[Any]) -> bool:
            lock = SCHEMA_LOCK_SQL.format(key="%(key)s")
            await driver.execute(lock, {"key": SCHEMA_LOCK_KEY}, prepare=False)
            if create_schema:
                there = "SELECT pg_catalog.to_regnamespace('pgconductor') IS NOT NULL"
                row = await (await driver.execute(there, prepare=False)).fetchone()
                if row is not None and row[0]:
                    return False
                await driver.execute(SQL_ONLY_SCHEMA, prepare=False)
            if expected is not None:
                row = await (await driver.execute(SQL_ONLY_VERSION, prepare=False)).fetchone()
                if row is None or row[0] != expected:
                    return False
            for version, file_name, script in scripts:
                await driver.execute(script.encode(), prepare=False)
                await driver.execute(SQL_ONLY_RECORD_TABLE, prepare=False)
                record = {"version": version, "script": file_name}
                await driver.execute(SQL_ONLY_RECORD, record, prepare=False)
            return True

        return await retry_async(name, once, self.retry_policy, self.abort)

    # -- blocking (the sync enqueue path) ---------------------------------------------------

    def _run_sync(
        self,
        call: Call,
        params: Mapping[str, Any],
        fetch: Fetch[T],
        conn: Connection | None,
    ) -> T:
        """Blocking `_run`."""
        if conn is not None:
            try:
                with conn.begin_nested() if conn.in_transaction() else conn.begin():
                    return fetch(conn.execute(call.text, dict(params)).all())
            except DB_ERRORS as exc:
                raise from_db_error(exc) from exc
        engine = self._sync()
        once: Callable[[], T]
        if _uses_psycopg(engine):
            once = partial(self._on_driver_sync, engine, call.driver, params, fetch)
        else:

            def once() -> T:
                with engine.begin() as own:
                    return fetch(own.execute(call.text, dict(params)).all())

        return retry_sync(call.name, once, self.retry_policy)

    def _on_driver_sync(
        self, engine: Engine, sql: str, params: Mapping[str, Any], fetch: Fetch[T]
    ) -> T:
        """Blocking `_on_driver`."""
        pooled = engine.raw_connection()
        driver = cast("psycopg.Connection[Any]", pooled.driver_connection)
        try:
            driver.autocommit = True
            rows = driver.execute(sql, params, prepare=self.prepare, binary=True).fetchall()
            driver.autocommit = False
        except BaseException as exc:
            verdict = _after_failure(driver, exc)
            if verdict == _KEEP:
                try:
                    driver.autocommit = False
                except psycopg.Error:
                    verdict = _DROP_ONE
            _release(engine.pool, pooled, verdict, exc)
            raise
        pooled.close()
        return fetch(rows)

    async def close(self) -> None:
        """Give back the kept connection; dispose of the engines this client created.

        A caller's engine is left open.
        """
        pooled, self._kept.pooled = self._kept.pooled, None
        if pooled is not None:
            driver = cast("psycopg.AsyncConnection[Any]", pooled.driver_connection)
            try:
                await driver.set_autocommit(False)
            except psycopg.Error as exc:
                await greenlet_spawn(pooled.invalidate, exc)
            else:
                await greenlet_spawn(pooled.close)
        if self._sync_engine is not None:
            self._sync_engine.dispose()
            self._sync_engine = None
        if self._owns_engine:
            await self.engine.dispose()
