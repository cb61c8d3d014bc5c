"""pgconductor: durable task execution on PostgreSQL alone.

Every scheduling rule lives in the `pgconductor` extension; this package registers
handlers, enqueues work and runs handlers by calling the extension's SQL functions.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    __version__: str

    from pgconductor.batching import BatchContext
    from pgconductor.clock import Clock, SystemClock
    from pgconductor.conductor import Backoff, Conductor, Task, TaskContext
    from pgconductor.db import DatabaseClient, RetryPolicy, SqlDatabaseClient
    from pgconductor.errors import (
        Cancelled,
        ExtensionMissing,
        Fatal,
        InvalidInput,
        InvalidState,
        NotFound,
        PayloadValidationError,
        PgConductorError,
        RetryAfter,
        TransientError,
        VersionMismatch,
    )
    from pgconductor.orchestrator import Orchestrator, WorkerConfig
    from pgconductor.schema import SUPPORTED_EXTENSION_VERSIONS, SchemaManager
    from pgconductor.sources import EventSource, Schedule, TableSource
    from pgconductor.types import (
        ClaimedExecution,
        ExecutionInfo,
        ExecutionResult,
        ExecutionSummary,
        OrchestratorInfo,
        QueueStats,
        ResultStatus,
        ReturnOutcome,
        Signal,
        TaskOverview,
        TaskSpec,
    )
    from pgconductor.worker import Worker
    from pgconductor.workflow import ChildFailed, ChildTimedOut, NonDeterminism


logging.getLogger("pgconductor").addHandler(logging.NullHandler())

#: Where each public name lives. Names are imported on first use, so that importing a
#: light module of the package (the CLI's `--help`) does not load SQLAlchemy and psycopg.
_HOMES = {
    "BatchContext": "pgconductor.batching",
    "Clock": "pgconductor.clock",
    "SystemClock": "pgconductor.clock",
    "Backoff": "pgconductor.conductor",
    "Conductor": "pgconductor.conductor",
    "Task": "pgconductor.conductor",
    "TaskContext": "pgconductor.conductor",
    "DatabaseClient": "pgconductor.db",
    "RetryPolicy": "pgconductor.db",
    "SqlDatabaseClient": "pgconductor.db",
    "Cancelled": "pgconductor.errors",
    "ExtensionMissing": "pgconductor.errors",
    "Fatal": "pgconductor.errors",
    "InvalidInput": "pgconductor.errors",
    "InvalidState": "pgconductor.errors",
    "NotFound": "pgconductor.errors",
    "PayloadValidationError": "pgconductor.errors",
    "PgConductorError": "pgconductor.errors",
    "RetryAfter": "pgconductor.errors",
    "TransientError": "pgconductor.errors",
    "VersionMismatch": "pgconductor.errors",
    "Orchestrator": "pgconductor.orchestrator",
    "WorkerConfig": "pgconductor.orchestrator",
    "SUPPORTED_EXTENSION_VERSIONS": "pgconductor.schema",
    "SchemaManager": "pgconductor.schema",
    "EventSource": "pgconductor.sources",
    "Schedule": "pgconductor.sources",
    "TableSource": "pgconductor.sources",
    "ClaimedExecution": "pgconductor.types",
    "ExecutionInfo": "pgconductor.types",
    "ExecutionResult": "pgconductor.types",
    "ExecutionSummary": "pgconductor.types",
    "OrchestratorInfo": "pgconductor.types",
    "QueueStats": "pgconductor.types",
    "ResultStatus": "pgconductor.types",
    "ReturnOutcome": "pgconductor.types",
    "Signal": "pgconductor.types",
    "TaskOverview": "pgconductor.types",
    "TaskSpec": "pgconductor.types",
    "Worker": "pgconductor.worker",
    "ChildFailed": "pgconductor.workflow",
    "ChildTimedOut": "pgconductor.workflow",
    "NonDeterminism": "pgconductor.workflow",
}


def _version() -> str:
    """The installed distribution's version: python/pyproject.toml is its only source."""
    from importlib import metadata  # costs ~30 ms: read on first use of `__version__`

    try:
        return metadata.version("pgconductor")
    except metadata.PackageNotFoundError:  # imported from a source tree never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562); `__version__` too."""
    if name == "__version__":
        value: Any = _version()
    else:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module 'pgconductor' has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names, imported or not."""
    return sorted(set(globals()) | set(_HOMES))


__all__ = [
    "SUPPORTED_EXTENSION_VERSIONS",
    "Backoff",
    "BatchContext",
    "Cancelled",
    "ChildFailed",
    "ChildTimedOut",
    "ClaimedExecution",
    "Clock",
    "Conductor",
    "DatabaseClient",
    "EventSource",
    "ExecutionInfo",
    "ExecutionResult",
    "ExecutionSummary",
    "ExtensionMissing",
    "Fatal",
    "InvalidInput",
    "InvalidState",
    "NonDeterminism",
    "NotFound",
    "Orchestrator",
    "OrchestratorInfo",
    "PayloadValidationError",
    "PgConductorError",
    "QueueStats",
    "ResultStatus",
    "RetryAfter",
    "RetryPolicy",
    "ReturnOutcome",
    "Schedule",
    "SchemaManager",
    "Signal",
    "SqlDatabaseClient",
    "SystemClock",
    "TableSource",
    "Task",
    "TaskContext",
    "TaskOverview",
    "TaskSpec",
    "TransientError",
    "VersionMismatch",
    "Worker",
    "WorkerConfig",
    "__version__",
]
