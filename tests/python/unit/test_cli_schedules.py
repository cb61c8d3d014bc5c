"""The schedule commands with the fake client: `schedules` (list, pause, resume, backfill,
remove) and `schedule`; their output, their one-line errors and exit codes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest
from typer.testing import CliRunner

from fakes import FakeDatabaseClient
from pgconductor import cli, cli_common
from pgconductor.cli_schedules import parse_time, schedule_lines
from pgconductor.db.schedules import needs_sources
from pgconductor.errors import InvalidInput, NotFound, PgConductorError
from pgconductor.source_types import ScheduleInfo

URL = "postgresql://u@localhost/db"
NEXT = dt.datetime(2026, 12, 6, 1, 30, tzinfo=dt.UTC)
LAST = dt.datetime(2026, 12, 5, 1, 30, 0, 500000, tzinfo=dt.UTC)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeDatabaseClient:
    client = FakeDatabaseClient(version="0.8.0")
    monkeypatch.setattr(cli_common, "make_client", lambda url: client)
    monkeypatch.setenv("DATABASE_URL", URL)
    return client


def run(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "200"})


def one_line_error(result: Any, code: int, text: str) -> None:
    """The user-mistake contract: exit `code`, one stderr line with `text`, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), lines
    assert lines[0].startswith("error: "), lines
    assert text in lines[0], lines


def info(name: str = "nightly", **changes: Any) -> ScheduleInfo:
    row = ScheduleInfo(
        name=name,
        task_key="report",
        cron="30 2 * * *",
        tz="Europe/Berlin",
        next_run_at=NEXT,
        last_run_at=LAST,
        paused=False,
        static=False,
        missed="skip",
        overlap="allow",
        queue=None,
    )
    return dataclasses.replace(row, **changes)


# -- the list ---------------------------------------------------------------------------


def test_schedule_lines_show_next_and_last_runs_and_only_what_differs() -> None:
    rows = [
        info(),
        info(
            "sync",
            paused=True,
            static=True,
            missed="catch_up",
            overlap="skip",
            queue="q",
        ),
        info("fresh", last_run_at=None),
    ]
    assert schedule_lines(rows) == [
        (
            "nightly",
            "report",
            "30 2 * * *",
            "Europe/Berlin",
            "2026-12-06 01:30:00",
            "2026-12-05 01:30:00",
            "",
        ),
        (
            "sync",
            "report",
            "30 2 * * *",
            "Europe/Berlin",
            "-",  # a paused schedule has no next run
            "2026-12-05 01:30:00",
            "paused, static, missed=catch_up, overlap=skip, queue=q",
        ),
        (
            "fresh",
            "report",
            "30 2 * * *",
            "Europe/Berlin",
            "2026-12-06 01:30:00",
            "-",
            "",
        ),
    ]


def test_next_runs_are_printed_in_utc_whatever_the_zone_of_the_value() -> None:
    berlin = dt.timezone(dt.timedelta(hours=1))
    (row,) = schedule_lines([info(next_run_at=dt.datetime(2026, 12, 6, 2, 30, tzinfo=berlin))])
    assert row[4] == "2026-12-06 01:30:00"


@pytest.mark.parametrize("args", [("schedules",), ("schedules", "list")])
def test_schedules_lists_them(fake: FakeDatabaseClient, args: tuple[str, ...]) -> None:
    fake.responses["schedules"] = [info(), info("sync", paused=True)]
    result = run(*args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    nightly = next(line for line in lines if "nightly" in line)
    assert "2026-12-06 01:30:00" in nightly
    assert "2026-12-05 01:30:00" in nightly
    assert "paused" in next(line for line in lines if "sync" in line)
    assert fake.call_count("schedules") == 1
    assert fake.closed


def test_no_schedules_says_so(fake: FakeDatabaseClient) -> None:
    result = run("schedules")
    assert result.exit_code == 0, result.output
    assert "no schedules" in result.stdout


@pytest.mark.parametrize("args", [("schedules", "--json"), ("schedules", "list", "--json")])
def test_schedules_as_json(fake: FakeDatabaseClient, args: tuple[str, ...]) -> None:
    fake.responses["schedules"] = [info(static=True)]
    result = run(*args)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["name"] == "nightly"
    assert row["static"] is True
    assert dt.datetime.fromisoformat(row["next_run_at"]) == NEXT
    assert row["queue"] is None


def test_an_older_extension_names_the_version(fake: FakeDatabaseClient) -> None:
    missing = PgConductorError("function pgconductor.schedules() does not exist", sqlstate="42883")
    fake.simulate_error("schedules", needs_sources(missing, "schedules"))
    result = run("schedules")
    one_line_error(result, 1, "pgconductor.schedules needs extension 0.8.0 or later")
    assert result.stderr.splitlines()[1] == (
        "hint: upgrade the extension: pgconductor schema upgrade"
    )


# -- pause, resume, remove --------------------------------------------------------------


def test_pause(fake: FakeDatabaseClient) -> None:
    result = run("schedules", "pause", "nightly")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "schedule nightly paused"
    assert fake.calls_to("pause_schedule") == [(("nightly",), {})]


@pytest.mark.parametrize("command", ["pause", "resume"])
def test_an_unknown_schedule_is_one_line(fake: FakeDatabaseClient, command: str) -> None:
    fake.simulate_error(
        f"{command}_schedule",
        NotFound(
            "unknown schedule 'nighlty'",
            sqlstate="P0002",
            hint="pgconductor.schedules() lists the schedules.",
        ),
    )
    result = run("schedules", command, "nighlty")
    one_line_error(result, 1, "unknown schedule 'nighlty' (SQLSTATE P0002)")
    assert result.stderr.splitlines()[1] == "hint: pgconductor.schedules() lists the schedules."
    assert result.stdout == ""


def test_resume_prints_the_next_run(fake: FakeDatabaseClient) -> None:
    fake.responses["resume_schedule"] = NEXT
    result = run("schedules", "resume", "nightly")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "schedule nightly resumed: next run 2026-12-06 01:30:00 UTC"
    assert fake.calls_to("resume_schedule") == [(("nightly",), {})]


def test_remove(fake: FakeDatabaseClient) -> None:
    result = run("schedules", "remove", "nightly")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "schedule nightly removed"
    assert fake.calls_to("unschedule") == [(("nightly",), {})]


def test_removing_an_unknown_schedule_fails(fake: FakeDatabaseClient) -> None:
    fake.responses["unschedule"] = False
    result = run("schedules", "remove", "nope")
    one_line_error(result, 1, "unknown schedule 'nope'")
    assert result.stderr.splitlines()[1] == "hint: pgconductor schedules lists the schedules"


def test_database_options_before_the_command_are_used(
    fake: FakeDatabaseClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls: list[str] = []
    monkeypatch.delenv("DATABASE_URL")

    def make_client(url: str) -> FakeDatabaseClient:
        urls.append(url)
        return fake

    monkeypatch.setattr(cli_common, "make_client", make_client)
    result = run("schedules", "--database-url", "postgresql://a@b/c", "pause", "nightly")
    assert result.exit_code == 0, result.output
    assert urls == ["postgresql://a@b/c"]
    result = run(
        "schedules",
        "--database-url",
        URL,
        "remove",
        "x",
        "--database-url",
        "postgresql://o@p/q",
    )
    assert result.exit_code == 0, result.output
    assert urls[-1] == "postgresql://o@p/q"  # the command's own option wins


# -- backfill ---------------------------------------------------------------------------


def test_backfill_reads_times_without_an_offset_as_utc(
    fake: FakeDatabaseClient,
) -> None:
    fake.responses["backfill"] = 3
    result = run(
        "schedules",
        "backfill",
        "nightly",
        "--from",
        "2025-01-01",
        "--to",
        "2025-01-04T00:00+02:00",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "backfilled 3 occurrence(s) of schedule nightly"
    ((args, kwargs),) = fake.calls_to("backfill")
    assert kwargs == {}
    name, start, end = args
    assert name == "nightly"
    assert start == dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert end == dt.datetime(2025, 1, 3, 22, tzinfo=dt.UTC)
    assert end.utcoffset() == dt.timedelta(hours=2)


def test_parse_time_accepts_z() -> None:
    assert parse_time("2025-01-01T09:00:00Z") == dt.datetime(2025, 1, 1, 9, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("--from", "yesterday", "--to", "2025-01-02"), "'yesterday' is not a time"),
        (("--from", "2025-01-01"), "Missing option '--to'"),
    ],
)
def test_backfill_usage_errors_are_one_line(
    fake: FakeDatabaseClient, args: tuple[str, ...], text: str
) -> None:
    one_line_error(run("schedules", "backfill", "nightly", *args), 2, text)
    assert fake.call_count("backfill") == 0


def test_a_bad_backfill_period_is_sql_s_one_line(fake: FakeDatabaseClient) -> None:
    fake.simulate_error(
        "backfill",
        InvalidInput(
            "backfill of 'nightly' from ... has more than 10000 occurrences",
            sqlstate="22023",
            hint="Backfill a shorter period at a time.",
        ),
    )
    result = run("schedules", "backfill", "nightly", "--from", "2000-01-01", "--to", "2025-01-01")
    one_line_error(result, 1, "more than 10000 occurrences (SQLSTATE 22023)")


# -- schedule ---------------------------------------------------------------------------


def test_schedule_with_the_defaults(fake: FakeDatabaseClient) -> None:
    fake.responses["schedule"] = NEXT
    result = run("schedule", "nightly", "report", "30 2 * * *")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "schedule nightly: report at '30 2 * * *' (UTC), next run 2026-12-06 01:30:00 UTC"
    )
    assert fake.calls_to("schedule") == [
        (
            ("nightly", "report", "30 2 * * *"),
            {
                "payload": {},
                "tz": "UTC",
                "queue": None,
                "missed": "skip",
                "overlap": "allow",
                "priority": 0,
                "static": False,
                "catch_up_max": 100,
            },
        )
    ]


def test_schedule_with_every_option(fake: FakeDatabaseClient) -> None:
    result = run(
        "schedule",
        "sync",
        "sync-accounts",
        "*/10 * * * * *",
        "--tz",
        "America/New_York",
        "--payload",
        '{"full": true}',
        "--queue",
        "sync",
        "--missed",
        "catch_up",
        "--overlap",
        "skip",
        "--priority",
        "-5",
        "--catch-up-max",
        "10",
    )
    assert result.exit_code == 0, result.output
    ((args, kwargs),) = fake.calls_to("schedule")
    assert args == ("sync", "sync-accounts", "*/10 * * * * *")
    assert kwargs == {
        "payload": {"full": True},
        "tz": "America/New_York",
        "queue": "sync",
        "missed": "catch_up",
        "overlap": "skip",
        "priority": -5,
        "static": False,
        "catch_up_max": 10,
    }


def test_a_bad_cron_is_sql_s_one_line(fake: FakeDatabaseClient) -> None:
    fake.simulate_error(
        "schedule",
        InvalidInput(
            "invalid cron minute field '61': 61 is outside 0-59",
            sqlstate="22023",
            hint="The minute field takes 0-59: *, a value, a range a-b, a step */n or a-b/n,"
            " or a list of these.",
        ),
    )
    result = run("schedule", "nightly", "report", "61 * * * *")
    one_line_error(result, 1, "invalid cron minute field '61': 61 is outside 0-59 (SQLSTATE 22023)")
    assert result.stderr.splitlines()[1].startswith("hint: The minute field takes 0-59")
    assert result.stdout == ""


def test_a_payload_that_is_not_json_is_a_usage_error(fake: FakeDatabaseClient) -> None:
    result = run("schedule", "nightly", "report", "@daily", "--payload", "{nope")
    one_line_error(result, 2, "not valid JSON")
    assert fake.call_count("schedule") == 0


def test_schedule_needs_its_three_arguments(fake: FakeDatabaseClient) -> None:
    one_line_error(run("schedule", "nightly", "report"), 2, "Missing argument 'CRON'")
