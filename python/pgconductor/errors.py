"""Exception hierarchy: every database error becomes a typed `PgConductorError`.

The SQL functions raise bad input with a SQLSTATE, a one-line message and a hint; this
module maps the SQLSTATE to a class and decides which errors are worth retrying.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

__all__ = [
    "Cancelled",
    "ExtensionMissing",
    "Fatal",
    "InvalidInput",
    "InvalidState",
    "NotFound",
    "PayloadValidationError",
    "PgConductorError",
    "RetryAfter",
    "TransientError",
    "VersionMismatch",
    "from_db_error",
    "is_transient",
]

#: SQLSTATEs that name a condition which may clear up on its own: retry them.
TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "53300",  # too_many_connections
    }
)


class PgConductorError(Exception):
    """Base class of every pgconductor error; carries the SQLSTATE and hint when known."""

    def __init__(
        self, message: str, *, sqlstate: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.hint = hint

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with the keyword-only fields kept."""
        return (_rebuild, (type(self), self.message, self.sqlstate, self.hint))

    def __str__(self) -> str:
        return self.message


def _rebuild(
    cls: type[PgConductorError], message: str, sqlstate: str | None, hint: str | None
) -> PgConductorError:
    """Recreate an error from its pickled fields."""
    return cls(message, sqlstate=sqlstate, hint=hint)


class InvalidInput(PgConductorError):
    """Bad input rejected by SQL (22023 invalid_parameter_value, 22P02 not JSON)."""


class NotFound(PgConductorError):
    """An id that SQL does not know (P0002 no_data_found)."""


class InvalidState(PgConductorError):
    """An operation the current state forbids (55000, 55006 object_in_use, 42501)."""


class ExtensionMissing(PgConductorError):
    """The pgconductor extension is not installed in the database."""


class VersionMismatch(PgConductorError):
    """The installed extension version is not one this package supports."""


class TransientError(PgConductorError):
    """A failure that may clear up on its own (deadlock, shutdown, lost connection)."""


class PayloadValidationError(InvalidInput):
    """A payload that does not match its task's declared payload type."""

    def __init__(self, message: str, *, errors: list[Any] | None = None) -> None:
        super().__init__(message, hint="check the payload against the task's payload type")
        self.errors = errors or []

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with the validation errors kept."""
        return (PayloadValidationError, (self.message,), {"errors": self.errors})


#: The longest `RetryAfter` delay: SQL takes it as an integer of milliseconds.
MAX_RETRY_AFTER_SECONDS = (2**31 - 1) // 1000


class Fatal(Exception):
    """Raised by a handler: fail the execution now, without retrying (status `fatal`)."""


class RetryAfter(Exception):
    """Raised by a handler: run again after `delay` without counting the attempt.

    SQL bounds how often an execution may do this (the task's `max_retry_after`); past it
    the execution fails with the reason given here.
    """

    def __init__(self, delay: timedelta | float, reason: str = "") -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if not 0 <= seconds <= MAX_RETRY_AFTER_SECONDS:
            raise ValueError(
                f"RetryAfter needs a delay from 0 to {MAX_RETRY_AFTER_SECONDS} s, not {seconds!r}"
            )
        super().__init__(reason or f"retry after {seconds:g} s")
        self.delay = timedelta(seconds=seconds)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with the delay kept."""
        return (RetryAfter, (self.delay, self.reason))

    @property
    def delay_ms(self) -> int:
        """The delay in whole milliseconds, as `return_executions` takes it."""
        return round(self.delay.total_seconds() * 1000)


class Cancelled(Exception):
    """Raised by `ctx.raise_if_cancelled()` once the execution was asked to stop.

    A handler lets it propagate; the worker then reports what stopped it (a cancel ends
    `cancelled`, a shutdown gives the execution back, a timeout fails the attempt).
    """


_CLASSES: dict[str, type[PgConductorError]] = {
    "22023": InvalidInput,
    "22P02": InvalidInput,
    "P0002": NotFound,
    "55000": InvalidState,
    "55006": InvalidState,
    "42501": InvalidState,
    "3F000": ExtensionMissing,  # invalid_schema_name: schema pgconductor does not exist
}

_MISSING_HINT = "install it with `pgconductor schema install` (CREATE EXTENSION pgconductor)"


def is_transient(sqlstate: str | None) -> bool:
    """Tell whether an error with this SQLSTATE is worth retrying (class 08 included)."""
    if not sqlstate:
        return False
    return sqlstate in TRANSIENT_SQLSTATES or sqlstate.startswith("08")


def _class_for(sqlstate: str | None) -> type[PgConductorError]:
    """Pick the exception class for a SQLSTATE."""
    if is_transient(sqlstate):
        return TransientError
    return _CLASSES.get(sqlstate or "", PgConductorError)


def from_db_error(exc: BaseException) -> PgConductorError:
    """Translate a SQLAlchemy or psycopg exception into a typed `PgConductorError`.

    Reads `diag.sqlstate`, `diag.message_primary` and `diag.message_hint` from the psycopg
    error: raised by psycopg itself (the client's own calls run on the psycopg connection)
    or wrapped by SQLAlchemy (`DBAPIError.orig`). Connection failures without a SQLSTATE
    (psycopg `OperationalError`, SQLAlchemy pool timeouts) become `TransientError`.
    """
    import psycopg
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, PgConductorError):
        return exc
    orig: BaseException = exc
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        orig = exc.orig
    if isinstance(orig, psycopg.Error):
        diag = orig.diag
        sqlstate = diag.sqlstate or orig.sqlstate
        message = diag.message_primary or str(orig).strip() or type(orig).__name__
        hint = diag.message_hint
        cls = _class_for(sqlstate)
        if (
            cls is PgConductorError
            and sqlstate is None
            and isinstance(orig, psycopg.OperationalError)
        ):
            cls = TransientError
        if cls is ExtensionMissing and hint is None:
            hint = _MISSING_HINT
        return cls(message, sqlstate=sqlstate, hint=hint)
    if isinstance(exc, sa_exc.TimeoutError | ConnectionError):
        return TransientError(str(exc) or type(exc).__name__)
    return PgConductorError(str(exc) or type(exc).__name__)
