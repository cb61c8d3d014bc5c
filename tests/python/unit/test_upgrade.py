"""Which updates are breaking (marker line, frozen list), and the stop-wait-apply coordination
of `SchemaManager.upgrade`, against the fake client."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from importlib import resources
from typing import Any

import pytest

from fakes import FakeDatabaseClient
from pgconductor.errors import InvalidInput, InvalidState
from pgconductor.schema import SchemaManager, update_chain
from pgconductor.types import OrchestratorInfo
from pgconductor.upgrade import (
    RELEASED_BREAKING,
    BreakingStep,
    breaking_steps,
    is_breaking,
    marked_breaking,
    older_orchestrators,
    stop_older_orchestrators,
    stopping_below,
)

NOW = dt.datetime(2026, 12, 4, tzinfo=dt.UTC)


def orchestrator(version: str | None, state: str = "live", **info: Any) -> OrchestratorInfo:
    return OrchestratorInfo(uuid.uuid4(), state, version, NOW, NOW, 0, info)


# -- which updates are breaking ----------------------------------------------------------------


def test_the_marker_near_the_top_names_the_reason() -> None:
    script = (
        "-- pgconductor 0.6.0 -> 0.7.0: something.\n"
        "-- * details\n"
        "--   pgconductor: breaking (register_task takes other arguments)  \n"
        "\\echo Use \"ALTER EXTENSION pgconductor UPDATE TO '0.7.0'\" to load this file. \\quit\n"
        "CREATE TABLE t (id int);\n"
    )
    assert marked_breaking(script) == "register_task takes other arguments"
    guard_first = "\\echo guard \\quit\n\n-- pgconductor: breaking (why)\nSELECT 1;\n"
    assert marked_breaking(guard_first) == "why"


def test_no_marker_or_one_below_the_first_statement_is_not_breaking() -> None:
    assert marked_breaking("-- pgconductor 0.6.0 -> 0.7.0\nSELECT 1;\n") is None
    assert marked_breaking("SELECT 1;\n-- pgconductor: breaking (too late)\n") is None
    assert marked_breaking("-- pgconductor: breaking ()\nSELECT 1;\n") is None
    assert marked_breaking("") is None


def test_breaking_steps_read_the_marker_and_the_frozen_list() -> None:
    chain = [
        ("0.4.0", "pgconductor--0.3.0--0.4.0.sql", "-- plain\nSELECT 1;\n"),
        ("0.5.0", "pgconductor--0.4.0--0.5.0.sql", "SELECT 1;\n"),
        ("0.6.0", "pgconductor--0.5.0--0.6.0.sql", "-- pgconductor: breaking (x gone)\n"),
    ]
    assert breaking_steps(chain) == [
        BreakingStep("0.4.0", "pgconductor--0.3.0--0.4.0.sql", RELEASED_BREAKING[chain[0][1]]),
        BreakingStep("0.6.0", "pgconductor--0.5.0--0.6.0.sql", "x gone"),
    ]


def test_the_released_paths_breaking_or_not() -> None:
    assert is_breaking("0.3.0", "0.4.0")
    assert is_breaking("0.1.0", "0.6.0")  # through 0.3.0 -> 0.4.0
    assert not is_breaking("0.4.0", "0.5.0")
    assert not is_breaking("0.5.0", "0.6.0")
    assert not is_breaking("0.1.0", "0.3.0")
    with pytest.raises(InvalidInput):
        is_breaking("0.5.0", "9.9.0")


def test_the_frozen_list_names_shipped_scripts_without_a_marker() -> None:
    """The list is only for scripts that cannot carry the marker; each one it names exists."""
    shipped = {
        entry.name: entry.read_text()
        for entry in resources.files("pgconductor").joinpath("sql", "updates").iterdir()
    }
    assert set(RELEASED_BREAKING) <= set(shipped)
    for name in RELEASED_BREAKING:
        assert marked_breaking(shipped[name]) is None, name


def test_older_orchestrators_are_live_ones_of_an_older_or_unknown_package() -> None:
    old, unknown = orchestrator("0.3.0"), orchestrator(None)
    infos = [
        old,
        unknown,
        orchestrator("0.5.0"),
        orchestrator("0.10.0"),
        orchestrator("0.1.0", "stopped"),
        orchestrator("0.1.0", "expired"),
    ]
    assert older_orchestrators(infos, "0.5.0") == [old, unknown]


# -- the coordination ---------------------------------------------------------------------------

STEP = [BreakingStep("0.4.0", "pgconductor--0.3.0--0.4.0.sql", "columns changed")]


async def test_older_ones_are_signalled_once_and_awaited() -> None:
    fake = FakeDatabaseClient("0.3.0")
    old, new = orchestrator("0.3.0", host="h1", pid=7), orchestrator("0.5.0")
    rounds = [[old, new], [old, new], [new]]
    fake.responses["orchestrator_stats"] = lambda: rounds.pop(0)
    signalled = await stop_older_orchestrators(
        fake, STEP, timeout=5, older_than="0.5.0", poll_interval=0
    )
    assert signalled == [old.id]
    assert [args for args, _ in fake.calls_to("request_shutdown")] == [(old.id,)]
    assert fake.call_count("recover_stale") == 3  # a crashed one expires meanwhile


async def test_the_wait_times_out_naming_those_still_live() -> None:
    fake = FakeDatabaseClient("0.3.0")
    old = orchestrator("0.3.0", host="h1", pid=7)
    fake.responses["orchestrator_stats"] = [old]
    ticks = iter([0.0, 1.0, 2.5])
    with pytest.raises(InvalidState) as raised:
        await stop_older_orchestrators(
            fake,
            STEP,
            timeout=2,
            older_than="0.5.0",
            poll_interval=0,
            monotonic=lambda: next(ticks),
        )
    assert str(raised.value) == (
        "breaking upgrade to 0.4.0 not applied: 1 orchestrator(s) of packages older than 0.5.0"
        f" still live after 2 s: {old.id} (package 0.3.0 on h1 pid 7)"
    )
    assert raised.value.sqlstate == "55006"
    assert raised.value.hint is not None
    assert "--timeout" in raised.value.hint
    assert fake.call_count("request_shutdown") == 1


async def test_a_breaking_upgrade_stops_older_orchestrators_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stop and wait, apply, then signal one that started while the update ran."""
    fake = FakeDatabaseClient("0.3.0")
    old, late = orchestrator("0.0.1"), orchestrator("0.0.1", host="h2", pid=3)
    rounds = [[old], [], [late]]
    fake.responses["orchestrator_stats"] = lambda: rounds.pop(0)
    manager = SchemaManager(fake)
    with caplog.at_level(logging.WARNING, "pgconductor.upgrade"):
        assert await manager.upgrade("0.4.0") == "0.4.0"
    order = [
        (name, args)
        for name, args, _ in fake.calls
        if name in ("request_shutdown", "upgrade_extension")
    ]
    assert order == [
        ("request_shutdown", (old.id,)),
        ("upgrade_extension", ("0.4.0",)),
        ("request_shutdown", (late.id,)),
    ]
    assert f"orchestrator {late.id} (package 0.0.1 on h2 pid 3) started during it" in caplog.text


def test_orchestrators_stop_below_the_breaking_script_never_above_this_package() -> None:
    assert stopping_below(STEP, "0.5.0") == "0.4.0"
    assert stopping_below(STEP, "0.3.9") == "0.3.9"  # an unreleased package of the old number


async def test_a_breaking_upgrade_leaves_packages_at_or_past_the_script_running() -> None:
    fake = FakeDatabaseClient("0.3.0")
    fake.responses["orchestrator_stats"] = [orchestrator("0.4.0"), orchestrator("0.4.5")]
    assert await SchemaManager(fake).upgrade("0.4.0", timeout=0) == "0.4.0"
    assert fake.call_count("request_shutdown") == 0


async def test_a_breaking_upgrade_applies_nothing_while_older_ones_live() -> None:
    fake = FakeDatabaseClient("0.3.0")
    fake.responses["orchestrator_stats"] = [orchestrator("0.0.1")]
    with pytest.raises(InvalidState):
        await SchemaManager(fake).upgrade("0.4.0", timeout=0)
    assert fake.call_count("upgrade_extension") == 0
    assert fake.installed_version == "0.3.0"


async def test_a_non_breaking_upgrade_applies_at_once() -> None:
    fake = FakeDatabaseClient("0.4.0")
    fake.responses["orchestrator_stats"] = [orchestrator("0.0.1")]
    assert await SchemaManager(fake).upgrade("0.6.0", timeout=0) == "0.6.0"
    assert fake.call_count("orchestrator_stats") == 0
    assert fake.call_count("request_shutdown") == 0


async def test_a_path_only_the_server_knows_is_applied_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeDatabaseClient("0.5.0")
    with caplog.at_level(logging.WARNING, "pgconductor.upgrade"):
        assert await SchemaManager(fake).upgrade("0.5.0-local") == "0.5.0-local"
    assert "cannot tell whether it is breaking" in caplog.text
    assert fake.call_count("orchestrator_stats") == 0


class SchemaOnly:
    """A client that can upgrade the extension but not list or signal orchestrators."""

    def __init__(self) -> None:
        self.version = "0.3.0"

    async def extension_version(self) -> str | None:
        return self.version

    async def available_versions(self) -> list[str]:
        return [self.version]

    async def install_extension(self, version: str | None = None) -> str | None:
        return self.version

    async def upgrade_extension(self, to: str | None = None) -> str | None:
        self.version = to or self.version
        return self.version

    async def close(self) -> None:
        return None


async def test_a_breaking_upgrade_needs_a_client_that_can_stop_orchestrators() -> None:
    client = SchemaOnly()
    manager = SchemaManager(client)
    assert await manager.upgrade("0.3.0") == "0.3.0"  # nothing to apply: nothing to stop
    with pytest.raises(TypeError, match="stop orchestrators"):
        await manager.upgrade("0.4.0")
    assert client.version == "0.3.0"
    assert update_chain("0.3.0", "0.4.0")[0][1] in RELEASED_BREAKING


def test_every_shipped_marker_line_parses() -> None:
    """A misspelt marker would leave a breaking script unmarked: any header line that starts
    like one must read as one."""
    for entry in resources.files("pgconductor").joinpath("sql", "updates").iterdir():
        text = entry.read_text()
        head = text.split("\\echo", 1)[0]
        if "pgconductor: breaking" in head:
            assert marked_breaking(text) is not None, entry.name
    assert marked_breaking("-- pgconductor: breaking (a reason)\n") == "a reason"
