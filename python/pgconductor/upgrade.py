"""Live and breaking upgrades: which update scripts break older packages, and the stop-wait-apply
coordination `SchemaManager.upgrade` runs before a breaking one.

An update script is *breaking* when a package older than it cannot keep running on the schema
it leaves: a function it calls is gone, takes other arguments or returns other columns. A
script written from now on says so near its top, in a line of its own::

    -- pgconductor: breaking (register_task takes other arguments)

Released scripts are frozen (never edited), so the breaking ones among them are listed in
`RELEASED_BREAKING`, with the reason. `breaking_steps` reads both for each script of an
upgrade path; `is_breaking` tells whether any is.

A non-breaking upgrade is applied at once: it runs in one transaction, so live orchestrators
wait for its locks for its duration and then continue on the new version. Before a breaking
one, `stop_older_orchestrators` asks every live orchestrator whose package is older than the
breaking script (`stopping_below`), or that reports no version, to stop (`request_shutdown`:
it finishes or releases its work), runs stale recovery meanwhile (a crashed one expires after
its `stale_after`), and waits until none is live; past the timeout it raises `InvalidState`
naming those still live, and applies nothing. Newer orchestrators keep running through the
upgrade. `apply_breaking` wraps the update in that wait, and signals an older orchestrator
that started while the update ran (its transaction does not look) right after it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable
from uuid import UUID

from pgconductor import __version__
from pgconductor.errors import InvalidState
from pgconductor.types import OrchestratorInfo, ReturnOutcome

__all__ = [
    "BREAKING_MARKER",
    "RELEASED_BREAKING",
    "BreakingStep",
    "UpgradeClient",
    "apply_breaking",
    "breaking_steps",
    "is_breaking",
    "marked_breaking",
    "older_orchestrators",
    "stop_older_orchestrators",
    "stopping_below",
]

log = logging.getLogger("pgconductor.upgrade")

T = TypeVar("T")

#: The marker line of a breaking update script: `-- pgconductor: breaking (why)`.
BREAKING_MARKER = re.compile(r"^--\s*pgconductor:\s*breaking\s*\((?P<why>.+)\)\s*$")

#: Released (frozen) update scripts that are breaking, by file name, with the reason.
#: 0.3.0 → 0.4.0 is, by its interface: a caller written for 0.3.0's columns or signature may
#: fail. (The 0.3.0 package itself names the columns it reads, passes register_task's old
#: arguments, which the new last one defaults, and was seen draining through it: so marking
#: it costs a restart of older workers, never work.)
#: 0.4.0 → 0.5.0 is not: the functions keep their signatures and results (only EXECUTE moves
#: from PUBLIC to the group roles, which a package of any version needs granted alike).
#: 0.5.0 → 0.6.0 is not: claimed_execution and get_execution gain columns a 0.5.0 package
#: does not select (it names the columns it reads), and return_executions gains a status
#: ('suspend') it never sends.
RELEASED_BREAKING: Mapping[str, str] = {
    "pgconductor--0.3.0--0.4.0.sql": (
        "return_executions and get_execution return other columns, register_task takes "
        "other arguments"
    ),
}


@dataclass(frozen=True, slots=True)
class BreakingStep:
    """One breaking update script of an upgrade path: the version it leads to, and why."""

    version: str
    script: str
    reason: str


@runtime_checkable
class UpgradeClient(Protocol):
    """What the coordination needs: list, signal and expire orchestrators."""

    async def orchestrator_stats(self) -> list[OrchestratorInfo]:
        """Every orchestrator, live ones first."""
        ...

    async def request_shutdown(self, orchestrator_id: UUID | None = None) -> int:
        """Signal one orchestrator to stop."""
        ...

    async def recover_stale(self, limit: int = 1000) -> list[ReturnOutcome]:
        """Expire orchestrators past their `stale_after`, releasing their work."""
        ...


def _release(version: str) -> tuple[int, ...]:
    """`"0.10.2"` → `(0, 10, 2)`; non-numeric parts count as 0."""
    return tuple(int(part) if part.isdigit() else 0 for part in re.split(r"[.-]", version))


def marked_breaking(sql: str) -> str | None:
    """The reason in a script's `-- pgconductor: breaking (why)` line, or None.

    Only the top of the script counts: its leading comments, blank lines and psql guard.
    """
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("\\echo"):
            continue
        if not stripped.startswith("--"):
            return None
        found = BREAKING_MARKER.match(stripped)
        if found:
            return found.group("why").strip()
    return None


def breaking_steps(chain: Sequence[tuple[str, str, str]]) -> list[BreakingStep]:
    """The breaking scripts of an update chain (`schema.update_chain`'s `(version, file, SQL)`):
    marked in the script, or listed in `RELEASED_BREAKING`."""
    found = []
    for version, name, sql in chain:
        reason = marked_breaking(sql) or RELEASED_BREAKING.get(name)
        if reason is not None:
            found.append(BreakingStep(version, name, reason))
    return found


def is_breaking(installed: str, target: str) -> bool:
    """Whether the package's update path from `installed` to `target` holds a breaking script
    (raises `InvalidInput` when the package has no such path)."""
    from pgconductor.schema import update_chain

    return bool(breaking_steps(update_chain(installed, target)))


def older_orchestrators(
    infos: Sequence[OrchestratorInfo], than: str = __version__
) -> list[OrchestratorInfo]:
    """The live orchestrators whose package is older than `than` (or that report none)."""
    return [
        o
        for o in infos
        if o.state == "live" and (o.version is None or _release(o.version) < _release(than))
    ]


def stopping_below(steps: Sequence[BreakingStep], package: str = __version__) -> str:
    """The package version below which an orchestrator must stop for `steps`: the last
    breaking script's version (a package and its extension share release numbers), but never
    above this package's own (it runs the update, so it runs on what it leaves)."""
    return min(steps[-1].version, package, key=_release)


def _named(info: OrchestratorInfo) -> str:
    where = info.info if isinstance(info.info, dict) else {}
    host = f" on {where['host']} pid {where.get('pid')}" if "host" in where else ""
    return f"{info.id} (package {info.version or 'unknown'}{host})"


async def stop_older_orchestrators(
    client: UpgradeClient,
    steps: Sequence[BreakingStep],
    *,
    timeout: float,
    older_than: str | None = None,
    poll_interval: float = 0.2,
    monotonic: Callable[[], float] = time.monotonic,
) -> list[UUID]:
    """Ask every live orchestrator older than `older_than` (default: `stopping_below(steps)`)
    to stop, and wait until none is live.

    Returns the ids signalled. Raises `InvalidState` (55006) naming those still live after
    `timeout` seconds.
    """
    older_than = older_than or stopping_below(steps)
    deadline = monotonic() + timeout
    signalled: list[UUID] = []
    why = "; ".join(f"{s.script}: {s.reason}" for s in steps)
    while True:
        await client.recover_stale()
        live = older_orchestrators(await client.orchestrator_stats(), older_than)
        if not live:
            return signalled
        for info in live:
            if info.id not in signalled:
                log.info("breaking upgrade (%s): asking orchestrator %s to stop", why, _named(info))
                await client.request_shutdown(info.id)
                signalled.append(info.id)
        if monotonic() >= deadline:
            raise InvalidState(
                f"breaking upgrade to {steps[-1].version} not applied: {len(live)} orchestrator(s)"
                f" of packages older than {older_than} still live after {timeout:g} s: "
                + ", ".join(_named(o) for o in live),
                sqlstate="55006",
                hint="they were asked to stop (request_shutdown); stop them, or wait longer "
                "(`pgconductor schema upgrade --timeout SECONDS`)",
            )
        await asyncio.sleep(poll_interval)


async def apply_breaking(
    client: UpgradeClient,
    steps: Sequence[BreakingStep],
    apply: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    older_than: str | None = None,
) -> T:
    """Stop the older orchestrators (`stop_older_orchestrators`), then `apply()`.

    One that started between the end of the wait and the update (the update's transaction
    does not look) is asked to stop right after it, with a warning.
    """
    older_than = older_than or stopping_below(steps)
    await stop_older_orchestrators(client, steps, timeout=timeout, older_than=older_than)
    applied = await apply()
    for info in older_orchestrators(await client.orchestrator_stats(), older_than):
        log.warning(
            "breaking upgrade to %s: orchestrator %s started during it: asking it to stop",
            steps[-1].version,
            _named(info),
        )
        await client.request_shutdown(info.id)
    return applied
