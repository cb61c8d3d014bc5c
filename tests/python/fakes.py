"""A thin fake `DatabaseClient` for unit tests: canned responses and recorded calls.

It implements no scheduling rule (those live in SQL); it only answers. Usage:

    fake = FakeDatabaseClient()
    fake.responses["get_executions"] = [claimed]          # a value, returned every time
    fake.responses["cancel"] = lambda execution_id, reason="": "cancelling"   # or a callable
    fake.simulate_error("heartbeat", TransientError("boom", sqlstate="57P01"), times=1)
    ...
    assert fake.calls_to("invoke")[0][1]["queue"] == "default"

A callable response is called with the method's arguments; it may return an awaitable
(for async methods) or raise.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import uuid
from collections.abc import Collection, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from fake_sources import FakeSourceCalls
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

_OUTCOME_OF_STATUS = {
    "completed": "completed",
    "failed": "failed",
    "fatal": "failed",
    "released": "released",
    "retry_after": "rescheduled",
    "suspend": "suspended",
}


def _given(**options: Any) -> dict[str, Any]:
    """The flow options given (not None): calls without any record what they always did."""
    return {name: value for name, value in options.items() if value is not None}


class FakeDatabaseClient(FakeSourceCalls):
    """Records every call as `(method, args, kwargs)` and answers from `responses`.

    The schedule, subscription and table-trigger calls come from `FakeSourceCalls`.
    """

    def __init__(self, version: str | None = "0.1.0") -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.responses: dict[str, Any] = {}
        self.errors: dict[str, tuple[BaseException, int | None]] = {}
        self.installed_version = version
        self.closed = False
        self._called = asyncio.Event()

    # -- test helpers -------------------------------------------------------------------

    def simulate_error(self, method: str, exc: BaseException, times: int | None = None) -> None:
        """Make `method` raise `exc` (on the next `times` calls, or always when None)."""
        self.errors[method] = (exc, times)

    def clear_error(self, method: str) -> None:
        """Stop raising for `method`."""
        self.errors.pop(method, None)

    def calls_to(self, method: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """The `(args, kwargs)` of every call to `method`, oldest first."""
        return [(args, kwargs) for name, args, kwargs in self.calls if name == method]

    def call_count(self, method: str) -> int:
        """How many times `method` was called."""
        return sum(1 for name, _, _ in self.calls if name == method)

    async def wait_for_call(self, method: str, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until `method` was called at least `count` times (fails after `timeout`)."""
        async with asyncio.timeout(timeout):
            while self.call_count(method) < count:
                self._called.clear()
                await self._called.wait()

    def _answer(self, method: str, default: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((method, args, kwargs))
        self._called.set()
        if method in self.errors:
            exc, times = self.errors[method]
            if times is not None:
                if times <= 1:
                    del self.errors[method]
                else:
                    self.errors[method] = (exc, times - 1)
            raise exc
        if method not in self.responses:
            return default() if callable(default) else default
        response = self.responses[method]
        return response(*args, **kwargs) if callable(response) else response

    async def _answer_async(self, method: str, default: Any, *args: Any, **kwargs: Any) -> Any:
        result = self._answer(method, default, *args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    # -- DatabaseClient -----------------------------------------------------------------

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
        """Record; default answer: a new uuid."""
        return await self._answer_async(
            "invoke",
            uuid.uuid4,
            task_key,
            payload,
            queue=queue,
            run_at=run_at,
            priority=priority,
            dedupe_key=dedupe_key,
            conn=conn,
            **_given(
                concurrency_key=concurrency_key,
                on_conflict=on_conflict,
                throttle=throttle,
                debounce=debounce,
                debounce_max=debounce_max,
                start_by=start_by,
            ),
        )

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
        """Record; default answer: one new uuid per key."""
        return await self._answer_async(
            "invoke_batch",
            lambda: [uuid.uuid4() for _ in task_keys],
            task_keys,
            payloads,
            queues=queues,
            run_ats=run_ats,
            priorities=priorities,
            dedupe_keys=dedupe_keys,
            conn=conn,
            **_given(
                concurrency_keys=concurrency_keys,
                on_conflict=on_conflict,
                throttle=throttle,
                debounce=debounce,
                debounce_max=debounce_max,
                start_bys=start_bys,
            ),
        )

    async def register_task(self, spec: TaskSpec) -> None:
        """Record."""
        await self._answer_async("register_task", None, spec)

    async def declare_task(self, spec: TaskSpec) -> TaskSpec:
        """Record; default answer: the spec itself (no setting made in SQL)."""
        return await self._answer_async("declare_task", spec, spec)

    async def create_queue(self, queue: str) -> bool:
        """Record; default answer: True."""
        return await self._answer_async("create_queue", True, queue)

    async def drop_queue(self, queue: str, force: bool = False) -> bool:
        """Record; default answer: True."""
        return await self._answer_async("drop_queue", True, queue, force)

    async def get_executions(
        self,
        orchestrator_id: UUID,
        queue: str,
        task_keys: Sequence[str] | None,
        batch_size: int,
    ) -> list[ClaimedExecution]:
        """Record; default answer: nothing due."""
        return await self._answer_async(
            "get_executions", list, orchestrator_id, queue, task_keys, batch_size
        )

    async def has_due_work(self, queue: str, task_keys: Sequence[str] | None) -> bool:
        """Record; default answer: nothing due (set `responses["has_due_work"]` otherwise)."""
        return await self._answer_async("has_due_work", False, queue, task_keys)

    async def return_executions(
        self, orchestrator_id: UUID, results: Sequence[ExecutionResult]
    ) -> list[ReturnOutcome]:
        """Record; default answer: each status's plain outcome."""
        return await self._answer_async(
            "return_executions",
            lambda: [ReturnOutcome(r.id, _OUTCOME_OF_STATUS[str(r.status)]) for r in results],
            orchestrator_id,
            results,
        )

    async def save_steps(
        self,
        orchestrator_id: UUID,
        ids: Sequence[UUID],
        leases: Sequence[int],
        keys: Sequence[str],
        seqs: Sequence[int],
        results: Sequence[Any],
    ) -> list[tuple[UUID, str, str]]:
        """Record; default answer: every step saved."""
        return await self._answer_async(
            "save_steps",
            lambda: [(i, k, "saved") for i, k in zip(ids, keys, strict=True)],
            orchestrator_id,
            list(ids),
            list(leases),
            list(keys),
            list(seqs),
            list(results),
        )

    async def emit_event(
        self, name: str, payload: Any = None, *, conn: AsyncConnection | None = None
    ) -> int:
        """Record; default answer: event id 1."""
        return await self._answer_async("emit_event", 1, name, payload, conn=conn)

    async def heartbeat(
        self,
        orchestrator_id: UUID,
        version: str,
        stale_after: dt.timedelta,
        info: dict[str, Any],
        *,
        held: Collection[UUID] | None = None,
    ) -> list[Signal]:
        """Record (`held` as the last argument, sorted); default answer: no signals."""
        held_ids = None if held is None else sorted(held)
        return await self._answer_async(
            "heartbeat", list, orchestrator_id, version, stale_after, info, held_ids
        )

    async def recover_stale(self, limit: int = 1000) -> list[ReturnOutcome]:
        """Record; default answer: nothing recovered."""
        return await self._answer_async("recover_stale", list, limit)

    async def release_orchestrator(
        self, orchestrator_id: UUID, *, keep: Collection[UUID] | None = None
    ) -> int:
        """Record (`keep` as the last argument, sorted); default answer: 0."""
        keep_ids = None if keep is None else sorted(keep)
        return await self._answer_async("release_orchestrator", 0, orchestrator_id, keep_ids)

    async def request_shutdown(self, orchestrator_id: UUID | None = None) -> int:
        """Record; default answer: 0."""
        return await self._answer_async("request_shutdown", 0, orchestrator_id)

    async def cancel(self, execution_id: UUID, reason: str = "cancelled by user") -> str:
        """Record; default answer: "cancelled"."""
        return await self._answer_async("cancel", "cancelled", execution_id, reason)

    async def retry(self, execution_id: UUID) -> UUID:
        """Record; default answer: the same id."""
        return await self._answer_async("retry", execution_id, execution_id)

    async def get_execution(self, execution_id: UUID) -> ExecutionInfo | None:
        """Record; default answer: None (unknown)."""
        return await self._answer_async("get_execution", None, execution_id)

    async def list_executions(
        self,
        state: str | None = None,
        task_key: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        before: UUID | None = None,
    ) -> list[ExecutionSummary]:
        """Record; default answer: no executions."""
        return await self._answer_async(
            "list_executions", list, state, task_key, queue, limit, before
        )

    async def retry_executions(
        self,
        state: str = "failed",
        task_key: str | None = None,
        queue: str | None = None,
        limit: int = 1000,
    ) -> int:
        """Record; default answer: 0."""
        return await self._answer_async("retry_executions", 0, state, task_key, queue, limit)

    async def task_overview(self) -> list[TaskOverview]:
        """Record; default answer: no tasks."""
        return await self._answer_async("task_overview", list)

    async def queue_stats(self) -> list[QueueStats]:
        """Record; default answer: no queues."""
        return await self._answer_async("queue_stats", list)

    async def orchestrator_stats(self) -> list[OrchestratorInfo]:
        """Record; default answer: no orchestrators."""
        return await self._answer_async("orchestrator_stats", list)

    async def prune_finished(self, older_than: dt.timedelta, limit: int = 10000) -> int:
        """Record; default answer: 0."""
        return await self._answer_async("prune_finished", 0, older_than, limit)

    async def version(self) -> str | None:
        """Record; default answer: the `version` given to the constructor."""
        return await self._answer_async("version", self.installed_version)

    async def close(self) -> None:
        """Record and mark closed."""
        self.closed = True
        await self._answer_async("close", None)

    # -- SyncInvoker --------------------------------------------------------------------

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
        """Record; default answer: a new uuid."""
        return self._answer(
            "invoke_sync",
            uuid.uuid4,
            task_key,
            payload,
            queue=queue,
            run_at=run_at,
            priority=priority,
            dedupe_key=dedupe_key,
            conn=conn,
            **_given(
                concurrency_key=concurrency_key,
                on_conflict=on_conflict,
                throttle=throttle,
                debounce=debounce,
                debounce_max=debounce_max,
                start_by=start_by,
            ),
        )

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
        """Record; default answer: one new uuid per key."""
        return self._answer(
            "invoke_batch_sync",
            lambda: [uuid.uuid4() for _ in task_keys],
            task_keys,
            payloads,
            queues=queues,
            run_ats=run_ats,
            priorities=priorities,
            dedupe_keys=dedupe_keys,
            conn=conn,
            **_given(
                concurrency_keys=concurrency_keys,
                on_conflict=on_conflict,
                throttle=throttle,
                debounce=debounce,
                debounce_max=debounce_max,
                start_bys=start_bys,
            ),
        )

    def create_queue_sync(self, queue: str) -> bool:
        """Record; default answer: True."""
        return self._answer("create_queue_sync", True, queue)

    # -- FlowClient -----------------------------------------------------------------------

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
        """Record; default answer: a new uuid, created."""
        return await self._answer_async(
            "submit",
            lambda: Submitted(uuid.uuid4(), "created"),
            task_key,
            payload,
            queue=queue,
            run_at=run_at,
            priority=priority,
            dedupe_key=dedupe_key,
            conn=conn,
            **_given(
                concurrency_key=concurrency_key,
                on_conflict=on_conflict,
                throttle=throttle,
                debounce=debounce,
                debounce_max=debounce_max,
                start_by=start_by,
            ),
        )

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
        """Record; default answer: one new uuid per key, created."""
        return await self._answer_async(
            "submit_batch",
            lambda: [Submitted(uuid.uuid4(), "created") for _ in task_keys],
            task_keys,
            payloads,
            queues=queues,
            run_ats=run_ats,
            priorities=priorities,
            dedupe_keys=dedupe_keys,
            conn=conn,
            **_given(
                concurrency_keys=concurrency_keys,
                on_conflict=on_conflict,
                throttle=throttle,
                debounce=debounce,
                debounce_max=debounce_max,
                start_bys=start_bys,
            ),
        )

    async def pause_queue(self, queue: str) -> bool:
        """Record; default answer: True."""
        return await self._answer_async("pause_queue", True, queue)

    async def resume_queue(self, queue: str) -> bool:
        """Record; default answer: True."""
        return await self._answer_async("resume_queue", True, queue)

    async def pause_task(self, task_key: str) -> bool:
        """Record; default answer: True."""
        return await self._answer_async("pause_task", True, task_key)

    async def resume_task(self, task_key: str) -> bool:
        """Record; default answer: True."""
        return await self._answer_async("resume_task", True, task_key)

    async def cancel_by_key(
        self,
        task_key: str,
        *,
        dedupe_key: str | None = None,
        concurrency_key: str | None = None,
        reason: str = "cancelled by user",
    ) -> int:
        """Record; default answer: 0."""
        return await self._answer_async(
            "cancel_by_key",
            0,
            task_key,
            dedupe_key=dedupe_key,
            concurrency_key=concurrency_key,
            reason=reason,
        )

    async def set_fair_share(self, queue: str, enabled: bool) -> None:
        """Record."""
        await self._answer_async("set_fair_share", None, queue, enabled)

    async def set_key_weight(self, queue: str, key: str, weight: int | None) -> None:
        """Record."""
        await self._answer_async("set_key_weight", None, queue, key, weight)

    async def maintain(self, limit: int = 10000) -> dict[str, Any]:
        """Record; default answer: nothing done."""
        return await self._answer_async("maintain", dict, limit)

    async def flow_status(self, queue: str | None = None) -> list[FlowStatus]:
        """Record; default answer: no rows."""
        return await self._answer_async("flow_status", list, queue)

    # -- SchemaClient -------------------------------------------------------------------

    async def extension_version(self) -> str | None:
        """Record; default answer: the installed version."""
        return await self._answer_async("extension_version", self.installed_version)

    async def available_versions(self) -> list[str]:
        """Record; default answer: the installed version only."""
        return await self._answer_async(
            "available_versions", lambda: [v for v in [self.installed_version] if v]
        )

    async def install_extension(self, version: str | None = None) -> str | None:
        """Record; installs `version` (default 0.1.0) when nothing is installed."""

        def install() -> str | None:
            if self.installed_version is None:
                self.installed_version = version or "0.1.0"
            return self.installed_version

        return await self._answer_async("install_extension", install, version)

    async def upgrade_extension(self, to: str | None = None) -> str | None:
        """Record; sets the installed version to `to`."""

        def upgrade() -> str | None:
            self.installed_version = to or self.installed_version
            return self.installed_version

        return await self._answer_async("upgrade_extension", upgrade, to)
