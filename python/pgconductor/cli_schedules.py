"""Schedule commands (extension 0.8.0): `schedules` (the list, with next and last runs),
`schedules pause|resume|backfill|remove NAME`, and `schedule NAME TASK CRON` to create or
update one from the command line.

Every rule is SQL's (cron syntax, time zones, the DST rule, missed and overlap): these
commands call it through the client and print its answer. A bad cron field, an unknown time
zone or schedule is one line with SQL's SQLSTATE and hint, exit 1; an older extension
answers with one line naming the version needed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pgconductor.cli_common import (
    AppOption,
    Connection,
    DatabaseUrlOption,
    fail,
    run_command,
)

if TYPE_CHECKING:
    from pgconductor.source_types import ScheduleInfo, SourceClient

__all__ = ["parse_time", "register", "schedule_lines", "schedules_app"]

schedules_app = typer.Typer(
    help="List the cron schedules, or pause, resume, backfill or remove one.",
    invoke_without_command=True,
    rich_markup_mode=None,
)

Name = Annotated[str, typer.Argument(metavar="NAME", help="Schedule name.", show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def parse_time(value: str) -> dt.datetime:
    """A time option: ISO 8601 (`2026-01-31`, `2026-01-31T09:00`, `...+02:00`, `...Z`);
    without an offset it is UTC. Anything else is a one-line usage error."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a time (ISO 8601: 2026-01-31 or 2026-01-31T09:00+02:00)"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _parse_json(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}") from None


def _time(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _sources(connection: Connection) -> SourceClient:
    from pgconductor.source_types import SourceClient

    client = connection.client
    if not isinstance(client, SourceClient):
        fail(f"{type(client).__name__} has no schedule calls")
    return client


def _notes(row: ScheduleInfo) -> str:
    """What differs from a plain schedule: paused, static, the policies, the queue."""
    notes = ["paused"] if row.paused else []
    notes += ["static"] if row.static else []
    notes += [f"missed={row.missed}"] if row.missed != "skip" else []
    notes += [f"overlap={row.overlap}"] if row.overlap != "allow" else []
    notes += [f"queue={row.queue}"] if row.queue is not None else []
    return ", ".join(notes)


def schedule_lines(rows: list[ScheduleInfo]) -> list[tuple[str, ...]]:
    """The cells of the `schedules` table: name, task, cron, time zone, next run (none while
    paused), last run (UTC), and notes (paused, static, missed and overlap when not the
    defaults, the queue when set)."""
    return [
        (
            r.name,
            r.task_key,
            r.cron,
            r.tz,
            "-" if r.paused else _time(r.next_run_at),
            _time(r.last_run_at),
            _notes(r),
        )
        for r in rows
    ]


def _print_schedules(rows: list[ScheduleInfo], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(r) for r in rows], default=str, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="schedules")
    for name in ("name", "task", "cron", "tz", "next run (UTC)", "last run (UTC)", ""):
        table.add_column(name, no_wrap=name in ("cron", "next run (UTC)", "last run (UTC)"))
    for cells in schedule_lines(rows):
        table.add_row(*cells)
    table.caption = (
        "no schedules"
        if not rows
        else "static: declared in a worker's code (a worker start removes it when the code"
        " no longer does)"
    )
    Console(highlight=False, soft_wrap=True).print(table)


@schedules_app.callback()
def schedules(
    ctx: typer.Context,
    as_json: JsonOption = False,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List the schedules with their next and last runs (or run a command below)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = (app, database_url)  # `schedules --app X pause NAME` works too
        return
    rows = run_command(app, database_url, lambda c: _sources(c).schedules())
    _print_schedules(rows, as_json)


def _where(ctx: typer.Context, app: str | None, database_url: str | None) -> tuple[Any, Any]:
    """The database options of a subcommand, else those given before it."""
    parent_app, parent_url = ctx.obj if isinstance(ctx.obj, tuple) else (None, None)
    return app or parent_app, database_url or parent_url


@schedules_app.command("list")
def list_schedules(
    ctx: typer.Context,
    as_json: JsonOption = False,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List the schedules with their next and last runs."""
    app, database_url = _where(ctx, app, database_url)
    rows = run_command(app, database_url, lambda c: _sources(c).schedules())
    _print_schedules(rows, as_json)


@schedules_app.command("pause")
def pause(
    ctx: typer.Context, name: Name, app: AppOption = None, database_url: DatabaseUrlOption = None
) -> None:
    """Pause schedule NAME: no occurrence is made until it is resumed."""
    app, database_url = _where(ctx, app, database_url)
    run_command(app, database_url, lambda c: _sources(c).pause_schedule(name))
    typer.echo(f"schedule {name} paused")


@schedules_app.command("resume")
def resume(
    ctx: typer.Context, name: Name, app: AppOption = None, database_url: DatabaseUrlOption = None
) -> None:
    """Resume schedule NAME and print its next run.

    With missed=skip the occurrences of the pause are dropped; with catch_up the next tick
    makes them (the latest catch_up_max).
    """
    app, database_url = _where(ctx, app, database_url)
    next_run = run_command(app, database_url, lambda c: _sources(c).resume_schedule(name))
    typer.echo(f"schedule {name} resumed: next run {_time(next_run)} UTC")


@schedules_app.command("backfill")
def backfill(
    ctx: typer.Context,
    name: Name,
    start: Annotated[
        dt.datetime,
        typer.Option(
            "--from",
            parser=parse_time,
            metavar="TIME",
            help="First instant of the period (ISO 8601; UTC without an offset).",
            show_default=False,
        ),
    ],
    end: Annotated[
        dt.datetime,
        typer.Option(
            "--to",
            parser=parse_time,
            metavar="TIME",
            help="End of the period, excluded.",
            show_default=False,
        ),
    ],
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Make each occurrence of schedule NAME in [--from, --to) not made yet.

    Their executions are due at once; running it twice makes nothing the second time. At
    most 10,000 occurrences per call.
    """
    app, database_url = _where(ctx, app, database_url)
    made = run_command(app, database_url, lambda c: _sources(c).backfill(name, start, end))
    typer.echo(f"backfilled {made} occurrence(s) of schedule {name}")


@schedules_app.command("remove")
def remove(
    ctx: typer.Context, name: Name, app: AppOption = None, database_url: DatabaseUrlOption = None
) -> None:
    """Delete schedule NAME (the executions it made stay).

    A static schedule comes back at the next start of a worker whose code declares it.
    """
    app, database_url = _where(ctx, app, database_url)
    removed = run_command(app, database_url, lambda c: _sources(c).unschedule(name))
    if not removed:
        fail(f"unknown schedule {name!r}", "pgconductor schedules lists the schedules")
    typer.echo(f"schedule {name} removed")


def schedule(
    name: Name,
    task: Annotated[str, typer.Argument(metavar="TASK", help="Task key.", show_default=False)],
    cron: Annotated[
        str,
        typer.Argument(
            metavar="CRON",
            help="5 fields (minute hour day month weekday), 6 with seconds first, or @daily...",
            show_default=False,
        ),
    ],
    tz: Annotated[str, typer.Option(metavar="ZONE", help="Time zone of the cron times.")] = "UTC",
    payload: Annotated[
        Any, typer.Option(parser=_parse_json, metavar="JSON", help="Payload of each execution.")
    ] = "{}",
    queue: Annotated[
        str | None,
        typer.Option(metavar="QUEUE", help="Queue. Default: the task's.", show_default=False),
    ] = None,
    missed: Annotated[
        str,
        typer.Option(
            metavar="skip|catch_up",
            help="After a time nothing ticked: run the latest missed occurrence once, or each.",
        ),
    ] = "skip",
    overlap: Annotated[
        str,
        typer.Option(
            metavar="allow|skip",
            help="skip: no occurrence while the last one's execution is live.",
        ),
    ] = "allow",
    priority: Annotated[int, typer.Option(metavar="N", help="Lower runs first.")] = 0,
    catch_up_max: Annotated[
        int, typer.Option(metavar="N", help="missed=catch_up: at most N occurrences per tick.")
    ] = 100,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create or update schedule NAME: an execution of TASK at each occurrence of CRON.

    Prints the next run. A schedule made here is dynamic: no worker start removes it.
    """
    next_run = run_command(
        app,
        database_url,
        lambda c: _sources(c).schedule(
            name,
            task,
            cron,
            payload=payload,
            tz=tz,
            queue=queue,
            missed=missed,
            overlap=overlap,
            priority=priority,
            catch_up_max=catch_up_max,
        ),
    )
    typer.echo(f"schedule {name}: {task} at {cron!r} ({tz}), next run {_time(next_run)} UTC")


def register(app: typer.Typer) -> None:
    """Add `schedules` and `schedule` to the `pgconductor` app."""
    app.add_typer(schedules_app, name="schedules")
    app.command("schedule")(schedule)
