"""Runs fuzz calls against a seeded database and keeps the tally and the findings.

One example is a short sequence of calls inside one transaction that is rolled back at the
end, so examples never accumulate state (and queues created by a call vanish with it). Each
call runs under its own session settings (SET LOCAL), in a savepoint: an error rolls back to
it, then the checks run: the server still answers, the error is documented and one line,
and every table of schema pgconductor (plus the session's pgconductor.* settings) has the
fingerprint it had before the call. A call that succeeded stays, so the next call of the
example sees its effect (a task registered in one session setting, claimed in another).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from fuzz.catalog import Routine
from fuzz.errors import RETENTION, ServerError, violations
from fuzz.strategies import ODD_SETTINGS

_TABLES_SQL = """
SELECT c.oid::regclass::text FROM pg_class AS c
 WHERE c.relnamespace = 'pgconductor'::regnamespace AND c.relkind IN ('r', 'p') ORDER BY 1
"""
_IDS_SQL = """
SELECT id::text FROM pgconductor.executions
 UNION SELECT id::text FROM pgconductor.finished_executions
"""
_SETTINGS_SQL = """
SELECT coalesce(string_agg(name || '=' || setting, ',' ORDER BY name), '')
  FROM pg_settings WHERE name LIKE 'pgconductor.%'
"""


@dataclass(frozen=True)
class Call:
    """One generated call: the routine, its named argument expressions, its session settings."""

    routine: Routine
    args: dict[str, str]
    settings: dict[str, str]

    def sql(self) -> str:
        """The statement, complete with its argument values: it reproduces the call."""
        named = ", ".join(f"{k} => {v}" for k, v in self.args.items())
        verb = "CALL" if self.routine.kind == "p" else "SELECT * FROM"
        return f"{verb} pgconductor.{self.routine.name}({named})"


@dataclass
class Finding:
    """One distinct contract violation, with the shortest reproduction seen and a count."""

    signature: str
    problem: str
    sqlstate: str
    message: str
    repro: str
    count: int = 1


@dataclass
class Tally:
    """What the fuzzer did: calls, passes, errors by SQLSTATE, findings by key."""

    calls: int = 0
    passes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    calls_by_routine: Counter[str] = field(default_factory=Counter)
    findings: dict[tuple[str, str, str], Finding] = field(default_factory=dict)

    def add_finding(self, call: Call, problem: str, error: ServerError | None, repro: str) -> None:
        """Record a violation; one finding per (function, SQLSTATE, message shape)."""
        sqlstate = error.sqlstate if error else ""
        message = error.message if error else ""
        key = (call.routine.signature, sqlstate, problem if not sqlstate else _shape(message))
        found = self.findings.get(key)
        if found is None:
            self.findings[key] = Finding(call.routine.signature, problem, sqlstate, message, repro)
            return
        found.count += 1
        if len(repro) < len(found.repro):
            found.repro, found.message = repro, message


def _shape(message: str) -> str:
    """A message with its values blanked: messages that differ only in values are one finding."""
    shape = re.sub(r"'(?:[^']|'')*'|\"[^\"]*\"", "?", message[:200])
    shape = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "U", shape)
    return re.sub(r"-?\d[\d.:+ -]*", "N", shape)


def _settings_sql(settings: dict[str, str]) -> str:
    return "; ".join(
        f"SET LOCAL {k} = '{settings[k]}'" if k in settings else f"SET LOCAL {k} TO DEFAULT"
        for k in ODD_SETTINGS
    )


class Runner:
    """Runs examples on one database; `tally` accumulates over every example."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.tally = Tally()
        self.conn = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        # A statement that runs away, or waits on a lock, is a finding (57014), not a hang.
        return psycopg.connect(
            self.url, autocommit=True, options="-c statement_timeout=20s -c lock_timeout=5s"
        )

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def fingerprint(self) -> tuple[tuple[str, str], ...]:
        """md5 of every table's rows (in row order) in schema pgconductor, and its settings."""
        tables = [r[0] for r in self.conn.execute(_TABLES_SQL).fetchall()]
        parts = [
            f"SELECT {t!r}, md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), ''))"
            f" FROM {t} AS x"
            for t in tables
        ]
        parts.append(f"SELECT 'settings', ({_SETTINGS_SQL})")
        rows = self.conn.execute(" UNION ALL ".join(parts)).fetchall()
        return tuple((str(a), str(b)) for a, b in rows)

    def _execution_ids(self) -> set[str]:
        return {r[0] for r in self.conn.execute(_IDS_SQL).fetchall()}

    def alive(self) -> bool:
        """True when the server still answers on a new connection."""
        try:
            with psycopg.connect(self.url, connect_timeout=10) as probe:
                probe.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def run(self, calls: list[Call]) -> None:
        """Run one example: the calls in one transaction, rolled back at the end."""
        done = _Prefix()  # the statements that succeeded: the reproduction's prefix
        self.conn.execute("BEGIN")
        try:
            for call in calls:
                if not self._one(call, done):
                    return
        finally:
            if not self.conn.closed:
                self.conn.execute("ROLLBACK")

    def _one(self, call: Call, done: _Prefix) -> bool:
        """Run one call and check it; False when the connection is gone."""
        tally = self.tally
        settings = _settings_sql(call.settings)
        self.conn.execute(settings)
        before = self.fingerprint()
        ids = self._execution_ids()
        statement = call.sql()
        tally.calls += 1
        tally.calls_by_routine[call.routine.signature] += 1
        self.conn.execute("SAVEPOINT fuzz_call")
        try:
            # The rows are not loaded into Python: the server has produced them all, and
            # values such as time '24:00' or year 294000 have no Python equivalent.
            self.conn.execute(statement)
        except psycopg.OperationalError as exc:
            repro = done.repro(call.settings, statement)
            tally.errors[exc.sqlstate or "connection lost"] += 1
            if self.conn.closed or not self.alive():
                tally.add_finding(call, f"server crash or connection lost: {exc}", None, repro)
                self.conn = self._connect()
                return False
            self._check_error(call, exc, before, repro)
        except psycopg.Error as exc:
            repro = done.repro(call.settings, statement)
            tally.errors[exc.sqlstate or "?"] += 1
            self._check_error(call, exc, before, repro)
        else:
            tally.passes += 1
            self.conn.execute("RELEASE SAVEPOINT fuzz_call")
            if call.routine.name not in RETENTION:
                lost = ids - self._execution_ids()
                if lost:
                    gone = ServerError("", f"gone: {', '.join(sorted(lost))}", None, None)
                    repro = done.repro(call.settings, statement)
                    tally.add_finding(call, "executions vanished", gone, repro)
            done.add(call.settings, statement)
        return True

    def _check_error(self, call: Call, exc: psycopg.Error, before: Any, repro: str) -> None:
        self.conn.execute("ROLLBACK TO SAVEPOINT fuzz_call")
        self._assert_arguments_cast(call)
        diag = exc.diag
        error = ServerError(
            exc.sqlstate or "", diag.message_primary or "", diag.message_detail, diag.message_hint
        )
        problems = violations(error)
        if self.fingerprint() != before:
            problems.insert(0, "a table changed although the call failed")
        if problems:
            self.tally.add_finding(call, "; ".join(problems), error, repro)

    def _assert_arguments_cast(self, call: Call) -> None:
        """A generated argument that does not even cast is a bug of the fuzzer, not a finding."""
        if not call.args:
            return
        self.conn.execute("SAVEPOINT fuzz_cast")
        try:
            self.conn.execute("SELECT " + ", ".join(call.args.values()))
        except psycopg.Error as exc:
            raise AssertionError(
                f"fuzzer bug: arguments of {call.sql()} do not cast: {exc}"
            ) from exc
        finally:
            self.conn.execute("ROLLBACK TO SAVEPOINT fuzz_cast")


class _Prefix:
    """The successful statements of an example so far, each after the settings it ran under."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.settings: dict[str, str] = {}

    @staticmethod
    def _switch(old: dict[str, str], new: dict[str, str]) -> list[str]:
        return [f"SET LOCAL {k} TO DEFAULT" for k in old if k not in new] + [
            f"SET LOCAL {k} = '{v}'" for k, v in new.items() if old.get(k) != v
        ]

    def add(self, settings: dict[str, str], statement: str) -> None:
        """Append a statement that succeeded under `settings`."""
        self.statements += [*self._switch(self.settings, settings), statement]
        self.settings = dict(settings)

    def repro(self, settings: dict[str, str], statement: str) -> str:
        """A one-line psql reproduction: the prefix, then `statement` under `settings`."""
        body = [*self.statements, *self._switch(self.settings, settings), statement]
        return "BEGIN; " + "; ".join(body) + "; ROLLBACK;"
