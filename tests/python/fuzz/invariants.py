"""What must hold after every call that succeeded, from docs/sql-api.md and state-machine.md.

Each invariant is one SQL query that returns a row per violation (a short description).
They read the tables as the call left them, inside the example's transaction. The limits are
the documented ones ("Limits" in docs/sql-api.md): a call must refuse what would break them
before anything changes, so no successful call can store a value beyond them.
"""

from __future__ import annotations

from typing import Any

INVARIANTS: dict[str, str] = {
    "an execution is both live and finished": """
        SELECT e.id::text FROM pgconductor.executions AS e
          JOIN pgconductor.finished_executions AS f ON f.id = e.id""",
    "a running execution's orchestrator does not exist": """
        SELECT e.id::text FROM pgconductor.executions AS e
         WHERE e.locked_by IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM pgconductor.orchestrators AS o
                            WHERE o.id = e.locked_by)""",
    "a time was written ahead of the server's clock": """
        SELECT 'orchestrator ' || o.id FROM pgconductor.orchestrators AS o
         WHERE greatest(o.last_heartbeat_at, o.started_at) > clock_timestamp()
        UNION ALL
        SELECT 'execution ' || e.id FROM pgconductor.executions AS e
         WHERE greatest(e.locked_at, e.created_at) > clock_timestamp()
        UNION ALL
        SELECT 'finished ' || f.id FROM pgconductor.finished_executions AS f
         WHERE f.finished_at > clock_timestamp()""",
    "a run_at is not finite": """
        SELECT e.id::text FROM pgconductor.executions AS e WHERE NOT isfinite(e.run_at)""",
    "a task interval exceeds 365 days": """
        SELECT t.key FROM pgconductor.tasks AS t
         WHERE greatest(t.backoff_base, t.backoff_cap, t.timeout) > interval '365 days'""",
    "a heartbeat stale_after exceeds 1 day": """
        SELECT o.id::text FROM pgconductor.orchestrators AS o
         WHERE o.stale_after > interval '1 day'""",
    "a dedupe key is longer than 250 characters": """
        SELECT e.id::text FROM pgconductor.executions AS e WHERE char_length(e.dedupe_key) > 250""",
    "more than 100 queues": """
        SELECT count(*)::text FROM pgconductor.queues HAVING count(*) > 100""",
}

# One round trip: the invariants' rows (by index), the tasks' time zones (-2) and every
# execution id, live or finished (-1), which the runner compares with the ids before the call.
_ALL_SQL = " UNION ALL ".join(
    [
        *(f"SELECT {i}, x::text FROM ({q}) AS v(x)" for i, q in enumerate(INVARIANTS.values())),
        "SELECT DISTINCT -2, t.timezone FROM pgconductor.tasks AS t",
        "SELECT -1, e.id::text FROM pgconductor.executions AS e",
        "SELECT -1, f.id::text FROM pgconductor.finished_executions AS f",
    ]
)
_UNKNOWN_ZONE = "a task's time zone is not a zone name the server knows"


class Invariants:
    """Checks the invariants on one connection (the server's time zone names read once)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.zone_names = {r[0] for r in conn.execute("SELECT name FROM pg_timezone_names")}

    def check(self) -> tuple[dict[str, list[str]], set[str]]:
        """The invariants that do not hold now, each with (up to 5) offending rows; and the
        ids of every execution, live or finished."""
        names = list(INVARIANTS)
        found: dict[str, list[str]] = {}
        ids: set[str] = set()
        for index, what in self.conn.execute(_ALL_SQL).fetchall():
            if index == -1:
                ids.add(what)
            elif index == -2:
                # Validated "independently of session settings": full zone names only.
                if what not in self.zone_names:
                    found.setdefault(_UNKNOWN_ZONE, []).append(what)
            else:
                found.setdefault(names[index], []).append(what)
        return {k: v[:5] for k, v in found.items()}, ids
