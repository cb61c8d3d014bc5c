"""The fuzz run's summary (calls, outcomes) and its findings as text and as Markdown."""

from __future__ import annotations

from fuzz.errors import ALLOWED_SQLSTATES
from fuzz.literals import text_literal
from fuzz.runner import Finding, Tally
from fuzz.seed import SEED_SQL

#: Lines the fuzz test leaves for the terminal summary (conftest.py prints them).
SUMMARY: list[str] = []

# Worst first: a lost server, lost or mispaired executions, state a failed call changed,
# broken invariants (stored values beyond the limits), undocumented SQLSTATEs, errors
# without a hint, then messages that are not one line. The words match `problem` texts.
_SEVERITY = (
    "server crash",
    "vanished",
    "lower bounds",
    "a table changed",
    "execution",  # invariants about executions and orchestrators
    "ahead of the server",
    "time zone",
    "exceeds",
    "longer than",
    "more than",
    "not finite",
    "SQLSTATE",
    "no hint",
    "not one line",
    "characters",
)


def _rank(finding: Finding) -> tuple[int, str, str]:
    rank = next((i for i, word in enumerate(_SEVERITY) if word in finding.problem), len(_SEVERITY))
    return rank, finding.signature, finding.problem


def _shown(message: str, limit: int) -> str:
    """A message as a one-line SQL literal (control characters escaped), cut at `limit`."""
    cut = message[:limit] + ("..." if len(message) > limit else "")
    return text_literal(cut)


def ordered(tally: Tally) -> list[Finding]:
    """The findings, most serious first."""
    return sorted(tally.findings.values(), key=_rank)


def summary(tally: Tally, seconds: float, seed: str) -> str:
    """Call count and outcome counts, one short block."""
    errors = ", ".join(f"{code} {n}" for code, n in sorted(tally.errors.items())) or "none"
    return (
        f"pgconductor fuzz: {tally.calls} calls of {len(tally.calls_by_routine)} functions in "
        f"{seconds:.1f} s ({seed}; {tally.reruns} more re-run with arrays from 1): "
        f"{tally.passes} passed, "
        f"{sum(tally.errors.values())} raised errors ({errors}); "
        f"{len(tally.findings)} distinct findings"
    )


def findings_text(tally: Tally) -> str:
    """Every finding with its reproduction, for the assertion message."""
    lines = []
    for n, f in enumerate(ordered(tally), 1):
        lines.append(
            f"{n}. {f.signature}: {f.problem} [{f.sqlstate}] {f.message[:160]!r} (x{f.count})"
        )
        lines.append(f"   {f.repro[:2000]}")
    return "\n".join(lines)


def findings_markdown(tally: Tally, head: str) -> str:
    """The findings report: how to replay, then each finding most serious first."""
    out = [
        "# pgconductor fuzz findings",
        "",
        head,
        "",
        "Replay: on a fresh database, `CREATE EXTENSION pgconductor;` then the seed below, then",
        "paste a finding's one-liner into psql. Allowed SQLSTATEs: "
        + ", ".join(sorted(ALLOWED_SQLSTATES))
        + " (each with a one-line message and a hint).",
        "",
        "```sql",
        SEED_SQL.strip(),
        "```",
        "",
    ]
    for n, f in enumerate(ordered(tally), 1):
        out += [
            f"## {n}. `{f.signature}`: {f.problem}",
            "",
            f"SQLSTATE `{f.sqlstate or '-'}`, seen {f.count}x: {_shown(f.message, 300)}",
            "",
            "```sql",
            f.repro,
            "```",
            "",
        ]
    if not tally.findings:
        out.append("No findings.")
    return "\n".join(out) + "\n"
