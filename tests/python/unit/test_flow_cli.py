"""The flow-control commands with the fake client: pause, resume, cancel by key, flow,
maintain; their output, their one-line errors and exit codes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from typer.testing import CliRunner

from fakes import FakeDatabaseClient
from pgconductor import cli, cli_common
from pgconductor.cli_flow import flow_lines
from pgconductor.db.flow import needs_flow
from pgconductor.errors import NotFound, PgConductorError
from pgconductor.types import FlowStatus

URL = "postgresql://u@localhost/db"
ID = "3c3d0a9e-93c4-4b8e-9a7b-6c1f0b1e9e11"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeDatabaseClient:
    client = FakeDatabaseClient(version="0.7.0")
    monkeypatch.setattr(cli_common, "make_client", lambda url: client)
    monkeypatch.setenv("DATABASE_URL", URL)
    return client


def run(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "160"})


def one_line_error(result: Any, code: int, text: str) -> None:
    """The user-mistake contract: exit `code`, one stderr line with `text`, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), lines
    assert lines[0].startswith("error: "), lines
    assert text in lines[0], lines


# -- pause and resume -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "method", "changed", "printed"),
    [
        (("pause", "queue", "mail"), "pause_queue", True, "queue mail paused"),
        (
            ("pause", "queue", "mail"),
            "pause_queue",
            False,
            "queue mail was already paused",
        ),
        (("pause", "task", "send"), "pause_task", True, "task send paused"),
        (("resume", "queue", "mail"), "resume_queue", True, "queue mail resumed"),
        (("resume", "task", "send"), "resume_task", False, "task send was not paused"),
    ],
)
def test_pause_and_resume(
    fake: FakeDatabaseClient,
    args: tuple[str, ...],
    method: str,
    changed: bool,
    printed: str,
) -> None:
    fake.responses[method] = changed
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == printed
    assert fake.calls_to(method) == [((args[2],), {})]
    assert fake.closed


def test_pause_of_an_unknown_queue_is_one_line(fake: FakeDatabaseClient) -> None:
    fake.simulate_error(
        "pause_queue",
        NotFound("unknown queue 'mial'", sqlstate="P0002", hint="create it"),
    )
    result = run("pause", "queue", "mial")
    one_line_error(result, 1, "unknown queue 'mial' (SQLSTATE P0002)")
    assert result.stderr.splitlines()[1] == "hint: create it"


def test_pause_needs_a_kind(fake: FakeDatabaseClient) -> None:
    one_line_error(run("pause", "queues", "x"), 2, "No such command 'queues'")


def test_an_older_extension_names_the_version(fake: FakeDatabaseClient) -> None:
    missing = PgConductorError(
        "function pgconductor.pause_task(text) does not exist", sqlstate="42883"
    )
    fake.simulate_error("pause_task", needs_flow(missing, "pause_task"))
    result = run("pause", "task", "send")
    one_line_error(result, 1, "pgconductor.pause_task with flow control needs extension 0.7.0")
    assert result.stderr.splitlines()[1] == (
        "hint: upgrade the extension: pgconductor schema upgrade"
    )


# -- cancel by key ----------------------------------------------------------------------


def test_cancel_by_concurrency_key(fake: FakeDatabaseClient) -> None:
    fake.responses["cancel_by_key"] = 12
    result = run("cancel", "--task", "fetch", "--concurrency-key", "tenant-9", "--reason", "spam")
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.strip()
        == "cancelled 12 execution(s) of fetch with concurrency key 'tenant-9'"
    )
    assert fake.calls_to("cancel_by_key") == [
        (
            ("fetch",),
            {"dedupe_key": None, "concurrency_key": "tenant-9", "reason": "spam"},
        )
    ]
    assert fake.call_count("cancel") == 0


def test_cancel_by_dedupe_key(fake: FakeDatabaseClient) -> None:
    fake.responses["cancel_by_key"] = 0
    result = run("cancel", "--task", "fetch", "--dedupe-key", "order-1")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "cancelled 0 execution(s) of fetch with dedupe key 'order-1'"
    ((_, kwargs),) = fake.calls_to("cancel_by_key")
    assert kwargs["dedupe_key"] == "order-1"
    assert kwargs["reason"] == "cancelled by user"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--dedupe-key", "k"), "--dedupe-key and --concurrency-key need --task"),
        (("--task", "t"), "give exactly one of --dedupe-key and --concurrency-key"),
        (
            ("--task", "t", "--dedupe-key", "a", "--concurrency-key", "b"),
            "give exactly one of --dedupe-key and --concurrency-key",
        ),
        ((ID, "--task", "t", "--dedupe-key", "a"), "not both"),
        ((), "give an execution ID, or --task with --dedupe-key or --concurrency-key"),
    ],
)
def test_cancel_mistakes_are_usage_errors(
    fake: FakeDatabaseClient, args: tuple[str, ...], message: str
) -> None:
    one_line_error(run("cancel", *args), 2, message)
    assert fake.calls == []


def test_cancel_by_id_is_unchanged(fake: FakeDatabaseClient) -> None:
    fake.responses["cancel"] = "cancelled"
    result = run("cancel", ID)
    assert result.exit_code == 0, result.output
    assert fake.calls_to("cancel") == [((uuid.UUID(ID), "cancelled by user"), {})]


# -- flow and maintain ------------------------------------------------------------------

ROWS = [
    FlowStatus("default", "fetch", None, 1, 40, 0, 10, 2, False),
    FlowStatus("default", "fetch", "tenant-1", 2, 7, 1, 10, 2, False),
    FlowStatus("mail", "mail", "", 0, 3, 0, None, None, True),
]


def test_flow_lines() -> None:
    assert flow_lines(ROWS) == [
        ("default", "fetch", "(none)", "1", "40", "0", "10", "2", ""),
        ("default", "fetch", "tenant-1", "2", "7", "1", "10", "2", ""),
        ("mail", "mail", "(none)", "0", "3", "0", "-", "-", "paused"),
    ]


def test_flow_table_and_json(fake: FakeDatabaseClient) -> None:
    fake.responses["flow_status"] = ROWS
    table = run("flow", "--queue", "default")
    assert table.exit_code == 0, table.output
    assert "flow control in queue 'default'" in table.stdout
    assert "tenant-1" in table.stdout
    assert "paused" in table.stdout
    assert fake.calls_to("flow_status") == [(("default",), {})]
    as_json = run("flow", "--json")
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert document[1] == {
        "queue": "default",
        "task_key": "fetch",
        "concurrency_key": "tenant-1",
        "running": 2,
        "pending": 7,
        "parked": 1,
        "max_running": 10,
        "max_running_per_key": 2,
        "paused": False,
    }
    assert fake.calls_to("flow_status")[1] == ((None,), {})


def test_flow_with_nothing_says_so(fake: FakeDatabaseClient) -> None:
    result = run("flow")
    assert result.exit_code == 0, result.output
    assert "nothing running, pending or parked" in result.stdout


def test_maintain_prints_the_counts(fake: FakeDatabaseClient) -> None:
    fake.responses["maintain"] = {"pruned": 120, "expired": 3, "events": 0}
    result = run("maintain", "--limit", "500")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["events: 0", "expired: 3", "pruned: 120"]
    assert fake.calls_to("maintain") == [((500,), {})]


@pytest.mark.parametrize(
    ("answer", "printed"),
    [
        ({"skipped": True}, "skipped: another maintenance pass is running"),
        ({}, "nothing to do"),
    ],
)
def test_maintain_skipped_or_idle(
    fake: FakeDatabaseClient, answer: dict[str, Any], printed: str
) -> None:
    fake.responses["maintain"] = answer
    result = run("maintain")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == printed


def test_maintain_limit_must_be_positive(fake: FakeDatabaseClient) -> None:
    one_line_error(run("maintain", "--limit", "0"), 2, "--limit")


def test_a_client_without_flow_calls_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    class Bare(FakeDatabaseClient):
        """A client that is no FlowClient."""

        maintain = None  # type: ignore[assignment]

    monkeypatch.setattr(cli_common, "make_client", lambda url: Bare())
    monkeypatch.setenv("DATABASE_URL", URL)
    one_line_error(run("maintain"), 1, "Bare has no flow-control calls")
