"""Waiting from outside for an execution to end: `conductor.wait(id)`.

A LISTEN on `pgconductor_finished` (one NOTIFY per statement that ended executions) wakes the
waiter, which then re-reads `get_execution`; a poll every `poll_interval` covers a lost
connection, a pooler that cannot LISTEN, or a client that is not SQL. An execution that has
already ended is returned at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any
from uuid import UUID

import psycopg

from pgconductor.db import SqlDatabaseClient
from pgconductor.errors import NotFound
from pgconductor.notifier import conninfo_from_url
from pgconductor.protocol import DatabaseClient
from pgconductor.types import ExecutionInfo

__all__ = ["FINISHED_CHANNEL", "FINISHED_STATES", "wait_for_execution"]

#: NOTIFY channel of executions that ended (empty payload).
FINISHED_CHANNEL = "pgconductor_finished"
#: The states in which an execution has ended for good.
FINISHED_STATES = frozenset({"completed", "failed", "cancelled"})

_LOG = logging.getLogger("pgconductor.wait")


async def _listen(client: DatabaseClient) -> psycopg.AsyncConnection[Any] | None:
    """A connection LISTENing on the finished channel, or None (poll only)."""
    if not isinstance(client, SqlDatabaseClient) or client.behind_pooler:
        return None
    try:
        conn = await psycopg.AsyncConnection.connect(
            conninfo_from_url(client.engine.url),
            autocommit=True,
            application_name="pgconductor-wait",
        )
    except (psycopg.Error, OSError) as exc:
        _LOG.debug("wait: cannot LISTEN (%s); polling", exc)
        return None
    await conn.execute(f"LISTEN {FINISHED_CHANNEL}")
    return conn


async def _next_notice(conn: psycopg.AsyncConnection[Any] | None, seconds: float) -> None:
    """Return at the next NOTIFY on the channel, or after `seconds`."""
    if conn is None:
        await asyncio.sleep(seconds)
        return
    try:
        async for _ in conn.notifies(timeout=seconds, stop_after=1):
            pass
    except (psycopg.Error, OSError):
        await asyncio.sleep(seconds)


async def wait_for_execution(
    client: DatabaseClient,
    execution_id: UUID,
    timeout: dt.timedelta | float | None = None,
    *,
    poll_interval: float = 1.0,
) -> ExecutionInfo:
    """Return the execution once it has ended (completed, failed or cancelled).

    Raises `NotFound` for an unknown id and `TimeoutError` when `timeout` passes first.
    """
    limit = timeout.total_seconds() if isinstance(timeout, dt.timedelta) else timeout
    conn = await _listen(client)
    try:
        async with asyncio.timeout(limit):
            while True:
                info = await client.get_execution(execution_id)
                if info is None:
                    raise NotFound(f"execution {execution_id} not found", sqlstate="P0002")
                if info.state in FINISHED_STATES:
                    return info
                await _next_notice(conn, poll_interval)
    except TimeoutError:
        raise TimeoutError(
            f"execution {execution_id} did not end within {limit:g} s"
            if limit is not None
            else f"execution {execution_id} did not end"
        ) from None
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
