"""`pgconductor show`, `list` and `retry` against the fake client."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from typer.testing import CliRunner

from fakes import FakeDatabaseClient
from pgconductor import cli, cli_common
from pgconductor.cli_inspect import format_execution, page_lines
from pgconductor.errors import InvalidInput, PgConductorError
from pgconductor.types import ExecutionInfo, ExecutionSummary

ID = uuid.UUID("0190f3a2-0000-7000-8000-000000000001")
AT = datetime(2026, 12, 4, 15, 30, 1, tzinfo=UTC)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeDatabaseClient:
    client = FakeDatabaseClient()
    monkeypatch.setattr(cli_common, "make_client", lambda url: client)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    return client


def run(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "160"})


def failed_execution() -> ExecutionInfo:
    return ExecutionInfo(
        id=ID,
        task_key="send-email",
        queue="mail",
        state="failed",
        attempts=2,
        priority=0,
        run_at=AT,
        locked_by=None,
        last_error="ValueError: second\nTraceback line",
        result=None,
        finished_at=AT,
        max_attempts=2,
        payload={"to": "ada@example.com"},
        created_at=AT,
        locked_at=None,
        errors=[
            {
                "attempt": 1,
                "at": "2026-12-04T15:30:02Z",
                "outcome": "retry_scheduled",
                "error": "E1",
            },
            {"attempt": 2, "at": "sometime", "outcome": "failed", "error": "E2\nline"},
        ],
        cancel_reason=None,
    )


def test_show_prints_every_attempts_error(fake: FakeDatabaseClient) -> None:
    fake.responses["get_execution"] = failed_execution()
    result = run("show", str(ID))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"execution {ID}"
    assert "  state      failed" in lines
    assert "  attempts   2 of 2" in lines
    assert '  payload    {"to": "ada@example.com"}' in lines
    assert "  created    2026-12-04 15:30:01 UTC" in lines
    at = lines.index("  errors:")
    assert lines[at + 1 :] == [
        "    attempt 1 at 2026-12-04 15:30:02 UTC: retry_scheduled",
        "      E1",
        "    attempt 2 at sometime: failed",
        "      E2",
        "      line",
    ]
    assert fake.calls_to("get_execution") == [((ID,), {})]


def test_show_without_the_error_history_falls_back_to_the_last_error() -> None:
    info = ExecutionInfo(ID, "t", "default", "pending", 1, 0, AT, None, "boom", None, None)
    lines = format_execution(info)
    assert "  attempts   1" in lines
    assert lines[-2:] == ["    attempt 1: last error", "      boom"]
    cancelled = ExecutionInfo(
        ID, "t", "default", "cancelled", 0, 0, AT, None, None, None, AT, cancel_reason="by ops"
    )
    assert "  cancelled  by ops" in format_execution(cancelled)
    assert not any("errors" in line for line in format_execution(cancelled))


def test_show_json_and_not_found(fake: FakeDatabaseClient) -> None:
    fake.responses["get_execution"] = failed_execution()
    document = json.loads(run("show", str(ID), "--json").stdout)
    assert document["state"] == "failed"
    assert [e["error"] for e in document["errors"]] == ["E1", "E2\nline"]
    fake.responses["get_execution"] = None
    result = run("show", str(ID))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"error: execution {ID} not found"]


def summary(n: int, state: str = "failed") -> ExecutionSummary:
    return ExecutionSummary(
        id=uuid.UUID(int=n),
        task_key="send-email",
        queue="mail",
        state=state,
        attempts=3,
        max_attempts=3,
        priority=0,
        run_at=AT,
        created_at=AT,
        finished_at=AT,
        last_error="ValueError: boom\n  traceback",
    )


def test_list_passes_the_filters_and_prints_a_table(fake: FakeDatabaseClient) -> None:
    fake.responses["list_executions"] = [summary(2), summary(1)]
    before = uuid.UUID(int=9)
    result = run(
        "list", "--state", "failed", "--task", "send-email", "--queue", "mail",
        "--limit", "5", "--before", str(before),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert fake.calls_to("list_executions") == [(("failed", "send-email", "mail", 5, before), {})]
    rows = [line for line in result.stdout.splitlines() if "send-email" in line]
    assert len(rows) == 2
    assert str(uuid.UUID(int=2)) in rows[0]
    assert "3/3" in rows[0]
    assert "ValueError: boom" in rows[0]
    assert "traceback" not in result.stdout
    assert "next page" not in result.stderr


def test_list_a_full_page_names_the_next_one(fake: FakeDatabaseClient) -> None:
    fake.responses["list_executions"] = [summary(3), summary(2)]
    result = run("list", "--limit", "2")
    assert result.exit_code == 0, result.output
    assert fake.calls_to("list_executions") == [((None, None, None, 2, None), {})]
    assert result.stderr.strip() == f"next page: --before {uuid.UUID(int=2)}"


def test_list_empty_and_json(fake: FakeDatabaseClient) -> None:
    assert "no executions" in run("list").stdout
    fake.responses["list_executions"] = [summary(1, "pending")]
    rows = json.loads(run("list", "--json").stdout)
    assert [(r["id"], r["state"]) for r in rows] == [(str(uuid.UUID(int=1)), "pending")]


def test_list_sql_errors_are_one_line(fake: FakeDatabaseClient) -> None:
    fake.simulate_error(
        "list_executions", InvalidInput("invalid queue name", sqlstate="22023", hint="a-z")
    )
    result = run("list", "--queue", "A B")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: invalid queue name (SQLSTATE 22023)",
        "hint: a-z",
    ]


def test_retry_one(fake: FakeDatabaseClient) -> None:
    result = run("retry", str(ID))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(ID)
    assert fake.calls_to("retry") == [((ID,), {})]


@pytest.mark.parametrize(
    ("args", "call", "said"),
    [
        (["--task", "send-email"], ("failed", "send-email", None, 1000), "of task 'send-email'"),
        (["--state", "cancelled", "--queue", "mail", "--limit", "5"],
         ("cancelled", None, "mail", 5), "cancelled executions in queue 'mail'"),
    ],
)  # fmt: skip
def test_retry_many(
    fake: FakeDatabaseClient, args: list[str], call: tuple[Any, ...], said: str
) -> None:
    fake.responses["retry_executions"] = 7
    result = run("retry", *args)
    assert result.exit_code == 0, result.output
    assert fake.calls_to("retry_executions") == [(call, {})]
    assert result.stdout.startswith("retried 7 ")
    assert said in result.stdout


def test_retry_many_says_one(fake: FakeDatabaseClient) -> None:
    fake.responses["retry_executions"] = 1
    assert run("retry", "--state", "failed").stdout.strip() == "retried 1 failed execution"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give an execution ID, or --state/--task/--queue"),
        ([str(ID), "--task", "t"], "not both"),
        (["--state", "running"], "'--state'"),
        (["nope"], "'nope' is not an execution id"),
    ],
)
def test_retry_usage_errors_are_one_line(
    fake: FakeDatabaseClient, args: list[str], message: str
) -> None:
    result = run("retry", *args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert message in line
    assert fake.calls == []


def test_page_lines_align_and_cut_the_error_to_the_width() -> None:
    lines = page_lines([summary(1), summary(22)], 140)
    assert lines[0].split() == ["id", "task", "queue", "state", "attempts", "created", "(UTC)",
                                "last", "error"]  # fmt: skip
    assert all(len(line) <= 140 for line in lines)
    assert lines[1].index("send-email") == lines[0].index("task")
    assert lines[1].endswith("ValueError: boom")
    wordy = dataclasses.replace(summary(1), last_error="RuntimeError: " + "x" * 200)
    narrow = page_lines([wordy], 140)
    assert narrow[1].endswith("…")
    assert len(narrow[1]) == 140
    assert len(page_lines([wordy], 10)[1].split("  ")[-1]) == 20  # at least 20 characters


def test_an_older_extension_gets_an_upgrade_hint(fake: FakeDatabaseClient) -> None:
    fake.simulate_error(
        "list_executions",
        PgConductorError("function pgconductor.list_executions() does not exist", sqlstate="42883"),
    )
    result = run("list")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: function pgconductor.list_executions() does not exist (SQLSTATE 42883)",
        "hint: the installed extension predates it: pgconductor schema upgrade",
    ]
