"""The public SQL API as the catalog describes it: every `pgconductor.*` routine to fuzz.

Public means: in schema `pgconductor`, name not starting with "_", not a trigger function.
Discovery reads `pg_proc`, so a function added to the extension is fuzzed without any change
here (its argument types must have a strategy in `strategies.py`; a test checks that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_DISCOVER_SQL = """
SELECT p.proname, p.prokind, p.proretset, coalesce(p.proargnames, '{}'), p.proargmodes,
       p.pronargdefaults,
       array(SELECT format_type(t, NULL)
               FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, n) ORDER BY n),
       pg_get_function_identity_arguments(p.oid),
       coalesce(pg_get_expr(p.proargdefaults, 0), '')
  FROM pg_proc AS p
 WHERE p.pronamespace = 'pgconductor'::regnamespace
   AND p.proname NOT LIKE '\\_%'
   AND p.prorettype <> 'trigger'::regtype
 ORDER BY p.proname, pg_get_function_identity_arguments(p.oid)
"""


@dataclass(frozen=True)
class Arg:
    """One input argument: its name, SQL type (`format_type`), and whether it has a default."""

    name: str
    type: str
    has_default: bool

    @property
    def is_array(self) -> bool:
        """True for an array type (`text[]`)."""
        return self.type.endswith("[]")

    @property
    def element(self) -> str:
        """The element type of an array argument, else the type itself."""
        return self.type[:-2] if self.is_array else self.type


@dataclass(frozen=True)
class Routine:
    """One public function (or procedure) of the extension, with its input arguments."""

    name: str
    kind: str  # 'f' function, 'p' procedure
    args: tuple[Arg, ...]
    identity: str  # pg_get_function_identity_arguments
    defaults: str  # pg_get_expr(proargdefaults): the default expressions, for reports

    @property
    def signature(self) -> str:
        """`name(identity arguments)`: unique among overloads."""
        return f"{self.name}({self.identity})"


def discover(conn: Any) -> list[Routine]:
    """Every public routine of schema pgconductor, ordered by name and arguments."""
    routines: list[Routine] = []
    for name, kind, _retset, names, modes, ndefaults, types, identity, defaults in conn.execute(
        _DISCOVER_SQL
    ).fetchall():
        # proargnames covers OUT/TABLE columns too when proargmodes is set; proargtypes does not.
        if modes is not None:
            in_names = [n for n, m in zip(names, modes, strict=True) if m in ("i", "b", "v")]
            if "v" in modes:
                raise AssertionError(f"{name}: VARIADIC arguments are not fuzzed yet")
        else:
            in_names = list(names)
        if len(in_names) != len(types) or any(not n for n in in_names):
            raise AssertionError(f"{name}({identity}): every argument needs a name to be fuzzed")
        first_default = len(types) - ndefaults
        args = tuple(
            Arg(n, t, i >= first_default)
            for i, (n, t) in enumerate(zip(in_names, types, strict=True))
        )
        routines.append(Routine(name, kind, args, identity, defaults))
    return routines
