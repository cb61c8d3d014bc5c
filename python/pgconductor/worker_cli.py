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

import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pgconductor.cli_common import (
    AppOption,
    DatabaseUrlOption,
    UsageError,
    fail,
    finite,
    load_app,
)

if TYPE_CHECKING:
    from pgconductor.orchestrator import Orchestrator, WorkerConfig

__all__ = ["UsageError", "load_app", "load_config", "register"]

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
    from pgconductor.orchestrator import WorkerConfig

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
    """Log throughput every `every` seconds in which some execution finished."""
    import asyncio  # here and below: not loaded for `--help`

    last, last_at = 0, time.monotonic()
    while True:
        await asyncio.sleep(every)
        done = sum(s.finished for s in orchestrator.stats.values())
        now = time.monotonic()
        if done != last:  # an idle worker stays quiet
            log.info(
                "throughput: %.0f executions/s (%d finished)",
                (done - last) / max(now - last_at, 1e-9),
                done,
            )
        last, last_at = done, now


async def _serve(orchestrator: Orchestrator, drain: bool, stats_interval: float) -> None:
    import asyncio

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
    app: AppOption = None,
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            "-q",
            metavar="QUEUE",
            help="Queue to serve; repeat for several. Default: every queue of the app's tasks.",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1, metavar="N", help="Handlers per queue. Default: 100.", show_default=False
        ),
    ] = None,
    fetch_batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Claims per fetch. Default: the free handler slots.",
            show_default=False,
        ),
    ] = None,
    flush_batch: Annotated[
        int | None,
        typer.Option(
            min=1, metavar="N", help="Results per flush. Default: 200.", show_default=False
        ),
    ] = None,
    drain: Annotated[bool, typer.Option(help="Stop once no due work is left.")] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="JSON config (tower.json); options win.", show_default=False
        ),
    ] = None,
    heartbeat_interval: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            callback=finite,
            metavar="SECONDS",
            help="Time between heartbeats. Default: 5.",
            show_default=False,
        ),
    ] = None,
    stale_after: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            callback=finite,
            metavar="SECONDS",
            help="Silence after which a worker counts as dead. Default: 30.",
            show_default=False,
        ),
    ] = None,
    grace_period: Annotated[
        float | None,
        typer.Option(
            min=0,
            callback=finite,
            metavar="SECONDS",
            help="Time running handlers get to finish on stop. Default: 30.",
            show_default=False,
        ),
    ] = None,
    listen: Annotated[bool, typer.Option(help="Wake on LISTEN/NOTIFY (else poll).")] = True,
    listen_url: Annotated[
        str | None,
        typer.Option(
            envvar="PGCONDUCTOR_LISTEN_URL",
            help="Direct PostgreSQL URL to LISTEN on when the database URL is a pooler's.",
        ),
    ] = None,
    stats_interval: Annotated[
        float,
        typer.Option(
            min=0,
            callback=finite,
            metavar="SECONDS",
            help="Log throughput every SECONDS while busy (0: never).",
        ),
    ] = 30.0,
    database_url: DatabaseUrlOption = None,
    log_level: Annotated[
        str, typer.Option(metavar="LEVEL", help="debug, info, warning or error.")
    ] = "info",
) -> None:
    """Run an app's handlers until stopped.

    The app comes from --app MODULE:ATTR or --config FILE. SIGTERM or Ctrl-C stop
    gracefully; a second one forces.
    """
    import asyncio

    from pgconductor.errors import PgConductorError
    from pgconductor.orchestrator import Orchestrator

    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        fail(f"unknown log level {log_level!r}", code=2)
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
            from pgconductor.db import SqlDatabaseClient

            conductor.client = SqlDatabaseClient(database_url)
        orchestrator = Orchestrator(conductor, use_listen=listen, listen_url=listen_url, **settings)
    except (UsageError, ValueError) as exc:
        fail(str(exc), code=2)
    try:
        asyncio.run(_serve(orchestrator, drain, stats_interval))
    except PgConductorError as exc:
        state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
        fail(f"{exc}{state}", exc.hint)
    except ImportError as exc:  # the app's URL names a driver that is not installed
        fail(f"cannot load the database driver: {exc}", "use a postgresql:// URL")
    except TimeoutError:
        fail(
            f"the worker did not start within {orchestrator.start_timeout:g}s",
            "check that the database is reachable",
        )


def register(app: typer.Typer) -> None:
    """Add the `start` command to the CLI's `worker` sub-app."""
    app.command("start")(start)
