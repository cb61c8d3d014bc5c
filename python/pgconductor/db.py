"""The only module with SQL text: one typed method per `pgconductor.*` SQL function.

`SqlDatabaseClient` runs each call in its own short transaction on a SQLAlchemy
`AsyncEngine` (psycopg 3) and retries transient errors with capped exponential backoff and
jitter. A call given the caller's connection runs there, inside a savepoint when the caller
has a transaction open, and is never retried: the caller owns the transaction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import fields
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import TextClause

from pgconductor.encoding import to_json, to_sqlalchemy_url
from pgconductor.errors import InvalidInput, PgConductorError, from_db_error
from pgconductor.protocol import DatabaseClient, SchemaClient
from pgconductor.retry import DB_ERRORS, RetryPolicy, retry_async, retry_sync
from pgconductor.types import (
    ClaimedExecution,
    ExecutionInfo,
    ExecutionResult,
    OrchestratorInfo,
    QueueStats,
    ReturnOutcome,
    Signal,
    TaskSpec,
)

__all__ = [
    "DatabaseClient",
    "RetryPolicy",
    "SchemaClient",
    "SqlDatabaseClient",
    "to_json",
    "to_sqlalchemy_url",
]

T = TypeVar("T")
#: A statement's result; `Any` because its generic form differs between SQLAlchemy 2.0 and 2.1.
Rows = Any
#: Key of the advisory lock that serialises concurrent installs and upgrades.
SCHEMA_LOCK_KEY = 0x7067636F6E64  # "pgcond"
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]*$")


def _json_or_none(value: Any) -> str | None:
    return None if value is None else to_json(value)


def _fn(function: str, args: str, columns: str | None = None, tail: str = "") -> TextClause:
    """`SELECT` a pgconductor function; `args` is "name type, ..." bound with explicit CASTs."""
    casts = (
        ", ".join(
            f"CAST(:{name} AS {kind})"
            for name, kind in (a.split(maxsplit=1) for a in args.split(","))
        )
        if args
        else ""
    )
    call = f"pgconductor.{function}({casts})"
    return text(f"SELECT {call}" if columns is None else f"SELECT {columns} FROM {call} {tail}")


_CLAIMED = (
    "id, task_key, queue, payload, attempt, max_attempts, priority, run_at, timeout_ms, lease"
)
_INFO = "id, task_key, queue, state, attempts, priority, run_at, locked_by, last_error, result"
_SQL: dict[str, TextClause] = {
    "invoke": _fn(
        "invoke",
        "task_key text, payload jsonb, queue text, run_at timestamptz,"
        " priority integer, dedupe_key text",
    ),
    "invoke_batch": _fn(
        "invoke_batch",
        "task_keys text[], payloads jsonb[], queues text[],"
        " run_ats timestamptz[], priorities integer[], dedupe_keys text[]",
        "id",
        "WITH ORDINALITY AS b(id, n) ORDER BY n",
    ),
    "register_task": _fn(
        "register_task",
        "key text, queue text, max_attempts integer,"
        " window_start time, window_end time, timezone text,"
        " backoff_base interval, backoff_cap interval, timeout interval",
    ),
    "create_queue": _fn("create_queue", "queue text"),
    "drop_queue": _fn("drop_queue", "queue text, force boolean"),
    "get_executions": _fn(
        "get_executions",
        "task_keys text[], orchestrator_id uuid, batch_size integer, queue text",
        _CLAIMED,
    ),
    "return_executions": _fn(
        "return_executions",
        "orchestrator_id uuid, ids uuid[],"
        " leases integer[], statuses text[], errors text[],"
        " results jsonb[], delays_ms integer[]",
        "id, outcome",
    ),
    "heartbeat": _fn(
        "heartbeat",
        "orchestrator_id uuid, version text, stale_after interval, info jsonb, held uuid[]",
        "kind, execution_id",
    ),
    "recover_stale": _fn("recover_stale", "limit integer", "id, outcome"),
    "release_orchestrator": _fn("release_orchestrator", "orchestrator_id uuid, keep uuid[]"),
    "request_shutdown": _fn("request_shutdown", "orchestrator_id uuid"),
    "cancel": _fn("cancel", "execution_id uuid, reason text"),
    "retry": _fn("retry", "execution_id uuid"),
    "get_execution": _fn("get_execution", "execution_id uuid", f"{_INFO}, finished_at"),
    "queue_stats": _fn(
        "queue_stats",
        "",
        "queue, pending, due, running, completed, failed, cancelled",
        "ORDER BY queue",
    ),
    "orchestrator_stats": _fn(
        "orchestrator_stats",
        "",
        "id, state, version, started_at, last_heartbeat_at, running, info",
    ),
    "prune_finished": _fn("prune_finished", "older_than interval, limit integer"),
    "version": _fn("version", ""),
    "schema_lock": text("SELECT pg_catalog.pg_advisory_xact_lock(CAST(:key AS bigint))"),
    "extension_version": text(
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pgconductor'"
    ),
    "available_versions": text(
        "SELECT version FROM pg_catalog.pg_available_extension_versions"
        " WHERE name = 'pgconductor' ORDER BY version"
    ),
}


def _scalar(result: Rows) -> Any:
    return result.scalar_one()


def _ids(result: Rows) -> list[UUID]:
    return [row[0] for row in result]


def _outcomes(result: Rows) -> list[ReturnOutcome]:
    return [ReturnOutcome(row[0], row[1]) for row in result]


def _invoke_params(
    task_key: str,
    payload: Any,
    queue: str | None,
    run_at: dt.datetime | None,
    priority: int,
    dedupe_key: str | None,
) -> dict[str, Any]:
    return {
        "task_key": task_key,
        "payload": to_json(payload),
        "queue": queue,
        "run_at": run_at,
        "priority": priority,
        "dedupe_key": dedupe_key,
    }


def _batch_params(
    task_keys: Sequence[str],
    payloads: Sequence[Any],
    queues: Sequence[str | None] | None,
    run_ats: Sequence[dt.datetime | None] | None,
    priorities: Sequence[int | None] | None,
    dedupe_keys: Sequence[str | None] | None,
) -> dict[str, Any]:
    return {
        "task_keys": list(task_keys),
        "payloads": [to_json(p) for p in payloads],
        "queues": None if queues is None else list(queues),
        "run_ats": None if run_ats is None else list(run_ats),
        "priorities": None if priorities is None else list(priorities),
        "dedupe_keys": None if dedupe_keys is None else list(dedupe_keys),
    }


def _checked_version(version: str | None) -> str:
    if version is None or not _VERSION_RE.match(version):
        raise InvalidInput(f"invalid extension version {version!r}", sqlstate="22023")
    return version


class SqlDatabaseClient:
    """`DatabaseClient` over a SQLAlchemy `AsyncEngine`, with transient-error retry.

    Pass a URL (plain `postgresql://` is accepted) or an existing `AsyncEngine`. `abort`,
    when set, stops retrying (the error is raised at once); cancellation always propagates.
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
    ) -> None:
        self.retry_policy = retry or RetryPolicy()
        self.abort = abort
        if isinstance(url_or_engine, AsyncEngine):
            self.engine, self._owns_engine = url_or_engine, False
        else:
            options: dict[str, Any] = {"pool_size": pool_size, "max_overflow": max_overflow}
            options.update(engine_options or {})
            self.engine = create_async_engine(to_sqlalchemy_url(url_or_engine), **options)
            self._owns_engine = True
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

    def with_abort(self, abort: asyncio.Event | None) -> SqlDatabaseClient:
        """A client sharing this engine whose retries stop when `abort` is set."""
        return SqlDatabaseClient(self.engine, retry=self.retry_policy, abort=abort)

    # -- execution machinery ------------------------------------------------------------

    async def _run(
        self,
        name: str,
        params: Mapping[str, Any],
        fetch: Callable[[Rows], T],
        conn: AsyncConnection | None = None,
        *,
        statement: TextClause | None = None,
        lock: bool = False,
    ) -> T:
        """Run one statement: on `conn` (savepoint, no retry) or in an own retried transaction."""
        stmt = _SQL[name] if statement is None else statement
        if conn is not None:
            try:
                async with conn.begin_nested() if conn.in_transaction() else conn.begin():
                    return fetch(await conn.execute(stmt, dict(params)))
            except DB_ERRORS as exc:
                raise from_db_error(exc) from exc

        async def once() -> T:
            if not lock:
                # One statement is its own transaction: autocommit saves BEGIN and COMMIT
                # round trips (about half the latency of a small call).
                async with self._autocommit.connect() as own:
                    return fetch(await own.execute(stmt, dict(params)))
            async with self.engine.begin() as own:
                await own.execute(_SQL["schema_lock"], {"key": SCHEMA_LOCK_KEY})
                return fetch(await own.execute(stmt, dict(params)))

        return await retry_async(name, once, self.retry_policy, self.abort)

    def _run_sync(
        self,
        name: str,
        params: Mapping[str, Any],
        fetch: Callable[[Rows], T],
        conn: Connection | None,
    ) -> T:
        """Blocking `_run` for the sync enqueue path."""
        stmt = _SQL[name]
        if conn is not None:
            try:
                with conn.begin_nested() if conn.in_transaction() else conn.begin():
                    return fetch(conn.execute(stmt, dict(params)))
            except DB_ERRORS as exc:
                raise from_db_error(exc) from exc
        if self._sync_engine is None:
            url = self.engine.url
            if url.drivername.startswith("postgresql+psycopg"):
                url = url.set(drivername="postgresql+psycopg")
            self._sync_engine = create_engine(url, pool_size=1, max_overflow=2)
        engine = self._sync_engine

        def once() -> T:
            with engine.begin() as own:
                return fetch(own.execute(stmt, dict(params)))

        return retry_sync(name, once, self.retry_policy)

    # -- enqueue ------------------------------------------------------------------------

    async def invoke(
        self,
        task_key: str,
        payload: Any,
        *,
        queue: str | None = None,
        run_at: dt.datetime | None = None,
        priority: int = 0,
        dedupe_key: str | None = None,
        conn: AsyncConnection | None = None,
    ) -> UUID:
        """Call `pgconductor.invoke`; return the execution id."""
        params = _invoke_params(task_key, payload, queue, run_at, priority, dedupe_key)
        uuid: UUID = await self._run("invoke", params, _scalar, conn)
        return uuid

    async def invoke_batch(
        self,
        task_keys: Sequence[str],
        payloads: Sequence[Any],
        *,
        queues: Sequence[str | None] | None = None,
        run_ats: Sequence[dt.datetime | None] | None = None,
        priorities: Sequence[int | None] | None = None,
        dedupe_keys: Sequence[str | None] | None = None,
        conn: AsyncConnection | None = None,
    ) -> list[UUID]:
        """Call the parallel-array `pgconductor.invoke_batch`; ids in input order."""
        params = _batch_params(task_keys, payloads, queues, run_ats, priorities, dedupe_keys)
        return await self._run("invoke_batch", params, _ids, conn)

    def invoke_sync(
        self,
        task_key: str,
        payload: Any,
        *,
        queue: str | None = None,
        run_at: dt.datetime | None = None,
        priority: int = 0,
        dedupe_key: str | None = None,
        conn: Connection | None = None,
    ) -> UUID:
        """Blocking `invoke`, on the caller's sync `Connection` when given."""
        params = _invoke_params(task_key, payload, queue, run_at, priority, dedupe_key)
        uuid: UUID = self._run_sync("invoke", params, _scalar, conn)
        return uuid

    def invoke_batch_sync(
        self,
        task_keys: Sequence[str],
        payloads: Sequence[Any],
        *,
        queues: Sequence[str | None] | None = None,
        run_ats: Sequence[dt.datetime | None] | None = None,
        priorities: Sequence[int | None] | None = None,
        dedupe_keys: Sequence[str | None] | None = None,
        conn: Connection | None = None,
    ) -> list[UUID]:
        """Blocking `invoke_batch`, on the caller's sync `Connection` when given."""
        params = _batch_params(task_keys, payloads, queues, run_ats, priorities, dedupe_keys)
        return self._run_sync("invoke_batch", params, _ids, conn)

    def create_queue_sync(self, queue: str) -> bool:
        """Blocking `create_queue` in an own transaction."""
        return bool(self._run_sync("create_queue", {"queue": queue}, _scalar, None))

    # -- registry -----------------------------------------------------------------------

    async def register_task(self, spec: TaskSpec) -> None:
        """Call `pgconductor.register_task` with the spec's settings."""
        params = {f.name: getattr(spec, f.name) for f in fields(spec)}  # = SQL arg names
        await self._run("register_task", params, lambda r: None)

    async def create_queue(self, queue: str) -> bool:
        """Call `pgconductor.create_queue`; True when the queue was created."""
        return bool(await self._run("create_queue", {"queue": queue}, _scalar))

    async def drop_queue(self, queue: str, force: bool = False) -> bool:
        """Call `pgconductor.drop_queue`; True when the queue was dropped."""
        return bool(await self._run("drop_queue", {"queue": queue, "force": force}, _scalar))

    # -- claim and complete -------------------------------------------------------------

    async def get_executions(
        self, orchestrator_id: UUID, queue: str, task_keys: Sequence[str] | None, batch_size: int
    ) -> list[ClaimedExecution]:
        """Call `pgconductor.get_executions` (the task-keys overload)."""
        params = {
            "task_keys": None if task_keys is None else list(task_keys),
            "orchestrator_id": orchestrator_id,
            "batch_size": batch_size,
            "queue": queue,
        }
        return await self._run(
            "get_executions", params, lambda r: [ClaimedExecution(*row) for row in r]
        )

    async def return_executions(
        self, orchestrator_id: UUID, results: Sequence[ExecutionResult]
    ) -> list[ReturnOutcome]:
        """Call `pgconductor.return_executions` with parallel arrays."""
        if not results:
            return []
        params = {
            "orchestrator_id": orchestrator_id,
            "ids": [r.id for r in results],
            "leases": [r.lease for r in results],
            "statuses": [str(r.status) for r in results],
            "errors": [r.error for r in results],
            "results": [_json_or_none(r.result) for r in results],
            "delays_ms": [r.delay_ms for r in results],
        }
        return await self._run("return_executions", params, _outcomes)

    # -- liveness and recovery ----------------------------------------------------------

    async def heartbeat(
        self,
        orchestrator_id: UUID,
        version: str,
        stale_after: dt.timedelta,
        info: dict[str, Any],
        *,
        held: Collection[UUID] | None = None,
    ) -> list[Signal]:
        """Call `pgconductor.heartbeat`; return the signals it took.

        `held`: every execution this process still needs; SQL gives back the others it holds
        (claims whose reply was lost). None skips that reconciliation.
        """
        params = {
            "orchestrator_id": orchestrator_id,
            "version": version,
            "stale_after": stale_after,
            "info": to_json(info),
            "held": None if held is None else list(held),
        }
        return await self._run("heartbeat", params, lambda r: [Signal(*row) for row in r])

    async def recover_stale(self, limit: int = 1000) -> list[ReturnOutcome]:
        """Call `pgconductor.recover_stale`."""
        return await self._run("recover_stale", {"limit": limit}, _outcomes)

    async def release_orchestrator(
        self, orchestrator_id: UUID, *, keep: Collection[UUID] | None = None
    ) -> int:
        """Call `pgconductor.release_orchestrator` (keeping `keep`); return how many it released."""
        params = {"orchestrator_id": orchestrator_id, "keep": None if keep is None else list(keep)}
        return int(await self._run("release_orchestrator", params, _scalar))

    async def request_shutdown(self, orchestrator_id: UUID | None = None) -> int:
        """Call `pgconductor.request_shutdown`; return how many were signalled."""
        params = {"orchestrator_id": orchestrator_id}
        return int(await self._run("request_shutdown", params, _scalar))

    # -- operations ---------------------------------------------------------------------

    async def cancel(self, execution_id: UUID, reason: str = "cancelled by user") -> str:
        """Call `pgconductor.cancel`."""
        params = {"execution_id": execution_id, "reason": reason}
        return str(await self._run("cancel", params, _scalar))

    async def retry(self, execution_id: UUID) -> UUID:
        """Call `pgconductor.retry`; return the execution id."""
        uuid: UUID = await self._run("retry", {"execution_id": execution_id}, _scalar)
        return uuid

    async def get_execution(self, execution_id: UUID) -> ExecutionInfo | None:
        """Call `pgconductor.get_execution`; None when the id is unknown."""

        def fetch(result: Rows) -> ExecutionInfo | None:
            row = result.first()
            return None if row is None else ExecutionInfo(*row)

        return await self._run("get_execution", {"execution_id": execution_id}, fetch)

    async def queue_stats(self) -> list[QueueStats]:
        """Call `pgconductor.queue_stats`, ordered by queue name."""
        return await self._run(
            "queue_stats", {}, lambda r: [QueueStats(*(row[0], *map(int, row[1:]))) for row in r]
        )

    async def orchestrator_stats(self) -> list[OrchestratorInfo]:
        """Call `pgconductor.orchestrator_stats`: live ones first."""
        return await self._run(
            "orchestrator_stats", {}, lambda r: [OrchestratorInfo(*row) for row in r]
        )

    async def prune_finished(self, older_than: dt.timedelta, limit: int = 10000) -> int:
        """Call `pgconductor.prune_finished`; return how many rows it deleted."""
        params = {"older_than": older_than, "limit": limit}
        return int(await self._run("prune_finished", params, _scalar))

    async def version(self) -> str | None:
        """Call `pgconductor.version()`; None when the extension is not installed."""
        try:
            found = await self._run("version", {}, _scalar)
        except PgConductorError as exc:
            if exc.sqlstate in ("3F000", "42883"):  # no schema pgconductor / no function
                return None
            raise
        return None if found is None else str(found)

    # -- schema management (used by SchemaManager) --------------------------------------

    async def extension_version(self) -> str | None:
        """The version recorded in `pg_extension`, or None when not installed."""
        found = await self._run("extension_version", {}, lambda r: r.scalar_one_or_none())
        return None if found is None else str(found)

    async def available_versions(self) -> list[str]:
        """Versions of the extension the server can install (`pg_available_extension_versions`)."""
        return await self._run("available_versions", {}, lambda r: [str(row[0]) for row in r])

    async def install_extension(self, version: str | None = None) -> str | None:
        """`CREATE EXTENSION IF NOT EXISTS pgconductor` under the schema advisory lock."""
        sql = "CREATE EXTENSION IF NOT EXISTS pgconductor"
        if version is not None:
            sql += f" VERSION '{_checked_version(version)}'"
        await self._run("install_extension", {}, lambda r: None, statement=text(sql), lock=True)
        return await self.extension_version()

    async def upgrade_extension(self, to: str | None = None) -> str | None:
        """`ALTER EXTENSION pgconductor UPDATE [TO version]` under the schema advisory lock."""
        sql = "ALTER EXTENSION pgconductor UPDATE"
        if to is not None:
            sql += f" TO '{_checked_version(to)}'"
        await self._run("upgrade_extension", {}, lambda r: None, statement=text(sql), lock=True)
        return await self.extension_version()

    async def close(self) -> None:
        """Dispose of the engines this client created (a caller's engine is left alone)."""
        if self._sync_engine is not None:
            self._sync_engine.dispose()
            self._sync_engine = None
        if self._owns_engine:
            await self.engine.dispose()
