"""The typer CLI with the fake client injected through `cli.make_client`."""

from __future__ import annotations

import json
import runpy
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fakes import FakeDatabaseClient
from pgconductor import cli
from pgconductor.errors import InvalidInput, NotFound, TransientError
from pgconductor.types import OrchestratorInfo, QueueStats

URL = "postgresql://u@localhost/db"
ID = "3c3d0a9e-93c4-4b8e-9a7b-6c1f0b1e9e11"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeDatabaseClient:
    client = FakeDatabaseClient()
    urls: list[str] = []

    def factory(url: str) -> FakeDatabaseClient:
        urls.append(url)
        return client

    monkeypatch.setattr(cli, "make_client", factory)
    monkeypatch.setenv("DATABASE_URL", URL)
    client.urls = urls  # type: ignore[attr-defined]
    return client


def run(*args: str, env: dict[str, str | None] | None = None) -> Any:
    return CliRunner().invoke(cli.app, list(args), env=env)


def test_invoke_one(fake: FakeDatabaseClient) -> None:
    fake.responses["invoke"] = uuid.UUID(ID)
    result = run(
        "invoke",
        "send",
        "--payload",
        '{"to": "a"}',
        "--queue",
        "mail",
        "--priority",
        "2",
        "--dedupe-key",
        "k",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == ID
    ((args, kwargs),) = fake.calls_to("invoke")
    assert args == ("send", {"to": "a"})
    assert (kwargs["queue"], kwargs["priority"], kwargs["dedupe_key"]) == (
        "mail",
        2,
        "k",
    )
    assert fake.urls == [URL]  # type: ignore[attr-defined]
    assert fake.closed


def test_invoke_defaults_to_an_empty_payload(fake: FakeDatabaseClient) -> None:
    result = run("invoke", "t", "--delay", "5", "--database-url", "postgresql://other/db")
    assert result.exit_code == 0, result.output
    ((args, kwargs),) = fake.calls_to("invoke")
    assert args == ("t", {})
    assert kwargs["run_at"] is not None
    assert fake.urls == ["postgresql://other/db"]  # type: ignore[attr-defined]


def test_invoke_many_in_chunks(fake: FakeDatabaseClient) -> None:
    result = run("invoke", "t", "--count", "7", "--batch-size", "3", "--payload", "[1]")
    assert result.exit_code == 0, result.output
    assert "invoked 7 executions of t" in result.stdout
    sizes = [len(args[0]) for args, _ in fake.calls_to("invoke_batch")]
    assert sizes == [3, 3, 1]
    assert fake.calls_to("invoke_batch")[0][0][1] == [[1], [1], [1]]


def test_dedupe_key_needs_count_one(fake: FakeDatabaseClient) -> None:
    result = run("invoke", "t", "--count", "2", "--dedupe-key", "k")
    assert result.exit_code == 2
    assert fake.calls == []


def test_bad_json_is_a_usage_error(fake: FakeDatabaseClient) -> None:
    result = run("invoke", "t", "--payload", "{bad")
    assert result.exit_code == 2
    assert "not valid JSON" in result.stderr
    assert "Traceback" not in result.output
    assert fake.calls == []


def test_missing_database_url(fake: FakeDatabaseClient) -> None:
    result = run("status", env={"DATABASE_URL": None})
    assert result.exit_code == 2
    assert "error: no database given" in result.stderr
    assert "hint: pass --database-url or set DATABASE_URL" in result.stderr


def test_sql_errors_print_one_line_and_a_hint(fake: FakeDatabaseClient) -> None:
    fake.simulate_error(
        "invoke",
        InvalidInput("invalid queue name 'A B'", sqlstate="22023", hint="use a-z"),
    )
    result = run("invoke", "t", "--queue", "A B")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: invalid queue name 'A B' (SQLSTATE 22023)",
        "hint: use a-z",
    ]


def test_transient_errors_without_sqlstate(fake: FakeDatabaseClient) -> None:
    fake.simulate_error("queue_stats", TransientError("connection refused\n\tIs it up?"))
    result = run("status")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: connection refused Is it up?"


def test_connection_refused_for_real(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "CLI_RETRY", cli.RetryPolicy(max_attempts=1))
    result = run("status", "--database-url", "postgresql://u@127.0.0.1:1/db")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output


def test_malformed_url(monkeypatch: pytest.MonkeyPatch) -> None:
    result = run("status", "--database-url", "nonsense://")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")


def test_status_table_and_json(fake: FakeDatabaseClient) -> None:
    fake.responses["queue_stats"] = [QueueStats("default", 1, 2, 3, 4, 5, 6)]
    beat = datetime(2030, 1, 1, 12, 0, 5, tzinfo=UTC)
    live, gone = uuid.UUID("11111111-0000-4000-8000-000000000001"), uuid.uuid4()
    fake.responses["orchestrator_stats"] = [
        OrchestratorInfo(live, "live", "0.1.0", beat, beat, 7, {}),
        OrchestratorInfo(gone, "stopped", "0.1.0", beat, beat, 0, {}),
    ]
    table = run("status")
    assert table.exit_code == 0, table.output
    assert "default" in table.stdout
    assert "cancelled" in table.stdout
    assert str(live)[:8] in table.stdout
    assert str(gone)[:8] not in table.stdout
    assert "1 live, 1 expired or stopped" in table.stdout
    as_json = json.loads(run("status", "--json").stdout)
    assert as_json["queues"] == [
        {
            "queue": "default",
            "pending": 1,
            "due": 2,
            "running": 3,
            "completed": 4,
            "failed": 5,
            "cancelled": 6,
        }
    ]
    assert [(o["id"], o["state"], o["running"]) for o in as_json["orchestrators"]] == [
        (str(live), "live", 7),
        (str(gone), "stopped", 0),
    ]


def test_status_without_queues(fake: FakeDatabaseClient) -> None:
    result = run("status")
    assert result.exit_code == 0
    assert "no queues yet" in result.stdout


@pytest.mark.parametrize(
    ("outcome", "code"), [("cancelling", 0), ("already_finished", 0), ("not_found", 1)]
)
def test_cancel(fake: FakeDatabaseClient, outcome: str, code: int) -> None:
    fake.responses["cancel"] = outcome
    result = run("cancel", ID, "--reason", "stop")
    assert result.exit_code == code
    assert fake.calls_to("cancel") == [((uuid.UUID(ID), "stop"), {})]
    if code == 0:
        assert result.stdout.strip() == outcome
    else:
        assert f"error: execution {ID} not found" in result.stderr


def test_cancel_rejects_a_bad_id(fake: FakeDatabaseClient) -> None:
    result = run("cancel", "nope")
    assert result.exit_code == 2
    assert "is not an execution id" in result.stderr


def test_retry(fake: FakeDatabaseClient) -> None:
    assert run("retry", ID).stdout.strip() == ID
    fake.simulate_error("retry", NotFound(f"unknown execution {ID}", sqlstate="P0002"))
    result = run("retry", ID)
    assert result.exit_code == 1
    assert "(SQLSTATE P0002)" in result.stderr


def test_schema_commands(fake: FakeDatabaseClient) -> None:
    fake.installed_version = None
    assert run("schema", "check").exit_code == 1
    install = run("schema", "install")
    assert install.exit_code == 0
    assert "0.1.0 installed" in install.stdout
    check = run("schema", "check")
    assert check.exit_code == 0
    assert "supported: 0.1.0" in check.stdout
    upgrade = run("schema", "upgrade", "--to", "9.9.0")
    assert upgrade.exit_code == 0
    assert "is at 9.9.0" in upgrade.stdout
    mismatch = run("schema", "check")
    assert mismatch.exit_code == 1
    assert "hint: upgrade the Python package" in mismatch.stderr


def test_worker_hook_without_the_worker_module(monkeypatch: pytest.MonkeyPatch) -> None:
    sub = typer.Typer()
    monkeypatch.setattr(cli, "worker_app", sub)

    def missing(name: str) -> None:
        raise ModuleNotFoundError(name=name)

    monkeypatch.setattr(cli.importlib, "import_module", missing)
    cli._register_worker_commands()
    result = CliRunner().invoke(sub, [])
    assert result.exit_code == 1
    assert "worker runtime is not available" in result.stderr


def test_worker_hook_registers_the_worker_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registered: list[typer.Typer] = []

    class Module:
        @staticmethod
        def register(app: typer.Typer) -> None:
            registered.append(app)

    monkeypatch.setattr(cli.importlib, "import_module", lambda name: Module)
    cli._register_worker_commands()
    assert registered == [cli.worker_app]


def test_worker_hook_does_not_hide_broken_imports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(name: str) -> None:
        raise ModuleNotFoundError(name="some_dependency")

    monkeypatch.setattr(cli.importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError):
        cli._register_worker_commands()


async def test_make_client_builds_a_small_pool() -> None:
    client = cli.make_client(URL)
    assert client.engine.pool.size() == 1  # type: ignore[attr-defined]
    await client.close()


def test_python_dash_m_runs_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["pgconductor", "--help"])
    with pytest.raises(SystemExit) as caught:
        runpy.run_module("pgconductor", run_name="__main__")
    assert caught.value.code == 0
    assert "Durable task execution" in capsys.readouterr().out
