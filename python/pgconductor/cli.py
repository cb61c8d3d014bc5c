"""The `pgconductor` command line (typer).

Every command finds its database from `--app MODULE:ATTR` (the app's Conductor: its URL,
task names and payload models), `--database-url`, or `DATABASE_URL`. Errors print one red
line (plus a hint when SQL gave one) and exit 1; usage errors print one line and exit 2.
No traceback is shown for a database error, bad JSON, a refused connection or a broken app.

| module | commands |
|---|---|
| `cli` | the app, `invoke`, `status`, `cancel`, `schema ...` |
| `cli_inspect` | `show`, `list`, `retry` |
| `cli_workflow` | `wait`, the workflow part of `show` |
| `cli_flow` | `pause`, `resume`, `flow`, `maintain`, `cancel` by key |
| `cli_schedules` | `schedules` (list, pause, resume, backfill, remove), `schedule` |
| `worker_cli` | `worker start` |
| `cli_common` | options, errors, the client, loading `--app` |
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import importlib
import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pgconductor import cli_flow, cli_inspect, cli_schedules, cli_workflow
from pgconductor.cli_common import (
    AppOption,
    Connection,
    DatabaseUrlOption,
    OneLineErrors,
    fail,
    finite,
    run_command,
    warn,
)

if TYPE_CHECKING:
    from pgconductor.protocol import DatabaseClient, SchemaClient
    from pgconductor.types import OrchestratorInfo, QueueStats, TaskOverview

__all__ = ["app", "schema_app", "unserved_warning", "worker_app"]

#: How many executions one `invoke_batch` call carries by default (the Conductor's chunk).
BATCH_CHUNK = 5000

app = typer.Typer(
    name="pgconductor",
    cls=OneLineErrors,
    help="Durable task execution on PostgreSQL alone.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
schema_app = typer.Typer(
    help="Install, upgrade or check the pgconductor extension.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
worker_app = typer.Typer(help="Run workers.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(schema_app, name="schema")
app.add_typer(worker_app, name="worker")


def _show_version(value: bool) -> None:
    if value:
        from pgconductor import __version__

        typer.echo(f"pgconductor {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_show_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Durable task execution on PostgreSQL alone."""


def _parse_json(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}") from None


def _delay(value: float | None) -> float | None:
    """`--delay`: a finite number of seconds whose run time a timestamp can hold."""
    finite(value)
    if value is not None:
        try:
            dt.datetime.now(dt.UTC) + dt.timedelta(seconds=value)
        except OverflowError:
            raise typer.BadParameter(f"{value:g} seconds is too far in the future") from None
    return value


def unserved_warning(overview: list[TaskOverview], task: str, queue: str | None) -> str | None:
    """Why no live worker will run `task` (in `queue`, when known), or None when one will."""
    served = {(row.task_key, row.queue) for row in overview if row.served}
    serving = sorted(q for key, q in served if key == task)
    if serving and (queue is None or queue in serving):
        return None
    if serving:
        where = ", ".join(repr(q) for q in serving)
        return f"no live worker serves task {task!r} in queue {queue!r} (it is served in {where})"
    known = sorted({row.task_key for row in overview if row.registered or row.served} - {task})
    close = difflib.get_close_matches(task, known, n=3)
    message = f"no live worker has registered task {task!r}"
    if close:
        message += f"; did you mean {', '.join(repr(name) for name in close)}?"
    return message


async def _task_overview(client: DatabaseClient) -> list[TaskOverview] | None:
    """`task_overview()`, or None when the installed extension predates it (0.4.0)."""
    from pgconductor.errors import PgConductorError

    try:
        return await client.task_overview()
    except PgConductorError as exc:
        if exc.sqlstate == "42883":  # undefined function: an older extension
            return None
        raise


@app.command()
def invoke(
    task: Annotated[str, typer.Argument(metavar="TASK", help="Task key.", show_default=False)],
    payload: Annotated[
        Any, typer.Option(parser=_parse_json, metavar="JSON", help="Payload (JSON).")
    ] = "{}",
    count: Annotated[
        int, typer.Option(min=1, metavar="N", help="How many executions to enqueue.")
    ] = 1,
    queue: Annotated[
        str | None,
        typer.Option(
            metavar="QUEUE",
            help="Queue. Default: the task's (from the app or SQL), else 'default'.",
            show_default=False,
        ),
    ] = None,
    priority: Annotated[int, typer.Option(metavar="N", help="Lower runs first.")] = 0,
    delay: Annotated[
        float | None,
        typer.Option(
            min=0, callback=_delay, metavar="SECONDS", help="Run after SECONDS.", show_default=False
        ),
    ] = None,
    dedupe_key: Annotated[
        str | None,
        typer.Option(metavar="KEY", help="Dedupe key (count 1 only).", show_default=False),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, metavar="N", help="Executions per call.")
    ] = BATCH_CHUNK,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Enqueue executions of TASK.

    A progress bar shows when --count > 1. Warns when no live worker has registered TASK
    (or serves its queue).
    """
    if dedupe_key is not None and count > 1:
        raise typer.BadParameter("--dedupe-key needs --count 1", param_hint="--dedupe-key")

    async def check(connection: Connection) -> None:
        known = connection.conductor.tasks.get(task)
        target = queue or (known.spec.queue if known is not None else None)
        overview = await _task_overview(connection.client)
        problem = None if overview is None else unserved_warning(overview, task, target)
        if problem is not None:
            warn(problem)

    async def one(connection: Connection) -> None:
        await check(connection)
        execution_id = await connection.conductor.invoke(
            task, payload, queue=queue, priority=priority, delay=delay, dedupe_key=dedupe_key
        )
        typer.echo(str(execution_id))

    async def many(connection: Connection) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        await check(connection)
        started = time.monotonic()
        columns = (
            TextColumn("invoke {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            progress = bar.add_task(task, total=count)
            for lo in range(0, count, batch_size):
                n = min(batch_size, count - lo)
                await connection.conductor.invoke_many(
                    task, [payload] * n, queue=queue, priority=priority, delay=delay, chunk_size=n
                )
                bar.advance(progress, n)
        took = time.monotonic() - started
        typer.echo(
            f"invoked {count} executions of {task} in {took:.2f}s ({count / max(took, 1e-9):.0f}/s)"
        )

    run_command(app, database_url, one if count == 1 else many)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Show live workers and queue depths.

    Also lists the tasks with pending work that no live worker serves.
    """

    async def read(
        connection: Connection,
    ) -> tuple[list[QueueStats], list[OrchestratorInfo], list[TaskOverview] | None]:
        client = connection.client
        return (
            await client.queue_stats(),
            await client.orchestrator_stats(),
            await _task_overview(client),
        )

    stats, orchestrators, overview = run_command(app, database_url, read)
    if as_json:
        document: dict[str, Any] = {
            "queues": [dataclasses.asdict(s) for s in stats],
            "orchestrators": [dataclasses.asdict(o) for o in orchestrators],
        }
        if overview is not None:
            document["tasks"] = [dataclasses.asdict(t) for t in overview]
        typer.echo(json.dumps(document, default=str, indent=2))
        return
    _print_status(stats, orchestrators, overview)


def _print_status(
    stats: list[QueueStats],
    orchestrators: list[OrchestratorInfo],
    overview: list[TaskOverview] | None,
) -> None:
    """The three tables of `status`: live orchestrators, queues, unserved tasks."""
    from rich.console import Console
    from rich.table import Table

    out = Console(highlight=False, soft_wrap=True)
    live = [o for o in orchestrators if o.state == "live"]
    table = Table(title="orchestrators (worker processes)")
    for name in ("id", "state", "version", "last heartbeat", "running"):
        table.add_column(name, justify="right" if name == "running" else "left")
    for o in live:  # short ids; --json has the full ones
        beat = o.last_heartbeat_at.strftime("%H:%M:%S")
        table.add_row(str(o.id)[:8], o.state, o.version or "", beat, str(o.running))
    table.caption = f"{len(live)} live, {len(orchestrators) - len(live)} expired or stopped"
    out.print(table)
    table = Table(title="pgconductor queues")
    names = ("queue", "pending", "due", "running", "completed", "failed", "cancelled")
    for name in names:
        table.add_column(name, justify="left" if name == "queue" else "right")
    for s in stats:
        table.add_row(*(str(getattr(s, name)) for name in names))
    if not stats:
        table.caption = "no queues yet"
    out.print(table)
    unserved = [t for t in overview or () if t.pending and not t.served]
    if unserved:
        table = Table(title="tasks with pending work that no live worker serves")
        for name in ("task", "queue", "pending", "registered"):
            table.add_column(name, justify="right" if name == "pending" else "left")
        for t in unserved:
            table.add_row(t.task_key, t.queue, str(t.pending), "yes" if t.registered else "no")
        out.print(table)


@app.command()
def cancel(
    execution_id: cli_flow.MaybeExecutionId = None,
    reason: Annotated[
        str, typer.Option(metavar="TEXT", help="Why (recorded).")
    ] = "cancelled by user",
    task: cli_flow.TaskOption = None,
    dedupe_key: cli_flow.DedupeKeyOption = None,
    concurrency_key: cli_flow.ConcurrencyKeyOption = None,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Cancel an execution, or every live one of --task with a dedupe or concurrency key.

    A pending one is cancelled at once, a running one through its worker.
    """
    if task is not None or dedupe_key is not None or concurrency_key is not None:
        keys = (task, dedupe_key, concurrency_key)
        cli_flow.cancel_by_key(execution_id, *keys, reason, app, database_url)
        return
    if execution_id is None:
        raise typer.BadParameter(
            "give an execution ID, or --task with --dedupe-key or --concurrency-key"
        )
    outcome = run_command(app, database_url, lambda c: c.client.cancel(execution_id, reason))
    if outcome == "not_found":
        fail(f"execution {execution_id} not found")
    typer.echo(outcome)


def _schema_client(connection: Connection) -> SchemaClient:
    from pgconductor.protocol import SchemaClient

    client = connection.client
    if not isinstance(client, SchemaClient):
        fail(f"{type(client).__name__} cannot manage the extension")
    return client


@schema_app.command("install")
def schema_install(
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
    sql_only: Annotated[
        bool,
        typer.Option(
            "--sql-only/--as-extension",
            help="Run the released scripts as plain SQL (no extension files on the server).",
        ),
    ] = False,
) -> None:
    """CREATE EXTENSION IF NOT EXISTS pgconductor (or, --sql-only, the same as plain SQL)."""
    from pgconductor.schema import SchemaManager

    version = run_command(
        app, database_url, lambda c: SchemaManager(_schema_client(c)).install(sql_only=sql_only)
    )
    how = "as plain SQL (no extension files)" if sql_only else "as an extension"
    typer.echo(f"pgconductor {version} installed {how}")


@schema_app.command("upgrade")
def schema_upgrade(
    to: Annotated[
        str | None,
        typer.Option(
            metavar="VERSION",
            help="Target version. Default: the newest supported.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            min=0,
            metavar="SECONDS",
            help="Before a breaking update: how long to wait for older orchestrators to stop.",
        ),
    ] = 60.0,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """ALTER EXTENSION pgconductor UPDATE to a supported version.

    A breaking update first asks the orchestrators of older packages to stop and waits for
    them (--timeout); a non-breaking one applies while workers keep running.
    """
    from pgconductor.schema import SchemaManager

    version = run_command(
        app,
        database_url,
        lambda c: SchemaManager(_schema_client(c)).upgrade(to, timeout=timeout),
    )
    typer.echo(f"pgconductor extension is at {version}")


@schema_app.command("check")
def schema_check(app: AppOption = None, database_url: DatabaseUrlOption = None) -> None:
    """Exit 0 when the installed extension version is supported, else 1."""
    from pgconductor.schema import SUPPORTED_EXTENSION_VERSIONS, SchemaManager

    version = run_command(app, database_url, lambda c: SchemaManager(_schema_client(c)).check())
    supported = ", ".join(SUPPORTED_EXTENSION_VERSIONS)
    typer.echo(f"pgconductor extension {version} installed (supported: {supported})")


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


cli_inspect.register(app)
cli_workflow.register(app)
cli_flow.register(app)
cli_schedules.register(app)
_register_worker_commands()
