"""`FlowCalls`: the flow-control functions of extension 0.7.0, one typed method each.

`SqlDatabaseClient` inherits them. A call to an extension older than 0.7.0 (no such
function: SQLSTATE 42883) raises one line that names the version needed, but for
`has_due_work`, which answers False there: without limits nothing due waits for one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from pgconductor.db import rows
from pgconductor.db.runner import StatementRunner
from pgconductor.db.statements import CALLS, Call
from pgconductor.errors import PgConductorError
from pgconductor.types import FlowStatus, Submitted

__all__ = ["FLOW_SINCE", "FlowCalls", "needs_flow"]

T = TypeVar("T")
#: The first extension version with flow control.
FLOW_SINCE = "0.7.0"
_UNDEFINED_FUNCTION = "42883"


def needs_flow(exc: PgConductorError, function: str) -> PgConductorError:
    """`exc`, or when it says `pgconductor.<function>(...)` does not exist (an extension
    older than 0.7.0), an error naming the version needed."""
    if exc.sqlstate != _UNDEFINED_FUNCTION or f"pgconductor.{function}(" not in str(exc):
        return exc
    return PgConductorError(
        f"pgconductor.{function} with flow control needs extension {FLOW_SINCE} or later",
        sqlstate=_UNDEFINED_FUNCTION,
        hint="upgrade the extension: pgconductor schema upgrade",
    )


class FlowCalls(StatementRunner):
    """Enqueue with flow control, pause and resume, cancel by key, fair share, maintenance."""

    async def _run_flow(
        self,
        call: Call,
        params: Mapping[str, Any],
        fetch: rows.Fetch[T],
        conn: AsyncConnection | None = None,
    ) -> T:
        """`_run`, an extension before 0.7.0 reported as such."""
        try:
            return await self._run(call, params, fetch, conn)
        except PgConductorError as exc:
            raise needs_flow(exc, call.name.removesuffix("_flow")) from exc

    def _run_flow_sync(
        self, call: Call, params: Mapping[str, Any], fetch: rows.Fetch[T], conn: Connection | None
    ) -> T:
        """Blocking `_run_flow`."""
        try:
            return self._run_sync(call, params, fetch, conn)
        except PgConductorError as exc:
            raise needs_flow(exc, call.name.removesuffix("_flow")) from exc

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
        """Call `pgconductor.submit`: the id and the outcome (created, updated, kept, ...)."""
        params = rows.invoke_params(task_key, payload, queue, run_at, priority, dedupe_key)
        flow = rows.flow_params(
            concurrency_key, on_conflict, throttle, debounce, debounce_max, start_by
        )
        params |= flow
        (answer,) = await self._run_flow(CALLS["submit"], params, rows.submitted, conn)
        return answer

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
        """Call the parallel-array `pgconductor.submit_batch`; rows in input order."""
        params = rows.batch_params(task_keys, payloads, queues, run_ats, priorities, dedupe_keys)
        flow = rows.batch_flow_params(
            concurrency_keys, on_conflict, throttle, debounce, debounce_max, start_bys
        )
        params |= flow
        return await self._run_flow(CALLS["submit_batch"], params, rows.submitted, conn)

    # -- operations ---------------------------------------------------------------------

    async def pause_queue(self, queue: str) -> bool:
        """Call `pgconductor.pause_queue`; True when the queue was not paused before."""
        return bool(await self._run_flow(CALLS["pause_queue"], {"queue": queue}, rows.scalar))

    async def resume_queue(self, queue: str) -> bool:
        """Call `pgconductor.resume_queue`; True when the queue was paused."""
        return bool(await self._run_flow(CALLS["resume_queue"], {"queue": queue}, rows.scalar))

    async def pause_task(self, task_key: str) -> bool:
        """Call `pgconductor.pause_task`; True when the task was not paused before."""
        params = {"task_key": task_key}
        return bool(await self._run_flow(CALLS["pause_task"], params, rows.scalar))

    async def resume_task(self, task_key: str) -> bool:
        """Call `pgconductor.resume_task`; True when the task was paused."""
        params = {"task_key": task_key}
        return bool(await self._run_flow(CALLS["resume_task"], params, rows.scalar))

    async def cancel_by_key(
        self,
        task_key: str,
        *,
        dedupe_key: str | None = None,
        concurrency_key: str | None = None,
        reason: str = "cancelled by user",
    ) -> int:
        """Call `pgconductor.cancel_by_key` (exactly one of the keys); how many it cancelled
        or signalled."""
        params = {
            "task_key": task_key,
            "dedupe_key": dedupe_key,
            "concurrency_key": concurrency_key,
            "reason": reason,
        }
        return int(await self._run_flow(CALLS["cancel_by_key"], params, rows.scalar))

    async def set_fair_share(self, queue: str, enabled: bool) -> None:
        """Call `pgconductor.set_fair_share`: concurrency keys share the queue's claims."""
        params = {"queue": queue, "enabled": enabled}
        await self._run_flow(CALLS["set_fair_share"], params, rows.nothing)

    async def set_key_weight(self, queue: str, key: str, weight: int | None) -> None:
        """Call `pgconductor.set_key_weight` (None: back to 1)."""
        params = {"queue": queue, "key": key, "weight": weight}
        await self._run_flow(CALLS["set_key_weight"], params, rows.nothing)

    async def maintain(self, limit: int = 10000) -> dict[str, Any]:
        """Call `pgconductor.maintain`: one maintenance pass; its counts by name
        (`{"skipped": true}` when another pass was running)."""
        counts = await self._run_flow(CALLS["maintain"], {"limit": limit}, rows.scalar)
        return dict(counts or {})

    async def has_due_work(self, queue: str, task_keys: Sequence[str] | None) -> bool:
        """Call `pgconductor.has_due_work`: whether due executions of the tasks wait for a
        limit (or a claim); False on an extension before 0.7.0, which has no limits."""
        params = {"queue": queue, "task_keys": None if task_keys is None else list(task_keys)}
        try:
            return bool(await self._run(CALLS["has_due_work"], params, rows.scalar))
        except PgConductorError as exc:
            if exc.sqlstate != _UNDEFINED_FUNCTION or "pgconductor.has_due_work(" not in str(exc):
                raise
            return False  # before 0.7.0: no limits, so no due work waits for one

    async def flow_status(self, queue: str | None = None) -> list[FlowStatus]:
        """Call `pgconductor.flow_status`: running and pending per task and key, the limits."""
        return await self._run_flow(CALLS["flow_status"], {"queue": queue}, rows.flow_statuses)
