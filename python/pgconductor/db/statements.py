"""The SQL text of the package: every statement `SqlDatabaseClient` sends, in one place.

Each pgconductor function call is spelled twice from one description of its arguments:
for SQLAlchemy (`text()` with `:name` binds, used on a caller's connection and with drivers
other than psycopg) and for psycopg itself (`%(name)b`: parameters sent in binary, which
costs the client far less than text for arrays). Both bind by name from the same dict and
cast every argument explicitly, so the server never has to guess a type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from sqlalchemy import text
from sqlalchemy.sql.elements import TextClause

from pgconductor.errors import InvalidInput

__all__ = [
    "CALLS",
    "SCHEMA_LOCK",
    "SCHEMA_LOCK_KEY",
    "SCHEMA_LOCK_SQL",
    "SQL_ONLY_RECORD",
    "SQL_ONLY_RECORD_TABLE",
    "SQL_ONLY_SCHEMA",
    "SQL_ONLY_VERSION",
    "Call",
    "alter_extension",
    "create_extension",
    "drop_extension",
]

#: Key of the advisory lock that serialises concurrent installs and upgrades.
SCHEMA_LOCK_KEY = 0x7067636F6E64  # "pgcond"
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]*$")


@dataclass(frozen=True, slots=True)
class Call:
    """One statement in both spellings: `text` for SQLAlchemy, `driver` for psycopg."""

    name: str
    text: TextClause
    driver: str


def _call(name: str, args: str = "", columns: str | None = None, tail: str = "") -> Call:
    """`SELECT` the function `pgconductor.<name>`; `args` is "name type, ...", cast by name."""
    pairs = [a.split(maxsplit=1) for a in args.split(",")] if args else []

    def spelled(bind: str) -> str:
        casts = ", ".join(f"CAST({bind.format(arg)} AS {kind})" for arg, kind in pairs)
        call = f"pgconductor.{name}({casts})"
        return f"SELECT {call}" if columns is None else f"SELECT {columns} FROM {call} {tail}"

    return Call(name, text(spelled(":{}")), spelled("%({})b"))


def _plain(name: str, sql: str) -> Call:
    """A statement that is not a pgconductor function call (catalog reads, locks)."""
    return Call(name, text(sql), re.sub(r":(\w+)", r"%(\1)b", sql))


#: A claimed row's payload arrives as JSON text: decoding it in the row builder is several
#: times cheaper than psycopg's jsonb loader (see `rows.claimed_execution`).
_CLAIMED = (
    "id, task_key, queue, payload::text, attempt, max_attempts, priority, run_at, timeout_ms, lease"
)
#: From 0.6.0 on a claimed row also carries its stored workflow steps (JSON text, or NULL).
_CLAIMED_STEPS = f"{_CLAIMED}, steps::text"
#: A parked workflow with nothing to wake it has run_at 'infinity', which Python cannot hold:
#: it is read as NULL.
_RUN_AT = "CASE WHEN isfinite(run_at) THEN run_at END"
_INFO = f"id, task_key, queue, state, attempts, priority, {_RUN_AT}, locked_by, last_error, result"

_INVOKE_ARGS = (
    "task_key text, payload jsonb, queue text, run_at timestamptz, priority integer,"
    " dedupe_key text"
)
_BATCH_ARGS = (
    "task_keys text[], payloads jsonb[], queues text[], run_ats timestamptz[],"
    " priorities integer[], dedupe_keys text[]"
)
#: The flow-control options common to every enqueue form (0.7.0 on).
_FLOW_SCALARS = "on_conflict text, throttle interval, debounce interval, debounce_max interval"
_FLOW_ARGS = f"concurrency_key text, {_FLOW_SCALARS}"

CALLS: dict[str, Call] = {
    call.name: call
    for call in (
        _call("invoke", _INVOKE_ARGS),
        _call("invoke_batch", _BATCH_ARGS, "id", "WITH ORDINALITY AS b(id, n) ORDER BY n"),
        # From 0.7.0 on: the flow-control options (sent only when one is given, so a plain
        # invoke works on every version).
        replace(
            _call("invoke", f"{_INVOKE_ARGS}, {_FLOW_ARGS}, start_by timestamptz"),
            name="invoke_flow",
        ),
        replace(
            _call(
                "invoke_batch",
                f"{_BATCH_ARGS}, concurrency_keys text[], {_FLOW_SCALARS}, start_bys timestamptz[]",
                "id",
                "WITH ORDINALITY AS b(id, n) ORDER BY n",
            ),
            name="invoke_batch_flow",
        ),
        _call("submit", f"{_INVOKE_ARGS}, {_FLOW_ARGS}, start_by timestamptz", "id, outcome"),
        _call(
            "submit_batch",
            f"{_BATCH_ARGS}, concurrency_keys text[], {_FLOW_SCALARS}, start_bys timestamptz[]",
            "id, outcome",
            "WITH ORDINALITY AS b(id, outcome, n) ORDER BY n",
        ),
        _call(
            "register_task",
            "key text, queue text, max_attempts integer,"
            " window_start time, window_end time, timezone text,"
            " backoff_base interval, backoff_cap interval, timeout interval",
        ),
        _call("declare_task", "key text, settings jsonb"),
        _call("create_queue", "queue text"),
        _call("drop_queue", "queue text, force boolean"),
        _call(
            "get_executions",
            "task_keys text[], orchestrator_id uuid, batch_size integer, queue text",
            _CLAIMED_STEPS,
        ),
        # Before 0.6.0 a claimed row had no steps.
        replace(
            _call(
                "get_executions",
                "task_keys text[], orchestrator_id uuid, batch_size integer, queue text",
                _CLAIMED,
            ),
            name="get_executions_0_5",
        ),
        _call(
            "save_steps",
            "orchestrator_id uuid, ids uuid[], leases integer[], keys text[], seqs integer[],"
            " results jsonb[]",
            "id, key, outcome",
        ),
        _call("emit_event", "name text, payload jsonb"),
        _call(
            "return_executions",
            "orchestrator_id uuid, ids uuid[],"
            " leases integer[], statuses text[], errors text[],"
            " results jsonb[], delays_ms integer[]",
            "*",  # (id, outcome), and run_at from 0.4.0 on
        ),
        _call(
            "heartbeat",
            "orchestrator_id uuid, version text, stale_after interval, info jsonb, held uuid[]",
            "kind, execution_id",
        ),
        _call("recover_stale", "limit integer", "id, outcome"),
        _call("release_orchestrator", "orchestrator_id uuid, keep uuid[]"),
        _call("request_shutdown", "orchestrator_id uuid"),
        _call("cancel", "execution_id uuid, reason text"),
        _call("retry", "execution_id uuid"),
        _call(
            "get_execution",
            "execution_id uuid",
            f"{_INFO}, finished_at, max_attempts, payload, created_at, locked_at, errors,"
            " cancel_reason, parent_id, steps",
        ),
        # Before 0.6.0 the function had no parent_id and steps.
        replace(
            _call(
                "get_execution",
                "execution_id uuid",
                f"{_INFO}, finished_at, max_attempts, payload, created_at, locked_at, errors,"
                " cancel_reason",
            ),
            name="get_execution_0_5",
        ),
        # Before 0.4.0 the function returned only these columns.
        replace(
            _call("get_execution", "execution_id uuid", f"{_INFO}, finished_at"),
            name="get_execution_0_3",
        ),
        _call(
            "list_executions",
            "state text, task_key text, queue text, limit integer, before uuid",
            f"id, task_key, queue, state, attempts, max_attempts, priority, {_RUN_AT}, created_at,"
            " finished_at, last_error",
        ),
        _call("retry_executions", "state text, task_key text, queue text, limit integer"),
        _call(
            "task_overview",
            "",
            "task_key, queue, registered, served, pending, running",
            "ORDER BY task_key, queue",
        ),
        _call(
            "queue_stats",
            "",
            "queue, pending, due, running, completed, failed, cancelled",
            "ORDER BY queue",
        ),
        _call(
            "orchestrator_stats",
            "",
            "id, state, version, started_at, last_heartbeat_at, running, info",
        ),
        _call("prune_finished", "older_than interval, limit integer"),
        _call("pause_queue", "queue text"),
        _call("resume_queue", "queue text"),
        _call("pause_task", "task_key text"),
        _call("resume_task", "task_key text"),
        _call("cancel_by_key", "task_key text, dedupe_key text, concurrency_key text, reason text"),
        _call("set_fair_share", "queue text, enabled boolean"),
        _call("set_key_weight", "queue text, key text, weight integer"),
        _call("maintain", "limit integer"),
        _call("has_due_work", "queue text, task_keys text[]"),
        _call(
            "flow_status",
            "queue text",
            "queue, task_key, concurrency_key, running, pending, parked, max_running,"
            " max_running_per_key, paused",
            "ORDER BY queue, task_key, concurrency_key NULLS FIRST",
        ),
        # Schedules, event subscriptions and table triggers (0.8.0 on).
        _call(
            "schedule",
            "name text, task_key text, cron text, payload jsonb, tz text, queue text,"
            " missed text, overlap text, priority integer, static boolean, catch_up_max integer",
        ),
        _call("unschedule", "name text"),
        _call("pause_schedule", "name text"),
        _call("resume_schedule", "name text"),
        _call("backfill", "name text, start timestamptz, end_at timestamptz"),
        _call(
            "schedules",
            "",
            "name, task_key, cron, tz, next_run_at, last_run_at, paused, static, missed, overlap,"
            " queue",
        ),
        _call("sync_static_schedules", "names text[], task_keys text[]"),
        _call("occurrence_of", "execution_id uuid"),
        _call("tick", "limit integer"),
        _call(
            "subscribe",
            "task_key text, event text, match jsonb, fields text[], queue text, static boolean,"
            " priority integer",
        ),
        _call("unsubscribe", "task_key text, event text"),
        _call(
            "subscriptions",
            "",
            "id, task_key, event, match, fields, queue, priority, static, created_at",
        ),
        _call(
            "sync_static_subscriptions", "task_keys text[], declared_tasks text[], events text[]"
        ),
        _call(
            "subscribe_table",
            "task_key text, table_name text, ops text[], columns text[], when_clause text,"
            " queue text, static boolean",
        ),
        _call("unsubscribe_table", "task_key text, table_name text"),
        _call(
            "table_subscriptions",
            "",
            "task_key, table_name, ops, columns, when_clause, queue, trigger_name, static,"
            " created_at",
        ),
        _call(
            "sync_static_table_subscriptions",
            "task_keys text[], declared_tasks text[], tables text[]",
        ),
        _call("version"),
        _plain(
            "extension_version",
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pgconductor'",
        ),
        _plain(
            "sql_install_version",
            "SELECT s.version FROM pgconductor.sql_install AS s"
            " ORDER BY s.applied_at DESC, s.version DESC LIMIT 1",
        ),
        _plain(
            "available_versions",
            "SELECT version FROM pg_catalog.pg_available_extension_versions"
            " WHERE name = 'pgconductor' ORDER BY version",
        ),
    )
}

#: Taken (in the same transaction) before installing or upgrading the extension.
#: The schema lock, then a lock timeout for the rest of the transaction: an ALTER EXTENSION
#: queued behind a long transaction would otherwise make every worker's statement queue
#: behind it; it gives up after 2 s instead (55P03, retried by the caller's policy).
SCHEMA_LOCK_SQL = (
    "SELECT pg_catalog.pg_advisory_xact_lock(CAST({key} AS bigint)),"
    " pg_catalog.set_config('lock_timeout', '2s', true)"
)
SCHEMA_LOCK = text(SCHEMA_LOCK_SQL.format(key=":key"))


def _checked_version(version: str | None) -> str:
    """A version string safe to quote in DDL (DDL takes no bind parameters)."""
    if version is None or not _VERSION_RE.match(version):
        raise InvalidInput(f"invalid extension version {version!r}", sqlstate="22023")
    return version


def create_extension(version: str | None) -> TextClause:
    """`CREATE EXTENSION IF NOT EXISTS pgconductor [VERSION '...']`."""
    sql = "CREATE EXTENSION IF NOT EXISTS pgconductor"
    if version is not None:
        sql += f" VERSION '{_checked_version(version)}'"
    return text(sql)


def alter_extension(to: str | None) -> TextClause:
    """`ALTER EXTENSION pgconductor UPDATE [TO '...']`."""
    sql = "ALTER EXTENSION pgconductor UPDATE"
    if to is not None:
        sql += f" TO '{_checked_version(to)}'"
    return text(sql)


def drop_extension() -> TextClause:
    """`DROP EXTENSION IF EXISTS pgconductor` (its schema and every execution go with it)."""
    return text("DROP EXTENSION IF EXISTS pgconductor")


#: Plain-SQL installs (`schema install --sql-only`, no extension files on the server): the
#: schema the extension would own, and the record of every script run into it, which
#: `pgconductor.version()` reads from 0.5.0 on. psycopg spelling (`%(name)s`).
SQL_ONLY_SCHEMA = "CREATE SCHEMA pgconductor"
SQL_ONLY_RECORD_TABLE = (
    "CREATE TABLE IF NOT EXISTS pgconductor.sql_install ("
    " version text NOT NULL, script text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp())"
)
SQL_ONLY_VERSION = CALLS["sql_install_version"].driver
SQL_ONLY_RECORD = (
    "INSERT INTO pgconductor.sql_install (version, script) VALUES (%(version)s, %(script)s)"
)
