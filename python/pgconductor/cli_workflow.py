"""`pgconductor wait` and the workflow part of `pgconductor show` (parent, steps, children).

    pgconductor wait ID [--timeout SECONDS] [--json]

`wait` returns once the execution has ended (at once if it has): exit 0 when it completed,
1 when it failed or was cancelled, 3 when `--timeout` passed first. It listens for
`pgconductor_finished` and re-reads `get_execution`, polling as a fallback.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pgconductor.cli_common import AppOption, DatabaseUrlOption, ExecutionId, fail, run_command

if TYPE_CHECKING:
    from pgconductor.cli_common import Connection
    from pgconductor.types import ExecutionInfo

__all__ = ["EXIT_TIMED_OUT", "register", "workflow_lines"]

#: Exit status of `wait` when the timeout passed first.
EXIT_TIMED_OUT = 3
#: The longest result or error shown on a step's line.
SHOWN_CHARS = 80


def _cut(text: str) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= SHOWN_CHARS and line == text else line[: SHOWN_CHARS - 3] + "..."


def _when(value: Any) -> str:
    try:
        stamp = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return stamp.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _step_line(step: dict[str, Any]) -> str:
    kind, state = step.get("kind"), step.get("state")
    line = f"    {step.get('seq', '?'):>4}  {step.get('key')}  {kind} {state}"
    if kind == "child" and step.get("child_id"):
        line += f"  child {step['child_id']}"
    if step.get("until") and (kind == "sleep" or state == "waiting"):
        line += f"  until {_when(step['until'])}"
    if step.get("error"):
        line += f"  error: {_cut(str(step['error']))}"
    elif state == "done" and kind != "sleep":
        line += f"  -> {_cut(json.dumps(step.get('result'), default=str))}"
    return line


def workflow_lines(info: ExecutionInfo) -> list[str]:
    """The lines `show` adds for a workflow: its parent, its steps, a count of its children."""
    lines = []
    if info.parent_id is not None:
        lines.append(f"  {'parent':<10} {info.parent_id}")
    steps = info.steps or []
    if steps:
        lines.append("  steps:")
        lines += [_step_line(step) for step in steps]
    children = [s for s in steps if s.get("kind") == "child"]
    if children:
        states: dict[str, int] = {}
        for child in children:
            states[str(child.get("state"))] = states.get(str(child.get("state")), 0) + 1
        counted = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        lines.append(f"  children: {len(children)} ({counted})")
    return lines


def wait(
    execution_id: ExecutionId,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0, metavar="SECONDS", help="Give up after SECONDS (exit 3)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Wait until an execution ends; print its state and result.

    Exit 0 when it completed, 1 when it failed or was cancelled, 3 on --timeout.
    """

    async def body(connection: Connection) -> ExecutionInfo | None:
        try:
            return await connection.conductor.wait(execution_id, timeout=timeout)
        except TimeoutError:
            return None

    info = run_command(app, database_url, body)
    if info is None:
        fail(f"execution {execution_id} did not end within {timeout or 0:g} s", code=EXIT_TIMED_OUT)
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(info), default=str, indent=2))
    else:
        typer.echo(f"execution {info.id} {info.state}")
        if info.state == "completed":
            typer.echo(json.dumps(info.result, default=str))
        elif info.last_error:
            typer.echo(info.last_error)
    if info.state != "completed":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `wait` to the CLI."""
    app.command("wait")(wait)
