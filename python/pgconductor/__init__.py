"""pgconductor: durable task execution on PostgreSQL alone.

Every scheduling rule lives in the `pgconductor` extension; this package registers
handlers, enqueues work and runs handlers by calling the extension's SQL functions.
"""

import logging

from pgconductor.clock import Clock, SystemClock
from pgconductor.conductor import Backoff, Conductor, Task, TaskContext
from pgconductor.db import DatabaseClient, RetryPolicy, SqlDatabaseClient
from pgconductor.errors import (
    ExtensionMissing,
    InvalidInput,
    InvalidState,
    NotFound,
    PayloadValidationError,
    PgConductorError,
    TransientError,
    VersionMismatch,
)
from pgconductor.orchestrator import Orchestrator, WorkerConfig
from pgconductor.schema import SUPPORTED_EXTENSION_VERSIONS, SchemaManager
from pgconductor.types import (
    ClaimedExecution,
    ExecutionInfo,
    ExecutionResult,
    OrchestratorInfo,
    QueueStats,
    ResultStatus,
    ReturnOutcome,
    Signal,
    TaskSpec,
)
from pgconductor.worker import Worker

__version__ = "0.2.0"

logging.getLogger("pgconductor").addHandler(logging.NullHandler())

__all__ = [
    "SUPPORTED_EXTENSION_VERSIONS",
    "Backoff",
    "ClaimedExecution",
    "Clock",
    "Conductor",
    "DatabaseClient",
    "ExecutionInfo",
    "ExecutionResult",
    "ExtensionMissing",
    "InvalidInput",
    "InvalidState",
    "NotFound",
    "Orchestrator",
    "OrchestratorInfo",
    "PayloadValidationError",
    "PgConductorError",
    "QueueStats",
    "ResultStatus",
    "RetryPolicy",
    "ReturnOutcome",
    "SchemaManager",
    "Signal",
    "SqlDatabaseClient",
    "SystemClock",
    "Task",
    "TaskContext",
    "TaskSpec",
    "TransientError",
    "VersionMismatch",
    "Worker",
    "WorkerConfig",
    "__version__",
]
