"""`Maintenance`: the engine part that runs `pgconductor.maintain()` every few seconds.

One pass (in SQL) expires executions past their start-by deadline, prunes finished ones per
task retention (`keep_completed`, `keep_failed`) in bounded batches, and clears old events,
throttle slots, full rate buckets and gone orchestrators. Every orchestrator on an
extension of 0.7.0 or later runs this service; SQL lets one pass run at a time per database
(a concurrent call answers `{"skipped": true}` at once), so many workers cost nothing more.

A pass that fails is logged as a warning and the next one comes at its time: maintenance
never stops a worker. The counts of each pass are logged at debug level
(logger `pgconductor.maintenance`).

`Ticker` (extension 0.8.0 on) calls `pgconductor.tick()` about every second, so schedules
with a seconds field run on time: `maintain()` ticks too, but only every 10 s. Each tick
comes just after a whole multiple of the interval on the clock (plus a small random delay,
so workers do not tick in lockstep); SQL makes each occurrence once however many tick.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from pgconductor.clock import Clock, SystemClock
from pgconductor.lib.backoff import jittered
from pgconductor.protocol import FlowClient
from pgconductor.service import Service
from pgconductor.source_types import SourceClient

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_LIMIT",
    "DEFAULT_TICK_INTERVAL",
    "DEFAULT_TICK_LIMIT",
    "Maintenance",
    "Ticker",
]

#: Seconds between passes (each moved by up to ±20 %, so workers do not run in lockstep).
DEFAULT_INTERVAL = 10.0
#: Finished executions one pass prunes at most.
DEFAULT_LIMIT = 10000
#: Seconds between schedule ticks.
DEFAULT_TICK_INTERVAL = 1.0
#: Schedules one tick serves at most (the rest wait for the next).
DEFAULT_TICK_LIMIT = 1000


class Maintenance(Service):
    """Run `maintain()` every `interval` seconds (jittered by `spread`) on `clock`."""

    def __init__(
        self,
        client: FlowClient,
        *,
        interval: timedelta | float = DEFAULT_INTERVAL,
        spread: float = 0.2,
        limit: int = DEFAULT_LIMIT,
        clock: Clock | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__("maintenance", logger)
        seconds = interval.total_seconds() if isinstance(interval, timedelta) else interval
        if not seconds > 0:
            raise ValueError("the maintenance interval must be longer than zero")
        if limit < 1:
            raise ValueError("the maintenance limit must be at least 1")
        self.client = client
        self.interval = float(seconds)
        self.spread = spread
        self.limit = limit
        self.clock: Clock = clock or SystemClock()
        #: Passes that returned, passes that failed, and the counts of the last one.
        self.passes = 0
        self.failures = 0
        self.last: dict[str, Any] | None = None

    async def _on_start(self) -> None:
        self.spawn(self._loop(), "loop")

    async def _loop(self) -> None:
        while True:
            await self.clock.sleep(jittered(self.interval, self.spread))
            await self.run_once()

    async def run_once(self) -> dict[str, Any] | None:
        """One pass now: its counts, or None when it failed (logged, never raised)."""
        try:
            counts = await self.client.maintain(self.limit)
        except Exception as exc:
            self.failures += 1
            self.log.warning("maintenance: pass failed (next in ~%gs): %s", self.interval, exc)
            return None
        self.passes += 1
        self.last = counts
        if self.log.isEnabledFor(logging.DEBUG):
            if counts.get("skipped"):
                self.log.debug("maintenance: skipped (another pass is running)")
            else:
                shown = ", ".join(f"{name} {value}" for name, value in sorted(counts.items()))
                self.log.debug("maintenance: %s", shown or "nothing to do")
        return counts


def _positive(value: timedelta | float, what: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds > 0:
        raise ValueError(f"the {what} must be longer than zero")
    return seconds


class Ticker(Service):
    """Call `tick(limit)` every `interval` seconds of `clock`: just after each whole multiple
    of it (Unix time), delayed by a random fraction up to `spread` of it."""

    def __init__(
        self,
        client: SourceClient,
        *,
        interval: timedelta | float = DEFAULT_TICK_INTERVAL,
        spread: float = 0.1,
        limit: int = DEFAULT_TICK_LIMIT,
        clock: Clock | None = None,
        rand: Callable[[], float] = random.random,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__("ticker", logger or logging.getLogger("pgconductor.maintenance"))
        if limit < 1:
            raise ValueError("the tick limit must be at least 1")
        self.client = client
        self.interval = _positive(interval, "tick interval")
        self.spread = spread
        self.limit = limit
        self.clock: Clock = clock or SystemClock()
        self._rand = rand
        #: Ticks that returned, ticks that failed, occurrences made.
        self.ticks = 0
        self.failures = 0
        self.made = 0
        self._failing = False

    def delay(self) -> float:
        """Seconds from now to the next tick."""
        now = self.clock.now().timestamp()
        return self.interval - now % self.interval + self.spread * self.interval * self._rand()

    async def _on_start(self) -> None:
        self.spawn(self._loop(), "loop")

    async def _loop(self) -> None:
        while True:
            await self.clock.sleep(self.delay())
            await self.run_once()

    async def run_once(self) -> int | None:
        """One tick now: the occurrences it made, or None when it failed (logged once per
        run of failures, never raised)."""
        try:
            made = await self.client.tick(self.limit)
        except Exception as exc:
            self.failures += 1
            if not self._failing:
                self._failing = True
                self.log.warning(
                    "ticker: tick failed (retrying every ~%gs): %s", self.interval, exc
                )
            return None
        if self._failing:
            self._failing = False
            self.log.info("ticker: ticking again")
        self.ticks += 1
        self.made += made
        if made:
            self.log.debug("ticker: %d schedule occurrence(s) made", made)
        return made
