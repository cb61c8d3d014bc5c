"""Flow-control commands (extension 0.7.0): `pause`, `resume`, `flow`, `maintain`, and the
by-key half of `cancel` (`cancel --task T --dedupe-key K | --concurrency-key K`).

Every rule is SQL's; these commands call it and print its answer. An older extension
answers with one line naming the version needed (SQLSTATE 42883), as every command does.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import typer

from pgconductor.cli_common import (
    AppOption,
    Connection,
    DatabaseUrlOption,
    fail,
    parse_uuid,
    run_command,
)

if TYPE_CHECKING:
    from pgconductor.protocol import FlowClient
    from pgconductor.types import FlowStatus

__all__ = [
    "ConcurrencyKeyOption",
    "DedupeKeyOption",
    "MaybeExecutionId",
    "TaskOption",
    "cancel_by_key",
    "flow_lines",
    "register",
]

pause_app = typer.Typer(
    help="Stop claims of a queue or a task (running executions go on).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
resume_app = typer.Typer(
    help="Let claims take a paused queue or task again.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

Name = Annotated[str, typer.Argument(metavar="NAME", help="Queue name.", show_default=False)]
Key = Annotated[str, typer.Argument(metavar="KEY", help="Task key.", show_default=False)]
#: `cancel`'s execution id, optional once the by-key options exist.
MaybeExecutionId = Annotated[
    UUID | None,
    typer.Argument(
        parser=parse_uuid,
        metavar="ID",
        help="Execution id (or --task with a key).",
        show_default=False,
    ),
]
TaskOption = Annotated[
    str | None,
    typer.Option("--task", metavar="TASK", help="Cancel by key: the task.", show_default=False),
]
DedupeKeyOption = Annotated[
    str | None,
    typer.Option(
        "--dedupe-key",
        metavar="KEY",
        help="Cancel by key: the live execution with this dedupe key.",
        show_default=False,
    ),
]
ConcurrencyKeyOption = Annotated[
    str | None,
    typer.Option(
        "--concurrency-key",
        metavar="KEY",
        help="Cancel by key: every live execution with this concurrency key.",
        show_default=False,
    ),
]


def _flow(connection: Connection) -> FlowClient:
    from pgconductor.protocol import FlowClient

    client = connection.client
    if not isinstance(client, FlowClient):
        fail(f"{type(client).__name__} has no flow-control calls")
    return client


def _changed(kind: str, name: str, changed: bool, done: str, already: str) -> None:
    typer.echo(f"{kind} {name} {done}" if changed else f"{kind} {name} {already}")


@pause_app.command("queue")
def pause_queue(name: Name, app: AppOption = None, database_url: DatabaseUrlOption = None) -> None:
    """Pause queue NAME: claims skip it; running executions go on."""
    changed = run_command(app, database_url, lambda c: _flow(c).pause_queue(name))
    _changed("queue", name, changed, "paused", "was already paused")


@pause_app.command("task")
def pause_task(key: Key, app: AppOption = None, database_url: DatabaseUrlOption = None) -> None:
    """Pause task KEY: claims skip it; running executions go on."""
    changed = run_command(app, database_url, lambda c: _flow(c).pause_task(key))
    _changed("task", key, changed, "paused", "was already paused")


@resume_app.command("queue")
def resume_queue(name: Name, app: AppOption = None, database_url: DatabaseUrlOption = None) -> None:
    """Resume queue NAME: claims take it again."""
    changed = run_command(app, database_url, lambda c: _flow(c).resume_queue(name))
    _changed("queue", name, changed, "resumed", "was not paused")


@resume_app.command("task")
def resume_task(key: Key, app: AppOption = None, database_url: DatabaseUrlOption = None) -> None:
    """Resume task KEY: claims take it again."""
    changed = run_command(app, database_url, lambda c: _flow(c).resume_task(key))
    _changed("task", key, changed, "resumed", "was not paused")


def cancel_by_key(
    execution_id: UUID | None,
    task: str | None,
    dedupe_key: str | None,
    concurrency_key: str | None,
    reason: str,
    app: str | None,
    database_url: str | None,
) -> None:
    """`cancel --task T --dedupe-key K | --concurrency-key K`: print how many it cancelled."""
    if execution_id is not None:
        raise typer.BadParameter("give an execution ID or --task with a key, not both")
    if task is None:
        raise typer.BadParameter("--dedupe-key and --concurrency-key need --task")
    if (dedupe_key is None) == (concurrency_key is None):
        raise typer.BadParameter("give exactly one of --dedupe-key and --concurrency-key")
    count = run_command(
        app,
        database_url,
        lambda c: _flow(c).cancel_by_key(
            task, dedupe_key=dedupe_key, concurrency_key=concurrency_key, reason=reason
        ),
    )
    key = (
        f"dedupe key {dedupe_key!r}"
        if dedupe_key is not None
        else (f"concurrency key {concurrency_key!r}")
    )
    typer.echo(f"cancelled {count} execution(s) of {task} with {key}")


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def flow_lines(rows: list[FlowStatus]) -> list[tuple[str, ...]]:
    """The cells of `flow`'s table: queue, task, key, running, pending, parked, the limits,
    paused."""
    return [
        (
            r.queue,
            r.task_key,
            "(none)" if r.concurrency_key in (None, "") else str(r.concurrency_key),
            str(r.running),
            str(r.pending),
            str(r.parked),
            _limit(r.max_running),
            _limit(r.max_running_per_key),
            "paused" if r.paused else "",
        )
        for r in rows
    ]


def flow(
    queue: Annotated[
        str | None,
        typer.Option(metavar="QUEUE", help="Only this queue's tasks.", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Show running, pending and parked per task and concurrency key, with the limits."""
    rows = run_command(app, database_url, lambda c: _flow(c).flow_status(queue))
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    names = ("queue", "task", "key", "running", "pending", "parked", "max", "max/key", "")
    table = Table(title="flow control" + ("" if queue is None else f" in queue {queue!r}"))
    table.caption = "max: running at most for the task; max/key: per concurrency key"
    for name in names:
        table.add_column(name, justify="right" if name in names[3:8] else "left")
    for cells in flow_lines(rows):
        table.add_row(*cells)
    if not rows:
        table.caption = "nothing running, pending or parked"
    Console(highlight=False, soft_wrap=True).print(table)


def maintain(
    limit: Annotated[
        int, typer.Option(min=1, metavar="N", help="Finished executions to prune at most.")
    ] = 10000,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Run one maintenance pass now and print its counts.

    Workers of 0.7.0 run one every 10 s; this is for a database without workers or cron.
    """
    counts: dict[str, Any] = run_command(app, database_url, lambda c: _flow(c).maintain(limit))
    if counts.get("skipped"):
        typer.echo("skipped: another maintenance pass is running")
        return
    for name, value in sorted(counts.items()):
        typer.echo(f"{name}: {value}")
    if not counts:
        typer.echo("nothing to do")


def register(app: typer.Typer) -> None:
    """Add the flow-control commands to the `pgconductor` app."""
    app.add_typer(pause_app, name="pause")
    app.add_typer(resume_app, name="resume")
    app.command("flow")(flow)
    app.command("maintain")(maintain)
