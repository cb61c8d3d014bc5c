"""`SourceCalls`: schedules, event subscriptions and table triggers (extension 0.8.0), one
typed method per SQL function, same name.

`SqlDatabaseClient` inherits them. Errors are mapped as for every call (`errors.from_db_error`:
22023 `InvalidInput`, P0002 `NotFound`, ...); a call to an extension older than 0.8.0 (no
such function: SQLSTATE 42883) raises one line naming the version needed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from uuid import UUID

from pgconductor.db import rows
from pgconductor.db.runner import StatementRunner
from pgconductor.db.statements import CALLS
from pgconductor.encoding import to_json
from pgconductor.errors import PgConductorError
from pgconductor.source_types import (
    SOURCES_SINCE,
    ScheduleInfo,
    SubscriptionInfo,
    TableSubscriptionInfo,
)

__all__ = [
    "SourceCalls",
    "needs_sources",
    "schedule_infos",
    "subscription_infos",
    "table_subscription_infos",
]

T = TypeVar("T")
_UNDEFINED_FUNCTION = "42883"


def needs_sources(exc: PgConductorError, function: str) -> PgConductorError:
    """`exc`, or when it says `pgconductor.<function>(...)` does not exist (an extension
    older than 0.8.0), an error naming the version needed."""
    if exc.sqlstate != _UNDEFINED_FUNCTION or f"pgconductor.{function}(" not in str(exc):
        return exc
    return PgConductorError(
        f"pgconductor.{function} needs extension {SOURCES_SINCE} or later",
        sqlstate=_UNDEFINED_FUNCTION,
        hint="upgrade the extension: pgconductor schema upgrade",
    )


def _texts(values: Sequence[str] | None) -> list[str] | None:
    """A text[] bind: a list, or None for SQL NULL (a lone string is one element, not its
    characters)."""
    if values is None:
        return None
    return [values] if isinstance(values, str) else list(values)


def schedule_infos(found: rows.RowList) -> list[ScheduleInfo]:
    """`schedules()` rows."""
    return [ScheduleInfo(*row) for row in found]


def subscription_infos(found: rows.RowList) -> list[SubscriptionInfo]:
    """`subscriptions()` rows."""
    return [SubscriptionInfo(*row) for row in found]


def table_subscription_infos(found: rows.RowList) -> list[TableSubscriptionInfo]:
    """`table_subscriptions()` rows."""
    return [TableSubscriptionInfo(*row) for row in found]


class SourceCalls(StatementRunner):
    """The calls of schedules, event subscriptions and table triggers."""

    async def _run_source(self, name: str, params: Mapping[str, Any], fetch: rows.Fetch[T]) -> T:
        """`_run`, an extension before 0.8.0 reported as such."""
        try:
            return await self._run(CALLS[name], params, fetch)
        except PgConductorError as exc:
            raise needs_sources(exc, name) from exc

    # -- schedules --------------------------------------------------------------------------

    async def schedule(
        self,
        name: str,
        task_key: str,
        cron: str,
        payload: Any = None,
        tz: str = "UTC",
        queue: str | None = None,
        missed: str = "skip",
        overlap: str = "allow",
        priority: int = 0,
        static: bool = False,
        catch_up_max: int = 100,
    ) -> dt.datetime:
        """Call `pgconductor.schedule` (create or update; payload None: {}); its next run."""
        params = {
            "name": name,
            "task_key": task_key,
            "cron": cron,
            "payload": to_json({} if payload is None else payload),
            "tz": tz,
            "queue": queue,
            "missed": missed,
            "overlap": overlap,
            "priority": priority,
            "static": static,
            "catch_up_max": catch_up_max,
        }
        next_run: dt.datetime = await self._run_source("schedule", params, rows.scalar)
        return next_run

    async def unschedule(self, name: str) -> bool:
        """Call `pgconductor.unschedule`; False when there was no such schedule."""
        return bool(await self._run_source("unschedule", {"name": name}, rows.scalar))

    async def pause_schedule(self, name: str) -> None:
        """Call `pgconductor.pause_schedule` (`NotFound` for an unknown name)."""
        await self._run_source("pause_schedule", {"name": name}, rows.nothing)

    async def resume_schedule(self, name: str) -> dt.datetime:
        """Call `pgconductor.resume_schedule`; the schedule's next run."""
        next_run: dt.datetime = await self._run_source(
            "resume_schedule", {"name": name}, rows.scalar
        )
        return next_run

    async def backfill(self, name: str, start: dt.datetime, end: dt.datetime) -> int:
        """Call `pgconductor.backfill`: the occurrences of [start, end) not made yet; how many."""
        params = {"name": name, "start": start, "end_at": end}
        return int(await self._run_source("backfill", params, rows.scalar))

    async def schedules(self) -> list[ScheduleInfo]:
        """Call `pgconductor.schedules()`: every schedule, by name."""
        return await self._run_source("schedules", {}, schedule_infos)

    async def sync_static_schedules(
        self, names: Sequence[str], task_keys: Sequence[str] | None = None
    ) -> int:
        """Call `pgconductor.sync_static_schedules`: delete the static schedules (of
        `task_keys`; None: of every task) not in `names`; how many."""
        params = {"names": _texts(names) or [], "task_keys": _texts(task_keys)}
        return int(await self._run_source("sync_static_schedules", params, rows.scalar))

    async def occurrence_of(self, execution_id: UUID) -> dt.datetime | None:
        """Call `pgconductor.occurrence_of`: when the occurrence that made the execution was
        due; None for one no schedule made."""
        params = {"execution_id": execution_id}
        found: dt.datetime | None = await self._run_source("occurrence_of", params, rows.scalar)
        return found

    async def tick(self, limit: int = 1000) -> int:
        """Call `pgconductor.tick`: make the occurrences due now; how many."""
        return int(await self._run_source("tick", {"limit": limit}, rows.scalar))

    # -- event subscriptions ----------------------------------------------------------------

    async def subscribe(
        self,
        task_key: str,
        event: str,
        match: Any = None,
        fields: Sequence[str] | None = None,
        queue: str | None = None,
        static: bool = False,
        priority: int = 0,
    ) -> int:
        """Call `pgconductor.subscribe` (upsert; match None: {}); the subscription's id."""
        params = {
            "task_key": task_key,
            "event": event,
            "match": to_json({} if match is None else match),
            "fields": _texts(fields),
            "queue": queue,
            "static": static,
            "priority": priority,
        }
        return int(await self._run_source("subscribe", params, rows.scalar))

    async def unsubscribe(self, task_key: str, event: str) -> bool:
        """Call `pgconductor.unsubscribe`; False when there was no such subscription."""
        params = {"task_key": task_key, "event": event}
        return bool(await self._run_source("unsubscribe", params, rows.scalar))

    async def subscriptions(self) -> list[SubscriptionInfo]:
        """Call `pgconductor.subscriptions()`: by event name, then task."""
        return await self._run_source("subscriptions", {}, subscription_infos)

    async def sync_static_subscriptions(
        self, task_keys: Sequence[str], declared_tasks: Sequence[str], events: Sequence[str]
    ) -> int:
        """Call `pgconductor.sync_static_subscriptions`: delete the static subscriptions of
        `task_keys` that are not among the pairs (declared_tasks[i], events[i]); how many."""
        params = {
            "task_keys": _texts(task_keys),
            "declared_tasks": _texts(declared_tasks),
            "events": _texts(events),
        }
        return int(await self._run_source("sync_static_subscriptions", params, rows.scalar))

    # -- table triggers ---------------------------------------------------------------------

    async def subscribe_table(
        self,
        task_key: str,
        table: str,
        ops: Sequence[str] = ("insert", "update", "delete"),
        columns: Sequence[str] | None = None,
        when: str | None = None,
        queue: str | None = None,
        static: bool = False,
    ) -> str:
        """Call `pgconductor.subscribe_table` ('schema.table', quoted as in SQL); the
        trigger's name."""
        params = {
            "task_key": task_key,
            "table_name": table,
            "ops": _texts(ops),
            "columns": _texts(columns),
            "when_clause": when,
            "queue": queue,
            "static": static,
        }
        return str(await self._run_source("subscribe_table", params, rows.scalar))

    async def unsubscribe_table(self, task_key: str, table: str) -> bool:
        """Call `pgconductor.unsubscribe_table`; False when there was no such subscription."""
        params = {"task_key": task_key, "table_name": table}
        return bool(await self._run_source("unsubscribe_table", params, rows.scalar))

    async def table_subscriptions(self) -> list[TableSubscriptionInfo]:
        """Call `pgconductor.table_subscriptions()`: by table, then task."""
        return await self._run_source("table_subscriptions", {}, table_subscription_infos)

    async def sync_static_table_subscriptions(
        self, task_keys: Sequence[str], declared_tasks: Sequence[str], tables: Sequence[str]
    ) -> int:
        """Call `pgconductor.sync_static_table_subscriptions`: drop the static table
        subscriptions of `task_keys` not among the pairs (declared_tasks[i], tables[i])."""
        params = {
            "task_keys": _texts(task_keys),
            "declared_tasks": _texts(declared_tasks),
            "tables": _texts(tables),
        }
        return int(await self._run_source("sync_static_table_subscriptions", params, rows.scalar))
