"""pgconductor.testing against a real server: the fixtures (run by pytester, as a user's
suite loads the plugin), the clock, run_inline and drain."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pgconductor import Conductor, Fatal, TaskContext
from pgconductor.testing import (
    CLOCK_START,
    DatabaseClock,
    connected,
    drain,
    run_execution,
    run_inline,
)
from pgtest import execute

pytest_plugins = ["pytester"]

USER_TESTS = """
from datetime import timedelta

from pgconductor import Conductor
from pgconductor.testing import connected, run_execution, run_inline

conductor = Conductor()


@conductor.task("send-email", max_attempts=2, backoff=(60, 60))
async def send_email(ctx, payload):
    if payload.get("fail"):
        raise RuntimeError("smtp refused")
    return {"sent_to": payload["to"]}


async def test_send_email(pgconductor_url):
    async with connected(conductor, pgconductor_url):
        ran = await run_inline(conductor, send_email, {"to": "ada@example.com"})
    assert ran.completed
    assert ran.result == {"sent_to": "ada@example.com"}


async def test_a_retry_waits_for_the_clock(pgconductor_url, pgconductor_clock):
    async with connected(conductor, pgconductor_url):
        first = await run_inline(conductor, send_email, {"to": "x", "fail": True})
        assert (first.outcome, first.state) == ("retry_scheduled", "pending")
        pgconductor_clock.advance(timedelta(minutes=2))
        second = await run_execution(conductor, first.id)
    assert (second.outcome, second.state, second.attempts) == ("failed", "failed", 2)


def test_each_test_gets_its_own_database(pgconductor_url):
    import psycopg

    with psycopg.connect(pgconductor_url) as conn:
        assert conn.execute("SELECT count(*) FROM pgconductor.executions").fetchone() == (0,)
"""


def test_a_users_suite_runs_with_the_plugin(pytester: pytest.Pytester, server_url: str) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "pgconductor.testing", "--pgconductor-url", server_url, "-q"
    )
    result.assert_outcomes(passed=3)


def test_without_a_server_the_fixture_fails_with_one_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("PGCONDUCTOR_TEST_URL", raising=False)
    pytester.makepyfile(test_user="def test_it(pgconductor_url):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "pgconductor.testing", "-q")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*needs a PostgreSQL server: pass --pgconductor-url*"])


async def test_the_clock_moves_what_sql_sees(fresh_db_url: str) -> None:
    name = execute(fresh_db_url, "SELECT current_database()")[0][0]
    execute(fresh_db_url, f'ALTER DATABASE "{name}" SET pgconductor.test_clock = on')
    clock = DatabaseClock(fresh_db_url)
    assert execute(fresh_db_url, "SELECT pgconductor._now()") == [(CLOCK_START,)]
    assert clock.advance(90) == CLOCK_START + timedelta(seconds=90)
    assert execute(fresh_db_url, "SELECT pgconductor._now()") == [(clock.now(),)]


async def test_run_inline_fatal_and_drain(fresh_db_url: str) -> None:
    conductor = Conductor()
    seen: list[Any] = []

    @conductor.task("steer", queue="inline")
    async def steer(ctx: TaskContext, payload: Any) -> Any:
        seen.append(payload)
        if payload == "fatal":
            raise Fatal("no such account")
        return payload

    async with connected(conductor, fresh_db_url):
        ran = await run_inline(conductor, steer, "fatal")
        assert (ran.outcome, ran.state, ran.attempts) == ("failed", "failed", 1)
        assert ran.error is not None
        assert "Fatal: no such account" in ran.error
        ids = await conductor.invoke_many(steer, ["a", "b", "c"])
        assert await drain(conductor, queue="inline") == 3
        states = execute(
            fresh_db_url,
            "SELECT state FROM pgconductor.finished_executions WHERE id = ANY(%s)",
            ids,
        )
        assert states == [("completed",)] * 3
        with pytest.raises(Exception, match="does not exist"):
            await run_execution(conductor, ids[0].__class__(int=1))
    assert sorted(seen) == ["a", "b", "c", "fatal"]
    assert os.environ.get("DATABASE_URL")  # conftest's server, not the plugin's option


async def test_run_inline_runs_a_workflow_one_run_at_a_time(fresh_db_url: str) -> None:
    name = execute(fresh_db_url, "SELECT current_database()")[0][0]
    execute(fresh_db_url, f'ALTER DATABASE "{name}" SET pgconductor.test_clock = on')
    clock = DatabaseClock(fresh_db_url)
    conductor = Conductor(clock=clock)
    charged: list[int] = []

    def charge(amount: int) -> int:
        charged.append(amount)
        return amount

    @conductor.task("checkout")
    async def checkout(ctx: TaskContext, payload: Any) -> Any:
        total = await ctx.step("charge", charge, payload["amount"])
        await ctx.sleep("cool-down", timedelta(minutes=1))
        return {"charged": total}

    async with connected(conductor, fresh_db_url):
        ran = await run_inline(conductor, checkout, {"amount": 5})
        assert (ran.outcome, ran.state, ran.attempts) == ("suspended", "sleeping", 0)
        with pytest.raises(Exception, match="is not due"):
            await run_execution(conductor, ran.id)
        clock.advance(61)
        again = await run_execution(conductor, ran.id)
        assert (again.outcome, again.state, again.result) == (
            "completed",
            "completed",
            {"charged": 5},
        )
    assert charged == [5]


async def test_run_execution_of_a_scheduled_run_knows_its_occurrence(fresh_db_url: str) -> None:
    conductor = Conductor()
    seen: list[Any] = []

    @conductor.task("report")
    async def report(ctx: TaskContext, payload: Any) -> None:
        seen.append(await ctx.scheduled_at())

    async with connected(conductor, fresh_db_url):
        await conductor.register_tasks()
        execute(fresh_db_url, "SELECT pgconductor.schedule('nightly', 'report', '30 2 * * *')")
        execute(fresh_db_url, "SELECT pgconductor.backfill('nightly', '2026-01-01', '2026-01-02')")
        [(execution_id,)] = execute(
            fresh_db_url, "SELECT id FROM pgconductor.executions WHERE task_key = 'report'"
        )
        ran = await run_execution(conductor, execution_id)
        invoked = await run_inline(conductor, report)
    assert (ran.state, invoked.state) == ("completed", "completed")
    assert seen == [datetime(2026, 1, 1, 2, 30, tzinfo=UTC), None]
