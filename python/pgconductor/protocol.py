"""The interfaces between the engine and the database: `DatabaseClient` and friends.

`db.SqlDatabaseClient` implements them over SQLAlchemy; the unit tests' fake implements them
with canned responses. Method names are exactly the SQL function names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from uuid import UUID

from pgconductor.types import (
    ClaimedExecution,
    ExecutionInfo,
    ExecutionResult,
    ExecutionSummary,
    FlowStatus,
    OrchestratorInfo,
    QueueStats,
    ReturnOutcome,
    Signal,
    Submitted,
    TaskOverview,
    TaskSpec,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["DatabaseClient", "FlowClient", "SchemaClient", "SyncInvoker"]


@runtime_checkable
class DatabaseClient(Protocol):
    """What the engine needs from the database: one method per SQL function."""

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
        """Enqueue one execution; return its id (the flow options need extension 0.7.0)."""
        ...

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
        """Enqueue many executions in one statement; ids in input order."""
        ...

    async def register_task(self, spec: TaskSpec) -> None:
        """Upsert a task's settings."""
        ...

    async def declare_task(self, spec: TaskSpec) -> TaskSpec:
        """Set only the spec's `declared` settings; return the effective ones (same `declared`)."""
        ...

    async def create_queue(self, queue: str) -> bool:
        """Create a queue; True when it was created."""
        ...

    async def drop_queue(self, queue: str, force: bool = False) -> bool:
        """Drop a queue; True when it was dropped."""
        ...

    async def get_executions(
        self, orchestrator_id: UUID, queue: str, task_keys: Sequence[str] | None, batch_size: int
    ) -> list[ClaimedExecution]:
        """Claim up to `batch_size` due executions of `queue`."""
        ...

    async def has_due_work(self, queue: str, task_keys: Sequence[str] | None) -> bool:
        """Whether due executions of the tasks wait, for a limit or a claim (False before
        extension 0.7.0): a draining worker's empty claim ends the drain only when not."""
        ...

    async def return_executions(
        self, orchestrator_id: UUID, results: Sequence[ExecutionResult]
    ) -> list[ReturnOutcome]:
        """Apply a batch of results; outcomes in input order."""
        ...

    async def save_steps(
        self,
        orchestrator_id: UUID,
        ids: Sequence[UUID],
        leases: Sequence[int],
        keys: Sequence[str],
        seqs: Sequence[int],
        results: Sequence[Any],
    ) -> list[tuple[UUID, str, str]]:
        """Store workflow step results under their leases: `(id, key, saved|stale)` rows."""
        ...

    async def emit_event(
        self, name: str, payload: Any = None, *, conn: AsyncConnection | None = None
    ) -> int:
        """Emit an event (in the caller's transaction when `conn` is given); return its id."""
        ...

    async def heartbeat(
        self,
        orchestrator_id: UUID,
        version: str,
        stale_after: dt.timedelta,
        info: dict[str, Any],
        *,
        held: Collection[UUID] | None = None,
    ) -> list[Signal]:
        """Record liveness, recover stale orchestrators, and take this one's signals."""
        ...

    async def recover_stale(self, limit: int = 1000) -> list[ReturnOutcome]:
        """Release or fail the executions of orchestrators that stopped heartbeating."""
        ...

    async def release_orchestrator(
        self, orchestrator_id: UUID, *, keep: Collection[UUID] | None = None
    ) -> int:
        """Release what an orchestrator holds (but `keep`) and, keeping none, mark it stopped."""
        ...

    async def request_shutdown(self, orchestrator_id: UUID | None = None) -> int:
        """Signal one (or every live) orchestrator to shut down."""
        ...

    async def cancel(self, execution_id: UUID, reason: str = "cancelled by user") -> str:
        """Cancel an execution: cancelled|cancelling|already_finished|not_found."""
        ...

    async def retry(self, execution_id: UUID) -> UUID:
        """Put a failed or cancelled execution back to pending."""
        ...

    async def get_execution(self, execution_id: UUID) -> ExecutionInfo | None:
        """Read one execution, live or finished."""
        ...

    async def list_executions(
        self,
        state: str | None = None,
        task_key: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        before: UUID | None = None,
    ) -> list[ExecutionSummary]:
        """A page of executions, newest first (ids below `before` when given)."""
        ...

    async def retry_executions(
        self,
        state: str = "failed",
        task_key: str | None = None,
        queue: str | None = None,
        limit: int = 1000,
    ) -> int:
        """Put finished executions in `state` back to pending; return how many."""
        ...

    async def task_overview(self) -> list[TaskOverview]:
        """Each registered or invoked task: whether a live worker serves it, its counts."""
        ...

    async def queue_stats(self) -> list[QueueStats]:
        """Counts per queue."""
        ...

    async def orchestrator_stats(self) -> list[OrchestratorInfo]:
        """Orchestrators (live, expired, stopped) and the executions they hold."""
        ...

    async def prune_finished(self, older_than: dt.timedelta, limit: int = 10000) -> int:
        """Delete finished executions older than `older_than`; return how many."""
        ...

    async def version(self) -> str | None:
        """The installed extension version, or None when it is not installed."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class SyncInvoker(Protocol):
    """A client that can also enqueue from blocking code, on a sync SQLAlchemy `Connection`."""

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
        """Blocking `invoke`."""
        ...

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
        """Blocking `invoke_batch`."""
        ...

    def create_queue_sync(self, queue: str) -> bool:
        """Blocking `create_queue`."""
        ...


@runtime_checkable
class FlowClient(Protocol):
    """A client with the flow-control calls of extension 0.7.0 (older ones answer 42883)."""

    async def submit(
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
    ) -> Submitted:
        """Enqueue one execution; its id and what the call did (created, throttled, ...)."""
        ...

    async def submit_batch(
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
    ) -> list[Submitted]:
        """`submit` for many in one statement; rows in input order."""
        ...

    async def pause_queue(self, queue: str) -> bool:
        """Claims skip the queue; True when it changed."""
        ...

    async def resume_queue(self, queue: str) -> bool:
        """Claims take the queue again; True when it changed."""
        ...

    async def pause_task(self, task_key: str) -> bool:
        """Claims skip the task; True when it changed."""
        ...

    async def resume_task(self, task_key: str) -> bool:
        """Claims take the task again; True when it changed."""
        ...

    async def cancel_by_key(
        self,
        task_key: str,
        *,
        dedupe_key: str | None = None,
        concurrency_key: str | None = None,
        reason: str = "cancelled by user",
    ) -> int:
        """Cancel a task's live executions with the key; return how many."""
        ...

    async def set_fair_share(self, queue: str, enabled: bool) -> None:
        """Turn round-robin claims across concurrency keys on or off for a queue."""
        ...

    async def set_key_weight(self, queue: str, key: str, weight: int | None) -> None:
        """A concurrency key's share weight in a fair-share queue (None: 1)."""
        ...

    async def maintain(self, limit: int = 10000) -> dict[str, Any]:
        """One maintenance pass (expire, prune, clean up); its counts by name."""
        ...

    async def flow_status(self, queue: str | None = None) -> list[FlowStatus]:
        """Running and pending per task and concurrency key, with the limits."""
        ...


@runtime_checkable
class SchemaClient(Protocol):
    """What `SchemaManager` needs: read, install and upgrade the extension."""

    async def extension_version(self) -> str | None:
        """The version recorded in `pg_extension`, or None when not installed."""
        ...

    async def available_versions(self) -> list[str]:
        """Versions of the extension the server can install."""
        ...

    async def install_extension(self, version: str | None = None) -> str | None:
        """Install the extension (no-op when present); return the installed version."""
        ...

    async def upgrade_extension(self, to: str | None = None) -> str | None:
        """Upgrade the extension; return the installed version."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
