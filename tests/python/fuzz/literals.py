"""SQL literals for generated values: every argument is sent as SQL text, cast to its type.

The statement the fuzzer sends is therefore its own reproduction: pasted into psql it makes
the same call. Strings with control or line-breaking characters become E'' literals with
escapes, so a reproduction stays on one line.
"""

from __future__ import annotations

import re
import unicodedata

# Characters that break a line or a terminal: C0/C1 controls, line and paragraph separators.
_BREAKING = frozenset({"Cc", "Zl", "Zp"})


def breaks_line(text: str) -> bool:
    """True when `text` holds a control or line-separator character (it is not one line)."""
    return any(unicodedata.category(c) in _BREAKING for c in text)


def text_literal(value: str) -> str:
    """A one-line SQL string literal for `value` ('...' or E'...' with escapes)."""
    if not breaks_line(value) and "\\" not in value:
        return "'" + value.replace("'", "''") + "'"
    out = []
    for c in value:
        if c == "\\":
            out.append("\\\\")
        elif c == "'":
            out.append("\\'")
        elif unicodedata.category(c) in _BREAKING:
            code = ord(c)
            out.append(f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}")
        else:
            out.append(c)
    return "E'" + "".join(out) + "'"


def cast(expr: str, sql_type: str) -> str:
    """`(expr)::type`, the form every generated argument takes."""
    return f"({expr})::{sql_type}"


def with_lower_bound(array: str, length: int, lower: int, sql_type: str) -> str:
    """`array` (an expression of `sql_type`, `length` elements) with its subscripts starting
    at `lower`: built through the array's text form, '[0:2]={...}'."""
    return cast(f"'[{lower}:{lower + length - 1}]=' || {array}::text", sql_type)


_REBOUND = re.compile(r"^\('\[-?\d+:-?\d+\]=' \|\| (.*)::text\)::([^()]+)$", re.DOTALL)


def rebased(expr: str) -> str | None:
    """For an expression made by `with_lower_bound`, the same array starting at 1; else None."""
    match = _REBOUND.match(expr)
    return match.group(1) if match else None
