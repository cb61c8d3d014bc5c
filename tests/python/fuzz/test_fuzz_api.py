"""Every public SQL function, called with generated hostile arguments, keeps the contract.

The functions come from the catalog (so a new one is fuzzed without a change here); each is
called with hypothesis-generated arguments, sometimes after one or two other calls in the
same transaction and under odd session settings. Every call must leave the server up; every
error must carry a documented SQLSTATE, a one-line message and a hint, and change no table;
every call that succeeds must keep the documented invariants (invariants.py) and lose no
execution; a call whose arrays start at 0, 2 or -3 must do what it does with arrays from 1.
All findings are collected (not just the first) and reported together, most serious first;
PGCONDUCTOR_FUZZ_EXTENSION_VERSION=0.2.0 fuzzes an older installed release instead.

Bounded in `make test`: PGCONDUCTOR_FUZZ_EXAMPLES examples per function (default 25), and
`derandomize`: hypothesis then draws the same examples on every run, so CI never turns red
for an input it had not tried before; a new finding shows up in `make fuzz` first, which sets
more examples and a random seed (printed with the summary; PGCONDUCTOR_FUZZ_SEED replays it).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from fuzz.catalog import Routine
from fuzz.errors import ALLOWED_SQLSTATES
from fuzz.report import SUMMARY, findings_markdown, findings_text, summary
from fuzz.runner import Call, Runner
from fuzz.seed import Pools
from fuzz.strategies import Strategies

EXAMPLES = int(os.environ.get("PGCONDUCTOR_FUZZ_EXAMPLES", "25"))
SEED = os.environ.get("PGCONDUCTOR_FUZZ_SEED", "")
REPORT = os.environ.get("PGCONDUCTOR_FUZZ_REPORT", "")
SQL_API_DOC = Path(__file__).resolve().parents[3] / "docs" / "sql-api.md"


def test_discovery_finds_the_public_api(routines: list[Routine]) -> None:
    names = {r.name for r in routines}
    assert {"invoke", "get_executions", "return_executions"} <= names
    assert not any(n.startswith("_") for n in names)
    invoke = next(r for r in routines if r.name == "invoke")
    assert [a.name for a in invoke.args][:2] == ["p_task_key", "p_payload"]
    assert [a.has_default for a in invoke.args] == [False] + [True] * (len(invoke.args) - 1)


def test_every_argument_type_has_a_strategy(routines: list[Routine], pools: Pools) -> None:
    strategies = Strategies(pools, routines)
    missing = {
        f"{r.signature}: {a.type}"
        for r in routines
        for a in r.args
        if not strategies.supports(a.type)
    }
    assert not missing, f"add a strategy in fuzz/strategies.py for: {sorted(missing)}"


def test_docs_list_the_allowed_sqlstates() -> None:
    """docs/sql-api.md's Errors table and the allow-list name the same SQLSTATEs."""
    text = SQL_API_DOC.read_text()
    section = text[text.index("## Errors") :]
    section = section[: section.find("\n## ", 1)]
    documented = set(re.findall(r"^\| `([0-9A-Z]{5})`", section, flags=re.MULTILINE))
    assert documented == set(ALLOWED_SQLSTATES)


def test_hostile_calls_keep_the_contract(
    seeded_url: str, routines: list[Routine], pools: Pools
) -> None:
    strategies = Strategies(pools, routines)
    runner = Runner(seeded_url)
    run_seed = SEED
    started = time.monotonic()
    try:
        for routine in routines:
            _fuzz(runner, strategies, routine, routines, run_seed)
        up = runner.alive()
    finally:
        runner.close()
    tally = runner.tally
    head = summary(
        tally, time.monotonic() - started, f"seed {run_seed}" if run_seed else "derandomized"
    )
    SUMMARY.append(head)
    SUMMARY.extend(f"  {code}: {n}" for code, n in sorted(tally.errors.items()))
    if REPORT:
        Path(REPORT).write_text(findings_markdown(tally, head))
    assert up, "the server no longer answers"
    assert set(tally.calls_by_routine) == {r.signature for r in routines}
    assert not tally.findings, f"{head}\n{findings_text(tally)}"


def _fuzz(
    runner: Runner, strategies: Strategies, routine: Routine, routines: list[Routine], run_seed: str
) -> None:
    """EXAMPLES examples whose last call is `routine` (after up to two calls of any routine)."""

    def call(target: Routine) -> st.SearchStrategy[Call]:
        return st.builds(Call, st.just(target), strategies.call_args(target), strategies.settings())

    # A prefix call is as often the same function (under other settings) as any other one.
    prefix = st.one_of(call(routine), st.sampled_from(routines).flatmap(call))
    example = st.tuples(st.lists(prefix, max_size=2), call(routine)).map(
        lambda pair: [*pair[0], pair[1]]
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not run_seed,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(example)
    def run(calls: list[Call]) -> None:
        runner.run(calls)

    if run_seed:
        run = seed(int(run_seed))(run)
    run()
