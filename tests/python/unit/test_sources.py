"""Schedules and event sources declared on `@conductor.task(...)`: what a task carries, and
the few checks Python makes before any SQL (types, payloads, names used twice)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from fakes import FakeDatabaseClient
from pgconductor.conductor import Conductor, TaskContext
from pgconductor.errors import InvalidInput, PayloadValidationError
from pgconductor.sources import ALL_OPS, EventSource, Schedule, Sources, TableSource


@pytest.fixture
def conductor() -> Conductor:
    return Conductor(FakeDatabaseClient())


def handler(ctx: TaskContext, payload: Any) -> None:
    return None


def declare(conductor: Conductor, key: str = "t", **options: Any) -> Sources:
    return conductor.task(key, **options)(handler).sources


def test_a_task_without_sources_declares_none(conductor: Conductor) -> None:
    sources = declare(conductor)
    assert not sources
    assert sources == Sources()


def test_one_cron_is_a_schedule_named_after_the_task(conductor: Conductor) -> None:
    sources = declare(
        conductor,
        "report",
        cron="*/5 * * * *",
        tz="Europe/Berlin",
        schedule_payload={"full": True},
        missed="catch_up",
        overlap="skip",
    )
    assert sources.schedules == (
        Schedule(
            "*/5 * * * *",
            name="report",
            payload={"full": True},
            tz="Europe/Berlin",
            missed="catch_up",
            overlap="skip",
        ),
    )
    assert sources.given == ("cron", "missed", "overlap", "schedule_payload", "tz")
    assert (sources.events, sources.tables) == ((), ())


def test_several_schedules_name_themselves_or_take_the_key(conductor: Conductor) -> None:
    sources = declare(
        conductor,
        "sync",
        cron=[Schedule("0 * * * *"), Schedule("*/10 * * * * *", name="sync-fast", priority=5)],
    )
    assert [s.name for s in sources.schedules] == ["sync", "sync-fast"]
    assert sources.schedules[1].priority == 5
    one = declare(conductor, "single", cron=Schedule("0 0 * * *", tz="UTC"))
    assert one.schedules == (Schedule("0 0 * * *", name="single"),)


def test_a_schedule_name_is_declared_once(conductor: Conductor) -> None:
    with pytest.raises(InvalidInput, match="declares schedule 't' twice"):
        declare(conductor, cron=[Schedule("* * * * *"), Schedule("0 * * * *")])
    declare(conductor, "a", cron=[Schedule("* * * * *", name="shared")])
    with pytest.raises(InvalidInput, match="which task 'a' declares already"):
        declare(conductor, "b", cron=[Schedule("* * * * *", name="shared")])
    assert "b" not in conductor.tasks


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tz": "UTC"}, "tz need cron="),
        ({"cron": [Schedule("* * * * *")], "missed": "skip"}, "missed need cron="),
        ({"cron": 5}, "expected a string, a Schedule"),
        ({"cron": ["* * * * *"]}, "a list of Schedule values"),
        ({"cron": "* * * * *", "tz": 1}, "schedule tz must be a string"),
        ({"cron": "* * * * *", "schedule_payload": {"x": object()}}, "payload is not JSON"),
        ({"match": {"a": 1}}, "match need on_event"),
        ({"on_event": "e", "match": ["a"]}, "must be a dict"),
        ({"on_event": "e", "fields": [1]}, "fields must be a list of strings"),
        ({"on_event": ["e", "e"]}, "declares event 'e' twice"),
        ({"on_event": 3}, "expected a string, a EventSource"),
        ({"when": "NEW.a > 1"}, "when need on_table"),
        ({"on_table": "public.t", "when": True}, "when must be a string"),
        ({"on_table": "public.t", "ops": [None]}, "ops must be a list of strings"),
        ({"on_table": ["public.t", TableSource("public.t")]}, "table 'public.t' twice"),
    ],
)
def test_what_python_can_check_is_refused_before_any_sql(
    conductor: Conductor, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        declare(conductor, **options)
    assert conductor.tasks == {}
    assert conductor.client.calls == []  # type: ignore[attr-defined]


def test_what_sql_checks_is_left_to_sql(conductor: Conductor) -> None:
    sources = declare(
        conductor, cron="not a cron", tz="Mars/Olympus", missed="sometimes", on_table="nope"
    )
    assert sources.schedules[0].cron == "not a cron"
    assert sources.tables == (TableSource("nope", ALL_OPS),)


def test_a_misspelt_option_is_a_type_error(conductor: Conductor) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'on_events'"):
        conductor.task("t", on_events="e")  # type: ignore[call-arg]


class Report(BaseModel):
    day: str


def test_a_schedule_payload_is_checked_against_the_task_payload(conductor: Conductor) -> None:
    with pytest.raises(PayloadValidationError, match="payload for task 'r' is invalid"):
        conductor.task("r", payload=Report, cron="0 0 * * *", schedule_payload={"days": 1})(handler)
    with pytest.raises(PayloadValidationError):  # no payload is {}: still not a Report
        conductor.task("r", payload=Report, cron="0 0 * * *")(handler)
    task = conductor.task("r", payload=Report, cron="0 0 * * *", schedule_payload={"day": "x"})(
        handler
    )
    assert task.sources.schedules[0].payload == {"day": "x"}


def test_events_take_names_lists_and_values(conductor: Conductor) -> None:
    sources = declare(
        conductor,
        on_event=["order.paid", EventSource("order.refunded", fields=("id",), priority=3)],
        match={"currency": "EUR"},
        fields="amount",
    )
    assert sources.events == (
        EventSource("order.paid", {"currency": "EUR"}, ("amount",)),
        EventSource("order.refunded", None, ("id",), priority=3),
    )
    assert declare(conductor, "one", on_event="x").events == (EventSource("x"),)


def test_tables_take_names_lists_and_values(conductor: Conductor) -> None:
    sources = declare(
        conductor,
        on_table=["public.orders", TableSource('"My Schema"."Odd"', ops=["delete"])],
        ops=["insert", "update"],
        columns=["id", "status"],
        when="NEW.status = 'paid'",
    )
    assert sources.tables == (
        TableSource("public.orders", ("insert", "update"), ("id", "status"), "NEW.status = 'paid'"),
        TableSource('"My Schema"."Odd"', ("delete",)),
    )
    assert declare(conductor, "all", on_table="public.t").tables[0].ops == ALL_OPS
    assert declare(conductor, "none", on_table="public.t", ops=[]).tables[0].ops == ()


def test_one_task_may_declare_every_kind(conductor: Conductor) -> None:
    sources = declare(conductor, cron="0 * * * *", on_event="e", on_table="public.t")
    assert bool(sources)
    assert (len(sources.schedules), len(sources.events), len(sources.tables)) == (1, 1, 1)


def test_the_source_values_are_exported_by_the_package() -> None:
    import pgconductor

    assert (pgconductor.Schedule, pgconductor.EventSource, pgconductor.TableSource) == (
        Schedule,
        EventSource,
        TableSource,
    )
    for name in ("Schedule", "EventSource", "TableSource"):
        assert name in pgconductor.__all__
        assert name in dir(pgconductor)
