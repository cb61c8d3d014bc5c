"""The typer CLI with the fake client injected through `cli_common.make_client`."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fakes import FakeDatabaseClient
from pgconductor import cli, cli_common, conductor
from pgconductor.errors import InvalidInput, NotFound, PgConductorError, TransientError
from pgconductor.types import OrchestratorInfo, QueueStats, TaskOverview

URL = "postgresql://u@localhost/db"
ID = "3c3d0a9e-93c4-4b8e-9a7b-6c1f0b1e9e11"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeDatabaseClient:
    client = FakeDatabaseClient()
    urls: list[str] = []

    def factory(url: str) -> FakeDatabaseClient:
        urls.append(url)
        return client

    monkeypatch.setattr(cli_common, "make_client", factory)
    monkeypatch.setenv("DATABASE_URL", URL)
    client.urls = urls  # type: ignore[attr-defined]
    return client


def run(*args: str, env: dict[str, str | None] | None = None) -> Any:
    return CliRunner().invoke(cli.app, list(args), env=env)


def one_line_error(result: Any, code: int, text: str) -> None:
    """The user-mistake contract: exit `code`, one stderr line with `text`, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), lines
    assert lines[0].startswith("error: "), lines
    assert text in lines[0], lines


# -- invoke ---------------------------------------------------------------------------------


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
    assert (kwargs["queue"], kwargs["priority"], kwargs["dedupe_key"]) == ("mail", 2, "k")
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


def test_default_batch_size_is_the_conductors_chunk() -> None:
    assert cli.BATCH_CHUNK == conductor.BATCH_CHUNK


def test_dedupe_key_needs_count_one(fake: FakeDatabaseClient) -> None:
    one_line_error(run("invoke", "t", "--count", "2", "--dedupe-key", "k"), 2, "--count 1")
    assert fake.calls == []


def test_bad_json_is_a_usage_error(fake: FakeDatabaseClient) -> None:
    one_line_error(run("invoke", "t", "--payload", "{bad"), 2, "not valid JSON")
    assert fake.calls == []


@pytest.mark.parametrize(
    ("delay", "message"),
    [
        ("3e11", "3e+11 seconds is too far in the future"),
        ("inf", "inf is not a number of seconds"),
        ("nan", "'--delay'"),
        ("-1", "--delay"),
    ],
)
def test_bad_delay_is_one_line(fake: FakeDatabaseClient, delay: str, message: str) -> None:
    one_line_error(run("invoke", "t", "--delay", delay), 2, message)
    assert fake.calls == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["invoke"], "Missing argument 'TASK'"),
        (["invoke", "t", "--count", "0"], "'--count'"),
        (["invoke", "t", "--colour", "red"], "No such option: --colour"),
        (["nosuch"], "No such command 'nosuch'"),
        (["list", "--state", "lost"], "'--state'"),
        (["list", "--limit", "1001"], "'--limit'"),
        (["show", "nope"], "'nope' is not an execution id"),
    ],
)
def test_usage_errors_are_one_line(fake: FakeDatabaseClient, args: list[str], message: str) -> None:
    result = run(*args)
    one_line_error(result, 2, message)
    assert result.stderr.rstrip().endswith("--help')")
    assert fake.calls == []


def test_bare_command_prints_the_help() -> None:
    result = run()
    assert result.exit_code == 2
    assert "Commands:" in result.stdout
    assert "error" not in result.output


def test_usage_errors_propagate_outside_standalone_mode() -> None:
    group = typer.main.get_command(cli.app)
    with pytest.raises(typer.TyperException):
        group.main(["nosuch"], standalone_mode=False)
    assert group.main(["--version"], standalone_mode=False) == 0


def test_ctrl_c_exits_130_quietly(fake: FakeDatabaseClient) -> None:
    fake.simulate_error("queue_stats", KeyboardInterrupt())
    result = run("status")
    assert result.exit_code == 130
    assert result.output == ""


def test_end_of_input_is_one_line(fake: FakeDatabaseClient) -> None:
    fake.simulate_error("queue_stats", EOFError())
    result = run("status")
    assert result.exit_code == 1
    assert result.stderr.strip() == "aborted"
    group = typer.main.get_command(cli.app)
    with pytest.raises(typer.Abort):
        group.main(["status"], standalone_mode=False)


def test_version() -> None:
    from pgconductor import __version__

    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"pgconductor {__version__}"


# -- which database -------------------------------------------------------------------------


def test_missing_database_url(fake: FakeDatabaseClient) -> None:
    result = run("status", env={"DATABASE_URL": None})
    one_line_error(result, 2, "no database given")
    assert "hint: pass --app MODULE:ATTR or --database-url, or set DATABASE_URL" in result.stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["status", "--database-url", "mysql://u:secret@h/db"], {}),
        (["status"], {"DATABASE_URL": "mysql://u:secret@h/db"}),
        (["status"], {"DATABASE_URL": "localhost"}),
    ],
)
def test_non_postgres_url_is_one_line(
    fake: FakeDatabaseClient, args: list[str], env: dict[str, str | None]
) -> None:
    result = run(*args, env=env)
    one_line_error(result, 2, "is not a PostgreSQL URL")
    assert "secret" not in result.output
    assert fake.calls == []


def test_sql_errors_print_one_line_and_a_hint(fake: FakeDatabaseClient) -> None:
    fake.simulate_error(
        "invoke", InvalidInput("invalid queue name 'A B'", sqlstate="22023", hint="use a-z")
    )
    fake.responses["task_overview"] = [_row("t", "A B", served=True)]
    result = run("invoke", "t", "--queue", "A B")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: invalid queue name 'A B' (SQLSTATE 22023)",
        "hint: use a-z",
    ]


def test_long_multi_line_errors_are_cut_to_one_line(fake: FakeDatabaseClient) -> None:
    fake.simulate_error("queue_stats", PgConductorError("x" * 1000 + "\n\tmore"))
    result = run("status")
    one_line_error(result, 1, "xxx")
    assert len(result.stderr.strip()) <= 310


def test_transient_errors_without_sqlstate(fake: FakeDatabaseClient) -> None:
    fake.simulate_error("queue_stats", TransientError("connection refused\n\tIs it up?"))
    result = run("status")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: connection refused Is it up?"


def test_connection_refused_for_real(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_common, "cli_retry", lambda: cli_common_retry(1))
    result = run("status", "--database-url", "postgresql://u@127.0.0.1:1/db")
    one_line_error(result, 1, "")


def cli_common_retry(attempts: int) -> Any:
    from pgconductor.retry import RetryPolicy

    return RetryPolicy(max_attempts=attempts)


def test_malformed_url() -> None:
    one_line_error(run("status", "--database-url", "postgresql://u@h:notaport/db"), 1, "")


async def test_make_client_builds_a_small_pool() -> None:
    client = cli_common.make_client(URL)
    assert client.engine.pool.size() == 1  # type: ignore[attr-defined]
    assert client.retry_policy.max_attempts == 3  # type: ignore[attr-defined]
    await client.close()


# -- --app ----------------------------------------------------------------------------------

APP = """
from pydantic import BaseModel
from fakes import FakeDatabaseClient
from pgconductor import Conductor

from pgconductor.types import TaskOverview

conductor = Conductor(FakeDatabaseClient())
conductor.client.responses["task_overview"] = [
    TaskOverview("send-email", "mail", True, True, 0, 0)
]


class Email(BaseModel):
    to: str


@conductor.task("send-email", queue="mail", payload=Email)
async def send_email(ctx, payload):
    return None
"""


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return tmp_path


def _write(directory: Path, source: str) -> str:
    name = f"cli_app_{uuid.uuid4().hex[:8]}"
    (directory / f"{name}.py").write_text(source)
    return name


def test_app_gives_the_database_task_queues_and_payload_models(app_dir: Path) -> None:
    name = _write(app_dir, APP)
    result = run("invoke", "send-email", "--payload", '{"to": "a@b"}', "--app", f"{name}:conductor")
    assert result.exit_code == 0, result.output
    fake = sys.modules[name].conductor.client
    ((args, kwargs),) = fake.calls_to("invoke")
    assert args == ("send-email", {"to": "a@b"})
    assert kwargs["queue"] == "mail"  # the task's queue, from the app
    bad = run("invoke", "send-email", "--payload", '{"too": 1}', "--app", name)
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error: ")
    assert "Traceback" not in bad.output
    assert fake.call_count("invoke") == 1


def test_database_url_wins_over_the_apps(app_dir: Path, fake: FakeDatabaseClient) -> None:
    name = _write(app_dir, APP)
    result = run("status", "--app", name, "--database-url", "postgresql://other/db")
    assert result.exit_code == 0, result.output
    assert fake.urls == ["postgresql://other/db"]  # type: ignore[attr-defined]
    assert fake.call_count("queue_stats") == 1
    assert sys.modules[name].conductor.client is fake


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("raise RuntimeError('no config')", "failed: RuntimeError: no config"),
        ("def broken(:\n", "has a syntax error"),
        ("import no_such_dependency_xyz", "cannot import module"),
    ],
)
def test_broken_app_module_is_one_line(app_dir: Path, source: str, message: str) -> None:
    name = _write(app_dir, source)
    for command in (["status"], ["worker", "start"]):
        one_line_error(run(*command, "--app", name), 2, message)


def test_app_with_a_non_postgres_url_is_one_line(app_dir: Path) -> None:
    name = _write(
        app_dir, "from pgconductor import Conductor\nconductor = Conductor('mysql://u@h/db')\n"
    )
    one_line_error(run("status", "--app", name), 1, "cannot load the database driver")


# -- status and the unserved-task warning ---------------------------------------------------


def _row(task: str, queue: str = "default", **values: Any) -> TaskOverview:
    fields = {"registered": True, "served": False, "pending": 0, "running": 0} | values
    return TaskOverview(task, queue, **fields)


@pytest.mark.parametrize(
    ("overview", "task", "queue", "expected"),
    [
        ([_row("echo", served=True)], "echo", None, None),
        ([_row("echo", served=True)], "echo", "default", None),
        (
            [_row("echo", served=True)],
            "echo",
            "prio",
            "no live worker serves task 'echo' in queue 'prio' (it is served in 'default')",
        ),
        (
            [_row("send-email", "mail", served=True), _row("sync-user")],
            "send-emial",
            None,
            "no live worker has registered task 'send-emial'; did you mean 'send-email'?",
        ),
        ([_row("echo")], "echo", None, "no live worker has registered task 'echo'"),
        ([], "zzz", None, "no live worker has registered task 'zzz'"),
    ],
)
def test_unserved_warning(
    overview: list[TaskOverview], task: str, queue: str | None, expected: str | None
) -> None:
    assert cli.unserved_warning(overview, task, queue) == expected


def test_invoke_warns_before_printing_the_id(fake: FakeDatabaseClient) -> None:
    fake.responses["task_overview"] = [_row("send-email", "mail", served=True)]
    fake.responses["invoke"] = uuid.UUID(ID)
    result = run("invoke", "send-emial")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "warning: no live worker has registered task 'send-emial'; did you mean 'send-email'?"
    ]
    assert result.stdout.strip() == ID
    assert [name for name, _, _ in fake.calls][:2] == ["task_overview", "invoke"]


def test_invoke_of_a_served_task_is_quiet(fake: FakeDatabaseClient) -> None:
    fake.responses["task_overview"] = [_row("t", served=True)]
    result = run("invoke", "t", "--count", "2")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr


def test_an_older_extension_skips_the_check(fake: FakeDatabaseClient) -> None:
    fake.simulate_error("task_overview", PgConductorError("no function", sqlstate="42883"))
    result = run("invoke", "t")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    status = run("status", "--json")
    assert status.exit_code == 0, status.output
    assert "tasks" not in json.loads(status.stdout)
    fake.simulate_error("task_overview", PgConductorError("denied", sqlstate="42501"))
    one_line_error(run("invoke", "t"), 1, "denied (SQLSTATE 42501)")


def test_status_table_and_json(fake: FakeDatabaseClient) -> None:
    fake.responses["queue_stats"] = [QueueStats("default", 1, 2, 3, 4, 5, 6)]
    beat = datetime(2030, 1, 1, 12, 0, 5, tzinfo=UTC)
    live, gone = uuid.UUID("11111111-0000-4000-8000-000000000001"), uuid.uuid4()
    fake.responses["orchestrator_stats"] = [
        OrchestratorInfo(live, "live", "0.1.0", beat, beat, 7, {}),
        OrchestratorInfo(gone, "stopped", "0.1.0", beat, beat, 0, {}),
    ]
    fake.responses["task_overview"] = [
        _row("orphan-task", "mail", pending=4),
        _row("served-task", pending=9, served=True),
        _row("idle-task"),
    ]
    table = run("status")
    assert table.exit_code == 0, table.output
    assert "default" in table.stdout
    assert "cancelled" in table.stdout
    assert str(live)[:8] in table.stdout
    assert str(gone)[:8] not in table.stdout
    assert "1 live, 1 expired or stopped" in table.stdout
    assert "no live worker serves" in table.stdout
    assert "orphan-task" in table.stdout
    assert "served-task" not in table.stdout
    assert "idle-task" not in table.stdout
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
    assert [(t["task_key"], t["served"], t["pending"]) for t in as_json["tasks"]] == [
        ("orphan-task", False, 4),
        ("served-task", True, 9),
        ("idle-task", False, 0),
    ]


def test_status_without_queues(fake: FakeDatabaseClient) -> None:
    result = run("status")
    assert result.exit_code == 0
    assert "no queues yet" in result.stdout
    assert "no live worker serves" not in result.stdout


# -- cancel, schema, worker hook --------------------------------------------------------------


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
        one_line_error(result, 1, f"execution {ID} not found")


def test_cancel_rejects_a_bad_id(fake: FakeDatabaseClient) -> None:
    one_line_error(run("cancel", "nope"), 2, "is not an execution id")


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


def test_schema_upgrade_waits_for_older_orchestrators_up_to_its_timeout(
    fake: FakeDatabaseClient,
) -> None:
    """A breaking update (0.3.0 -> 0.4.0) with an older orchestrator that stays live: one line
    naming it after --timeout, nothing applied."""
    fake.installed_version = "0.3.0"
    now = datetime(2026, 12, 4, tzinfo=UTC)
    old = OrchestratorInfo(uuid.UUID(ID), "live", "0.0.1", now, now, 0, {})
    fake.responses["orchestrator_stats"] = [old]
    result = run("schema", "upgrade", "--to", "0.4.0", "--timeout", "0")
    one_line_error(result, 1, f"still live after 0 s: {ID} (package 0.0.1) (SQLSTATE 55006)")
    assert "--timeout SECONDS" in result.stderr
    assert fake.calls_to("request_shutdown") == [((uuid.UUID(ID),), {})]
    assert fake.call_count("upgrade_extension") == 0
    fake.responses["orchestrator_stats"] = []
    assert run("schema", "upgrade", "--to", "0.4.0", "--timeout", "0").exit_code == 0
    assert fake.installed_version == "0.4.0"


def test_schema_commands_need_a_schema_client(
    monkeypatch: pytest.MonkeyPatch, fake: FakeDatabaseClient
) -> None:
    class Plain:  # a DatabaseClient without the SchemaClient methods
        async def close(self) -> None:
            return None

    monkeypatch.setattr(cli_common, "make_client", lambda url: Plain())
    one_line_error(run("schema", "check"), 1, "Plain cannot manage the extension")


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


def test_worker_hook_registers_the_worker_module(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[typer.Typer] = []

    class Module:
        @staticmethod
        def register(app: typer.Typer) -> None:
            registered.append(app)

    monkeypatch.setattr(cli.importlib, "import_module", lambda name: Module)
    cli._register_worker_commands()
    assert registered == [cli.worker_app]


def test_worker_hook_does_not_hide_broken_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(name: str) -> None:
        raise ModuleNotFoundError(name="some_dependency")

    monkeypatch.setattr(cli.importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError):
        cli._register_worker_commands()


# -- help -----------------------------------------------------------------------------------


def _commands() -> list[list[str]]:
    group = typer.main.get_command(cli.app)
    found: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        found.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(group, [])
    return found


@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(p) or "pgconductor")
def test_help_at_80_columns_shows_every_option_whole(path: list[str]) -> None:
    result = CliRunner().invoke(cli.app, [*path, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    command = typer.main.get_command(cli.app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    for param in command.params:
        if param.param_type_name == "argument":
            continue
        for option in param.opts:
            assert option in result.stdout, option
        if getattr(param, "required", False) or param.default is None:
            continue
        if param.name not in ("as_json", "help", "version", "drain", "listen"):
            assert "[default: " in result.stdout, param.name
    assert "…" not in result.stdout


def test_help_marks_the_queue_optional_and_shows_defaults() -> None:
    start = CliRunner().invoke(cli.app, ["worker", "start", "--help"], env={"COLUMNS": "80"})
    assert "Default: every queue of the app's tasks" in " ".join(start.stdout.split())
    assert "[required]" not in start.stdout
    invoke = CliRunner().invoke(cli.app, ["invoke", "--help"], env={"COLUMNS": "80"})
    assert "[default: 1;" in invoke.stdout  # --count
    assert "[default: 5000;" in invoke.stdout  # --batch-size


def test_importing_the_cli_loads_no_database_or_rich_module() -> None:
    """What keeps `pgconductor --help` fast: the heavy modules load when a command runs."""
    heavy = ("sqlalchemy", "psycopg", "rich", "pydantic", "asyncio", "importlib.metadata")
    code = f"import sys, pgconductor.cli; print(sorted(set({heavy!r}) & set(sys.modules)))"
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert found.strip() == "[]"


def test_python_dash_m_runs_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["pgconductor", "--help"])
    with pytest.raises(SystemExit) as caught:
        runpy.run_module("pgconductor", run_name="__main__")
    assert caught.value.code == 0
    assert "Durable task execution" in capsys.readouterr().out


def test_not_found_for_retry_of_one(fake: FakeDatabaseClient) -> None:
    assert run("retry", ID).stdout.strip() == ID
    fake.simulate_error("retry", NotFound(f"unknown execution {ID}", sqlstate="P0002"))
    one_line_error(run("retry", ID), 1, "(SQLSTATE P0002)")
