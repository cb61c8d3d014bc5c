"""What an error from the SQL API may look like: the SQLSTATE allow-list and the checks.

`ALLOWED_SQLSTATES` is the one list of the SQLSTATEs a public function may raise; the
"Errors" table in docs/sql-api.md documents the same codes (a test keeps the two in step).
Anything else (a raw 22008, 42P07, 54000, XX000, a lost connection) is a finding.
"""

from __future__ import annotations

from dataclasses import dataclass

from fuzz.literals import breaks_line

ALLOWED_SQLSTATES: dict[str, str] = {
    "22023": "invalid_parameter_value: an argument is out of its documented range or shape",
    "22P02": "invalid_text_representation: a payload that is not JSON (the jsonb cast)",
    "P0002": "no_data_found: the orchestrator or execution named does not exist",
    "55000": "object_not_in_prerequisite_state: the current state forbids the operation",
    "55006": "object_in_use: drop_queue of a queue that still holds executions",
    "54000": "program_limit_exceeded: a new queue beyond the documented limits",
    "42501": "insufficient_privilege: dropping the default queue",
    "40001": "serialization_failure: invoke raced with claims for a dedupe key; retry the call",
    "25000": "invalid_transaction_state: a claim of a limited task outside READ COMMITTED",
    "42P01": "undefined_table: subscribe_table of a table that does not exist",
    "42703": "undefined_column: subscribe_table with a column the table does not have",
    "42809": "wrong_object_type: subscribe_table of a view, a partition or another object",
    "42601": "syntax_error: subscribe_table's WHEN clause does not parse",
}

# The only functions that may delete executions for good (finished ones, by age). Every
# other call that succeeds leaves each execution in executions or finished_executions.
RETENTION = frozenset({"prune_finished"})

# One line of a terminal: a message, detail or hint longer than this echoes input whole.
MAX_MESSAGE_CHARS = 300


@dataclass(frozen=True)
class ServerError:
    """The parts of an error the checks read (from psycopg's `Diagnostic`)."""

    sqlstate: str
    message: str
    detail: str | None
    hint: str | None


def violations(error: ServerError) -> list[str]:
    """Why `error` breaks the contract (empty when it is a documented, one-line error).

    The contract (docs/sql-api.md, "Errors"): a documented SQLSTATE, a one-line message of
    bounded length, and a hint saying what to do; detail and hint are one line each too.
    """
    found: list[str] = []
    if error.sqlstate not in ALLOWED_SQLSTATES:
        found.append(f"SQLSTATE {error.sqlstate} is not in the allow-list")
    if not error.hint:
        found.append("no hint")
    for part, text in (("message", error.message), ("detail", error.detail), ("hint", error.hint)):
        if text is None:
            continue
        if breaks_line(text):
            found.append(f"{part} is not one line (control or line-break characters)")
        if len(text) > MAX_MESSAGE_CHARS:
            found.append(f"{part} is {len(text)} characters (max {MAX_MESSAGE_CHARS})")
    return found
