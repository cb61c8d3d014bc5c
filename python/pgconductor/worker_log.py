"""The worker's log line for each result SQL did not simply complete (logger
`pgconductor.worker`; the table is in docs/python-contract.md, "What the worker logs")."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pgconductor.executor import error_summary
from pgconductor.types import ClaimedExecution, ExecutionResult, ResultStatus, ReturnOutcome

__all__ = ["log_outcome"]


def log_outcome(
    log: logging.Logger, claimed: ClaimedExecution, result: ExecutionResult, outcome: ReturnOutcome
) -> None:
    """One log line for a result SQL did not simply complete: failures are visible."""
    what = f"{claimed.task_key} {claimed.id}"
    attempt = f"attempt {claimed.attempt}/{claimed.max_attempts}"
    status, kind = result.status, outcome.outcome
    if kind == "retry_scheduled":
        log.warning(
            "%s: %s failed, retry scheduled%s: %s",
            what,
            attempt,
            _at(outcome.run_at),
            error_summary(result.error),
        )
    elif kind == "failed" and status is ResultStatus.RETRY_AFTER:
        log.error(
            "%s: failed for good: asked to retry later more often than the task allows"
            " (max_retry_after): %s",
            what,
            result.error or "no reason given",
        )
    elif kind == "failed":
        cause = "fatal error, no retry" if status is ResultStatus.FATAL else "no attempt left"
        log.error("%s: %s failed for good (%s):\n%s", what, attempt, cause, result.error)
    elif kind == "rescheduled":
        log.info(
            "%s: rescheduled in %gs%s, %s not counted: %s",
            what,
            (result.delay_ms or 0) / 1000,
            _at(outcome.run_at),
            attempt,
            result.error or "no reason given",
        )
    elif kind == "cancelled":
        kept = ", its result kept" if status is ResultStatus.COMPLETED else ""
        log.info("%s: cancelled during %s%s", what, attempt, kept)
    elif kind == "stale":
        log.warning(
            "%s was stale: the result of %s came after its lease ended; nothing was applied",
            what,
            attempt,
        )
    else:  # released: given back at a stop
        log.debug("%s: %s %s", what, attempt, kind)


def _at(run_at: datetime | None) -> str:
    """The next run for a log line (" for <UTC time>"), or "" when SQL did not say it."""
    return "" if run_at is None else f" for {run_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
