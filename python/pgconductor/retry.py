"""Retry of transient database errors: capped exponential backoff with jitter.

Used by `db.SqlDatabaseClient` for every call it owns (worker and client calls alike).
Cancellation always propagates at once; a set `abort` event stops retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from sqlalchemy import exc as sa_exc

from pgconductor.errors import PgConductorError, TransientError, from_db_error

__all__ = ["DB_ERRORS", "RetryPolicy", "retry_async", "retry_sync"]

log = logging.getLogger("pgconductor.db")
T = TypeVar("T")
#: Exceptions that come from the database or the network, translated by `from_db_error`.
DB_ERRORS = (sa_exc.SQLAlchemyError, psycopg.Error, OSError)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with jitter for transient errors.

    `max_attempts` counts every try (1 = never retry); retry number n waits a random time in
    `[d/2, d]` seconds where `d = min(cap, base * 2**(n-1))`.
    """

    max_attempts: int = 5
    base: float = 0.05
    cap: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base < 0 or self.cap < 0:
            raise ValueError("RetryPolicy needs max_attempts >= 1 and non-negative base and cap")

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        ceiling = min(self.cap, self.base * 2.0 ** min(max(retry - 1, 0), 60))
        return ceiling / 2 + ceiling / 2 * rand()

    def gives_up(self, error: PgConductorError, attempt: int, aborted: bool) -> bool:
        """True when `error` after try number `attempt` must be raised, not retried."""
        return not isinstance(error, TransientError) or aborted or attempt >= self.max_attempts


def _log_retry(label: str, error: PgConductorError, attempt: int, delay: float) -> None:
    """One warning line per retry."""
    state = f" (SQLSTATE {error.sqlstate})" if error.sqlstate else ""
    message = " ".join(str(error).split())
    log.warning("db.%s: %s%s; retry %d in %.3fs", label, message, state, attempt, delay)


async def _pause(seconds: float, abort: asyncio.Event | None) -> None:
    """Sleep `seconds`, waking early when `abort` is set."""
    if abort is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(abort.wait(), timeout=seconds)


async def retry_async(
    label: str,
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    abort: asyncio.Event | None = None,
) -> T:
    """Await `call()` until it succeeds, retrying transient errors; raise typed errors."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except DB_ERRORS as exc:
            error = from_db_error(exc)
            if policy.gives_up(error, attempt, abort is not None and abort.is_set()):
                raise error from exc
            delay = policy.delay(attempt)
            _log_retry(label, error, attempt, delay)
            await _pause(delay, abort)
            if abort is not None and abort.is_set():
                raise error from exc


def retry_sync(label: str, call: Callable[[], T], policy: RetryPolicy) -> T:
    """Blocking form of `retry_async` (no abort event)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except DB_ERRORS as exc:
            error = from_db_error(exc)
            if policy.gives_up(error, attempt, aborted=False):
                raise error from exc
            delay = policy.delay(attempt)
            _log_retry(label, error, attempt, delay)
            time.sleep(delay)
