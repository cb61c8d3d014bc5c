"""Values in and out of the SQL calls: bind parameters, and rows turned into dataclasses.

Every reader takes a list of rows (tuples from psycopg, or SQLAlchemy `Row`s: both index
the same way), so one reader serves both ways a statement can run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import fields
from json import JSONDecoder
from operator import attrgetter
from typing import Any, TypeVar
from uuid import UUID

from pgconductor.encoding import to_json
from pgconductor.types import (
    ClaimedExecution,
    ExecutionInfo,
    ExecutionResult,
    ExecutionSummary,
    FlowStatus,
    OrchestratorInfo,
    QueueStats,
    ReturnOutcome,
    Signal,
    Submitted,
    TaskOverview,
    TaskSpec,
)

__all__ = [
    "Fetch",
    "RowList",
    "any_given",
    "batch_flow_params",
    "batch_params",
    "claimed_execution",
    "claimed_executions",
    "declared_settings",
    "execution_info",
    "execution_summaries",
    "first_column",
    "flow_params",
    "flow_statuses",
    "invoke_params",
    "nothing",
    "optional_array",
    "orchestrators",
    "outcomes",
    "queue_stats",
    "register_params",
    "return_params",
    "scalar",
    "scalar_or_none",
    "signals",
    "step_outcomes",
    "submitted",
    "task_overview",
    "task_spec",
]

T = TypeVar("T")
#: What a statement returned: a list of rows, each indexable by column position.
RowList = Sequence[Sequence[Any]]
#: Turns the rows of one statement into the method's return value.
Fetch = Callable[[RowList], T]


# -- parameters -----------------------------------------------------------------------------


def optional_array(values: Sequence[T | None] | None) -> list[T | None] | None:
    """`values` as a list, or None (SQL NULL) when absent or all NULL.

    The optional arrays of `invoke_batch` and `return_executions` treat a NULL array as one
    NULL per element, and NULL costs nothing to send.
    """
    if values is None:
        return None
    items = list(values)
    return None if items.count(None) == len(items) else items


def invoke_params(
    task_key: str,
    payload: Any,
    queue: str | None,
    run_at: dt.datetime | None,
    priority: int,
    dedupe_key: str | None,
) -> dict[str, Any]:
    """The binds of `invoke`."""
    return {
        "task_key": task_key,
        "payload": to_json(payload),
        "queue": queue,
        "run_at": run_at,
        "priority": priority,
        "dedupe_key": dedupe_key,
    }


def batch_params(
    task_keys: Sequence[str],
    payloads: Sequence[Any],
    queues: Sequence[str | None] | None,
    run_ats: Sequence[dt.datetime | None] | None,
    priorities: Sequence[int | None] | None,
    dedupe_keys: Sequence[str | None] | None,
) -> dict[str, Any]:
    """The binds of `invoke_batch` (parallel arrays; optional ones NULL when all NULL)."""
    return {
        "task_keys": list(task_keys),
        "payloads": [to_json(p) for p in payloads],
        "queues": optional_array(queues),
        "run_ats": optional_array(run_ats),
        "priorities": optional_array(priorities),
        "dedupe_keys": optional_array(dedupe_keys),
    }


def flow_params(
    concurrency_key: str | None,
    on_conflict: str | None,
    throttle: dt.timedelta | None,
    debounce: dt.timedelta | None,
    debounce_max: dt.timedelta | None,
    start_by: dt.datetime | None,
) -> dict[str, Any]:
    """The flow-control binds of `invoke`/`submit` (0.7.0)."""
    params = {
        "concurrency_key": concurrency_key,
        "on_conflict": on_conflict,
        "throttle": throttle,
        "debounce": debounce,
        "debounce_max": debounce_max,
        "start_by": start_by,
    }
    return params


def batch_flow_params(
    concurrency_keys: Sequence[str | None] | None,
    on_conflict: str | None,
    throttle: dt.timedelta | None,
    debounce: dt.timedelta | None,
    debounce_max: dt.timedelta | None,
    start_bys: Sequence[dt.datetime | None] | None,
) -> dict[str, Any]:
    """The flow-control binds of `invoke_batch`/`submit_batch` (0.7.0; arrays NULL when all
    NULL)."""
    params = {
        "concurrency_keys": optional_array(concurrency_keys),
        "on_conflict": on_conflict,
        "throttle": throttle,
        "debounce": debounce,
        "debounce_max": debounce_max,
        "start_bys": optional_array(start_bys),
    }
    return params


def any_given(params: dict[str, Any]) -> bool:
    """Whether some bind is not NULL: without flow options the plain `invoke` serves, which
    every extension version has."""
    return any(value is not None for value in params.values())


#: `register_task`'s arguments, named as `TaskSpec`'s fields.
_REGISTER_ARGS = (
    "key",
    "queue",
    "max_attempts",
    "window_start",
    "window_end",
    "timezone",
    "backoff_base",
    "backoff_cap",
    "timeout",
)


def register_params(spec: TaskSpec) -> dict[str, Any]:
    """The binds of `register_task`: every setting of the spec."""
    return {name: getattr(spec, name) for name in _REGISTER_ARGS}


def _ms(value: dt.timedelta | None) -> int | None:
    return None if value is None else round(value.total_seconds() * 1000)


def _clock(value: dt.time | None) -> str | None:
    return None if value is None else value.isoformat()


def declared_settings(spec: TaskSpec) -> dict[str, Any]:
    """The `p_settings` of `declare_task`: the spec's declared settings, in SQL's names."""
    every = {
        "queue": ("queue", spec.queue),
        "max_attempts": ("max_attempts", spec.max_attempts),
        "window_start": ("window_start", _clock(spec.window_start)),
        "window_end": ("window_end", _clock(spec.window_end)),
        "timezone": ("timezone", spec.timezone),
        "backoff_base": ("backoff_base_ms", _ms(spec.backoff_base)),
        "backoff_cap": ("backoff_cap_ms", _ms(spec.backoff_cap)),
        "timeout": ("timeout_ms", _ms(spec.timeout)),
        "max_retry_after": ("max_retry_after", spec.max_retry_after),
        "max_running": ("max_running", spec.max_running),
        "max_running_per_key": ("max_running_per_key", spec.max_running_per_key),
        "rate_limit": ("rate_limit", spec.rate_limit),
        "rate_limit_per_key": ("rate_limit_per_key", spec.rate_limit_per_key),
        "rate_period": ("rate_period_ms", _ms(spec.rate_period)),
        "start_within": ("start_within_ms", _ms(spec.start_within)),
        "keep_completed": ("keep_completed_ms", _ms(spec.keep_completed)),
        "keep_failed": ("keep_failed_ms", _ms(spec.keep_failed)),
    }
    return dict(every[name] for name in sorted(spec.declared))


def _delta_ms(value: Any) -> dt.timedelta | None:
    return None if value is None else dt.timedelta(milliseconds=value)


def _delta_or(settings: dict[str, Any], name: str, default: dt.timedelta) -> dt.timedelta:
    value = settings.get(name)
    return default if value is None else dt.timedelta(milliseconds=value)


_DEFAULT = TaskSpec(key="-")


def task_spec(key: str, settings: dict[str, Any], declared: frozenset[str]) -> TaskSpec:
    """The effective settings `declare_task` returned, as a `TaskSpec` (the flow-control ones
    at their defaults before 0.7.0, which does not return them)."""
    start, end = settings.get("window_start"), settings.get("window_end")
    return TaskSpec(
        key=key,
        queue=settings["queue"],
        max_attempts=settings["max_attempts"],
        window_start=None if start is None else dt.time.fromisoformat(start),
        window_end=None if end is None else dt.time.fromisoformat(end),
        timezone=settings["timezone"],
        backoff_base=dt.timedelta(milliseconds=settings["backoff_base_ms"]),
        backoff_cap=dt.timedelta(milliseconds=settings["backoff_cap_ms"]),
        timeout=_delta_ms(settings.get("timeout_ms")),
        max_retry_after=settings["max_retry_after"],
        max_running=settings.get("max_running"),
        max_running_per_key=settings.get("max_running_per_key"),
        rate_limit=settings.get("rate_limit"),
        rate_limit_per_key=settings.get("rate_limit_per_key"),
        rate_period=_delta_or(settings, "rate_period_ms", _DEFAULT.rate_period),
        start_within=_delta_ms(settings.get("start_within_ms")),
        keep_completed=_delta_or(settings, "keep_completed_ms", _DEFAULT.keep_completed),
        keep_failed=_delta_or(settings, "keep_failed_ms", _DEFAULT.keep_failed),
        declared=declared,
    )


_ID, _LEASE, _STATUS, _ERROR, _RESULT, _DELAY = (
    attrgetter(name) for name in ("id", "lease", "status", "error", "result", "delay_ms")
)


def return_params(orchestrator_id: UUID, results: Sequence[ExecutionResult]) -> dict[str, Any]:
    """The binds of `return_executions`: one array per field, NULL for an all-NULL one."""
    values = list(map(_RESULT, results))
    return {
        "orchestrator_id": orchestrator_id,
        "ids": list(map(_ID, results)),
        "leases": list(map(_LEASE, results)),
        "statuses": [str(status) for status in map(_STATUS, results)],
        "errors": optional_array(list(map(_ERROR, results))),
        "results": optional_array([None if v is None else to_json(v) for v in values]),
        "delays_ms": optional_array(list(map(_DELAY, results))),
    }


# -- rows -----------------------------------------------------------------------------------


def nothing(rows: RowList) -> None:
    """For statements whose answer is not needed."""


def scalar(rows: RowList) -> Any:
    """The single value of a one-row, one-column answer."""
    return rows[0][0]


def scalar_or_none(rows: RowList) -> Any:
    """The first row's first value, or None when there is no row."""
    return rows[0][0] if rows else None


def first_column(rows: RowList) -> list[Any]:
    """The first value of every row."""
    return [row[0] for row in rows]


def step_outcomes(rows: RowList) -> list[tuple[UUID, str, str]]:
    """`save_steps` rows: `(id, key, outcome)`."""
    return [(row[0], row[1], row[2]) for row in rows]


def outcomes(rows: RowList) -> list[ReturnOutcome]:
    """`(id, outcome)` rows, or `(id, outcome, run_at)` ones (`return_executions` of 0.4.0)."""
    return [ReturnOutcome(row[0], row[1], row[2] if len(row) > 2 else None) for row in rows]


def signals(rows: RowList) -> list[Signal]:
    """`(kind, execution_id)` rows."""
    return [Signal(row[0], row[1]) for row in rows]


def execution_info(rows: RowList) -> ExecutionInfo | None:
    """The row of `get_execution`, or None when the id is unknown (steps NULL read as [])."""
    if not rows:
        return None
    row = list(rows[0])
    if len(row) > 18 and row[18] is None:
        row[18] = []
    return ExecutionInfo(*row)


def execution_summaries(rows: RowList) -> list[ExecutionSummary]:
    """`list_executions` rows."""
    return [ExecutionSummary(*row) for row in rows]


def task_overview(rows: RowList) -> list[TaskOverview]:
    """`task_overview` rows, counts as ints."""
    return [TaskOverview(row[0], row[1], row[2], row[3], int(row[4]), int(row[5])) for row in rows]


def queue_stats(rows: RowList) -> list[QueueStats]:
    """`queue_stats` rows, counts as ints."""
    return [QueueStats(row[0], *map(int, row[1:])) for row in rows]


def orchestrators(rows: RowList) -> list[OrchestratorInfo]:
    """`orchestrator_stats` rows."""
    return [OrchestratorInfo(*row) for row in rows]


def submitted(rows: RowList) -> list[Submitted]:
    """`(id, outcome)` rows of `submit`/`submit_batch`."""
    return [Submitted(row[0], row[1]) for row in rows]


def flow_statuses(rows: RowList) -> list[FlowStatus]:
    """`flow_status` rows, counts as ints."""
    return [
        FlowStatus(
            row[0], row[1], row[2], int(row[3]), int(row[4]), int(row[5]), row[6], row[7], row[8]
        )
        for row in rows
    ]


_decode_json = JSONDecoder().raw_decode
_new = object.__new__
# The slot setters of ClaimedExecution, in field order; the unpacking fails at import if the
# dataclass gains or loses a field without this module following.
(
    _set_id,
    _set_task_key,
    _set_queue,
    _set_payload,
    _set_attempt,
    _set_max_attempts,
    _set_priority,
    _set_run_at,
    _set_timeout_ms,
    _set_lease,
    _set_steps,
) = (getattr(ClaimedExecution, f.name).__set__ for f in fields(ClaimedExecution))


def claimed_execution(row: Sequence[Any]) -> ClaimedExecution:
    """One `get_executions` row, its payload as JSON text, as a `ClaimedExecution`.

    This is the worker's per-job decoding, so it skips the frozen dataclass's `__init__`
    (one `object.__setattr__` per field) and sets the slots directly: half the cost, same
    object. PostgreSQL prints jsonb as canonical JSON, which `raw_decode` reads as it is.
    """
    claimed = _new(ClaimedExecution)
    _set_id(claimed, row[0])
    _set_task_key(claimed, row[1])
    _set_queue(claimed, row[2])
    _set_payload(claimed, None if row[3] is None else _decode_json(row[3])[0])
    _set_attempt(claimed, row[4])
    _set_max_attempts(claimed, row[5])
    _set_priority(claimed, row[6])
    _set_run_at(claimed, row[7])
    _set_timeout_ms(claimed, row[8])
    _set_lease(claimed, row[9])
    steps = row[10] if len(row) > 10 else None  # 0.6.0 on: the stored steps as JSON text
    _set_steps(claimed, None if steps is None else _decode_json(steps)[0])
    return claimed


def claimed_executions(rows: RowList) -> list[ClaimedExecution]:
    """Every row of a claim."""
    return list(map(claimed_execution, rows))
