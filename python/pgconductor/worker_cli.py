"""`pgconductor worker start`: run an app's handlers in this process (the engine's CLI half).

    pgconductor worker start --app myapp.tasks:conductor [--queue Q]... [--concurrency N]
    pgconductor worker start --config tower.json [--drain]

`--app MODULE:ATTR` names a `Conductor` (or a function returning one) in a module importable
from the current directory. `--config` reads the same settings from JSON: `app`, `queues`
(names, or objects `{name, concurrency, fetch_batch, flush_batch}`), `concurrency`,
`fetch_batch`, `flush_batch`, `heartbeat_interval`, `stale_after`, `grace_period`; options
given on the command line win. SIGTERM or Ctrl-C stop gracefully (exit 0); a second one forces.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from pgconductor.conductor import Conductor
from pgconductor.db import SqlDatabaseClient
from pgconductor.errors import PgConductorError
from pgconductor.orchestrator import Orchestrator, WorkerConfig

__all__ = ["load_app", "load_config", "register"]

log = logging.getLogger("pgconductor.cli")
_CONFIG_KEYS = {
    "app",
    "queues",
    "concurrency",
    "fetch_batch",
    "flush_batch",
    "heartbeat_interval",
    "stale_after",
    "grace_period",
}
_QUEUE_KEYS = {"name", "concurrency", "fetch_batch", "flush_batch"}


class UsageError(Exception):
    """A mistake in the command line or the config file: reported as one line."""


def _fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    typer.secho(f"error: {' '.join(message.split())}", err=True, fg=typer.colors.RED)
    if hint:
        typer.echo(f"hint: {hint}", err=True)
    raise typer.Exit(code)


def load_app(reference: str) -> Conductor:
    """Import `MODULE:ATTR` (ATTR defaults to `conductor`) from the CWD; return the Conductor."""
    module_name, _, attr = reference.partition(":")
    if not module_name:
        raise UsageError(f"--app {reference!r} is not MODULE:ATTR")
    attr = attr or "conductor"
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import module {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if inspect.isfunction(obj):  # a factory: `--app myapp:make_conductor`
        try:
            obj = obj()
        except Exception as exc:
            raise UsageError(f"{reference!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, Conductor):
        raise UsageError(f"{reference!r} is a {type(obj).__name__}, not a pgconductor Conductor")
    return obj


def _positive(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{what} must be a positive integer, not {value!r}")
    return value


def _queue(entry: Any) -> str | WorkerConfig:
    if isinstance(entry, str) and entry:
        return entry
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise UsageError(f"a queue must be a name or an object with a name, not {entry!r}")
    unknown = set(entry) - _QUEUE_KEYS
    if unknown:
        raise UsageError(f"unknown key(s) in queue {entry['name']!r}: {', '.join(sorted(unknown))}")
    return WorkerConfig(
        entry["name"],
        concurrency=_positive(entry.get("concurrency"), "concurrency"),
        fetch_batch=_positive(entry.get("fetch_batch"), "fetch_batch"),
        flush_batch=_positive(entry.get("flush_batch"), "flush_batch"),
    )


def load_config(path: Path) -> dict[str, Any]:
    """Read and check a worker config file (JSON); raise `UsageError` on any mistake."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read config {str(path)!r}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"config {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"config {str(path)!r} must be a JSON object")
    unknown = set(data) - _CONFIG_KEYS
    if unknown:
        raise UsageError(f"unknown key(s) in config: {', '.join(sorted(unknown))}")
    queues = data.get("queues")
    if queues is not None:
        if not isinstance(queues, list):
            raise UsageError("config key 'queues' must be a list")
        data["queues"] = [_queue(q) for q in queues]
    for key in ("concurrency", "fetch_batch", "flush_batch"):
        _positive(data.get(key), key)
    for key in ("heartbeat_interval", "stale_after", "grace_period"):
        value = data.get(key)
        if value is not None and (not isinstance(value, int | float) or value <= 0):
            raise UsageError(f"{key} must be a positive number of seconds, not {value!r}")
    return data


async def _report(orchestrator: Orchestrator, every: float) -> None:
    """Log throughput every `every` seconds."""
    last, last_at = 0, time.monotonic()
    while True:
        await asyncio.sleep(every)
        done = sum(s.finished for s in orchestrator.stats.values())
        now = time.monotonic()
        log.info(
            "throughput: %.0f executions/s (%d finished)",
            (done - last) / max(now - last_at, 1e-9),
            done,
        )
        last, last_at = done, now


async def _serve(orchestrator: Orchestrator, drain: bool, stats_interval: float) -> None:
    reporter = (
        asyncio.ensure_future(_report(orchestrator, stats_interval)) if stats_interval else None
    )
    try:
        await orchestrator.serve(drain=drain)
    finally:
        if reporter is not None:
            reporter.cancel()
            await asyncio.wait((reporter,))
        await orchestrator.conductor.close()


def start(
    app: Annotated[
        str | None, typer.Option("--app", metavar="MODULE:ATTR", help="The Conductor to run.")
    ] = None,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Queue to serve (repeat).")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Handlers per queue.")] = None,
    fetch_batch: Annotated[int | None, typer.Option(min=1, help="Claims per fetch.")] = None,
    flush_batch: Annotated[int | None, typer.Option(min=1, help="Results per flush.")] = None,
    drain: Annotated[bool, typer.Option(help="Stop once no due work is left.")] = False,
    config: Annotated[Path | None, typer.Option(help="JSON config (tower.json).")] = None,
    heartbeat_interval: Annotated[float | None, typer.Option(min=0.01, help="Seconds.")] = None,
    stale_after: Annotated[float | None, typer.Option(min=0.1, help="Seconds.")] = None,
    grace_period: Annotated[float | None, typer.Option(min=0, help="Seconds.")] = None,
    listen: Annotated[bool, typer.Option(help="Wake on LISTEN/NOTIFY (else poll).")] = True,
    stats_interval: Annotated[
        float, typer.Option(min=0, help="Log throughput every SECONDS (0: never).")
    ] = 30.0,
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL (default: the app's, else DATABASE_URL).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the handlers of an app (--app MODULE:ATTR or --config FILE) until stopped."""
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        _fail(f"unknown log level {log_level!r}", code=2)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_config(config) if config is not None else {}
        for key, value in (
            ("app", app),
            ("concurrency", concurrency),
            ("fetch_batch", fetch_batch),
            ("flush_batch", flush_batch),
            ("heartbeat_interval", heartbeat_interval),
            ("stale_after", stale_after),
            ("grace_period", grace_period),
        ):
            if value is not None:
                settings[key] = value
        if queue:
            settings["queues"] = list(queue)
        if not settings.get("app"):
            raise UsageError("no app given: pass --app MODULE:ATTR or a --config with 'app'")
        conductor = load_app(settings.pop("app"))
        if database_url:
            conductor.client = SqlDatabaseClient(database_url)
        orchestrator = Orchestrator(conductor, use_listen=listen, **settings)
    except (UsageError, ValueError) as exc:
        _fail(str(exc), code=2)
    try:
        asyncio.run(_serve(orchestrator, drain, stats_interval))
    except PgConductorError as exc:
        state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
        _fail(f"{exc}{state}", exc.hint)
    except TimeoutError:
        _fail(
            f"the worker did not start within {orchestrator.start_timeout:g}s",
            "check that the database is reachable",
        )


def register(app: typer.Typer) -> None:
    """Add the `start` command to the CLI's `worker` sub-app."""
    app.command("start")(start)
