"""The fake client's schedule, subscription and table-trigger calls (`SourceClient`).

`FakeDatabaseClient` inherits `FakeSourceCalls`: each call is recorded and answered from
`responses` like every other method (see `fakes.py`); no rule is implemented.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from pgconductor.source_types import (
    ScheduleInfo,
    SubscriptionInfo,
    TableSubscriptionInfo,
)

#: The default next run the fake's `schedule` and `resume_schedule` answer.
NEXT_RUN = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


class FakeSourceCalls:
    """Recorded answers for the `SourceClient` methods (the host provides `_answer_async`)."""

    async def _answer_async(self, method: str, default: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError  # FakeDatabaseClient's

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
        """Record (every argument by name but the first three); default answer: NEXT_RUN."""
        return await self._answer_async(
            "schedule",
            NEXT_RUN,
            name,
            task_key,
            cron,
            payload=payload,
            tz=tz,
            queue=queue,
            missed=missed,
            overlap=overlap,
            priority=priority,
            static=static,
            catch_up_max=catch_up_max,
        )

    async def unschedule(self, name: str) -> bool:
        """Record; default answer: True."""
        return await self._answer_async("unschedule", True, name)

    async def pause_schedule(self, name: str) -> None:
        """Record."""
        await self._answer_async("pause_schedule", None, name)

    async def resume_schedule(self, name: str) -> dt.datetime:
        """Record; default answer: NEXT_RUN."""
        return await self._answer_async("resume_schedule", NEXT_RUN, name)

    async def backfill(self, name: str, start: dt.datetime, end: dt.datetime) -> int:
        """Record; default answer: 0."""
        return await self._answer_async("backfill", 0, name, start, end)

    async def schedules(self) -> list[ScheduleInfo]:
        """Record; default answer: no schedules."""
        return await self._answer_async("schedules", list)

    async def sync_static_schedules(
        self, names: Sequence[str], task_keys: Sequence[str] | None = None
    ) -> int:
        """Record (as lists); default answer: 0."""
        keys = None if task_keys is None else list(task_keys)
        return await self._answer_async("sync_static_schedules", 0, list(names), keys)

    async def occurrence_of(self, execution_id: UUID) -> dt.datetime | None:
        """Record; default answer: None (no schedule made it)."""
        return await self._answer_async("occurrence_of", None, execution_id)

    async def tick(self, limit: int = 1000) -> int:
        """Record; default answer: 0."""
        return await self._answer_async("tick", 0, limit)

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
        """Record (the options by name); default answer: id 1."""
        return await self._answer_async(
            "subscribe",
            1,
            task_key,
            event,
            match=match,
            fields=None if fields is None else list(fields),
            queue=queue,
            static=static,
            priority=priority,
        )

    async def unsubscribe(self, task_key: str, event: str) -> bool:
        """Record; default answer: True."""
        return await self._answer_async("unsubscribe", True, task_key, event)

    async def subscriptions(self) -> list[SubscriptionInfo]:
        """Record; default answer: none."""
        return await self._answer_async("subscriptions", list)

    async def sync_static_subscriptions(
        self,
        task_keys: Sequence[str],
        declared_tasks: Sequence[str],
        events: Sequence[str],
    ) -> int:
        """Record (as lists); default answer: 0."""
        return await self._answer_async(
            "sync_static_subscriptions",
            0,
            list(task_keys),
            list(declared_tasks),
            list(events),
        )

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
        """Record (the options by name); default answer: a trigger name."""
        return await self._answer_async(
            "subscribe_table",
            "pgconductor_fake",
            task_key,
            table,
            ops=list(ops),
            columns=None if columns is None else list(columns),
            when=when,
            queue=queue,
            static=static,
        )

    async def unsubscribe_table(self, task_key: str, table: str) -> bool:
        """Record; default answer: True."""
        return await self._answer_async("unsubscribe_table", True, task_key, table)

    async def table_subscriptions(self) -> list[TableSubscriptionInfo]:
        """Record; default answer: none."""
        return await self._answer_async("table_subscriptions", list)

    async def sync_static_table_subscriptions(
        self,
        task_keys: Sequence[str],
        declared_tasks: Sequence[str],
        tables: Sequence[str],
    ) -> int:
        """Record (as lists); default answer: 0."""
        return await self._answer_async(
            "sync_static_table_subscriptions",
            0,
            list(task_keys),
            list(declared_tasks),
            list(tables),
        )
