"""Schedules and event sources declared in code (extension 0.8.0).

`@conductor.task(...)` takes `SourceOptions`: a cron schedule (`cron`, `tz`,
`schedule_payload`, `missed`, `overlap`, or several `Schedule` values), event subscriptions
(`on_event`, `match`, `fields`, or `EventSource` values) and table-change triggers
(`on_table`, `ops`, `columns`, `when`, or `TableSource` values). Python checks only what SQL
cannot (types, a schedule payload against the task's payload type, names used twice); every
rule is in SQL.

At start the orchestrator calls `declare_sources`: it upserts each declaration as static
(`p_static => true`), then calls the three `sync_static_*` functions with the conductor's
task keys, so a static schedule, subscription or trigger that the code no longer declares
is removed, and one made in SQL or with `SourceClient` calls (dynamic) is never touched.
On an extension before 0.8.0 `check_sources` refuses a conductor that declares any.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypedDict
from uuid import UUID

from pgconductor.encoding import to_json
from pgconductor.errors import InvalidInput, InvalidState, PgConductorError
from pgconductor.source_types import SOURCES_SINCE, SourceClient

if TYPE_CHECKING:
    from pgconductor.task import Task

__all__ = [
    "EventSource",
    "OccurrenceReader",
    "Removed",
    "Schedule",
    "SourceOptions",
    "Sources",
    "TableSource",
    "check_sources",
    "declare_sources",
    "task_sources",
    "unique_schedule_names",
]

#: What the tick does with occurrences missed while nothing ticked: `skip` (the latest once)
#: or `catch_up` (each, up to `catch_up_max`).
Missed = Literal["skip", "catch_up"]
#: `skip`: no new occurrence while the last one's execution is live.
Overlap = Literal["allow", "skip"]
#: The changes a table trigger fires on.
Op = Literal["insert", "update", "delete"]
ALL_OPS: tuple[str, ...] = ("insert", "update", "delete")


@dataclass(frozen=True, slots=True)
class Schedule:
    """A static cron schedule of a task (`cron=[Schedule(...), ...]` declares several).

    `name` defaults to the task key (schedule names are unique in the database); `payload`
    is each execution's payload ({} when None); `queue` None is the task's queue.
    """

    cron: str
    name: str | None = None
    payload: Any = None
    tz: str = "UTC"
    queue: str | None = None
    missed: Missed = "skip"
    overlap: Overlap = "allow"
    priority: int = 0
    catch_up_max: int = 100


@dataclass(frozen=True, slots=True)
class EventSource:
    """A static event subscription: the task runs for each event `event` whose payload
    contains `match`, with only the top-level `fields` of it (None: all of it)."""

    event: str
    match: Mapping[str, Any] | None = None
    fields: Sequence[str] | None = None
    queue: str | None = None
    priority: int = 0


@dataclass(frozen=True, slots=True)
class TableSource:
    """A static table-change trigger: the task runs with {op, table, old, new} for each row
    `ops` change on `table` ('schema.table', quoted as in SQL), carrying only `columns`
    (None: all); `when` is a boolean SQL expression over OLD and NEW, the caller's own SQL."""

    table: str
    ops: Sequence[str] = ALL_OPS
    columns: Sequence[str] | None = None
    when: str | None = None
    queue: str | None = None


@dataclass(frozen=True, slots=True)
class Sources:
    """What a task declares: its schedules (named), subscriptions and table triggers."""

    schedules: tuple[Schedule, ...] = ()
    events: tuple[EventSource, ...] = ()
    tables: tuple[TableSource, ...] = ()
    #: The options given, for messages.
    given: tuple[str, ...] = field(default=(), compare=False)

    def __bool__(self) -> bool:
        return bool(self.schedules or self.events or self.tables)


class SourceOptions(TypedDict, total=False):
    """The event-source keywords of `@conductor.task(...)` (extension 0.8.0)."""

    #: A cron expression (5 or 6 fields, in `tz`), or `Schedule` values for several.
    cron: str | Schedule | Sequence[Schedule] | None
    tz: str | None
    schedule_payload: Any
    missed: Missed | None
    overlap: Overlap | None
    #: An event name (or several, or `EventSource` values); `match` and `fields` apply to
    #: the names given as strings.
    on_event: str | EventSource | Sequence[str | EventSource] | None
    match: Mapping[str, Any] | None
    fields: Sequence[str] | None
    #: A table ('schema.table'), several, or `TableSource` values; `ops`, `columns` and
    #: `when` apply to the tables given as strings.
    on_table: str | TableSource | Sequence[str | TableSource] | None
    ops: Sequence[Op] | None
    columns: Sequence[str] | None
    when: str | None


_SCHEDULE_OPTIONS = ("tz", "schedule_payload", "missed", "overlap")
_EVENT_OPTIONS = ("match", "fields")
_TABLE_OPTIONS = ("ops", "columns", "when")
SOURCE_OPTIONS = frozenset(SourceOptions.__annotations__)


def bad_option(message: str) -> InvalidInput:
    """A task option Python refuses at decoration: one line, SQLSTATE 22023."""
    return InvalidInput(message, sqlstate="22023")


def _text(value: Any, what: str, *, optional: bool = False) -> None:
    if (value is None and optional) or isinstance(value, str):
        return
    raise bad_option(f"{what} must be a string, got {type(value).__name__}")


def _names(value: Any, what: str) -> tuple[str, ...] | None:
    """A list of names (a lone string is one name), or None."""
    if value is None:
        return None
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not all(isinstance(v, str) for v in items):
        raise bad_option(f"{what} must be a list of strings")
    return tuple(items)


def _json(value: Any, what: str) -> None:
    try:
        to_json(value)
    except InvalidInput as exc:
        raise bad_option(f"{what} is not JSON: {exc}") from None


def _several(value: Any, kind: type) -> list[Any]:
    if isinstance(value, str | kind):
        return [value]
    if isinstance(value, Sequence):
        return list(value)
    raise bad_option(f"expected a string, a {kind.__name__} or a list of them")


def _unique(names: Iterable[str], what: str, key: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise bad_option(f"task {key!r} declares {what} {name!r} twice")
        seen.add(name)


def _schedules(key: str, options: Mapping[str, Any]) -> tuple[Schedule, ...]:
    cron = options.get("cron")
    extra = [name for name in _SCHEDULE_OPTIONS if options.get(name) is not None]
    if cron is None or not isinstance(cron, str):
        if extra:
            raise bad_option(f'{", ".join(extra)} need cron="..." (a Schedule carries its own)')
        if cron is None:
            return ()
    if isinstance(cron, str):
        cron = Schedule(
            cron,
            payload=options.get("schedule_payload"),
            tz=options.get("tz") or "UTC",
            missed=options.get("missed") or "skip",
            overlap=options.get("overlap") or "allow",
        )
    found: list[Schedule] = []
    for item in _several(cron, Schedule):
        if not isinstance(item, Schedule):
            raise bad_option("cron takes one expression (a string) or a list of Schedule values")
        for name, value in (("cron", item.cron), ("tz", item.tz), ("missed", item.missed)):
            _text(value, f"schedule {name}")
        _text(item.overlap, "schedule overlap")
        _text(item.name, "schedule name", optional=True)
        _text(item.queue, "schedule queue", optional=True)
        _json({} if item.payload is None else item.payload, "a schedule payload")
        found.append(replace(item, name=item.name or key))
    _unique((s.name or key for s in found), "schedule", key)
    return tuple(found)


def _events(key: str, options: Mapping[str, Any]) -> tuple[EventSource, ...]:
    given = options.get("on_event")
    extra = [name for name in _EVENT_OPTIONS if options.get(name) is not None]
    if given is None:
        if extra:
            raise bad_option(f"{', '.join(extra)} need on_event")
        return ()
    match, fields = options.get("match"), _names(options.get("fields"), "fields")
    found: list[EventSource] = []
    for item in _several(given, EventSource):
        if isinstance(item, str):
            item = EventSource(item, match, fields)
        if not isinstance(item, EventSource):
            raise bad_option("on_event takes event names or EventSource values")
        _text(item.event, "an event name")
        if item.match is not None and not isinstance(item.match, Mapping):
            raise bad_option(f"match of event {item.event!r} must be a dict")
        _json(item.match, f"match of event {item.event!r}")
        found.append(replace(item, fields=_names(item.fields, "fields")))
    _unique((e.event for e in found), "event", key)
    return tuple(found)


def _tables(key: str, options: Mapping[str, Any]) -> tuple[TableSource, ...]:
    given = options.get("on_table")
    extra = [name for name in _TABLE_OPTIONS if options.get(name) is not None]
    if given is None:
        if extra:
            raise bad_option(f"{', '.join(extra)} need on_table")
        return ()
    ops = _names(options.get("ops"), "ops")
    columns, when = _names(options.get("columns"), "columns"), options.get("when")
    found: list[TableSource] = []
    for item in _several(given, TableSource):
        if isinstance(item, str):
            item = TableSource(item, ALL_OPS if ops is None else ops, columns, when)
        if not isinstance(item, TableSource):
            raise bad_option("on_table takes table names or TableSource values")
        _text(item.table, "a table name")
        _text(item.when, "when", optional=True)
        found.append(
            replace(
                item,
                ops=ALL_OPS if item.ops is None else (_names(item.ops, "ops") or ()),
                columns=_names(item.columns, "columns"),
            )
        )
    _unique((t.table for t in found), "table", key)
    return tuple(found)


def task_sources(key: str, options: Mapping[str, Any]) -> Sources:
    """The `Sources` of task `key` from its `SourceOptions`, types checked."""
    given = tuple(sorted(name for name in SOURCE_OPTIONS if options.get(name) is not None))
    return Sources(_schedules(key, options), _events(key, options), _tables(key, options), given)


def unique_schedule_names(tasks: Iterable[Task[Any]], key: str, sources: Sources) -> None:
    """A schedule name is unique in the database: two tasks may not declare the same one."""
    mine = {s.name for s in sources.schedules}
    for task in tasks:
        for schedule in task.sources.schedules:
            if schedule.name in mine:
                raise bad_option(
                    f"task {key!r} declares schedule {schedule.name!r}, "
                    f"which task {task.key!r} declares already"
                )


def release_of(version: str) -> tuple[int, ...]:
    """`"0.8.0"` -> `(0, 8, 0)`: an extension version, comparable with the `*_SINCE` ones."""
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def check_sources(tasks: Iterable[Task[Any]], installed: tuple[int, ...]) -> None:
    """Refuse to start on an extension before 0.8.0 when a task declares a source."""
    if installed >= release_of(SOURCES_SINCE):
        return
    for task in tasks:
        if task.sources:
            raise InvalidState(
                f"task {task.key!r} declares {', '.join(task.sources.given)}, which needs "
                f"pgconductor extension {SOURCES_SINCE} or later "
                f"(installed: {'.'.join(map(str, installed))})",
                sqlstate="55000",
                hint="upgrade the extension: pgconductor schema upgrade",
            )


class Removed(NamedTuple):
    """What `declare_sources` removed: static sources the code no longer declares."""

    schedules: int = 0
    subscriptions: int = 0
    tables: int = 0


async def declare_sources(client: object, tasks: Iterable[Task[Any]]) -> Removed:
    """Upsert every declared source as static, then remove the static ones of these tasks
    that the code no longer declares (dynamic ones stay). Extension 0.8.0 or later."""
    tasks = list(tasks)
    if not isinstance(client, SourceClient):
        if any(task.sources for task in tasks):
            raise PgConductorError(f"{type(client).__name__} cannot declare schedules or events")
        return Removed()
    keys = [task.key for task in tasks]
    names: list[str] = []
    event_pairs: list[tuple[str, str]] = []
    table_pairs: list[tuple[str, str]] = []
    for task in tasks:
        for s in task.sources.schedules:
            name = s.name or task.key
            payload = task.dump_payload({} if s.payload is None else s.payload)
            await client.schedule(
                name, task.key, s.cron, payload, s.tz, s.queue,
                s.missed, s.overlap, s.priority, True, s.catch_up_max,
            )  # fmt: skip
            names.append(name)
        for e in task.sources.events:
            await client.subscribe(task.key, e.event, e.match, e.fields, e.queue, True, e.priority)
            event_pairs.append((task.key, e.event))
        for t in task.sources.tables:
            await client.subscribe_table(task.key, t.table, t.ops, t.columns, t.when, t.queue, True)
            table_pairs.append((task.key, t.table))
    return Removed(
        await client.sync_static_schedules(names, keys),
        await client.sync_static_subscriptions(
            keys, [k for k, _ in event_pairs], [e for _, e in event_pairs]
        ),
        await client.sync_static_table_subscriptions(
            keys, [k for k, _ in table_pairs], [t for _, t in table_pairs]
        ),
    )


#: The default bound of a blocking read from a sync handler's thread, in seconds.
READ_TIMEOUT = 30.0


class OccurrenceReader:
    """Reads `occurrence_of` for the handlers of one worker: on its event loop, and from a
    sync handler's thread by handing the call to that loop. Without a client (an extension
    before 0.8.0) every execution has no occurrence."""

    __slots__ = ("client", "loop")

    def __init__(self, client: SourceClient | None, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop

    async def read(self, execution_id: UUID) -> dt.datetime | None:
        """The occurrence time of the schedule occurrence that made the execution, or None."""
        if self.client is None:
            return None
        return await self.client.occurrence_of(execution_id)

    def read_blocking(
        self, execution_id: UUID, timeout: float = READ_TIMEOUT
    ) -> dt.datetime | None:
        """`read` from another thread (a sync handler's); refused on the loop's own thread."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            raise InvalidState(
                "ctx.scheduled_at_sync() would block the event loop: "
                "an async handler awaits ctx.scheduled_at()"
            )
        future = asyncio.run_coroutine_threadsafe(self.read(execution_id), self.loop)
        return future.result(timeout)
