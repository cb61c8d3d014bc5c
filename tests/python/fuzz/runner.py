"""Runs fuzz calls against a seeded database and keeps the tally and the findings.

One example is a short sequence of calls inside one transaction that is rolled back at the
end, so examples never accumulate state (and queues created by a call vanish with it). Each
call runs under its own session settings (SET LOCAL), in a savepoint. After an error (rolled
back to the savepoint): the server still answers, the error is documented and one line, and
every table of schema pgconductor (plus the session's pgconductor.* settings) has the
fingerprint it had before the call. After a success: the invariants hold and no execution
vanished. A call with arrays that start at 0, 2 or -3 is first made twice (rolled back), as
it is and with its arrays from 1, and both must do the same. A call that succeeded stays, so
the next call of the example sees its effect (a task registered under one setting, claimed
under another).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from fuzz.catalog import Routine
from fuzz.errors import RETENTION, ServerError, violations
from fuzz.invariants import Invariants
from fuzz.literals import rebased
from fuzz.strategies import ODD_SETTINGS

# One round trip: an md5 of each table's rows in schema pgconductor (partitions included, as
# they come and go), the session's pgconductor.* settings, and every execution id.
_FINGERPRINT_SQL = r"""
SELECT (SELECT coalesce(string_agg(c.oid::regclass::text || ':' || md5(query_to_xml(format(
            'SELECT md5(coalesce(string_agg(x::text, E''\n'' ORDER BY x::text), '''')) AS h'
            ' FROM %s AS x', c.oid::regclass), false, false, '')::text),
          ',' ORDER BY c.oid::regclass::text), '')
          FROM pg_class AS c
         WHERE c.relnamespace = 'pgconductor'::regnamespace AND c.relkind IN ('r', 'p')),
       (SELECT coalesce(string_agg(name || '=' || setting, ',' ORDER BY name), '')
          FROM pg_settings WHERE name LIKE 'pgconductor.%'),
       array(SELECT id::text FROM pgconductor.executions
             UNION SELECT id::text FROM pgconductor.finished_executions)
"""


# What a call did, without the ids it generated: each table's rows as JSON minus "id" and
# "execution_id" (a throttle slot names the new execution), sorted.
# Within one transaction now() does not move, so two calls that did the same give the same.
_CONTENT_SQL = r"""
SELECT coalesce(string_agg(c.oid::regclass::text || ':' || md5(query_to_xml(format(
            'SELECT md5(coalesce(string_agg((to_jsonb(x) - ''id'' - ''execution_id'')::text,'
            ' E''\n'' ORDER BY (to_jsonb(x) - ''id'' - ''execution_id'')::text), '''')) AS h'
            ' FROM ONLY %s AS x',
            c.oid::regclass), false, false, '')::text), ',' ORDER BY c.oid::regclass::text), '')
  FROM pg_class AS c
 WHERE c.relnamespace = 'pgconductor'::regnamespace AND c.relkind = 'r'
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
    reruns: int = 0  # calls made twice, the second time with arrays from 1 (not in `calls`)
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
        self.invariants = Invariants(self.conn)
        self._broken_before: set[tuple[str, str]] = set()

    def _connect(self) -> psycopg.Connection[Any]:
        # A statement that runs away, or waits on a lock, is a finding (57014), not a hang.
        return psycopg.connect(
            self.url, autocommit=True, options="-c statement_timeout=20s -c lock_timeout=5s"
        )

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def _last(self, statements: str) -> tuple[Any, ...]:
        """Run `statements` (one round trip) and return the first row of the last result."""
        cur = self.conn.execute(statements)
        while cur.nextset():
            pass
        row = cur.fetchone()
        assert row is not None
        return row

    def fingerprint(self, first: str) -> tuple[tuple[str, str], set[str]]:
        """Run the statements `first`, then (in the same round trip) take the md5 of every
        table and of the pgconductor.* settings, and every execution id."""
        tables, settings, ids = self._last(f"{first}; {_FINGERPRINT_SQL}")
        return (tables, settings), set(ids)

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
        self._broken_before = set()  # each broken invariant is blamed on the call that broke it
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
        before, ids = self.fingerprint(first=_settings_sql(call.settings))
        statement = call.sql()
        tally.calls += 1
        tally.calls_by_routine[call.routine.signature] += 1
        repro = done.repro(call.settings, statement)
        self._check_lower_bounds(call, done)
        try:
            # The rows are not loaded into Python: the server has produced them all, and
            # values such as time '24:00' or year 294000 have no Python equivalent.
            self.conn.execute(f"SAVEPOINT fuzz_call; {statement}")
        except psycopg.OperationalError as exc:
            tally.errors[exc.sqlstate or "connection lost"] += 1
            if self.conn.closed or not self.alive():
                tally.add_finding(call, f"server crash or connection lost: {exc}", None, repro)
                self.conn = self._connect()
                self.invariants = Invariants(self.conn)
                return False
            self._check_error(call, exc, before, repro)
        except psycopg.Error as exc:
            tally.errors[exc.sqlstate or "?"] += 1
            self._check_error(call, exc, before, repro)
        else:
            tally.passes += 1
            broken, ids_after = self.invariants.check()
            for what, rows in broken.items():
                new = [r for r in rows if (what, r) not in self._broken_before]
                self._broken_before.update((what, r) for r in rows)
                if new:
                    found = ServerError("", f"{what}: {', '.join(new)}", None, None)
                    tally.add_finding(call, what, found, repro)
            lost = ids - ids_after
            if lost and call.routine.name not in RETENTION:
                gone = ServerError("", f"gone: {', '.join(sorted(lost))}", None, None)
                tally.add_finding(call, "executions vanished", gone, repro)
            done.add(call.settings, statement)
        return True

    def _check_lower_bounds(self, call: Call, done: _Prefix) -> None:
        """Documented: array elements pair by position whatever their lower bounds. A call
        with arrays starting at 0, 2 or -3 must do what the same call with arrays starting
        at 1 does (or refuse it)."""
        plain_args = {k: rebased(v) or v for k, v in call.args.items()}
        if plain_args == call.args:
            return
        plain = Call(call.routine, plain_args, call.settings)
        odd_outcome, plain_outcome = self._outcome(call), self._outcome(plain)
        if odd_outcome[0] == plain_outcome[0] == "" and odd_outcome != plain_outcome:
            found = ServerError("", f"rebased to 1: {plain.sql()}", None, None)
            problem = "arrays with other lower bounds did something else"
            self.tally.add_finding(call, problem, found, done.repro(call.settings, call.sql()))

    def _outcome(self, call: Call) -> tuple[str, int, str]:
        """(SQLSTATE or "", rows returned, what it changed) of `call`, rolled back after."""
        self.tally.reruns += 1
        try:
            # The same random() draws for both (retry backoff has jitter).
            cur = self.conn.execute(f"SAVEPOINT fuzz_bounds; SELECT setseed(0.5); {call.sql()}")
        except psycopg.Error as exc:
            self.conn.execute("ROLLBACK TO SAVEPOINT fuzz_bounds")
            return exc.sqlstate or "?", 0, ""
        cur.nextset()
        cur.nextset()
        rows = cur.rowcount
        (content,) = self._last(f"{_CONTENT_SQL}")
        self.conn.execute("ROLLBACK TO SAVEPOINT fuzz_bounds")
        return "", rows, content

    def _check_error(self, call: Call, exc: psycopg.Error, before: Any, repro: str) -> None:
        after, _ids = self.fingerprint(first="ROLLBACK TO SAVEPOINT fuzz_call")
        self._assert_arguments_cast(call)
        diag = exc.diag
        error = ServerError(
            exc.sqlstate or "", diag.message_primary or "", diag.message_detail, diag.message_hint
        )
        problems = violations(error)
        if after != before:
            problems.insert(0, "a table changed although the call failed")
        if problems:
            self.tally.add_finding(call, "; ".join(problems), error, repro)

    def _assert_arguments_cast(self, call: Call) -> None:
        """A generated argument that does not even cast is a bug of the fuzzer, not a finding."""
        if not call.args:
            return
        try:
            self.conn.execute("SAVEPOINT fuzz_cast; SELECT " + ", ".join(call.args.values()))
        except psycopg.Error as exc:
            raise AssertionError(
                f"fuzzer bug: arguments of {call.sql()} do not cast: {exc}"
            ) from exc


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
