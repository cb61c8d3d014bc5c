"""Section `flow` of bench.py: what flow control (issue 11) costs pgconductor's drain and claim.

All drains run the drain section's tuned 2-process worker (`pgconductor` system, task `noop`,
queue `bench`) on N executions spread at random over 1,000 concurrency keys; only the
task's settings and the queue's fair share differ (set in SQL before the workers start,
which keep them when they declare `noop`):

- unlimited: no limit, no fair share (the baseline of the same run);
- per-key limit: `max_running_per_key` 5 (up to 5,000 running vs the workers' 4,000 slots:
  keys reach their limit, the claim's gate and trim do real work); target >= 0.7 of unlimited;
- fair share: the queue's keys share the claim round-robin, no limit; target >= 0.8.

Claim cost with limits (`max_running_per_key` 5 on 1,000 keys): pgbench with 2 clients runs
`sql/claim_complete_keyed.sql` (claim K = 100, complete them, refill K with random keys, so
the backlog stays) at the smallest and the largest backlog of the mode; jobs/s = tps x K,
and the ratio largest / smallest. The claim's plan at the largest backlog (auto_explain,
ANALYZE + BUFFERS, nested statements) goes into the report.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, ClassVar

import psycopg
import systems
from common import url

KEYS = 1000
PER_KEY = 5
TARGETS = {"per_key": 0.7, "fair": 0.8}


class _Keyed(systems.PgConductor):
    """The plain pgconductor drain with concurrency keys and the flow settings of one run.

    Its workers are the `pgconductor` system's (bench.drain_once starts `worker_system`).
    """

    worker_system = "pgconductor"
    settings: ClassVar[str] = '{"max_running_per_key": null}'
    fair_share = False

    async def reset(self) -> None:
        await super().reset()
        await systems._sql(
            self.db,
            f"select pgconductor.declare_task('noop', '{self.settings}')",
            f"select pgconductor.set_fair_share('{self.queue}', {str(self.fair_share).lower()})",
            "truncate pgconductor.rate_buckets",
        )

    async def enqueue_bulk(self, n: int) -> None:
        async with await psycopg.AsyncConnection.connect(url(self.db), autocommit=True) as conn:
            for lo in range(0, n, 5000):
                k = min(5000, n - lo)
                await conn.execute(
                    "select count(*) from pgconductor.invoke_batch("
                    " array_fill('noop'::text, array[%s]), array_fill('{}'::jsonb, array[%s]),"
                    " array_fill(%s::text, array[%s]), p_concurrency_keys =>"
                    " array(select 'k' || floor(random() * %s)::int from generate_series(1, %s)))",
                    (k, k, self.queue, k, KEYS, k),
                )


class Unlimited(_Keyed):
    name = "pgconductor-keys"


class PerKey(_Keyed):
    name = "pgconductor-per-key"
    settings: ClassVar[str] = f'{{"max_running_per_key": {PER_KEY}}}'


class FairShare(_Keyed):
    name = "pgconductor-fair"
    fair_share = True


systems.SYSTEMS.update({s.name: s for s in (Unlimited, PerKey, FairShare)})

PLAN: list[tuple[str, str]] = [
    ("unlimited (1,000 keys)", Unlimited.name),
    (f"max_running_per_key {PER_KEY} (1,000 keys)", PerKey.name),
    ("fair share (1,000 keys)", FairShare.name),
]


def _b() -> Any:
    import bench

    return bench


def drains(m: dict[str, Any]) -> list[dict[str, Any]]:
    """The three drains of the plan, m["repeats"] runs each, interleaved per repetition."""
    b = _b()
    n = m["flow_n"]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for _, name in PLAN}
    for i in range(m["repeats"]):
        for label, name in PLAN:
            tag = re.sub(r"\W+", "-", f"flow {label}") + f"-run{i}"
            r = b.drain_once(name, n, 2, b.PGC_TUNED, tag)
            runs[name].append(r)
            b.log(
                f"  flow {label} run {i}: {r['jobs_per_s']:.0f} jobs/s ({r['elapsed_s']:.2f}s;"
                f" cpu busy {r['busy_cores']:.2f}, workers {r['worker_cores']:.2f})"
                f" verified={r['verified']}" + ("" if r["verified"] else f" {r['verify']}")
            )
    out = []
    for label, name in PLAN:
        s = b.summary([r["jobs_per_s"] for r in runs[name]])
        b.log(
            f"RESULT flow drain {label}: {s['median']:.0f} jobs/s [{s['min']:.0f}-{s['max']:.0f}]"
        )
        out.append(
            {
                "label": label,
                "system": name,
                "procs": 2,
                "cfg": systems.get(name).cfg(b.PGC_TUNED),
                "n": n,
                "summary": s,
                "runs": runs[name],
                "verified": all(r["verified"] for r in runs[name]),
            }
        )
    return out


def claim_cost(m: dict[str, Any]) -> list[dict[str, Any]]:
    """claim+complete+refill K=100 with the per-key limit at the mode's smallest and largest
    backlog; the claim's plans at each."""
    b = _b()
    system = systems.get(PerKey.name)
    out = []
    for backlog in (m["flow_backlogs"][0], m["flow_backlogs"][-1]):
        fill_s = b.prepare_table(system, backlog)
        plans = b.claim_plans(system.db)
        b.sql(system.db, "vacuum analyze pgconductor.executions", "checkpoint")
        r = b.pgbench(system.db, "claim_complete_keyed.sql", 2, seconds=m["pgbench_s"], k=100)
        left = b.sql(system.db, "select count(*) from pgconductor.executions")[0][0][0]
        out.append(
            {
                "backlog": backlog,
                "fill_s": fill_s,
                "k100": {**r, "jobs_per_s": r["tps"] * 100},
                "backlog_after": left,
                "plans": plans,
            }
        )
        b.log(
            f"RESULT flow backlog {backlog:,} (max_running_per_key {PER_KEY}, {KEYS} keys):"
            f" claim+complete+refill K=100, 2 clients: {r['tps'] * 100:.0f} jobs/s"
        )
    return out


def section(res: Any, m: dict[str, Any]) -> None:
    """Run the drains and the claim cost; put them under "flow"; restore the plain settings."""
    pgc = systems.get("pgconductor")
    try:
        out: dict[str, Any] = {"drains": drains(m)}
        res.put("flow", out)
        out["claim"] = claim_cost(m)
        res.put("flow", out)
    finally:
        asyncio.run(systems.get(Unlimited.name).reset())  # no limit, no fair share
        asyncio.run(pgc.reset())


# ------------------------------------------------------------------------------------------
# report


def _ratio(flow: dict[str, Any], name: str) -> tuple[dict[str, Any], dict[str, Any], float] | None:
    drains = flow.get("drains") or []
    base = next((s for s in drains if s["system"] == Unlimited.name), None)
    ours = next((s for s in drains if s["system"] == name), None)
    if not base or not ours:
        return None
    return ours, base, ours["summary"]["median"] / base["summary"]["median"]


def rows(d: dict[str, Any], f: Any) -> list[list[str]]:
    """Summary rows: the two drain ratios and the claim cost's backlog ratio (`f` formats)."""
    flow = d.get("flow") or {}
    out: list[list[str]] = []
    for name, key, what in (
        (PerKey.name, "per_key", f"flow: drain with max_running_per_key {PER_KEY}, 1,000 keys"),
        (FairShare.name, "fair", "flow: fair-share drain, 1,000 keys"),
    ):
        got = _ratio(flow, name)
        if got is None:
            continue
        ours, base, r = got
        out.append(
            [
                f"{what} (jobs/s; N={ours['n']:,})",
                f(ours["summary"]["median"]),
                f"{f(base['summary']['median'])} (unlimited, same run)",
                f"{r:.2f}",
                f"≥ {TARGETS[key]}× unlimited",  # noqa: RUF001 - report text
                "met" if r >= TARGETS[key] else "missed",
            ]
        )
    claim = flow.get("claim") or []
    if len(claim) >= 2:
        first, last = claim[0], claim[-1]
        r = last["k100"]["jobs_per_s"] / first["k100"]["jobs_per_s"]
        out.append(
            [
                f"flow: claim+complete+refill K=100 with max_running_per_key {PER_KEY}, backlog "
                f"{first['backlog']:,} / {last['backlog']:,} (jobs/s)",
                f"{f(first['k100']['jobs_per_s'])} / {f(last['k100']['jobs_per_s'])}",
                "",
                f"{r:.2f} ({last['backlog']:,} vs {first['backlog']:,})",
                "",
                "",
            ]
        )
    return out


def md(d: dict[str, Any], f: Any) -> list[str]:
    """The report's flow-control section: every drain run, the claim cost and its plan."""
    flow = d.get("flow") or {}
    if not flow:
        return []
    lines = ["## Flow control (issue 11)\n", (__doc__ or "").split("\n\n", 1)[1].strip() + "\n"]
    drains = flow.get("drains") or []
    if drains:
        lines.append("| drain | N | jobs/s median [min–max] | CPU busy | workers | verified |")  # noqa: RUF001
        lines.append("|---|---|---|---|---|---|")
        for s in drains:
            last = s["runs"][-1]
            lines.append(
                f"| {s['label']} | {s['n']:,} | {f(s['summary']['median'])}"
                f" [{f(s['summary']['min'])}–{f(s['summary']['max'])}] |"  # noqa: RUF001
                f" {last['busy_cores']:.2f} | {last['worker_cores']:.2f} | {s['verified']} |"
            )
        lines.append("")
    claim = flow.get("claim") or []
    if claim:
        lines.append(f"| backlog (max_running_per_key {PER_KEY}) | K=100 jobs/s | backlog after |")
        lines.append("|---|---|---|")
        for c in claim:
            lines.append(
                f"| {c['backlog']:,} | {f(c['k100']['jobs_per_s'])} | {c['backlog_after']:,} |"
            )
        lines.append("")
        lines.append(
            f"Claim with the limit at backlog {claim[-1]['backlog']:,} (auto_explain, ANALYZE +"
            " BUFFERS, batch 100):\n"
        )
        lines.append("```\n" + claim[-1]["plans"]["all"][:12000] + "\n```\n")
    return lines
