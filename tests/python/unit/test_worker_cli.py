"""`pgconductor worker start`: loading the app, the JSON config, one-line errors, exit codes."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pgconductor import worker_cli
from pgconductor.cli import app
from pgconductor.db import SqlDatabaseClient
from pgconductor.orchestrator import Orchestrator, WorkerConfig
from pgconductor.worker_cli import UsageError, load_config

_names = itertools.count()

APP = """
from fakes import FakeDatabaseClient
from pgconductor import Conductor

conductor = Conductor(FakeDatabaseClient(version={version!r}))


@conductor.task("a")
async def a(ctx, payload):
    return None


@conductor.task("b", queue="other")
def b(ctx, payload):
    return None


def make():
    return conductor


def broken_factory():
    raise RuntimeError("no config")
"""


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Write an app module into a fresh CWD; returns a function making one (by version)."""
    monkeypatch.chdir(tmp_path)

    def write(version: str | None = "0.1.0") -> str:
        name = f"cli_app_{next(_names)}"
        (tmp_path / f"{name}.py").write_text(APP.format(version=version))
        return name

    return write


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["worker", "start", *args])


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Orchestrator]:
    """Replace `Orchestrator.serve` so the command returns at once; collect orchestrators."""
    seen: list[Orchestrator] = []

    async def serve(self: Orchestrator, *, drain: bool = False) -> None:
        seen.append(self)

    monkeypatch.setattr(Orchestrator, "serve", serve)
    return seen


def one_line_error(result: Any, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert text in result.output


def test_drain_with_nothing_to_do_exits_zero(module: Any) -> None:
    result = run("--app", f"{module()}:conductor", "--drain", "--stats-interval", "0")
    assert result.exit_code == 0, result.output


def test_factory_function_is_called(module: Any, captured: list[Orchestrator]) -> None:
    result = run("--app", f"{module()}:make")
    assert result.exit_code == 0, result.output
    assert sorted(c.queue for c in captured[0].configs) == ["default", "other"]


def test_app_attribute_defaults_to_conductor(module: Any, captured: list[Orchestrator]) -> None:
    assert run("--app", module()).exit_code == 0


def test_command_line_options_reach_the_orchestrator(
    module: Any, captured: list[Orchestrator]
) -> None:
    result = run(
        "--app",
        f"{module()}:conductor",
        "--queue",
        "other",
        "--concurrency",
        "4",
        "--fetch-batch",
        "2",
        "--flush-batch",
        "7",
        "--heartbeat-interval",
        "0.5",
        "--stale-after",
        "9",
        "--grace-period",
        "3",
        "--no-listen",
        "--database-url",
        "postgresql://u@h/db",
    )
    assert result.exit_code == 0, result.output
    (orchestrator,) = captured
    assert orchestrator.configs == [WorkerConfig("other")]
    assert orchestrator._defaults["concurrency"] == 4
    assert orchestrator._defaults["fetch_batch"] == 2
    assert orchestrator._defaults["flush_batch"] == 7
    assert (orchestrator.heartbeat_interval, orchestrator.grace_period) == (0.5, 3.0)
    assert orchestrator.stale_after.total_seconds() == 9
    assert not orchestrator.use_listen
    assert isinstance(orchestrator.conductor.client, SqlDatabaseClient)


def test_config_file_with_queue_objects(
    module: Any, tmp_path: Path, captured: list[Orchestrator]
) -> None:
    config = tmp_path / "tower.json"
    config.write_text(
        json.dumps(
            {
                "app": f"{module()}:conductor",
                "queues": [
                    "default",
                    {"name": "other", "concurrency": 2, "flush_batch": 5},
                ],
                "concurrency": 8,
                "heartbeat_interval": 1,
                "stale_after": 10,
            }
        )
    )
    result = run("--config", str(config), "--concurrency", "6")
    assert result.exit_code == 0, result.output
    (orchestrator,) = captured
    assert orchestrator.configs == [
        WorkerConfig("default"),
        WorkerConfig("other", concurrency=2, flush_batch=5),
    ]
    assert orchestrator._defaults["concurrency"] == 6  # the command line wins


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no_such_module_xyz:conductor", "cannot import module 'no_such_module_xyz'"),
        ("{m}:missing", "has no attribute 'missing'"),
        ("{m}:a", "is a Task, not a pgconductor Conductor"),
        ("{m}:broken_factory", "failed: RuntimeError: no config"),
        (":conductor", "is not MODULE:ATTR"),
    ],
)
def test_bad_app_is_one_line(module: Any, reference: str, message: str) -> None:
    one_line_error(run("--app", reference.format(m=module())), 2, message)


def test_no_app_is_one_line() -> None:
    one_line_error(run(), 2, "no app given")


def test_bad_log_level() -> None:
    one_line_error(run("--app", "x", "--log-level", "loud"), 2, "unknown log level")


def test_version_mismatch_is_one_line_with_a_hint(module: Any) -> None:
    result = run("--app", f"{module(version='9.9.9')}:conductor", "--stats-interval", "0")
    one_line_error(result, 1, "pgconductor extension 9.9.9 is installed")
    assert "hint:" in result.output


def test_missing_extension_is_one_line(module: Any) -> None:
    one_line_error(run("--app", f"{module(version=None)}:conductor"), 1, "not installed")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "is not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"app": "x", "colour": "red"}', "unknown key(s) in config: colour"),
        ('{"queues": "default"}', "'queues' must be a list"),
        ('{"queues": [{"name": "q", "size": 1}]}', "unknown key(s) in queue 'q': size"),
        ('{"queues": [7]}', "a queue must be a name or an object"),
        ('{"concurrency": 0}', "concurrency must be a positive integer"),
        (
            '{"queues": [{"name": "q", "fetch_batch": true}]}',
            "fetch_batch must be a positive",
        ),
        ('{"stale_after": -1}', "stale_after must be a positive number"),
    ],
)
def test_bad_config_is_one_line(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "tower.json"
    config.write_text(content)
    with pytest.raises(UsageError, match=None) as raised:
        load_config(config)
    assert message in str(raised.value)
    one_line_error(run("--config", str(config)), 2, message.split(":")[0])


def test_unreadable_config(tmp_path: Path) -> None:
    one_line_error(run("--config", str(tmp_path / "absent.json")), 2, "cannot read config")


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(app, ["worker", "start", "--help"])
    assert result.exit_code == 0
    for option in (
        "--app",
        "--queue",
        "--concurrency",
        "--fetch-batch",
        "--flush-batch",
        "--drain",
        "--config",
    ):
        assert option in result.output


def test_unreachable_database_is_one_line(module: Any) -> None:
    result = run(
        "--app", f"{module()}:conductor", "--database-url", "postgresql://nobody@127.0.0.1:1/x"
    )
    one_line_error(result, 1, "error: connection failed")


def test_non_postgres_urls_are_one_line(module: Any, tmp_path: Path) -> None:
    one_line_error(
        run("--app", module(), "--database-url", "mysql://u@h/db"), 2, "not a PostgreSQL URL"
    )
    (tmp_path / "mysql_app.py").write_text(
        "from pgconductor import Conductor\n"
        "conductor = Conductor('mysql://u@h/db')\n"
        "@conductor.task('a')\n"
        "async def a(ctx, payload):\n"
        "    return None\n"
    )
    one_line_error(run("--app", "mysql_app"), 1, "cannot load the database driver")


def test_help_defaults_are_the_orchestrators() -> None:
    """The help states the Orchestrator's defaults without importing it: they must agree."""
    defaults = {
        name: p.default for name, p in inspect.signature(Orchestrator.__init__).parameters.items()
    }
    text = " ".join(CliRunner().invoke(app, ["worker", "start", "--help"]).stdout.split())
    for option, name in (
        ("Handlers per queue. Default:", "concurrency"),
        ("Results per flush. Default:", "flush_batch"),
        ("Time between heartbeats. Default:", "heartbeat_interval"),
        ("counts as dead. Default:", "stale_after"),
        ("finish on stop. Default:", "grace_period"),
    ):
        assert f"{option} {defaults[name]:g}." in text, name
    assert defaults["fetch_batch"] is None
    assert "Claims per fetch. Default: the free handler slots." in text


class _Counting:
    """An orchestrator stand-in whose finished count is read from a script, one per report."""

    def __init__(self, script: list[int]) -> None:
        self.script = script
        self.reads = 0
        self.done = asyncio.Event()

    @property
    def stats(self) -> dict[str, Any]:
        value = self.script[min(self.reads, len(self.script) - 1)]
        self.reads += 1
        if self.reads >= len(self.script):
            self.done.set()
        return {"q": types.SimpleNamespace(finished=value)}


async def test_throughput_is_logged_only_while_busy(caplog: pytest.LogCaptureFixture) -> None:
    counting = _Counting([0, 0, 5, 5, 5, 9, 9])
    caplog.set_level(logging.INFO, logger="pgconductor.cli")
    reporter = asyncio.ensure_future(worker_cli._report(counting, 0.001))  # type: ignore[arg-type]
    await asyncio.wait_for(counting.done.wait(), 10)
    reporter.cancel()
    await asyncio.wait((reporter,))
    lines = [r.getMessage() for r in caplog.records if "throughput" in r.getMessage()]
    assert [line.split("(")[1] for line in lines] == ["5 finished)", "9 finished)"]
