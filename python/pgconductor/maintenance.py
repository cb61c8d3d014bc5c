"""`Maintenance`: the engine part that runs `pgconductor.maintain()` every few seconds.

One pass (in SQL) expires executions past their start-by deadline, prunes finished ones per
task retention (`keep_completed`, `keep_failed`) in bounded batches, and clears old events,
throttle slots, full rate buckets and gone orchestrators. Every orchestrator on an
extension of 0.7.0 or later runs this service; SQL lets one pass run at a time per database
(a concurrent call answers `{"skipped": true}` at once), so many workers cost nothing more.

A pass that fails is logged as a warning and the next one comes at its time: maintenance
never stops a worker. The counts of each pass are logged at debug level
(logger `pgconductor.maintenance`).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from pgconductor.clock import Clock, SystemClock
from pgconductor.lib.backoff import jittered
from pgconductor.protocol import FlowClient
from pgconductor.service import Service

__all__ = ["DEFAULT_INTERVAL", "DEFAULT_LIMIT", "Maintenance"]

#: Seconds between passes (each moved by up to ±20 %, so workers do not run in lockstep).
DEFAULT_INTERVAL = 10.0
#: Finished executions one pass prunes at most.
DEFAULT_LIMIT = 10000


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
