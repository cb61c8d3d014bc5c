"""SqlDatabaseClient against a real database: every method, error mapping, real retries."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from pgconductor.db import RetryPolicy, SqlDatabaseClient
from pgconductor.errors import InvalidInput, InvalidState, NotFound, TransientError
from pgconductor.types import ExecutionResult, ResultStatus, TaskSpec
from pgtest import EXTENSION_VERSION, execute, libpq_url, wait_until


def due_now(url: str, queue: str = "default") -> int:
    """Pending executions of a queue whose run_at has passed."""
    rows = execute(
        url,
        "SELECT count(*) FROM pgconductor.executions"
        " WHERE queue = %s AND locked_by IS NULL AND run_at <= now()",
        queue,
    )
    return int(rows[0][0])


def retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The retry warnings logged so far."""
    return [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()]


async def test_version_and_missing_extension(
    sql_client: SqlDatabaseClient, bare_db_url: str
) -> None:
    assert await sql_client.version() == EXTENSION_VERSION
    # a plain-SQL install (`make test-sql-only`) has no pg_extension row: version() reads its record
    sql_only = os.environ.get("PGCONDUCTOR_TEST_SQL_ONLY") == "1"
    expected_row = None if sql_only else EXTENSION_VERSION
    assert await sql_client.extension_version() == expected_row
    assert EXTENSION_VERSION in await sql_client.available_versions()
    bare = SqlDatabaseClient(bare_db_url)
    try:
        assert await bare.version() is None
        assert await bare.extension_version() is None
    finally:
        await bare.close()


async def test_install_and_upgrade_on_a_bare_database(bare_db_url: str) -> None:
    client = SqlDatabaseClient(bare_db_url)
    try:
        results = await asyncio.gather(*(client.install_extension() for _ in range(3)))
        # concurrent installs serialise on the advisory lock
        assert results == [EXTENSION_VERSION] * 3
        assert await client.upgrade_extension(EXTENSION_VERSION) == EXTENSION_VERSION
        assert await client.upgrade_extension() == EXTENSION_VERSION
        with pytest.raises(InvalidInput):
            await client.upgrade_extension("9.9.9")
    finally:
        await client.close()


async def test_register_task_writes_every_setting(
    sql_client: SqlDatabaseClient, db_url: str
) -> None:
    spec = TaskSpec(
        key="reg.one",
        queue="reg",
        max_attempts=7,
        window_start=dt.time(22),
        window_end=dt.time(6),
        timezone="Europe/Paris",
        backoff_base=dt.timedelta(seconds=2),
        backoff_cap=dt.timedelta(minutes=5),
        timeout=dt.timedelta(seconds=30),
    )
    await sql_client.register_task(spec)
    await sql_client.register_task(spec)  # upsert
    (row,) = execute(
        db_url,
        "SELECT queue, max_attempts, window_start, window_end, timezone, backoff_base,"
        " backoff_cap, timeout FROM pgconductor.tasks WHERE key = 'reg.one'",
    )
    assert row == (
        "reg",
        7,
        dt.time(22),
        dt.time(6),
        "Europe/Paris",
        dt.timedelta(seconds=2),
        dt.timedelta(minutes=5),
        dt.timedelta(seconds=30),
    )


async def test_invoke_and_invoke_batch(sql_client: SqlDatabaseClient, db_url: str) -> None:
    one = await sql_client.invoke("inv.t", {"n": 0}, queue="inv", priority=2)
    ids = await sql_client.invoke_batch(
        ["inv.t"] * 3,
        [{"n": 1}, {"n": 2}, {"n": 3}],
        queues=["inv", "inv", None],
        priorities=[None, 5, None],
        run_ats=[None, None, dt.datetime(2999, 1, 1, tzinfo=dt.UTC)],
    )
    assert len(set(ids)) == 3
    found = execute(
        db_url,
        "SELECT id, queue, payload, priority, run_at > now() + interval '1 year'"
        " FROM pgconductor.executions WHERE task_key = 'inv.t'",
    )
    rows = {r[0]: r[1:] for r in found}
    assert rows[one] == ("inv", {"n": 0}, 2, False)
    assert [rows[i][1]["n"] for i in ids] == [1, 2, 3]  # ids come back in input order
    assert rows[ids[1]][2] == 5
    assert rows[ids[2]] == ("default", {"n": 3}, 0, True)


async def test_dedupe_key_replaces_a_pending_execution(
    sql_client: SqlDatabaseClient, db_url: str
) -> None:
    first = await sql_client.invoke("dd.t", {"v": 1}, dedupe_key="k")
    second = await sql_client.invoke("dd.t", {"v": 2}, dedupe_key="k")
    assert first == second
    assert execute(db_url, "SELECT payload FROM pgconductor.executions WHERE id = %s", first) == [
        ({"v": 2},)
    ]


async def test_claim_complete_and_inspect(sql_client: SqlDatabaseClient) -> None:
    orchestrator = uuid.uuid4()
    assert await sql_client.create_queue("cc") is True
    assert await sql_client.create_queue("cc") is False
    ids = await sql_client.invoke_batch(
        ["cc.t"] * 3, [{"i": i} for i in range(3)], queues=["cc"] * 3
    )
    claimed = await sql_client.get_executions(orchestrator, "cc", ["cc.t"], 10)
    assert sorted(c.id for c in claimed) == sorted(ids)
    assert {c.attempt for c in claimed} == {1}
    assert all(c.queue == "cc" and c.max_attempts == 3 for c in claimed)
    assert await sql_client.get_executions(orchestrator, "cc", None, 10) == []
    results = [
        ExecutionResult(claimed[0].id, 1, ResultStatus.COMPLETED, result={"ok": True}),
        ExecutionResult(claimed[1].id, 1, ResultStatus.FAILED, error="boom"),
        ExecutionResult(claimed[2].id, 1, ResultStatus.RELEASED, delay_ms=0),
    ]
    outcomes = await sql_client.return_executions(orchestrator, results)
    assert [(o.id, o.outcome) for o in outcomes] == [
        (claimed[0].id, "completed"),
        (claimed[1].id, "retry_scheduled"),
        (claimed[2].id, "released"),
    ]
    stale = await sql_client.return_executions(orchestrator, results[:1])
    assert stale[0].outcome == "stale"
    done = await sql_client.get_execution(claimed[0].id)
    assert done is not None
    assert (done.state, done.result, done.attempts) == ("completed", {"ok": True}, 1)
    assert done.finished_at is not None
    retried = await sql_client.get_execution(claimed[1].id)
    assert retried is not None
    assert (retried.state, retried.last_error) == ("pending", "boom")
    assert await sql_client.get_execution(uuid.uuid4()) is None
    stats = {s.queue: s for s in await sql_client.queue_stats()}
    assert stats["cc"].completed == 1
    assert stats["cc"].pending == 2


async def test_fatal_result_then_retry_and_prune(sql_client: SqlDatabaseClient) -> None:
    orchestrator = uuid.uuid4()
    eid = await sql_client.invoke("fr.t", {}, queue="fr")
    (claimed,) = await sql_client.get_executions(orchestrator, "fr", None, 1)
    (outcome,) = await sql_client.return_executions(
        orchestrator,
        [ExecutionResult(eid, claimed.lease, ResultStatus.FATAL, error="bad")],
    )
    assert outcome.outcome == "failed"
    assert await sql_client.retry(eid) == eid
    info = await sql_client.get_execution(eid)
    assert info is not None
    assert (info.state, info.attempts) == ("pending", 0)
    with pytest.raises(InvalidState) as caught:
        await sql_client.retry(eid)
    assert caught.value.sqlstate == "55000"
    assert await sql_client.cancel(eid, "no longer needed") == "cancelled"
    assert await sql_client.cancel(eid) == "already_finished"
    assert await sql_client.cancel(uuid.uuid4()) == "not_found"
    assert await sql_client.prune_finished(dt.timedelta(0), limit=100) >= 1
    assert await sql_client.get_execution(eid) is None


async def test_cancel_running_signals_its_orchestrator(
    sql_client: SqlDatabaseClient,
) -> None:
    orchestrator = uuid.uuid4()
    eid = await sql_client.invoke("cr.t", {}, queue="cr")
    await sql_client.get_executions(orchestrator, "cr", None, 1)
    assert await sql_client.cancel(eid) == "cancelling"
    signals = await sql_client.heartbeat(orchestrator, "0.1.0", dt.timedelta(seconds=30), {})
    assert [(s.kind, s.execution_id) for s in signals] == [("cancel", eid)]
    assert await sql_client.heartbeat(orchestrator, "0.1.0", dt.timedelta(seconds=30), {}) == []
    (outcome,) = await sql_client.return_executions(
        orchestrator, [ExecutionResult(eid, 1, ResultStatus.RELEASED)]
    )
    assert outcome.outcome == "cancelled"


async def test_shutdown_release_and_recovery(sql_client: SqlDatabaseClient) -> None:
    alive, doomed = uuid.uuid4(), uuid.uuid4()
    await sql_client.heartbeat(alive, "0.1.0", dt.timedelta(minutes=5), {"pid": 1})
    assert await sql_client.request_shutdown(alive) == 1
    signals = await sql_client.heartbeat(alive, "0.1.0", dt.timedelta(minutes=5), {})
    assert [s.kind for s in signals] == ["shutdown"]
    assert await sql_client.request_shutdown() >= 1

    eid = await sql_client.invoke("sr.t", {}, queue="sr")
    await sql_client.heartbeat(doomed, "0.1.0", dt.timedelta(milliseconds=1), {})
    await sql_client.get_executions(doomed, "sr", None, 1)
    recovered = await wait_until(sql_client.recover_stale)
    assert [(r.id, r.outcome) for r in recovered] == [(eid, "released")]

    other = uuid.uuid4()
    await sql_client.get_executions(other, "sr", None, 1)
    assert await sql_client.release_orchestrator(other) == 1
    assert await sql_client.release_orchestrator(other) == 0


async def test_queue_errors_carry_sqlstate_and_hint(
    sql_client: SqlDatabaseClient,
) -> None:
    with pytest.raises(InvalidInput) as bad_queue:
        await sql_client.invoke("e.t", {}, queue="Not A Queue!")
    assert bad_queue.value.sqlstate == "22023"
    assert "queue" in str(bad_queue.value)
    assert bad_queue.value.hint
    with pytest.raises(InvalidState) as default:
        await sql_client.drop_queue("default")
    assert default.value.sqlstate == "42501"
    await sql_client.invoke("e.t", {}, queue="busy")
    with pytest.raises(InvalidState) as busy:
        await sql_client.drop_queue("busy")
    assert busy.value.sqlstate == "55006"
    assert await sql_client.drop_queue("busy", force=True) is True
    assert await sql_client.drop_queue("busy") is False


async def test_unknown_orchestrator_is_not_found(sql_client: SqlDatabaseClient) -> None:
    results = [ExecutionResult(uuid.uuid4(), 1, ResultStatus.COMPLETED)]
    with pytest.raises(NotFound) as caught:
        await sql_client.return_executions(uuid.uuid4(), results)
    assert caught.value.sqlstate == "P0002"
    assert caught.value.hint


async def test_bad_batch_size_is_invalid_input(sql_client: SqlDatabaseClient) -> None:
    with pytest.raises(InvalidInput) as caught:
        await sql_client.get_executions(uuid.uuid4(), "default", None, -1)
    assert caught.value.sqlstate == "22023"


# -- transient errors, for real ----------------------------------------------------------


@pytest.fixture
async def victim(db_url: str) -> AsyncIterator[SqlDatabaseClient]:
    """A one-connection client whose backend can be found by application_name."""
    name = f"victim_{uuid.uuid4().hex[:8]}"
    client = SqlDatabaseClient(
        db_url,
        retry=RetryPolicy(max_attempts=6, base=0.02, cap=0.2),
        pool_size=1,
        max_overflow=0,
        engine_options={"connect_args": {"application_name": name}},
    )
    client.application_name = name  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        await client.close()


async def test_terminated_connection_is_retried(
    victim: SqlDatabaseClient, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await victim.invoke("term.t", {})
    name = victim.application_name  # type: ignore[attr-defined]
    killed = execute(
        db_url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
        name,
    )
    assert killed == [(1,)]
    caplog.set_level(logging.WARNING, logger="pgconductor.db")
    eid = await victim.invoke("term.t", {"after": "kill"})  # the pooled connection is dead
    assert await victim.get_execution(eid) is not None
    assert "retry 1" in caplog.text


async def test_lock_timeout_is_retried_until_the_lock_is_gone(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pgconductor.db")
    client = SqlDatabaseClient(
        db_url,
        retry=RetryPolicy(max_attempts=50, base=0.02, cap=0.05),
        engine_options={"connect_args": {"options": "-c lock_timeout=50"}},
    )
    locker = psycopg.connect(libpq_url(db_url))
    try:
        locker.execute("LOCK TABLE pgconductor.queues IN ACCESS EXCLUSIVE MODE")
        call = asyncio.create_task(client.create_queue("locked_q"))
        await wait_until(lambda: "55P03" in caplog.text)
        assert not call.done()
        locker.commit()
        assert await call is True
    finally:
        locker.close()
        await client.close()


async def test_retries_give_up_with_a_transient_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = SqlDatabaseClient(
        "postgresql://postgres@127.0.0.1:1/none",
        retry=RetryPolicy(3, base=0.001, cap=0.002),
    )
    caplog.set_level(logging.WARNING, logger="pgconductor.db")
    try:
        with pytest.raises(TransientError):
            await client.queue_stats()
        assert len(retries(caplog)) == 2
        aborted = asyncio.Event()
        aborted.set()
        caplog.clear()
        with pytest.raises(TransientError):
            await client.with_abort(aborted).queue_stats()
        assert retries(caplog) == []
    finally:
        await client.close()


async def test_non_transient_errors_are_not_retried(
    sql_client: SqlDatabaseClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pgconductor.db")
    with pytest.raises(InvalidInput):
        await sql_client.invoke("x.t", {}, queue="BAD QUEUE")
    assert retries(caplog) == []


def test_sync_invoke_without_a_connection(db_url: str) -> None:
    client = SqlDatabaseClient(db_url)
    try:
        eid = client.invoke_sync("sync.t", {"s": 1}, queue="syncq")
        ids = client.invoke_batch_sync(["sync.t"] * 2, [{}, {}])
    finally:
        asyncio.run(client.close())
    rows = execute(db_url, "SELECT count(*) FROM pgconductor.executions WHERE task_key = 'sync.t'")
    assert rows == [(3,)]
    assert eid not in ids
    assert due_now(db_url, "syncq") == 1
