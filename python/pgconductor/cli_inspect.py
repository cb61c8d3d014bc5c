"""`pgconductor show`, `list` and `retry`: look at executions and put failed ones back.

    pgconductor show ID [--json]
    pgconductor list [--state S] [--task T] [--queue Q] [--limit N] [--before ID] [--json]
    pgconductor retry ID
    pgconductor retry --state failed|cancelled [--task T] [--queue Q] [--limit N]

Each calls one SQL function (`get_execution`, `list_executions`, `retry`,
`retry_executions`); the filtering and paging happen there.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import typer

from pgconductor.cli_common import (
    AppOption,
    DatabaseUrlOption,
    ExecutionId,
    fail,
    one_line,
    parse_uuid,
    run_command,
)
from pgconductor.cli_workflow import workflow_lines

if TYPE_CHECKING:
    from pgconductor.types import ExecutionInfo, ExecutionSummary

__all__ = ["format_execution", "register"]


class State(StrEnum):
    """An execution's state, as `list --state` takes it."""

    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class FinishedState(StrEnum):
    """The states `retry` takes executions back from."""

    failed = "failed"
    cancelled = "cancelled"


TaskFilter = Annotated[
    str | None, typer.Option("--task", metavar="TASK", help="Only this task.", show_default=False)
]
QueueFilter = Annotated[
    str | None,
    typer.Option("--queue", metavar="QUEUE", help="Only this queue.", show_default=False),
]


def _time(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _stamp(value: Any) -> str:
    """An error entry's `at` (JSON text) as `_time` shows timestamps; as it is if unreadable."""
    try:
        return _time(dt.datetime.fromisoformat(str(value)))
    except ValueError:
        return str(value)


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


def format_execution(info: ExecutionInfo) -> list[str]:
    """The lines `show` prints: the fields, then every attempt's error, indented."""
    attempts = str(info.attempts)
    if info.max_attempts is not None:
        attempts += f" of {info.max_attempts}"
    fields = [
        ("task", info.task_key),
        ("queue", info.queue),
        ("state", info.state),
        ("attempts", attempts),
        ("priority", str(info.priority)),
        ("created", _time(info.created_at)),
        ("run at", _time(info.run_at)),
        ("locked at", _time(info.locked_at)),
        ("locked by", str(info.locked_by) if info.locked_by else "-"),
        ("finished", _time(info.finished_at)),
        ("payload", _json(info.payload)),
        ("result", _json(info.result)),
    ]
    if info.cancel_reason:
        fields.append(("cancelled", info.cancel_reason))
    lines = [f"execution {info.id}"]
    lines += [f"  {name:<10} {value}" for name, value in fields]
    lines += workflow_lines(info)
    errors = info.errors or (
        [{"attempt": info.attempts, "outcome": "last error", "error": info.last_error}]
        if info.last_error
        else []
    )
    if errors:
        lines.append("  errors:")
    for entry in errors:
        at = entry.get("at")
        head = f"    attempt {entry.get('attempt')}"
        if at:
            head += f" at {_stamp(at)}"
        lines.append(f"{head}: {entry.get('outcome')}")
        lines += [f"      {line}" for line in str(entry.get("error") or "").splitlines()]
    return lines


def show(
    execution_id: ExecutionId,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Show one execution.

    Its state, attempts, each attempt's error, payload, result and timestamps.
    """
    info = run_command(app, database_url, lambda c: c.client.get_execution(execution_id))
    if info is None:
        fail(f"execution {execution_id} not found")
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(info), default=str, indent=2))
        return
    typer.echo("\n".join(format_execution(info)))


def list_executions(
    state: Annotated[
        State | None,
        typer.Option("--state", help="Only executions in this state.", show_default=False),
    ] = None,
    task: TaskFilter = None,
    queue: QueueFilter = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, metavar="N", help="Rows per page.")] = 50,
    before: Annotated[
        UUID | None,
        typer.Option(
            parser=parse_uuid,
            metavar="ID",
            help="Next page: executions older than this id.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List executions, newest first.

    One page at a time: a full page ends with the --before ID of the next one.
    """
    page = run_command(
        app,
        database_url,
        lambda c: c.client.list_executions(
            None if state is None else state.value, task, queue, limit, before
        ),
    )
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(row) for row in page], default=str, indent=2))
        return
    _print_page(page)
    if len(page) == limit:
        typer.echo(f"next page: --before {page[-1].id}", err=True)


def page_lines(page: list[ExecutionSummary], width: int) -> list[str]:
    """`list`'s table as text: aligned columns, the last error's first line cut to `width`."""
    header = ("id", "task", "queue", "state", "attempts", "created (UTC)", "last error")
    rows = [
        (
            str(row.id),
            row.task_key,
            row.queue,
            row.state,
            f"{row.attempts}/{row.max_attempts}",
            row.created_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            one_line((row.last_error or "").strip().split("\n")[0]),
        )
        for row in page
    ]
    widths = [max(len(r[n]) for r in [header, *rows]) for n in range(len(header) - 1)]
    lines = []
    for r in [header, *rows]:
        line = "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False))
        room = max(width - len(line) - 2, 20)
        error = r[-1] if len(r[-1]) <= room else r[-1][: room - 1] + "…"
        lines.append(f"{line}  {error}".rstrip())
    return lines


def _print_page(page: list[ExecutionSummary]) -> None:
    """Print a page; on a terminal the error is cut to its width, else to 300 characters."""
    if not page:
        typer.echo("no executions")
        return
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 10_000
    typer.echo("\n".join(page_lines(page, width)))


def retry(
    execution_id: Annotated[
        UUID | None,
        typer.Argument(
            parser=parse_uuid, metavar="ID", help="One execution to retry.", show_default=False
        ),
    ] = None,
    state: Annotated[
        FinishedState | None,
        typer.Option("--state", help="Bulk: retry executions in this state.", show_default=False),
    ] = None,
    task: TaskFilter = None,
    queue: QueueFilter = None,
    limit: Annotated[
        int, typer.Option(min=1, metavar="N", help="Bulk: retry at most this many.")
    ] = 1000,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Put failed or cancelled executions back to pending.

    One by ID, or many that match --state (default failed), --task and --queue.
    """
    bulk = state is not None or task is not None or queue is not None
    if execution_id is not None:
        if bulk:
            raise typer.BadParameter("give an ID or --state/--task/--queue, not both")
        one = execution_id
        typer.echo(str(run_command(app, database_url, lambda c: c.client.retry(one))))
        return
    if not bulk:
        raise typer.BadParameter("give an execution ID, or --state/--task/--queue for many")
    chosen = (state or FinishedState.failed).value
    count = run_command(
        app, database_url, lambda c: c.client.retry_executions(chosen, task, queue, limit)
    )
    where = "".join(
        f" {label} {value!r}" for label, value in (("of task", task), ("in queue", queue)) if value
    )
    typer.echo(f"retried {count} {chosen} execution{'' if count == 1 else 's'}{where}")


def register(app: typer.Typer) -> None:
    """Add `show`, `list` and `retry` to the CLI."""
    app.command("show")(show)
    app.command("list")(list_executions)
    app.command("retry")(retry)
