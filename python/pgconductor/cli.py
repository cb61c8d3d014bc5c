"""The `pgconductor` command line (typer + rich).

Every command talks to the database named by `--database-url` or `DATABASE_URL`. Errors
print one red line (plus a hint when SQL gave one) and exit 1; usage errors exit 2. No
traceback is shown for a database error, bad JSON or a refused connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NoReturn, Protocol, TypeVar
from uuid import UUID

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import exc as sa_exc

from pgconductor.conductor import BATCH_CHUNK, Conductor
from pgconductor.db import RetryPolicy, SqlDatabaseClient
from pgconductor.errors import PgConductorError
from pgconductor.protocol import DatabaseClient, SchemaClient
from pgconductor.schema import SUPPORTED_EXTENSION_VERSIONS, SchemaManager
from pgconductor.types import OrchestratorInfo, QueueStats

__all__ = ["app", "make_client", "schema_app", "worker_app"]

T = TypeVar("T")
app = typer.Typer(
    name="pgconductor",
    help="Durable task execution on PostgreSQL alone.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
schema_app = typer.Typer(
    help="Install, upgrade or check the pgconductor extension.", no_args_is_help=True
)
worker_app = typer.Typer(help="Run workers.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")
app.add_typer(worker_app, name="worker")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

#: Retries of the CLI: short, so a refused connection is reported within about a second.
CLI_RETRY = RetryPolicy(max_attempts=3, base=0.1, cap=0.5)


class _Client(DatabaseClient, SchemaClient, Protocol):
    """Both interfaces the CLI needs (what `SqlDatabaseClient` provides)."""


def make_client(url: str) -> _Client:
    """Build the database client for a command (tests replace this factory)."""
    return SqlDatabaseClient(url, retry=CLI_RETRY, pool_size=1, max_overflow=1)


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="DATABASE_URL",
        show_envvar=True,
        help="PostgreSQL URL (postgresql://user@host:port/db).",
    ),
]


def fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    """Print `error: ...` (and `hint: ...`) to stderr and exit with `code`."""
    err.print(f"[red]error: {escape(' '.join(message.split()))}[/red]")
    if hint:
        err.print(f"hint: {escape(hint)}")
    raise typer.Exit(code)


def _run(database_url: str | None, body: Callable[[_Client], Awaitable[T]]) -> T:
    """Run `body(client)` in a fresh event loop; turn errors into one line and exit code 1."""
    if not database_url:
        fail("no database given", "pass --database-url or set DATABASE_URL", code=2)

    async def main() -> T:
        client = make_client(database_url)
        try:
            return await body(client)
        finally:
            await client.close()

    try:
        return asyncio.run(main())
    except PgConductorError as exc:
        state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
        fail(f"{exc}{state}", exc.hint)
    except (sa_exc.SQLAlchemyError, ValueError) as exc:  # e.g. a malformed URL
        fail(str(exc))


def _parse_json(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}") from None


def _parse_uuid(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an execution id (a UUID)") from None


ExecutionId = Annotated[
    UUID, typer.Argument(parser=_parse_uuid, metavar="ID", help="Execution id.")
]


@app.command()
def invoke(
    task: Annotated[str, typer.Argument(metavar="TASK", help="Task key.")],
    payload: Annotated[
        Any, typer.Option(parser=_parse_json, metavar="JSON", help="Payload (JSON).")
    ] = "{}",
    count: Annotated[int, typer.Option(min=1, help="How many executions to enqueue.")] = 1,
    queue: Annotated[str | None, typer.Option(help="Queue (default: the task's).")] = None,
    priority: Annotated[int, typer.Option(help="Lower runs first.")] = 0,
    delay: Annotated[float | None, typer.Option(min=0, help="Run after SECONDS.")] = None,
    dedupe_key: Annotated[str | None, typer.Option(help="Dedupe key (count 1 only).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Executions per call.")] = BATCH_CHUNK,
    database_url: DatabaseUrl = None,
) -> None:
    """Enqueue executions of TASK (a progress bar shows when --count > 1)."""
    if dedupe_key is not None and count > 1:
        raise typer.BadParameter("--dedupe-key needs --count 1", param_hint="--dedupe-key")

    async def one(client: _Client) -> None:
        conductor = Conductor(client)
        ids = [
            await conductor.invoke(
                task, payload, queue=queue, priority=priority, delay=delay, dedupe_key=dedupe_key
            )
        ]
        out.print(str(ids[0]))

    async def many(client: _Client) -> None:
        conductor = Conductor(client)
        started = time.monotonic()
        columns = (
            TextColumn("invoke {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err, transient=True) as bar:
            progress = bar.add_task(task, total=count)
            for lo in range(0, count, batch_size):
                n = min(batch_size, count - lo)
                await conductor.invoke_many(
                    task, [payload] * n, queue=queue, priority=priority, delay=delay, chunk_size=n
                )
                bar.advance(progress, n)
        took = time.monotonic() - started
        out.print(
            f"invoked {count} executions of {task} in {took:.2f}s ({count / max(took, 1e-9):.0f}/s)"
        )

    _run(database_url, one if count == 1 else many)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Show queue depths (pending, due, running, completed, failed, cancelled) and workers."""

    async def both(client: _Client) -> tuple[list[QueueStats], list[OrchestratorInfo]]:
        return await client.queue_stats(), await client.orchestrator_stats()

    stats, orchestrators = _run(database_url, both)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "queues": [dataclasses.asdict(s) for s in stats],
                    "orchestrators": [dataclasses.asdict(o) for o in orchestrators],
                },
                default=str,
            )
        )
        return
    _print_orchestrators(orchestrators)
    table = Table(title="pgconductor queues")
    names = ("queue", "pending", "due", "running", "completed", "failed", "cancelled")
    for name in names:
        table.add_column(name, justify="left" if name == "queue" else "right")
    for s in stats:
        table.add_row(*(str(getattr(s, name)) for name in names))
    if not stats:
        table.caption = "no queues yet"
    out.print(table)


def _print_orchestrators(orchestrators: list[OrchestratorInfo]) -> None:
    """The orchestrators table of `status`: live ones (short ids; --json has the full ones)."""
    live = [o for o in orchestrators if o.state == "live"]
    table = Table(title="orchestrators (worker processes)")
    for name in ("id", "state", "version", "last heartbeat", "running"):
        table.add_column(name, justify="right" if name == "running" else "left")
    for o in live:
        beat = o.last_heartbeat_at.strftime("%H:%M:%S")
        table.add_row(str(o.id)[:8], o.state, o.version or "", beat, str(o.running))
    gone = len(orchestrators) - len(live)
    table.caption = f"{len(live)} live, {gone} expired or stopped"
    out.print(table)


@app.command()
def cancel(
    execution_id: ExecutionId,
    reason: Annotated[str, typer.Option(help="Why (recorded).")] = "cancelled by user",
    database_url: DatabaseUrl = None,
) -> None:
    """Cancel an execution: pending ones at once, running ones via their worker."""
    outcome = _run(database_url, lambda client: client.cancel(execution_id, reason))
    if outcome == "not_found":
        fail(f"execution {execution_id} not found")
    out.print(outcome)


@app.command()
def retry(execution_id: ExecutionId, database_url: DatabaseUrl = None) -> None:
    """Put a failed or cancelled execution back to pending."""
    out.print(str(_run(database_url, lambda client: client.retry(execution_id))))


@schema_app.command("install")
def schema_install(database_url: DatabaseUrl = None) -> None:
    """CREATE EXTENSION IF NOT EXISTS pgconductor."""
    version = _run(database_url, lambda client: SchemaManager(client).install())
    out.print(f"pgconductor extension {version} installed")


@schema_app.command("upgrade")
def schema_upgrade(
    to: Annotated[
        str | None, typer.Option(help="Target version (default: newest supported).")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """ALTER EXTENSION pgconductor UPDATE to a supported version."""
    version = _run(database_url, lambda client: SchemaManager(client).upgrade(to))
    out.print(f"pgconductor extension is at {version}")


@schema_app.command("check")
def schema_check(database_url: DatabaseUrl = None) -> None:
    """Exit 0 when the installed extension version is supported, else 1."""
    version = _run(database_url, lambda client: SchemaManager(client).check())
    supported = ", ".join(SUPPORTED_EXTENSION_VERSIONS)
    out.print(f"pgconductor extension {version} installed (supported: {supported})")


def _register_worker_commands() -> None:
    """Add `worker start` from `pgconductor.worker_cli` (the engine's half of the CLI)."""
    try:
        module = importlib.import_module("pgconductor.worker_cli")
    except ModuleNotFoundError as exc:
        if exc.name != "pgconductor.worker_cli":
            raise

        @worker_app.command("start")
        def start() -> None:
            """Unavailable: this build has no worker runtime."""
            fail("the worker runtime is not available in this build")

        return
    module.register(worker_app)


_register_worker_commands()
