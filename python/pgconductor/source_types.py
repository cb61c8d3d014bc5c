"""Schedules and event sources (extension 0.8.0): the rows SQL lists them as, and the calls.

`ScheduleInfo`, `SubscriptionInfo` and `TableSubscriptionInfo` are the rows of
`pgconductor.schedules()`, `subscriptions()` and `table_subscriptions()`. `SourceClient` is
what a client needs for them: one method per SQL function, same name (`SqlDatabaseClient`
has them through `db.schedules.SourceCalls`). Every rule is in SQL; an extension before
0.8.0 answers each call with an error naming the version needed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

__all__ = [
    "SOURCES_SINCE",
    "ScheduleInfo",
    "SourceClient",
    "SubscriptionInfo",
    "TableSubscriptionInfo",
]

#: The first extension version with schedules, event subscriptions and table triggers.
SOURCES_SINCE = "0.8.0"


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """One row of `pgconductor.schedules()`: a cron schedule and its next and last runs."""

    name: str
    task_key: str
    cron: str
    tz: str
    next_run_at: dt.datetime
    last_run_at: dt.datetime | None
    paused: bool
    #: Declared by a worker's code (removed at a worker start when the code drops it).
    static: bool
    missed: str
    overlap: str
    #: None: the task's queue.
    queue: str | None


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """One row of `pgconductor.subscriptions()`: a task subscribed to an event name."""

    id: int
    task_key: str
    event: str
    #: The payload must contain it; {} matches every event of the name.
    match: dict[str, Any]
    #: The top-level payload fields the handler gets; None for the whole payload.
    fields: list[str] | None
    queue: str | None
    priority: int
    static: bool
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class TableSubscriptionInfo:
    """One row of `pgconductor.table_subscriptions()`: a task's trigger on a table."""

    task_key: str
    #: "schema.table", quoted as SQL quotes identifiers.
    table_name: str
    ops: list[str]
    #: The columns `old` and `new` carry; None for all.
    columns: list[str] | None
    when_clause: str | None
    queue: str | None
    trigger_name: str
    static: bool
    created_at: dt.datetime


@runtime_checkable
class SourceClient(Protocol):
    """A client with the schedule, subscription and table-trigger calls of extension 0.8.0."""

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
        """Create or update a schedule; its next run."""
        ...

    async def unschedule(self, name: str) -> bool:
        """Delete a schedule; False when there was none."""
        ...

    async def pause_schedule(self, name: str) -> None:
        """The tick skips the schedule until it is resumed."""
        ...

    async def resume_schedule(self, name: str) -> dt.datetime:
        """Resume a schedule; its next run."""
        ...

    async def backfill(self, name: str, start: dt.datetime, end: dt.datetime) -> int:
        """Make the occurrences of [start, end) not made yet; how many."""
        ...

    async def schedules(self) -> list[ScheduleInfo]:
        """Every schedule, by name."""
        ...

    async def sync_static_schedules(
        self, names: Sequence[str], task_keys: Sequence[str] | None = None
    ) -> int:
        """Delete the static schedules (of `task_keys`) not in `names`; how many."""
        ...

    async def occurrence_of(self, execution_id: UUID) -> dt.datetime | None:
        """The occurrence time of the schedule occurrence that made the execution, or None."""
        ...

    async def tick(self, limit: int = 1000) -> int:
        """Make the schedule occurrences due now; how many."""
        ...

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
        """Subscribe a task to an event name (upsert); the subscription's id."""
        ...

    async def unsubscribe(self, task_key: str, event: str) -> bool:
        """Remove a subscription; False when there was none."""
        ...

    async def subscriptions(self) -> list[SubscriptionInfo]:
        """Every subscription, by event name then task."""
        ...

    async def sync_static_subscriptions(
        self, task_keys: Sequence[str], declared_tasks: Sequence[str], events: Sequence[str]
    ) -> int:
        """Delete the static subscriptions of `task_keys` not among the declared pairs."""
        ...

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
        """Put a change trigger for the task on a table (upsert); the trigger's name."""
        ...

    async def unsubscribe_table(self, task_key: str, table: str) -> bool:
        """Drop the task's trigger on a table; False when there was none."""
        ...

    async def table_subscriptions(self) -> list[TableSubscriptionInfo]:
        """Every table subscription, by table then task."""
        ...

    async def sync_static_table_subscriptions(
        self, task_keys: Sequence[str], declared_tasks: Sequence[str], tables: Sequence[str]
    ) -> int:
        """Drop the static table subscriptions of `task_keys` not among the declared pairs."""
        ...
