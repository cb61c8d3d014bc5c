"""SQLSTATE → exception mapping, transient classification and pickling of errors."""

from __future__ import annotations

import pickle

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.pq import DiagnosticField
from sqlalchemy import exc as sa_exc

from pgconductor.errors import (
    ExtensionMissing,
    InvalidInput,
    InvalidState,
    NotFound,
    PayloadValidationError,
    PgConductorError,
    TransientError,
    from_db_error,
    is_transient,
)


def wrapped(orig: BaseException) -> sa_exc.DBAPIError:
    """The way SQLAlchemy hands a psycopg error to us."""
    return sa_exc.DBAPIError.instance("SELECT 1", {}, orig, psycopg.Error)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("orig", "expected", "sqlstate"),
    [
        (pg_errors.InvalidParameterValue("bad queue"), InvalidInput, "22023"),
        (pg_errors.InvalidTextRepresentation("bad json"), InvalidInput, "22P02"),
        (pg_errors.NoDataFound("unknown orchestrator"), NotFound, "P0002"),
        (pg_errors.ObjectNotInPrerequisiteState("pending"), InvalidState, "55000"),
        (pg_errors.ObjectInUse("queue in use"), InvalidState, "55006"),
        (pg_errors.InsufficientPrivilege("default"), InvalidState, "42501"),
        (pg_errors.InvalidSchemaName("no schema"), ExtensionMissing, "3F000"),
        (pg_errors.SerializationFailure("retry"), TransientError, "40001"),
        (pg_errors.DeadlockDetected("deadlock"), TransientError, "40P01"),
        (pg_errors.LockNotAvailable("lock timeout"), TransientError, "55P03"),
        (pg_errors.AdminShutdown("terminated"), TransientError, "57P01"),
        (pg_errors.TooManyConnections("full"), TransientError, "53300"),
        (pg_errors.ConnectionFailure("gone"), TransientError, "08006"),
        (pg_errors.DivisionByZero("oops"), PgConductorError, "22012"),
    ],
)
@pytest.mark.parametrize("wrap", [False, True])
def test_sqlstate_picks_the_class(
    orig: psycopg.Error, expected: type[PgConductorError], sqlstate: str, wrap: bool
) -> None:
    error = from_db_error(wrapped(orig) if wrap else orig)
    assert type(error) is expected
    assert error.sqlstate == sqlstate
    assert str(error) == str(orig)


@pytest.mark.parametrize("wrap", [False, True])
def test_server_diagnostics_are_kept(wrap: bool) -> None:
    """What the server sends (SQLSTATE, message, hint) survives, raw from psycopg or wrapped."""
    info = {
        DiagnosticField.SQLSTATE: b"22023",
        DiagnosticField.MESSAGE_PRIMARY: b"invalid queue name 'A B'",
        DiagnosticField.MESSAGE_HINT: b"Use lower-case letters.",
    }
    orig = psycopg.Error("invalid queue name 'A B'\nHINT:  Use lower-case letters.", info=info)  # type: ignore[arg-type]
    error = from_db_error(wrapped(orig) if wrap else orig)
    assert type(error) is InvalidInput
    assert (error.sqlstate, str(error), error.hint) == (
        "22023",
        "invalid queue name 'A B'",
        "Use lower-case letters.",
    )


def test_extension_missing_gets_a_hint() -> None:
    error = from_db_error(pg_errors.InvalidSchemaName('schema "pgconductor" does not exist'))
    assert error.hint is not None
    assert "pgconductor schema install" in error.hint


def test_connection_error_without_sqlstate_is_transient() -> None:
    error = from_db_error(wrapped(psycopg.OperationalError("connection refused")))
    assert isinstance(error, TransientError)
    assert error.sqlstate is None
    assert "connection refused" in str(error)


def test_interface_error_is_not_transient() -> None:
    error = from_db_error(psycopg.InterfaceError("misuse"))
    assert type(error) is PgConductorError


def test_pool_timeout_and_os_errors_are_transient() -> None:
    assert isinstance(from_db_error(sa_exc.TimeoutError("pool exhausted")), TransientError)
    assert isinstance(from_db_error(ConnectionResetError("reset")), TransientError)


def test_other_exceptions_become_the_base_class() -> None:
    error = from_db_error(sa_exc.ArgumentError("bad url"))
    assert type(error) is PgConductorError
    assert str(error) == "bad url"
    assert str(from_db_error(RuntimeError())) == "RuntimeError"


def test_existing_errors_pass_through() -> None:
    error = NotFound("x", sqlstate="P0002")
    assert from_db_error(error) is error


def test_empty_message_falls_back_to_the_class_name() -> None:
    assert str(from_db_error(pg_errors.DeadlockDetected())) == "DeadlockDetected"


@pytest.mark.parametrize(
    ("sqlstate", "transient"),
    [
        ("40001", True),
        ("40P01", True),
        ("55P03", True),
        ("57P01", True),
        ("57P02", True),
        ("57P03", True),
        ("53300", True),
        ("08000", True),
        ("08P01", True),
        ("22023", False),
        ("57014", False),  # query_canceled: a statement timeout would recur
        ("", False),
        (None, False),
    ],
)
def test_is_transient(sqlstate: str | None, transient: bool) -> None:
    assert is_transient(sqlstate) is transient


def test_errors_pickle_with_their_fields() -> None:
    error = InvalidInput("bad", sqlstate="22023", hint="fix it")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.message, copy.sqlstate, copy.hint) == (
        InvalidInput,
        "bad",
        "22023",
        "fix it",
    )
    payload_error = pickle.loads(pickle.dumps(PayloadValidationError("no", errors=[{"loc": 1}])))
    assert payload_error.errors == [{"loc": 1}]
    assert isinstance(payload_error, InvalidInput)
    assert payload_error.hint
