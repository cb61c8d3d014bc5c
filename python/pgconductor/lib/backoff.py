"""Delays with jitter, so many processes never poll or retry in lockstep."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["exponential", "jittered"]


def jittered(
    seconds: float, spread: float = 0.2, rand: Callable[[], float] = random.random
) -> float:
    """Return `seconds` moved by a random fraction in `[-spread, +spread]` (never negative)."""
    if seconds <= 0:
        return 0.0
    return max(0.0, seconds * (1.0 + spread * (2.0 * rand() - 1.0)))


def exponential(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Return a delay for retry number `attempt` (1-based): uniform in `[d/2, d]`.

    `d = min(cap, base * 2 ** (attempt - 1))`; the randomness keeps retries apart.
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 60))
    return ceiling / 2.0 + ceiling / 2.0 * rand()
