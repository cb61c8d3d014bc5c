"""An extension update queued behind a long transaction gives up and retries instead of
making every worker's statement queue behind it.

A session holds a transaction that has read pgconductor.executions; the 0.5.0 -> current
update needs an exclusive lock on that table. While it waits, an invoke (which the reader
alone would not block) queues behind it. With the schema lock's 2 s lock timeout, the update
steps aside within seconds and the invoke completes while the reader still holds its lock.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from pgconductor.db import RetryPolicy, SqlDatabaseClient
from pgconductor.errors import TransientError
from pgtest import EXTENSION_VERSION, execute, libpq_url


async def test_an_update_behind_a_long_transaction_does_not_stall_invokes(bare_db_url: str) -> None:
    execute(bare_db_url, "CREATE EXTENSION pgconductor VERSION '0.5.0'")
    upgrader = SqlDatabaseClient(bare_db_url, retry=RetryPolicy(max_attempts=3, base=0.2, cap=0.5))
    async with await psycopg.AsyncConnection.connect(libpq_url(bare_db_url)) as reader:
        await reader.execute("SELECT count(*) FROM pgconductor.executions")  # holds AccessShare
        update = asyncio.create_task(upgrader.upgrade_extension(EXTENSION_VERSION))
        try:
            await asyncio.sleep(0.5)  # the update is now queued for its exclusive lock
            # Without the lock timeout this waits for the reader, which never lets go here.
            invoked = await asyncio.wait_for(
                asyncio.to_thread(execute, bare_db_url, "SELECT pgconductor.invoke('t')"), 30
            )
            assert len(invoked) == 1
            # The update gave up (55P03, transient) after its retries while the reader held on.
            with pytest.raises(TransientError) as raised:
                await update
            assert raised.value.sqlstate == "55P03"
        finally:
            update.cancel()
            await reader.rollback()
            await upgrader.close()
    # Once the reader is gone the update applies.
    client = SqlDatabaseClient(bare_db_url)
    try:
        assert await client.upgrade_extension(EXTENSION_VERSION) == EXTENSION_VERSION
    finally:
        await client.close()
