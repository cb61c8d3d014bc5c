"""Flow control through the Python API on a real database (extension 0.7.0): what submit
says it did, limits held by running workers, pause and resume, cancel by key, start-by
deadlines and retention run by the orchestrator's maintenance, bad input as one-line
errors, and an older extension told apart."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import create_engine
from typer.testing import CliRunner

from integration.support import finished
from pgconductor import Conductor, TaskContext, cli
from pgconductor.errors import InvalidInput, InvalidState, NotFound, PgConductorError
from pgconductor.orchestrator import Orchestrator
from pgtest import execute, libpq_url

WaitUntil = Callable[..., Any]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture
async def run_orchestrator(conductor: Conductor) -> AsyncIterator[Callable[..., Any]]:
    """`await run_orchestrator(**options)`: an orchestrator polling every 50 ms."""
    started: list[Orchestrator] = []

    async def run(**options: Any) -> Orchestrator:
        options.setdefault("heartbeat_interval", 30.0)
        options.setdefault("stale_after", 120.0)
        options.setdefault("poll_interval", 0.05)
        orchestrator = Orchestrator(conductor, **options)
        await orchestrator.start()
        started.append(orchestrator)
        return orchestrator

    yield run
    for orchestrator in started:
        await orchestrator.stop()


# -- submit: what each enqueue did -------------------------------------------------------


async def test_submit_reports_created_updated_and_kept(conductor: Conductor) -> None:
    first = await conductor.submit("t", {"n": 1}, dedupe_key="order-1")
    assert first.outcome == "created"
    second = await conductor.submit("t", {"n": 2}, dedupe_key="order-1")
    assert (second.id, second.outcome) == (first.id, "updated")
    kept = await conductor.submit("t", {"n": 3}, dedupe_key="order-1", on_conflict="keep")
    assert (kept.id, kept.outcome) == (first.id, "kept")
    info = await conductor.get(first.id)
    assert info is not None
    assert info.payload == {"n": 2}  # keep left the live one unchanged


async def test_throttle_returns_the_execution_of_the_period(conductor: Conductor) -> None:
    first = await conductor.submit("t", {"n": 1}, dedupe_key="user-1", throttle=60)
    again = await conductor.submit("t", {"n": 2}, dedupe_key="user-1", throttle=60)
    other = await conductor.submit("t", {"n": 3}, dedupe_key="user-2", throttle=60)
    assert [first.outcome, again.outcome, other.outcome] == ["created", "throttled", "created"]
    assert again.id == first.id
    assert other.id != first.id
    # invoke returns the same id a throttled submit would
    assert await conductor.invoke("t", {}, dedupe_key="user-1", throttle=60) == first.id


async def test_debounce_moves_the_pending_one_with_the_last_payload(
    conductor: Conductor,
) -> None:
    first = await conductor.submit("t", {"n": 1}, dedupe_key="doc-1", debounce=30)
    before = await conductor.get(first.id)
    again = await conductor.submit("t", {"n": 2}, dedupe_key="doc-1", debounce=30)
    assert (again.id, again.outcome) == (first.id, "debounced")
    after = await conductor.get(first.id)
    assert before is not None
    assert after is not None
    assert before.run_at is not None
    assert after.run_at is not None
    assert after.run_at >= before.run_at
    assert after.run_at > now() + dt.timedelta(seconds=20)  # one period after the last call
    assert after.payload == {"n": 2}


async def test_submit_many_reports_each_payload_in_order(conductor: Conductor) -> None:
    answer = await conductor.submit_many(
        "t", [{"n": 1}, {"n": 2}, {"n": 3}], dedupe_keys=["a", "b", "a"], chunk_size=2
    )
    assert [s.outcome for s in answer] == ["created", "created", "updated"]
    assert answer[2].id == answer[0].id
    assert answer[1].id != answer[0].id


async def test_concurrency_keys_and_deadlines_are_stored(
    conductor: Conductor, fresh_db_url: str
) -> None:
    deadline = now() + dt.timedelta(hours=1)
    one = await conductor.invoke("t", {}, concurrency_key="tenant-1", start_by=deadline)
    many = await conductor.invoke_many("t", [{}, {}], concurrency_keys=["tenant-2", None])
    query = "SELECT id, concurrency_key, start_by FROM pgconductor.executions"
    rows = {row[0]: row[1:] for row in execute(fresh_db_url, query)}
    assert rows[one] == ("tenant-1", deadline)
    assert rows[many[0]] == ("tenant-2", None)
    assert rows[many[1]] == (None, None)


def test_the_blocking_form_on_the_callers_connection(
    conductor: Conductor, fresh_db_url: str
) -> None:
    engine = create_engine(
        libpq_url(fresh_db_url).replace("postgresql://", "postgresql+psycopg://")
    )
    try:
        with engine.connect() as conn:
            transaction = conn.begin()
            dropped = conductor.invoke_sync("t", {}, concurrency_key="k", conn=conn)
            transaction.rollback()  # the enqueue went with the caller's transaction
            with conn.begin():
                made = conductor.invoke_sync("t", {}, concurrency_key="k", conn=conn)
    finally:
        engine.dispose()
    found = execute(fresh_db_url, "SELECT id, concurrency_key FROM pgconductor.executions")
    assert found == [(made, "k")]
    assert dropped != made


# -- task limits --------------------------------------------------------------------------


async def test_task_limits_are_declared_and_sql_made_ones_kept(
    conductor: Conductor, fresh_db_url: str
) -> None:
    execute(fresh_db_url, """SELECT pgconductor.declare_task('fetch', '{"rate_limit": 5}')""")

    @conductor.task("fetch", max_running=3, rate_period=2, keep_failed=dt.timedelta(days=1))
    async def fetch(ctx: TaskContext, payload: Any) -> None:
        return None

    kept = await conductor.register_tasks()
    assert kept == {"fetch": {"rate_limit": 5}}
    assert (fetch.spec.max_running, fetch.spec.rate_limit) == (3, 5)
    row = execute(
        fresh_db_url,
        "SELECT max_running, rate_limit, rate_period, keep_failed, keep_completed"
        " FROM pgconductor.tasks WHERE key = 'fetch'",
    )
    assert row == [(3, 5, dt.timedelta(seconds=2), dt.timedelta(days=1), dt.timedelta(days=7))]


async def test_the_per_key_limit_holds_while_workers_run(
    conductor: Conductor, run_orchestrator: Callable[..., Any], wait_until: WaitUntil
) -> None:
    running: collections.Counter[str] = collections.Counter()
    peak: collections.Counter[str] = collections.Counter()
    release = asyncio.Event()

    @conductor.task("fetch", max_running_per_key=1)
    async def fetch(ctx: TaskContext, payload: Any) -> None:
        key = payload["key"]
        running[key] += 1
        peak[key] = max(peak[key], running[key])
        try:
            await release.wait()
            await asyncio.sleep(0.005)  # let the next one of the key overlap, if it could
        finally:
            running[key] -= 1

    keys = list("aaaabbbb")
    ids = await conductor.invoke_many("fetch", [{"key": k} for k in keys], concurrency_keys=keys)
    await run_orchestrator(concurrency=8)
    await wait_until(lambda: running["a"] and running["b"])
    status = {r.concurrency_key: r for r in await conductor.flow_status("default")}
    assert (status["a"].running, status["a"].pending) == (1, 3)
    assert (status["b"].running, status["b"].pending) == (1, 3)
    assert status["a"].max_running_per_key == 1
    release.set()
    for execution_id in ids:
        info = await wait_until(lambda i=execution_id: finished(conductor, i))
        assert info.state == "completed"
    assert peak == {"a": 1, "b": 1}


# -- pause and resume ----------------------------------------------------------------------


async def test_a_paused_task_waits_while_others_run(
    conductor: Conductor, run_orchestrator: Callable[..., Any], wait_until: WaitUntil
) -> None:
    @conductor.task("a")
    async def a(ctx: TaskContext, payload: Any) -> str:
        return "a"

    @conductor.task("b")
    async def b(ctx: TaskContext, payload: Any) -> str:
        return "b"

    assert await conductor.pause_task(a) is True
    assert await conductor.pause_task("a") is False
    await run_orchestrator()
    held = await conductor.invoke(a)
    ran = await conductor.invoke(b)
    await wait_until(lambda: finished(conductor, ran))
    info = await conductor.get(held)
    assert info is not None
    assert info.state == "pending"
    (row,) = [r for r in await conductor.flow_status() if r.task_key == "a"]
    assert row.paused
    assert await conductor.resume_task("a") is True
    done = await wait_until(lambda: finished(conductor, held))
    assert (done.state, done.result) == ("completed", "a")


async def test_a_paused_queue_waits_and_an_unknown_one_is_refused(
    conductor: Conductor, run_orchestrator: Callable[..., Any], wait_until: WaitUntil
) -> None:
    @conductor.task("mail-task", queue="mail")
    async def mail(ctx: TaskContext, payload: Any) -> None:
        return None

    @conductor.task("other")
    async def other(ctx: TaskContext, payload: Any) -> None:
        return None

    await conductor.client.create_queue("mail")
    assert await conductor.pause_queue("mail") is True
    await run_orchestrator()
    held = await conductor.invoke(mail)
    ran = await conductor.invoke(other)
    await wait_until(lambda: finished(conductor, ran))
    assert (await conductor.get(held)).state == "pending"  # type: ignore[union-attr]
    assert await conductor.resume_queue("mail") is True
    assert await conductor.resume_queue("mail") is False
    await wait_until(lambda: finished(conductor, held))
    with pytest.raises(NotFound) as caught:
        await conductor.pause_queue("no-such-queue")
    assert caught.value.sqlstate == "P0002"


# -- cancel by key -------------------------------------------------------------------------


async def test_cancel_by_key_ends_the_keys_pending_executions(conductor: Conductor) -> None:
    keys = ["t1", "t1", "t2"]
    ids = await conductor.invoke_many("t", [{}, {}, {}], concurrency_keys=keys)
    by_dedupe = await conductor.invoke("t", {}, dedupe_key="order-7")
    assert await conductor.cancel_by_key("t", concurrency_key="t1", reason="tenant gone") == 2
    assert await conductor.cancel_by_key("t", dedupe_key="order-7") == 1
    assert await conductor.cancel_by_key("t", concurrency_key="t1") == 0
    states = [(await conductor.get(i)).state for i in (*ids, by_dedupe)]  # type: ignore[union-attr]
    assert states == ["cancelled", "cancelled", "pending", "cancelled"]
    info = await conductor.get(ids[0])
    assert info is not None
    assert info.cancel_reason == "tenant gone"


# -- deadlines and retention, run by maintenance --------------------------------------------


async def test_an_execution_past_its_start_by_ends_expired(
    conductor: Conductor, wait_until: WaitUntil
) -> None:
    execution_id = await conductor.invoke("t", {}, start_by=now() + dt.timedelta(seconds=0.2))

    async def expired() -> Any:
        await conductor.maintain()
        info = await conductor.get(execution_id)
        return info if info is not None and info.state == "expired" else None

    info = await wait_until(expired)
    assert info.finished_at is not None
    assert await conductor.client.cancel(execution_id) == "already_finished"


async def test_the_orchestrator_prunes_per_task_retention(
    conductor: Conductor, run_orchestrator: Callable[..., Any], wait_until: WaitUntil
) -> None:
    @conductor.task("brief", keep_completed=0)
    async def brief(ctx: TaskContext, payload: Any) -> str:
        return "done"

    @conductor.task("kept")
    async def kept(ctx: TaskContext, payload: Any) -> str:
        return "done"

    orchestrator = await run_orchestrator(maintenance_interval=0.05)
    assert orchestrator.maintenance is not None
    gone = await conductor.invoke(brief)
    stays = await conductor.invoke(kept)
    await wait_until(lambda: finished(conductor, stays))
    await wait_until(lambda: orchestrator.maintenance.passes >= 1)
    await wait_until(lambda: _pruned(conductor, gone))
    info = await conductor.get(stays)
    assert info is not None
    assert info.state == "completed"


async def _pruned(conductor: Conductor, execution_id: Any) -> bool:
    return await conductor.get(execution_id) is None


async def test_maintain_reports_its_counts(conductor: Conductor) -> None:
    counts = await conductor.maintain(limit=100)
    assert set(counts) >= {"expired", "pruned"}
    assert all(isinstance(value, int) for value in counts.values())


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "text"),
    [
        (lambda c: c.invoke("t", {}, concurrency_key="k" * 251), "concurrency key"),
        (
            lambda c: c.invoke("t", {}, run_at=now() + dt.timedelta(hours=1), start_by=now()),
            "start_by",
        ),
        (lambda c: c.set_key_weight("default", "k", 0), "weight"),
    ],
)
async def test_bad_input_is_a_one_line_error_from_sql(
    conductor: Conductor, call: Callable[[Conductor], Any], text: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await call(conductor)
    assert caught.value.sqlstate == "22023"
    assert text in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_fair_share_and_weights_are_accepted(conductor: Conductor, fresh_db_url: str) -> None:
    await conductor.set_fair_share("default")
    await conductor.set_key_weight("default", "big", 5)
    await conductor.set_key_weight("default", "big", None)
    await conductor.set_fair_share("default", enabled=False)


# -- the CLI on a real database -------------------------------------------------------------


def test_cli_pause_flow_and_maintain(conductor: Conductor, fresh_db_url: str) -> None:
    execute(fresh_db_url, "SELECT pgconductor.invoke('t', '{}', p_concurrency_key => 'k1')")
    runner = CliRunner()
    env = {"DATABASE_URL": fresh_db_url, "COLUMNS": "160"}
    paused = runner.invoke(cli.app, ["pause", "task", "t"], env=env)
    assert (paused.exit_code, paused.stdout.strip()) == (0, "task t paused")
    table = runner.invoke(cli.app, ["flow"], env=env)
    assert table.exit_code == 0, table.output
    assert "k1" in table.stdout
    assert "paused" in table.stdout
    passed = runner.invoke(cli.app, ["maintain"], env=env)
    assert passed.exit_code == 0, passed.output
    assert "pruned: 0" in passed.stdout.splitlines()
    cancelled = runner.invoke(
        cli.app, ["cancel", "--task", "t", "--concurrency-key", "k1"], env=env
    )
    assert cancelled.stdout.strip() == "cancelled 1 execution(s) of t with concurrency key 'k1'"
    unknown = runner.invoke(cli.app, ["pause", "queue", "nope"], env=env)
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error: ")
    assert "(SQLSTATE P0002)" in unknown.stderr


# -- an older extension ----------------------------------------------------------------------


@pytest.fixture
async def old_conductor(bare_db_url: str) -> AsyncIterator[Conductor]:
    execute(bare_db_url, "CREATE EXTENSION pgconductor VERSION '0.6.1'")
    conductor = Conductor(bare_db_url)
    yield conductor
    await conductor.close()


async def test_an_older_extension_keeps_plain_invokes_and_names_the_version(
    old_conductor: Conductor,
) -> None:
    plain = await old_conductor.invoke("t", {}, dedupe_key="d")
    assert (await old_conductor.get(plain)).state == "pending"  # type: ignore[union-attr]
    assert len(await old_conductor.invoke_many("t", [{}, {}])) == 2
    attempts: list[Callable[[], Awaitable[Any]]] = [
        lambda: old_conductor.invoke("t", {}, concurrency_key="k"),
        lambda: old_conductor.invoke_many("t", [{}], concurrency_keys=["k"]),
        lambda: old_conductor.submit("t", {}),
        lambda: old_conductor.pause_queue("default"),
        lambda: old_conductor.maintain(),
    ]
    for attempt in attempts:
        with pytest.raises(PgConductorError, match=r"needs extension 0\.7\.0") as caught:
            await attempt()
        assert caught.value.sqlstate == "42883"
        assert caught.value.hint == "upgrade the extension: pgconductor schema upgrade"


async def test_an_orchestrator_on_an_older_extension(old_conductor: Conductor) -> None:
    @old_conductor.task("plain")
    async def plain(ctx: TaskContext, payload: Any) -> None:
        return None

    orchestrator = Orchestrator(old_conductor, poll_interval=0.05, maintenance_interval=0.05)
    await orchestrator.start()
    try:
        assert orchestrator.maintenance is None
    finally:
        await orchestrator.stop()
    old_conductor.task("limited", max_running=1)(lambda ctx, payload: None)
    with pytest.raises(
        InvalidState, match=r"sets max_running, which needs pgconductor extension 0\.7\.0"
    ):
        await Orchestrator(old_conductor, poll_interval=0.05).start()


async def test_supersede_cancels_the_running_one_through_its_worker(
    conductor: Conductor, run_orchestrator: Callable[..., Any], wait_until: WaitUntil
) -> None:
    started: list[Any] = []

    @conductor.task("sync-account")
    async def sync_account(ctx: TaskContext, payload: Any) -> str:
        started.append(ctx.execution_id)
        if payload["n"] == 1:
            await ctx.cancel_event.wait()  # the superseded run stops when told
        return f"synced {payload['n']}"

    await run_orchestrator()
    first = await conductor.submit(sync_account, {"n": 1}, dedupe_key="acct-1")
    await wait_until(lambda: started)
    second = await conductor.submit(
        sync_account, {"n": 2}, dedupe_key="acct-1", on_conflict="supersede"
    )
    assert second.outcome == "superseded"
    assert second.id != first.id
    old = await wait_until(lambda: finished(conductor, first.id))
    new = await wait_until(lambda: finished(conductor, second.id))
    assert old.state == "cancelled"
    assert (new.state, new.result) == ("completed", "synced 2")


async def test_a_spent_rate_limit_holds_the_task_while_others_run(
    conductor: Conductor, run_orchestrator: Callable[..., Any], wait_until: WaitUntil
) -> None:
    @conductor.task("call-api", rate_limit=1, rate_period=3600)
    async def call_api(ctx: TaskContext, payload: Any) -> None:
        return None

    @conductor.task("marker")
    async def marker(ctx: TaskContext, payload: Any) -> None:
        return None

    await run_orchestrator()
    one = await conductor.invoke(call_api, {})
    await wait_until(lambda: finished(conductor, one))
    held = await conductor.invoke(call_api, {})
    after = await conductor.invoke(marker, {})
    await wait_until(lambda: finished(conductor, after))  # a claim came after `held` was due
    info = await conductor.get(held)
    assert info is not None
    assert (info.state, info.attempts) == ("pending", 0)  # waiting spends no attempt
