"""Hostile and valid-looking arguments, per SQL type, as SQL expressions.

Each strategy draws a SQL expression (text) already cast to the argument's type, or None
for "leave the argument out" (only arguments with a default). A call is built around a
subject (one execution of the seeded database): its valid arguments name that execution's
id, lease, orchestrator, task and queue together, so calls get past validation and reach
deep states (a retry on the 41st attempt, a result under a live lease). Then some of its
arguments are swapped for hostile values: NULL, empty, 10k characters, control characters,
extreme numbers, intervals and times, odd array bounds, 2-D and 1000-element arrays.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from fuzz.catalog import Arg, Routine
from fuzz.literals import cast, text_literal, with_lower_bound
from fuzz.seed import Pools, Subject

Expr = st.SearchStrategy[str]
Draw = Callable[..., Any]

# Session settings a call may run under (besides the defaults): they change how times,
# intervals and time-zone abbreviations are read and printed.
ODD_SETTINGS: dict[str, tuple[str, ...]] = {
    "DateStyle": ("SQL, DMY", "German", "Postgres, MDY"),
    "TimeZone": ("Pacific/Chatham", "America/St_Johns", "Asia/Kathmandu"),
    "timezone_abbreviations": ("Australia", "India"),
    "IntervalStyle": ("iso_8601", "sql_standard", "postgres_verbose"),
}

_HOSTILE_TEXT = (
    "''",
    "' '",
    "'  padded  '",
    "repeat('x', 10000)",
    "repeat('é', 10000)",
    # 10k characters that do not compress: a long value stays long in an index tuple.
    "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 313) AS g)",
    "repeat('a', 201)",
    "repeat('q', 49)",
    "repeat('k', 251)",
    text_literal("line one\nline two"),
    text_literal("tab\there"),
    text_literal("\x01\x02\x1b[31mred"),
    text_literal("del\x7f"),
    text_literal("cr\r\nlf"),
    text_literal("sep\u2028arator"),
    "repeat(" + text_literal("\n") + ", 100)",
    text_literal("🦄 unicorn ✓ ∑ 漢字"),
    text_literal("\u202eright-to-left"),
    text_literal("'; DROP TABLE pgconductor.tasks; --"),
    text_literal('"quoted" %s %I \\ back'),
    "'NULL'",
    "'Default'",
    "'-leading-dash'",
    "'UPPER'",
)
_TIMEZONES = (
    "UTC", "Europe/Berlin", "Pacific/Chatham", "America/St_Johns", "Asia/Kathmandu",
    "SAT", "EST", "ACST", "CET", "IST", "Mars/Olympus", "+05:30", "UTC+14", "EST5EDT",
    "FOO+3", "<+03>-3", "localtime", "posixrules",
)  # fmt: skip
_VALID_TIMEZONES = ("UTC", "Europe/Berlin", "Pacific/Chatham", "Asia/Kathmandu", "SAT", "EST")
_STATUSES = ("completed", "failed", "fatal", "released")
_WORDS = (
    *_STATUSES, "cancelled", "pending", "running", "stale", "shutdown", "cancel",
    "lease_lost", "COMPLETED", "d1", "d2", "fuzz",
)  # fmt: skip
_INTEGERS = (0, 1, 2, 3, 5, 41, 100, 10000, 10001, -1, -1000, 2147483647, -2147483648)
_BIGINTS = (*_INTEGERS, 9223372036854775807, -9223372036854775808)
_INTERVALS = (
    "0", "1 microsecond", "1 second", "-1 second", "5 seconds", "30 seconds", "10 minutes",
    "1 hour", "1 day", "-1 day", "366 days", "1001 years", "10000 years", "-10000 years",
    "178000000 years", "-178000000 years", "2147483647 days", "2147483647 hours",
    "1 mon -30 days", "P1Y2M3DT4H5M6S",
)  # fmt: skip
_VALID_INTERVALS = ("1 second", "10 seconds", "30 seconds", "10 minutes", "1 hour", "1 day")
_TIMESTAMPS = (
    "'infinity'", "'-infinity'", "'0001-01-01 00:00:00+00'", "'4713-01-01 00:00:00+00 BC'",
    "'294000-01-01 00:00:00+00'", "'1970-01-01 00:00:00+00'", "'2038-01-19 03:14:08+00'",
    "now() + interval '1000 years'",
)  # fmt: skip
_VALID_TIMESTAMPS = ("now()", "now() - interval '1 hour'", "now() + interval '1 hour'")
_TIMES = ("'00:00'", "'24:00'", "'23:59:59.999999'", "'12:00'")
_VALID_TIMES = ("'09:00'", "'17:00'", "'22:00'", "'06:00'")
_JSONB = (
    "'[]'", "'null'", "'0'", "'\"\"'", "'true'", "'1e1000'", "'-0'",
    "jsonb_build_object('big', repeat('x', 10000))",
    "(repeat('[', 500) || repeat(']', 500))",
    "jsonb_build_object('nl', " + text_literal("a\nb") + ")",
    "(SELECT jsonb_object_agg(g::text, g) FROM generate_series(1, 1000) AS g)",
)  # fmt: skip
_VALID_JSONB = ("'{}'", "'{\"n\": 1}'", '\'{"ok": true, "items": [1, 2]}\'')
_UUIDS = ("00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff")
_ANY_CHAR = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")


def _sampled(values: tuple[object, ...]) -> Expr:
    return st.sampled_from([str(v) for v in values])


def _quoted(values: tuple[str, ...]) -> Expr:
    return st.sampled_from([text_literal(v) for v in values])


def _json_value() -> st.SearchStrategy[Any]:
    """JSON values PostgreSQL's jsonb accepts (no NUL: jsonb cannot hold \\u0000)."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(_ANY_CHAR, max_size=12)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text(_ANY_CHAR, max_size=6), inner, max_size=4)
        ),
        max_leaves=12,
    )


def _json_literal(value: Any) -> str:
    return text_literal(json.dumps(value, ensure_ascii=False))


def _object_keys(routines: list[Routine]) -> dict[str, str]:
    """Every parameter name of the API without its `p_` (and `<name>_ms` for an interval, as
    milliseconds), with the type its value has: the keys a settings object may use."""
    keys: dict[str, str] = {}
    for routine in routines:
        for arg in routine.args:
            name = arg.name.removeprefix("p_")
            keys.setdefault(name, arg.element)
            if arg.element == "interval":
                keys.setdefault(f"{name}_ms", "milliseconds")
    return keys


_JSON_VALID: dict[str, tuple[Any, ...]] = {
    "integer": (1, 3, 20),
    "milliseconds": (1000, 60000),
    "time without time zone": ("09:00", "17:00"),
    "text": ("fuzz", "default", "UTC"),
    "interval": ("1 second", "10 minutes"),
    "boolean": (True, False),
}
_JSON_HOSTILE: tuple[Any, ...] = (
    None, 0, -1, 2**31, 2**63, 10**30, 1.5, -0.0, 1e308, "", "3", "24:00", "25:61", "x" * 300,
    "line\nbreak", "SAT", "Mars/Olympus", "178000000 years", True, [], {}, [1], {"a": 1},
)  # fmt: skip


def _json_for(kind: str, hostile: bool) -> st.SearchStrategy[Any]:
    valid = st.sampled_from(_JSON_VALID.get(kind, _JSON_VALID["text"]))
    return valid | st.sampled_from(_JSON_HOSTILE) if hostile else valid


class Strategies:
    """Argument strategies for one seeded database (`pools` hold the values that exist)."""

    def __init__(self, pools: Pools, routines: list[Routine]) -> None:
        self.pools = pools
        self._object_keys = _object_keys(routines)
        self._subjects = st.sampled_from(pools.subjects)
        self._running = st.sampled_from(
            [s for s in pools.subjects if s.locked_by] or pools.subjects
        )
        uuids = (*(s.id for s in pools.subjects), *pools.orchestrator_ids, *_UUIDS)
        self._hostile: dict[str, Callable[[str], Expr]] = {
            "text": self._hostile_text,
            "integer": lambda _name: _sampled(_INTEGERS) | st.integers(-2, 5).map(str),
            "bigint": lambda _name: _sampled(_BIGINTS) | st.integers(-2, 5).map(str),
            "boolean": lambda _name: st.sampled_from(["true", "false"]),
            "interval": lambda _name: _quoted(_INTERVALS),
            "timestamp with time zone": lambda _name: st.sampled_from(_TIMESTAMPS),
            "time without time zone": lambda _name: (
                st.sampled_from(_TIMES) | st.times().map(lambda t: text_literal(t.isoformat()))
            ),
            "jsonb": lambda _name: st.one_of(
                st.sampled_from(_JSONB),
                _json_value().map(_json_literal),
                self._object(hostile=True).map(_json_literal),
            ),
            "uuid": lambda _name: _quoted(uuids) | st.uuids().map(lambda u: text_literal(str(u))),
        }

    def supports(self, sql_type: str) -> bool:
        """True when arguments of `sql_type` (or arrays of it) can be generated."""
        return sql_type.removesuffix("[]") in self._hostile

    # -- elements -------------------------------------------------------------------------
    def _hostile_text(self, _name: str) -> Expr:
        return st.one_of(
            st.sampled_from(_HOSTILE_TEXT),
            st.text(_ANY_CHAR, max_size=24).map(text_literal),
            _quoted(self.pools.task_keys),
            _quoted(self.pools.queues),
            _quoted(_TIMEZONES),
            _quoted(_WORDS),
        )

    def _valid(self, arg: Arg, s: Subject) -> Expr:
        """A value that names the subject, or is plainly in range, by the argument's name."""
        name, t = arg.name, arg.element
        if t == "uuid":
            if "orchestrator" in name:
                live = self.pools.orchestrator_ids[:1]
                return _quoted((s.locked_by,) if s.locked_by else live)
            return _quoted((s.id,))
        if t in ("integer", "bigint"):
            for word, values in (
                ("lease", (s.lease,)),
                ("batch", (1, 2, 5)),
                ("limit", (1, 10, 1000)),
                ("priority", (-1, 0, 1)),
                ("attempt", (1, 3, 100)),
                ("delay", (0, 10, 1000)),
            ):
                if word in name:
                    return _sampled(values)
            return _sampled((0, 1, 3))
        if t == "text":
            for word, values in (
                ("queue", (s.queue, "default", "fuzz", "fuzz-2")),
                ("key", (s.task_key,)),
                ("task", (s.task_key,)),
                ("timezone", _VALID_TIMEZONES),
                ("status", _STATUSES),
                ("state", ("pending", "running", "completed", "failed", "cancelled")),
                ("dedupe", ("d1", "d2", "d3")),
            ):
                if word in name:
                    return _quoted(values)
            return _quoted(("fuzz", "boom", s.task_key))
        plain: dict[str, tuple[str, ...]] = {
            "boolean": ("true", "false"),
            "interval": tuple(text_literal(v) for v in _VALID_INTERVALS),
            "timestamp with time zone": _VALID_TIMESTAMPS,
            "time without time zone": _VALID_TIMES,
            "jsonb": _VALID_JSONB,
        }
        if t == "jsonb" and "info" in name:
            info = {"queues": {s.queue: {"tasks": [s.task_key]}}}
            return st.sampled_from([*plain[t], _json_literal(info)])
        if t == "jsonb":
            return st.sampled_from(plain[t]) | self._object(hostile=False).map(_json_literal)
        return st.sampled_from(plain[t])

    def _object(self, hostile: bool) -> st.SearchStrategy[dict[str, Any]]:
        """A JSON object keyed by the API's own parameter names (settings objects such as
        declare_task's), each value in range for its parameter, or hostile."""
        keys = st.sampled_from(sorted(self._object_keys))
        if hostile:
            keys = keys | st.text(_ANY_CHAR, max_size=8)

        @st.composite
        def draw_object(draw: Draw) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key in draw(st.lists(keys, min_size=1, max_size=4, unique=True)):
                kind = self._object_keys.get(key, "text")
                out[key] = draw(_json_for(kind, hostile))
            return out

        return draw_object()

    # -- whole arguments ------------------------------------------------------------------
    def _argument(self, draw: Draw, arg: Arg, s: Subject, hostile: bool, length: int) -> str | None:
        """One argument expression cast to its type; None = left out (it has a default)."""
        if arg.has_default and draw(st.integers(0, 4)) == 0:
            return None
        if hostile and draw(st.integers(0, 4)) == 0:
            return f"NULL::{arg.type}"
        elem = self._hostile[arg.element](arg.name) if hostile else self._valid(arg, s)
        if not arg.is_array:
            return cast(draw(elem), arg.type)
        if not hostile:
            # The subject first, then other valid values: parallel arrays stay parallel.
            items = [draw(self._valid(arg, s))] + [
                draw(self._valid(arg, draw(self._subjects))) for _ in range(length - 1)
            ]
            if draw(st.integers(0, 3)) == 0:
                # Documented: elements pair by position whatever the lower bounds.
                lower = draw(st.sampled_from([0, 2, -3]))
                return with_lower_bound(self._array_of(arg, items), length, lower, arg.type)
            return self._array_of(arg, items)
        return draw(self._hostile_array(arg, elem, length))

    @staticmethod
    def _array_of(arg: Arg, items: list[str]) -> str:
        if not items:
            return f"'{{}}'::{arg.type}"
        return cast("ARRAY[" + ", ".join(f"({i})::{arg.element}" for i in items) + "]", arg.type)

    def _hostile_array(self, arg: Arg, elem: Expr, length: int) -> Expr:
        t, et = arg.type, arg.element
        nullable = st.one_of(elem, elem, elem, st.just("NULL"))
        # Odd bounds go through the array's text form, which must read back in the session's
        # DateStyle and TimeZone: old dates print in local mean time ("LMT"), which does not.
        text_safe = (
            st.sampled_from(("'infinity'", "'-infinity'", *_VALID_TIMESTAMPS, "NULL"))
            if et.startswith("timestamp")
            else nullable
        )
        sized = st.one_of(
            st.lists(nullable, min_size=length, max_size=length),
            st.lists(nullable, max_size=5),
        ).map(lambda items: self._array_of(arg, items))
        odd_bounds = st.tuples(
            st.sampled_from([0, 2, -3]), st.lists(text_safe, min_size=1, max_size=3)
        ).map(
            lambda lb_items: with_lower_bound(
                self._array_of(arg, lb_items[1]), len(lb_items[1]), lb_items[0], t
            )
        )
        two_d = st.lists(st.lists(nullable, min_size=2, max_size=2), min_size=1, max_size=2).map(
            lambda rows: cast(
                "ARRAY["
                + ", ".join("[" + ", ".join(f"({i})::{et}" for i in r) + "]" for r in rows)
                + "]",
                t,
            )
        )
        huge = elem.map(lambda e: f"array_fill(({e})::{et}, ARRAY[1000])")
        return st.one_of(sized, sized, odd_bounds, two_d, huge)

    def settings(self) -> st.SearchStrategy[dict[str, str]]:
        """Session settings for one call: mostly none, else a few odd ones."""
        odd = st.fixed_dictionaries(
            {}, optional={k: st.sampled_from(v) for k, v in ODD_SETTINGS.items()}
        )
        # St. John's prints its times with an abbreviation (NST) that the Australia and
        # India sets do not read: the fuzzer's own text round trip of an array would fail.
        odd = odd.filter(
            lambda s: (
                not (s.get("TimeZone") == "America/St_Johns" and "timezone_abbreviations" in s)
            )
        )
        return st.one_of(st.just({}), st.just({}), odd)

    def call_args(self, routine: Routine) -> st.SearchStrategy[dict[str, str]]:
        """Named arguments for one call of `routine` (left-out defaults omitted).

        A call is all valid (a third of the time), or has each argument hostile with
        probability 1/4 or 3/4; arrays share one length, except hostile ones at times.
        """

        @st.composite
        def draw_args(draw: Draw) -> dict[str, str]:
            subject = draw(st.one_of(self._running, self._subjects))
            hostility = draw(st.sampled_from([0, 1, 3]))  # in quarters
            length = draw(st.integers(1, 3))
            args: dict[str, str] = {}
            for arg in routine.args:
                hostile = hostility > 0 and draw(st.integers(0, 3)) < hostility
                expr = self._argument(draw, arg, subject, hostile, length)
                if expr is not None:
                    args[arg.name] = expr
            return args

        return draw_args()
