"""Stand-ins for SQLAlchemy's engines and psycopg's connections, for SqlDatabaseClient tests.

A stub engine holds a plan: each statement, whichever way it runs (the pooled psycopg
connection, SQLAlchemy autocommit, a transaction, the caller's connection), pops the next
planned outcome (rows, or an exception to raise) and is recorded with its parameters in
`engine.executed`. `Broken(exc)` raises `exc` and leaves the connection broken, as a lost
server does. Pooled connections record how they were given back in `pooled.fate` (None
while checked out). A statement on the async driver first waits for the next of
`engine.gates`, if any, so a test can hold one call in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import SimpleNamespace
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from pgconductor.db import RetryPolicy, SqlDatabaseClient

FAST = RetryPolicy(max_attempts=4, base=0.001, cap=0.002)


def refused() -> sa_exc.OperationalError:
    """What SQLAlchemy raises when the server refuses a connection."""
    return sa_exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("refused"))


class Broken(Exception):
    """A planned failure that also breaks the connection it happened on."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


class StubResult:
    """Enough of a SQLAlchemy result for the client's readers."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def all(self) -> list[tuple[Any, ...]]:
        return self.rows


class StubPool:
    """Records pool-wide invalidations."""

    def __init__(self) -> None:
        self.invalidations: list[BaseException | None] = []

    def _invalidate(self, pooled: StubPooled, exc: BaseException | None = None) -> None:
        self.invalidations.append(exc)
        pooled.fate = "invalidated with the pool"


class StubDriver:
    """A psycopg connection (async, or blocking when `sync`): autocommit, execute, state."""

    def __init__(self, engine: StubEngine) -> None:
        self.engine = engine
        self.closed = False
        self.broken = False
        self._autocommit = False
        self.autocommit_log: list[bool] = []
        self.info = SimpleNamespace(transaction_status=TransactionStatus.IDLE)
        self.fail_autocommit_off = False
        self.executions: list[dict[str, Any]] = []

    def _switch(self, value: bool) -> None:
        if self.broken or (self.fail_autocommit_off and not value):
            raise psycopg.OperationalError("the connection is lost")
        self._autocommit = value
        self.autocommit_log.append(value)

    def _execute(self, sql: str, params: Any, **options: Any) -> SimpleNamespace:
        self.executions.append({"autocommit": self._autocommit, **options})
        try:
            rows = self.engine.outcome(sql, dict(params))
        except Broken as broken:
            self.broken = True
            raise broken.error from None
        return SimpleNamespace(rows=rows)

    async def set_autocommit(self, value: bool) -> None:
        self._switch(value)

    async def execute(self, sql: str, params: Any, **options: Any) -> Any:
        if self.engine.gates:
            await self.engine.gates.pop(0).wait()
        done = self._execute(sql, params, **options)

        async def fetchall() -> list[tuple[Any, ...]]:
            return done.rows

        return SimpleNamespace(fetchall=fetchall)


class SyncStubDriver(StubDriver):
    """The blocking psycopg connection: `autocommit` is a plain attribute."""

    @property
    def autocommit(self) -> bool:
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._switch(value)

    def execute(self, sql: str, params: Any, **options: Any) -> Any:  # type: ignore[override]
        done = self._execute(sql, params, **options)
        return SimpleNamespace(fetchall=lambda: done.rows)


class StubPooled:
    """A connection checked out of the pool; `fate` says how it went back."""

    def __init__(self, driver: StubDriver) -> None:
        self.driver_connection = driver
        self.fate: str | None = None

    def close(self) -> None:
        self.fate = "returned"

    def invalidate(self, exc: BaseException | None = None) -> None:
        self.fate = "invalidated"


class StubConn:
    """A SQLAlchemy connection (the caller's, or one of the engine's)."""

    def __init__(self, engine: StubEngine, in_tx: bool = False) -> None:
        self.engine = engine
        self.in_tx = in_tx
        self.opened: list[str] = []

    def _execute(self, stmt: Any, params: dict[str, Any] | None = None) -> StubResult:
        return StubResult(self.engine.outcome(stmt.text, params or {}))

    async def execute(self, stmt: Any, params: dict[str, Any] | None = None) -> StubResult:
        return self._execute(stmt, params)

    def in_transaction(self) -> bool:
        return self.in_tx

    @asynccontextmanager
    async def _tx(self, kind: str) -> AsyncIterator[None]:
        self.opened.append(kind)
        yield

    def begin(self) -> Any:
        return self._tx("begin")

    def begin_nested(self) -> Any:
        return self._tx("savepoint")


class SyncStubConn(StubConn):
    """The blocking twin of StubConn."""

    def execute(self, stmt: Any, params: dict[str, Any] | None = None) -> StubResult:  # type: ignore[override]
        return self._execute(stmt, params)

    @contextmanager
    def _sync_tx(self, kind: str) -> Iterator[None]:
        self.opened.append(kind)
        yield

    def begin(self) -> Any:
        return self._sync_tx("begin")

    def begin_nested(self) -> Any:
        return self._sync_tx("savepoint")


class StubEngine:
    """Plays an AsyncEngine whose driver is `driver` (psycopg unless told otherwise)."""

    url = make_url("postgresql+psycopg://u@localhost/db")

    def __init__(self, *plan: Any, driver: str = "psycopg") -> None:
        self.plan = list(plan)
        self.executed: list[tuple[str, dict[str, Any]]] = []
        self.dialect = SimpleNamespace(driver=driver)
        self.pool = StubPool()
        self.sync_engine = SimpleNamespace(pool=self.pool)
        self.pooled: list[StubPooled] = []
        self.sqlalchemy_connections = 0
        self.disposed = False
        self.gates: list[asyncio.Event] = []

    def outcome(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Record a statement and pop its planned outcome (default: one NULL)."""
        self.executed.append((sql, params))
        outcome = self.plan.pop(0) if self.plan else [(None,)]
        if isinstance(outcome, BaseException):
            raise outcome
        return list(outcome)

    def _checkout(self, driver: StubDriver) -> StubPooled:
        pooled = StubPooled(driver)
        self.pooled.append(pooled)
        return pooled

    async def raw_connection(self) -> StubPooled:
        return self._checkout(StubDriver(self))

    def begin(self) -> Any:
        conn = StubConn(self)
        self.sqlalchemy_connections += 1

        @asynccontextmanager
        async def cm() -> AsyncIterator[StubConn]:
            yield conn

        return cm()

    def execution_options(self, **options: Any) -> StubEngine:
        """Autocommit and the like change nothing for the stub."""
        return self

    def connect(self) -> Any:
        return self.begin()

    async def dispose(self) -> None:
        self.disposed = True


class SyncStubEngine(StubEngine):
    """Plays a blocking Engine."""

    def raw_connection(self) -> StubPooled:  # type: ignore[override]
        return self._checkout(SyncStubDriver(self))

    def begin(self) -> Any:
        self.sqlalchemy_connections += 1
        return _SyncBegin(self)

    def dispose(self) -> None:  # type: ignore[override]
        self.disposed = True


class _SyncBegin:
    """`with engine.begin() as conn` for the blocking stub."""

    def __init__(self, engine: StubEngine) -> None:
        self.engine = engine

    def __enter__(self) -> SyncStubConn:
        return SyncStubConn(self.engine)

    def __exit__(self, *exc: object) -> None:
        return None


def client_with(
    *plan: Any,
    abort: asyncio.Event | None = None,
    driver: str = "psycopg",
    prepare: bool = True,
) -> tuple[SqlDatabaseClient, StubEngine]:
    """A client whose engine is a stub playing `plan`."""
    client = SqlDatabaseClient(
        "postgresql://u@localhost/db", retry=FAST, abort=abort, prepare=prepare
    )
    engine = StubEngine(*plan, driver=driver)
    client.engine = engine  # type: ignore[assignment]
    return client, engine
