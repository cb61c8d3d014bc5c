"""`pgconductor wait` and the workflow lines of `pgconductor show`, against the fake client."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from typer.testing import CliRunner

from fakes import FakeDatabaseClient
from pgconductor import cli, cli_common
from pgconductor.cli_workflow import EXIT_TIMED_OUT, workflow_lines
from pgconductor.types import ExecutionInfo

ID = uuid.UUID("0190f3a2-0000-7000-8000-000000000001")
PARENT = uuid.UUID("0190f3a2-0000-7000-8000-000000000002")
CHILD = uuid.UUID("0190f3a2-0000-7000-8000-000000000003")
AT = datetime(2026, 12, 4, 15, 30, 1, tzinfo=UTC)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeDatabaseClient:
    client = FakeDatabaseClient()
    monkeypatch.setattr(cli_common, "make_client", lambda url: client)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    return client


def run(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "160"})


def execution(state: str = "waiting_for_children", **fields: Any) -> ExecutionInfo:
    base = ExecutionInfo(
        id=ID,
        task_key="checkout",
        queue="default",
        state=state,
        attempts=1,
        priority=0,
        run_at=None,
        locked_by=None,
        last_error=None,
        result=None,
        finished_at=None,
        parent_id=PARENT,
        steps=[
            {"key": "charge", "seq": 0, "kind": "step", "state": "done", "result": {"ok": 1}},
            {
                "key": "cool-down",
                "seq": 1,
                "kind": "sleep",
                "state": "done",
                "until": "2026-12-04T16:00:00+00:00",
            },
            {
                "key": "email",
                "seq": 2,
                "kind": "child",
                "state": "waiting",
                "child_id": str(CHILD),
                "until": "2026-12-04T17:00:00+00:00",
            },
            {
                "key": "sms",
                "seq": 3,
                "kind": "child",
                "state": "failed",
                "child_id": str(CHILD),
                "error": "Traceback\nboom " + "x" * 200,
            },
        ],
    )
    return dataclasses.replace(base, **fields)


def test_show_lists_the_parent_the_steps_and_the_children(fake: FakeDatabaseClient) -> None:
    fake.responses["get_execution"] = execution()
    result = run("show", str(ID))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"  parent     {PARENT}" in out
    assert '       0  charge  step done  -> {"ok": 1}' in out
    assert "       1  cool-down  sleep done  until 2026-12-04 16:00:00 UTC" in out
    assert f"       2  email  child waiting  child {CHILD}  until 2026-12-04 17:00:00 UTC" in out
    assert "  children: 2 (1 failed, 1 waiting)" in out
    (sms,) = [line for line in out.splitlines() if "  sms  " in line]
    assert sms.endswith("error: Traceback...")


def test_a_plain_execution_adds_no_workflow_lines() -> None:
    assert workflow_lines(execution(parent_id=None, steps=[])) == []


def test_wait_prints_the_result_and_exits_by_state(fake: FakeDatabaseClient) -> None:
    fake.responses["get_execution"] = execution("completed", result={"total": 3})
    result = run("wait", str(ID))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"execution {ID} completed", '{"total": 3}']

    fake.responses["get_execution"] = execution("failed", last_error="ValueError: no")
    result = run("wait", str(ID))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"execution {ID} failed", "ValueError: no"]

    result = run("wait", str(ID), "--json")
    assert result.exit_code == 1
    assert '"state": "failed"' in result.stdout


def test_wait_gives_up_at_the_timeout(fake: FakeDatabaseClient) -> None:
    fake.responses["get_execution"] = execution()
    result = run("wait", str(ID), "--timeout", "0.05")
    assert result.exit_code == EXIT_TIMED_OUT
    assert f"error: execution {ID} did not end within 0.05 s" in result.stderr


def test_wait_for_an_unknown_execution_is_one_line(fake: FakeDatabaseClient) -> None:
    result = run("wait", str(ID))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"error: execution {ID} not found (SQLSTATE P0002)"
