"""Conductor against a real database: transactional invoke (async and sync), savepoints,
validation before SQL, chunked invoke_many, registered queues."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator

import pydantic
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pgconductor.conductor import Conductor
from pgconductor.db import SqlDatabaseClient, to_sqlalchemy_url
from pgconductor.errors import InvalidInput, PayloadValidationError
from pgtest import execute


class Order(pydantic.BaseModel):
    order_id: int
    note: str = ""


def count(url: str, task_key: str) -> int:
    """Live executions of a task, seen from outside any test transaction."""
    rows = execute(url, "SELECT count(*) FROM pgconductor.executions WHERE task_key = %s", task_key)
    return int(rows[0][0])


@pytest.fixture
async def engine(fresh_db_url: str) -> AsyncIterator[AsyncEngine]:
    """The application's own engine, with a table of its own to write next to invokes."""
    engine = create_async_engine(to_sqlalchemy_url(fresh_db_url))
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE orders (id int PRIMARY KEY)"))
    yield engine
    await engine.dispose()


@pytest.fixture
def sync_engine(engine: AsyncEngine) -> Iterator[Engine]:
    """A blocking engine on the same database."""
    sync = create_engine(engine.url)
    yield sync
    sync.dispose()


@pytest.fixture
async def conductor(engine: AsyncEngine) -> AsyncIterator[Conductor]:
    conductor = Conductor(engine)
    conductor.task("ship", queue="shipping", payload=Order)(lambda ctx, payload: None)
    yield conductor
    await conductor.close()


async def test_a_new_queue_is_created_outside_the_callers_transaction(
    conductor: Conductor, engine: AsyncEngine, fresh_db_url: str
) -> None:
    """Otherwise its partition's DDL would lock pgconductor.executions until the commit."""
    async with engine.connect() as conn:
        await conn.begin()
        await conductor.invoke("ship", {"order_id": 1}, queue="brand-new", conn=conn)
        assert execute(fresh_db_url, "SELECT count(*) FROM pgconductor.executions") == [(0,)]
        assert execute(
            fresh_db_url,
            "SELECT count(*) FROM pgconductor.queues WHERE name = 'brand-new'",
        ) == [(1,)]
        await conn.commit()
    assert count(fresh_db_url, "ship") == 1


async def test_invoke_commits_with_the_callers_transaction(
    conductor: Conductor, engine: AsyncEngine, fresh_db_url: str
) -> None:
    async with engine.connect() as conn:
        await conn.begin()
        await conn.execute(text("SELECT 1"))  # a real BEGIN, not SQLAlchemy's lazy one
        await conn.execute(text("INSERT INTO orders VALUES (1)"))
        eid = await conductor.invoke("ship", {"order_id": 1}, conn=conn)
        inside = await conn.execute(
            text("SELECT queue FROM pgconductor.executions WHERE id = :id"), {"id": eid}
        )
        assert inside.scalar_one() == "shipping"
        assert count(fresh_db_url, "ship") == 0  # not visible before commit
        await conn.commit()
    assert count(fresh_db_url, "ship") == 1
    assert execute(fresh_db_url, "SELECT id FROM orders") == [(1,)]


async def test_invoke_rolls_back_with_the_callers_transaction(
    conductor: Conductor, engine: AsyncEngine, fresh_db_url: str
) -> None:
    async with engine.connect() as conn:
        await conn.begin()
        await conn.execute(text("SELECT 1"))
        await conn.execute(text("INSERT INTO orders VALUES (2)"))
        await conductor.invoke_many("ship", [{"order_id": 2}, {"order_id": 3}], conn=conn)
        await conductor.invoke("ship", {"order_id": 4}, conn=conn)
        await conn.rollback()
    assert count(fresh_db_url, "ship") == 0
    assert execute(fresh_db_url, "SELECT id FROM orders") == []


async def test_a_failed_invoke_does_not_poison_the_callers_transaction(
    conductor: Conductor, engine: AsyncEngine, fresh_db_url: str
) -> None:
    async with engine.connect() as conn:
        await conn.begin()
        await conn.execute(text("INSERT INTO orders VALUES (5)"))
        with pytest.raises(InvalidInput) as caught:
            await conductor.invoke("ship", {"order_id": 5}, queue="Bad Queue", conn=conn)
        assert caught.value.sqlstate == "22023"
        with pytest.raises(InvalidInput):  # fails inside the caller's transaction
            await conductor.client.invoke("ship", {"order_id": 5}, queue="Bad Queue", conn=conn)
        await conn.execute(text("INSERT INTO orders VALUES (6)"))  # still usable: savepoint
        await conductor.invoke("ship", {"order_id": 6}, conn=conn)
        await conn.commit()
    assert execute(fresh_db_url, "SELECT id FROM orders ORDER BY id") == [(5,), (6,)]
    assert count(fresh_db_url, "ship") == 1


async def test_a_connection_without_a_transaction_gets_its_own(
    conductor: Conductor, engine: AsyncEngine, fresh_db_url: str
) -> None:
    async with engine.connect() as conn:
        assert not conn.in_transaction()
        await conductor.invoke("ship", {"order_id": 7}, conn=conn)
        assert not conn.in_transaction()
        assert count(fresh_db_url, "ship") == 1  # committed by the invoke itself


async def test_invalid_payloads_never_reach_sql(
    conductor: Conductor, engine: AsyncEngine, fresh_db_url: str
) -> None:
    async with engine.connect() as conn:
        await conn.begin()
        with pytest.raises(PayloadValidationError):
            await conductor.invoke("ship", {"order_id": "seven"}, conn=conn)
        assert not (
            await conn.execute(text("SELECT count(*) FROM pgconductor.executions"))
        ).scalar()
        await conn.commit()
    assert count(fresh_db_url, "ship") == 0


def test_sync_invoke_commits_and_rolls_back(
    conductor: Conductor, sync_engine: Engine, fresh_db_url: str
) -> None:
    with sync_engine.connect() as conn:
        conn.begin()
        conn.execute(text("SELECT 1"))
        conductor.invoke_sync("ship", {"order_id": 8}, conn=conn)
        conductor.invoke_many_sync("ship", [{"order_id": 9}] * 3, conn=conn)
        conn.rollback()
    assert count(fresh_db_url, "ship") == 0
    with sync_engine.begin() as conn:
        conn.execute(text("INSERT INTO orders VALUES (10)"))
        with pytest.raises(InvalidInput):
            conductor.invoke_sync("ship", {"order_id": 10}, queue="Nope!", conn=conn)
        client = conductor.client
        assert isinstance(client, SqlDatabaseClient)
        with pytest.raises(InvalidInput):  # fails inside the caller's transaction
            client.invoke_sync("ship", {"order_id": 10}, queue="Nope!", conn=conn)
        conductor.invoke_sync("ship", {"order_id": 10}, conn=conn)
    assert count(fresh_db_url, "ship") == 1
    assert execute(fresh_db_url, "SELECT id FROM orders") == [(10,)]
    conductor.invoke_sync("ship", {"order_id": 11})  # no connection: the client's own
    assert count(fresh_db_url, "ship") == 2


async def test_invoke_many_chunks_keep_input_order(conductor: Conductor, fresh_db_url: str) -> None:
    payloads = [{"order_id": n} for n in range(12_000)]
    ids = await conductor.invoke_many("ship", payloads, chunk_size=5000)
    assert len(ids) == 12_000
    rows = dict(
        execute(
            fresh_db_url,
            "SELECT id, (payload->>'order_id')::int FROM pgconductor.executions"
            " WHERE task_key = 'ship'",
        )
    )
    assert [rows[i] for i in ids] == list(range(12_000))


async def test_registered_queue_delay_and_dedupe(conductor: Conductor, fresh_db_url: str) -> None:
    await conductor.register_tasks()
    assert execute(fresh_db_url, "SELECT key, queue FROM pgconductor.tasks") == [
        ("ship", "shipping")
    ]
    later = await conductor.invoke("ship", {"order_id": 1}, delay=dt.timedelta(hours=1))
    first = await conductor.invoke("ship", {"order_id": 2}, dedupe_key="o-2")
    again = await conductor.invoke("ship", {"order_id": 2, "note": "v2"}, dedupe_key="o-2")
    assert first == again
    (row,) = execute(
        fresh_db_url,
        "SELECT run_at > now() + interval '50 minutes', queue FROM pgconductor.executions"
        " WHERE id = %s",
        later,
    )
    assert row == (True, "shipping")
    unknown = await conductor.invoke("not.registered.here", None)
    info = await conductor.client.get_execution(unknown)
    assert info is not None
    assert (info.queue, info.state) == ("default", "pending")
    assert await conductor.client.get_execution(uuid.uuid4()) is None
