"""`SqlDatabaseClient`: one typed method per `pgconductor.*` SQL function, same name."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from pgconductor.db import rows
from pgconductor.db.flow import FlowCalls
from pgconductor.db.schedules import SourceCalls
from pgconductor.db.statements import CALLS, alter_extension, create_extension
from pgconductor.encoding import to_json
from pgconductor.errors import PgConductorError
from pgconductor.types import (
    ClaimedExecution,
    ExecutionInfo,
    ExecutionResult,
    ExecutionSummary,
    OrchestratorInfo,
    QueueStats,
    ReturnOutcome,
    Signal,
    TaskOverview,
    TaskSpec,
)

__all__ = ["SqlDatabaseClient"]


class SqlDatabaseClient(FlowCalls, SourceCalls):
    """`DatabaseClient` over a SQLAlchemy `AsyncEngine`, with transient-error retry.

    Pass a URL (plain `postgresql://` is accepted) or an existing `AsyncEngine`. `abort`,
    when set, stops retrying (the error is raised at once); cancellation always propagates.
    `prepare=False` for transaction-mode poolers that cannot keep prepared statements.
    The flow-control calls (extension 0.7.0) come from `FlowCalls`; schedules, event
    subscriptions and table triggers (0.8.0) from `SourceCalls`.
    """

    #: Whether the claim returns stored steps (0.6.0 on); None until the first claim tells.
    _claim_has_steps: bool | None = None

    def with_abort(self, abort: asyncio.Event | None) -> SqlDatabaseClient:
        """A client sharing this engine (and kept connection) whose retries stop on `abort`."""
        derived = SqlDatabaseClient(
            self.engine, retry=self.retry_policy, abort=abort, prepare=self.prepare
        )
        derived._kept = self._kept
        return derived

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
        concurrency_key: str | None = None,
        on_conflict: str | None = None,
        throttle: dt.timedelta | None = None,
        debounce: dt.timedelta | None = None,
        debounce_max: dt.timedelta | None = None,
        start_by: dt.datetime | None = None,
        conn: AsyncConnection | None = None,
    ) -> UUID:
        """Call `pgconductor.invoke`; return the execution id (flow options: 0.7.0 on)."""
        params = rows.invoke_params(task_key, payload, queue, run_at, priority, dedupe_key)
        flow = rows.flow_params(
            concurrency_key, on_conflict, throttle, debounce, debounce_max, start_by
        )
        if rows.any_given(flow):
            uuid: UUID = await self._run_flow(
                CALLS["invoke_flow"], params | flow, rows.scalar, conn
            )
        else:
            uuid = await self._run(CALLS["invoke"], params, rows.scalar, conn)
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
        concurrency_keys: Sequence[str | None] | None = None,
        on_conflict: str | None = None,
        throttle: dt.timedelta | None = None,
        debounce: dt.timedelta | None = None,
        debounce_max: dt.timedelta | None = None,
        start_bys: Sequence[dt.datetime | None] | None = None,
        conn: AsyncConnection | None = None,
    ) -> list[UUID]:
        """Call the parallel-array `pgconductor.invoke_batch`; ids in input order."""
        params = rows.batch_params(task_keys, payloads, queues, run_ats, priorities, dedupe_keys)
        flow = rows.batch_flow_params(
            concurrency_keys, on_conflict, throttle, debounce, debounce_max, start_bys
        )
        if rows.any_given(flow):
            call = CALLS["invoke_batch_flow"]
            return await self._run_flow(call, params | flow, rows.first_column, conn)
        return await self._run(CALLS["invoke_batch"], params, rows.first_column, conn)

    def invoke_sync(
        self,
        task_key: str,
        payload: Any,
        *,
        queue: str | None = None,
        run_at: dt.datetime | None = None,
        priority: int = 0,
        dedupe_key: str | None = None,
        concurrency_key: str | None = None,
        on_conflict: str | None = None,
        throttle: dt.timedelta | None = None,
        debounce: dt.timedelta | None = None,
        debounce_max: dt.timedelta | None = None,
        start_by: dt.datetime | None = None,
        conn: Connection | None = None,
    ) -> UUID:
        """Blocking `invoke`, on the caller's sync `Connection` when given."""
        params = rows.invoke_params(task_key, payload, queue, run_at, priority, dedupe_key)
        flow = rows.flow_params(
            concurrency_key, on_conflict, throttle, debounce, debounce_max, start_by
        )
        if rows.any_given(flow):
            uuid: UUID = self._run_flow_sync(CALLS["invoke_flow"], params | flow, rows.scalar, conn)
        else:
            uuid = self._run_sync(CALLS["invoke"], params, rows.scalar, conn)
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
        concurrency_keys: Sequence[str | None] | None = None,
        on_conflict: str | None = None,
        throttle: dt.timedelta | None = None,
        debounce: dt.timedelta | None = None,
        debounce_max: dt.timedelta | None = None,
        start_bys: Sequence[dt.datetime | None] | None = None,
        conn: Connection | None = None,
    ) -> list[UUID]:
        """Blocking `invoke_batch`, on the caller's sync `Connection` when given."""
        params = rows.batch_params(task_keys, payloads, queues, run_ats, priorities, dedupe_keys)
        flow = rows.batch_flow_params(
            concurrency_keys, on_conflict, throttle, debounce, debounce_max, start_bys
        )
        if rows.any_given(flow):
            call = CALLS["invoke_batch_flow"]
            return self._run_flow_sync(call, params | flow, rows.first_column, conn)
        return self._run_sync(CALLS["invoke_batch"], params, rows.first_column, conn)

    def create_queue_sync(self, queue: str) -> bool:
        """Blocking `create_queue` in an own transaction."""
        return bool(self._run_sync(CALLS["create_queue"], {"queue": queue}, rows.scalar, None))

    # -- registry -----------------------------------------------------------------------

    async def register_task(self, spec: TaskSpec) -> None:
        """Call `pgconductor.register_task` with the spec's settings."""
        await self._run(CALLS["register_task"], rows.register_params(spec), rows.nothing)

    async def declare_task(self, spec: TaskSpec) -> TaskSpec:
        """Call `pgconductor.declare_task` with the spec's declared settings only."""
        params = {"key": spec.key, "settings": to_json(rows.declared_settings(spec))}
        effective = await self._run(CALLS["declare_task"], params, rows.scalar)
        return rows.task_spec(spec.key, effective, spec.declared)

    async def create_queue(self, queue: str) -> bool:
        """Call `pgconductor.create_queue`; True when the queue was created."""
        return bool(await self._run(CALLS["create_queue"], {"queue": queue}, rows.scalar))

    async def drop_queue(self, queue: str, force: bool = False) -> bool:
        """Call `pgconductor.drop_queue`; True when the queue was dropped."""
        params = {"queue": queue, "force": force}
        return bool(await self._run(CALLS["drop_queue"], params, rows.scalar))

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
        if self._claim_has_steps is not False:
            try:
                claimed = await self._run(CALLS["get_executions"], params, rows.claimed_executions)
            except PgConductorError as exc:
                if exc.sqlstate != "42703":  # an extension before 0.6.0: no steps column
                    raise
                self._claim_has_steps = False
            else:
                self._claim_has_steps = True
                return claimed
        return await self._run(CALLS["get_executions_0_5"], params, rows.claimed_executions)

    async def save_steps(
        self,
        orchestrator_id: UUID,
        ids: Sequence[UUID],
        leases: Sequence[int],
        keys: Sequence[str],
        seqs: Sequence[int],
        results: Sequence[Any],
    ) -> list[tuple[UUID, str, str]]:
        """Call `pgconductor.save_steps`: `(id, key, outcome)` rows, outcome saved | stale."""
        params = {
            "orchestrator_id": orchestrator_id,
            "ids": list(ids),
            "leases": list(leases),
            "keys": list(keys),
            "seqs": list(seqs),
            "results": [to_json(result) for result in results],
        }
        return await self._run(CALLS["save_steps"], params, rows.step_outcomes)

    async def emit_event(
        self, name: str, payload: Any = None, *, conn: AsyncConnection | None = None
    ) -> int:
        """Call `pgconductor.emit_event` (on the caller's connection when given); its id."""
        params = {"name": name, "payload": to_json({} if payload is None else payload)}
        return int(await self._run(CALLS["emit_event"], params, rows.scalar, conn))

    async def return_executions(
        self, orchestrator_id: UUID, results: Sequence[ExecutionResult]
    ) -> list[ReturnOutcome]:
        """Call `pgconductor.return_executions` with parallel arrays (NULL for all-NULL ones)."""
        if not results:
            return []
        params = rows.return_params(orchestrator_id, results)
        return await self._run(CALLS["return_executions"], params, rows.outcomes)

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
        return await self._run(CALLS["heartbeat"], params, rows.signals)

    async def recover_stale(self, limit: int = 1000) -> list[ReturnOutcome]:
        """Call `pgconductor.recover_stale`."""
        return await self._run(CALLS["recover_stale"], {"limit": limit}, rows.outcomes)

    async def release_orchestrator(
        self, orchestrator_id: UUID, *, keep: Collection[UUID] | None = None
    ) -> int:
        """Call `pgconductor.release_orchestrator` (keeping `keep`); return how many it released."""
        params = {"orchestrator_id": orchestrator_id, "keep": None if keep is None else list(keep)}
        return int(await self._run(CALLS["release_orchestrator"], params, rows.scalar))

    async def request_shutdown(self, orchestrator_id: UUID | None = None) -> int:
        """Call `pgconductor.request_shutdown`; return how many were signalled."""
        params = {"orchestrator_id": orchestrator_id}
        return int(await self._run(CALLS["request_shutdown"], params, rows.scalar))

    # -- operations ---------------------------------------------------------------------

    async def cancel(self, execution_id: UUID, reason: str = "cancelled by user") -> str:
        """Call `pgconductor.cancel`."""
        params = {"execution_id": execution_id, "reason": reason}
        return str(await self._run(CALLS["cancel"], params, rows.scalar))

    async def retry(self, execution_id: UUID) -> UUID:
        """Call `pgconductor.retry`; return the execution id."""
        params = {"execution_id": execution_id}
        uuid: UUID = await self._run(CALLS["retry"], params, rows.scalar)
        return uuid

    async def get_execution(self, execution_id: UUID) -> ExecutionInfo | None:
        """Call `pgconductor.get_execution`; None when the id is unknown.

        An extension before 0.6.0 (0.4.0) lacks the newer columns (42703): its row leaves
        them unset.
        """
        params = {"execution_id": execution_id}
        for name in ("get_execution", "get_execution_0_5"):
            try:
                return await self._run(CALLS[name], params, rows.execution_info)
            except PgConductorError as exc:
                if exc.sqlstate != "42703":
                    raise
        return await self._run(CALLS["get_execution_0_3"], params, rows.execution_info)

    async def list_executions(
        self,
        state: str | None = None,
        task_key: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        before: UUID | None = None,
    ) -> list[ExecutionSummary]:
        """Call `pgconductor.list_executions`: newest first, ids below `before` when given."""
        params = {
            "state": state,
            "task_key": task_key,
            "queue": queue,
            "limit": limit,
            "before": before,
        }
        return await self._run(CALLS["list_executions"], params, rows.execution_summaries)

    async def retry_executions(
        self,
        state: str = "failed",
        task_key: str | None = None,
        queue: str | None = None,
        limit: int = 1000,
    ) -> int:
        """Call `pgconductor.retry_executions`; return how many went back to pending."""
        params = {"state": state, "task_key": task_key, "queue": queue, "limit": limit}
        return int(await self._run(CALLS["retry_executions"], params, rows.scalar))

    async def task_overview(self) -> list[TaskOverview]:
        """Call `pgconductor.task_overview`: each task, whether a live worker serves it."""
        return await self._run(CALLS["task_overview"], {}, rows.task_overview)

    async def queue_stats(self) -> list[QueueStats]:
        """Call `pgconductor.queue_stats`, ordered by queue name."""
        return await self._run(CALLS["queue_stats"], {}, rows.queue_stats)

    async def orchestrator_stats(self) -> list[OrchestratorInfo]:
        """Call `pgconductor.orchestrator_stats`: live ones first."""
        return await self._run(CALLS["orchestrator_stats"], {}, rows.orchestrators)

    async def prune_finished(self, older_than: dt.timedelta, limit: int = 10000) -> int:
        """Call `pgconductor.prune_finished`; return how many rows it deleted."""
        params = {"older_than": older_than, "limit": limit}
        return int(await self._run(CALLS["prune_finished"], params, rows.scalar))

    async def version(self) -> str | None:
        """Call `pgconductor.version()`; None when the extension is not installed."""
        try:
            found = await self._run(CALLS["version"], {}, rows.scalar)
        except PgConductorError as exc:
            if exc.sqlstate in ("3F000", "42883"):  # no schema pgconductor / no function
                return None
            raise
        return None if found is None else str(found)

    # -- schema management (used by SchemaManager) --------------------------------------

    async def extension_version(self) -> str | None:
        """The version recorded in `pg_extension`, or None when not installed."""
        found = await self._run(CALLS["extension_version"], {}, rows.scalar_or_none)
        return None if found is None else str(found)

    async def available_versions(self) -> list[str]:
        """Versions of the extension the server can install (`pg_available_extension_versions`)."""
        found = await self._run(CALLS["available_versions"], {}, rows.first_column)
        return [str(version) for version in found]

    async def sql_install_version(self) -> str | None:
        """The newest version a plain-SQL install recorded (`pgconductor.sql_install`), or None."""
        try:
            found = await self._run(CALLS["sql_install_version"], {}, rows.scalar_or_none)
        except PgConductorError as exc:
            if exc.sqlstate in ("3F000", "42P01"):  # no schema pgconductor / no record table
                return None
            raise
        return None if found is None else str(found)

    async def run_sql_scripts(
        self,
        scripts: Sequence[tuple[str, str, str]],
        *,
        create_schema: bool = False,
        expected: str | None = None,
    ) -> bool:
        """Run `(version, file name, SQL)` scripts as plain SQL, recorded, under the schema
        lock; False when another process installed (or upgraded from `expected`) first."""
        return await self._run_scripts_locked(
            "run_sql_scripts", scripts, create_schema=create_schema, expected=expected
        )

    async def install_extension(self, version: str | None = None) -> str | None:
        """`CREATE EXTENSION IF NOT EXISTS pgconductor` under the schema advisory lock."""
        await self._run_locked("install_extension", create_extension(version))
        return await self.extension_version()

    async def upgrade_extension(self, to: str | None = None) -> str | None:
        """`ALTER EXTENSION pgconductor UPDATE [TO version]` under the schema advisory lock."""
        await self._run_locked("upgrade_extension", alter_extension(to))
        return await self.extension_version()
