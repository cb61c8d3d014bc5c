"""What every `pgconductor` command shares: options, one-line errors, the database client.

This module and the command modules import only typer and the standard library at the top:
SQLAlchemy, psycopg, rich and the user's app are imported when a command runs, so that
`pgconductor --help` stays fast.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar
from uuid import UUID

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from pgconductor.conductor import Conductor
    from pgconductor.protocol import DatabaseClient
    from pgconductor.retry import RetryPolicy

__all__ = [
    "AppOption",
    "Connection",
    "DatabaseUrlOption",
    "ExecutionId",
    "OneLineErrors",
    "UsageError",
    "check_database_url",
    "fail",
    "load_app",
    "make_client",
    "parse_uuid",
    "run_command",
    "warn",
]

T = TypeVar("T")

#: URL schemes the CLI accepts (anything else is refused before a driver is looked for).
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


class UsageError(Exception):
    """A mistake in the command line, the config file or the app: reported as one line."""


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line (whitespace runs become one space), cut at `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    """Print `error: ...` (and `hint: ...`) to stderr and exit with `code`."""
    typer.secho(f"error: {one_line(message)}", err=True, fg=typer.colors.RED)
    if hint:
        typer.echo(f"hint: {one_line(hint)}", err=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """Print `warning: ...` to stderr (the command goes on)."""
    typer.secho(f"warning: {one_line(message)}", err=True, fg=typer.colors.YELLOW)


class OneLineErrors(TyperGroup):
    """The top-level command group: usage errors print one line (`error: ...`), exit 2.

    Click and Typer would print the usage, a hint and a framed message; the rest of the CLI
    prints one `error:` line, so these do too.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line; in standalone mode, print usage errors as one line."""
        try:
            outcome = super().main(
                args, prog_name, complete_var, False, windows_expand_args, **extra
            )
        except typer.TyperException as exc:  # click's usage and parameter errors
            if not standalone_mode:
                raise
            context = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError" and context is not None:
                typer.echo(context.get_help())  # a bare `pgconductor`: the help
                sys.exit(exc.exit_code)
            command = context.command_path if context is not None else "pgconductor"
            typer.secho(
                f"error: {one_line(exc.format_message())} (see '{command} --help')",
                err=True,
                fg=typer.colors.RED,
            )
            sys.exit(exc.exit_code)
        except typer.Abort:  # end of input (Ctrl-C exits 130 quietly)
            if not standalone_mode:
                raise
            typer.echo("aborted", err=True)
            sys.exit(1)
        if not standalone_mode:
            return outcome
        sys.exit(outcome if isinstance(outcome, int) else 0)


def _check_url(value: str | None) -> str | None:
    if value is not None:
        check_database_url(value, "--database-url")
    return value


def check_database_url(url: str, what: str) -> None:
    """Refuse a URL that is not PostgreSQL's (`mysql://...`) before any driver is loaded."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in POSTGRES_SCHEMES:
        shown = scheme if sep else url[:40]
        raise typer.BadParameter(
            f"{shown!r} is not a PostgreSQL URL (postgresql://user@host:port/db)",
            param_hint=what,
        )


AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        envvar="PGCONDUCTOR_APP",
        metavar="MODULE:ATTR",
        help="The app's Conductor: its database, task names and payload models.",
        show_default=False,
    ),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        metavar="URL",
        callback=_check_url,
        help="PostgreSQL URL, postgresql://user@host:port/db. Default: the app's database,"
        " else $DATABASE_URL.",
        show_default=False,
    ),
]


def parse_uuid(value: str) -> UUID:
    """An execution id argument: a UUID, else a one-line usage error."""
    try:
        return UUID(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an execution id (a UUID)") from None


ExecutionId = Annotated[UUID, typer.Argument(parser=parse_uuid, metavar="ID", help="Execution id.")]


def finite(value: float | None) -> float | None:
    """A callback refusing `nan` and `inf` for float options."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a number of seconds")
    return value


def make_client(url: str) -> DatabaseClient:
    """Build the database client for a command (tests replace this factory)."""
    from pgconductor.db import SqlDatabaseClient

    return SqlDatabaseClient(url, retry=cli_retry(), pool_size=1, max_overflow=1)


def cli_retry() -> RetryPolicy:
    """The CLI's retries: short, so a refused connection is reported within about a second."""
    from pgconductor.retry import RetryPolicy

    return RetryPolicy(max_attempts=3, base=0.1, cap=0.5)


def load_app(reference: str) -> Conductor:
    """Import `MODULE:ATTR` (ATTR defaults to `conductor`) from the CWD; return the Conductor.

    Any failure (no module, a syntax error or an exception while importing, a missing
    attribute, something other than a Conductor) raises `UsageError` with one line.
    """
    from pgconductor.conductor import Conductor

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
    except SyntaxError as exc:
        where = f" ({exc.filename}, line {exc.lineno})" if exc.filename else ""
        raise UsageError(f"module {module_name!r} has a syntax error{where}: {exc.msg}") from exc
    except Exception as exc:
        raise UsageError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
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


@dataclass(slots=True)
class Connection:
    """What a command works with: the app's Conductor (or a bare one) and its client."""

    conductor: Conductor
    client: DatabaseClient


def _connect(app: str | None, database_url: str | None) -> tuple[Connection, DatabaseClient | None]:
    """The command's Conductor and client; the second value is a client we must close."""
    from pgconductor.conductor import Conductor

    if app is None and not database_url:
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            fail(
                "no database given",
                "pass --app MODULE:ATTR or --database-url, or set DATABASE_URL",
                code=2,
            )
        check_database_url(database_url, "DATABASE_URL")
    try:
        conductor = load_app(app) if app is not None else Conductor()
    except UsageError as exc:
        fail(str(exc), code=2)
    own: DatabaseClient | None = None
    if database_url:
        own = make_client(database_url)
        conductor.client = own
    return Connection(conductor, conductor.client), own


def run_command(
    app: str | None,
    database_url: str | None,
    body: Callable[[Connection], Awaitable[T]],
) -> T:
    """Run `body` in a fresh event loop; turn every expected error into one line, exit 1."""
    import asyncio

    from sqlalchemy import exc as sa_exc

    from pgconductor.errors import PgConductorError

    async def main() -> T:
        connection, own = _connect(app, database_url)
        try:
            return await body(connection)
        finally:
            await connection.conductor.close()
            if own is not None:
                await own.close()

    try:
        return asyncio.run(main())
    except PgConductorError as exc:
        state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
        hint = exc.hint
        if exc.sqlstate == "42883" and not hint:  # undefined function: an older extension
            hint = "the installed extension predates it: pgconductor schema upgrade"
        fail(f"{exc}{state}", hint)
    except ImportError as exc:  # an app's URL naming a driver that is not installed
        fail(f"cannot load the database driver: {exc}", "use a postgresql:// URL")
    except (sa_exc.SQLAlchemyError, ValueError, OverflowError) as exc:  # a malformed URL
        fail(str(exc))
