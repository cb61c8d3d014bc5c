"""Conductor: task registration, payload validation before SQL, invoke forms, TaskContext."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import uuid
from typing import Any

import pydantic
import pytest
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from fakes import FakeDatabaseClient
from pgconductor.conductor import Backoff, Conductor, Task, TaskContext
from pgconductor.db import SqlDatabaseClient
from pgconductor.errors import Cancelled, InvalidInput, PayloadValidationError, PgConductorError
from pgconductor.types import TaskSpec

NOW = dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC)


class FixedClock:
    """A clock that always says NOW."""

    def now(self) -> dt.datetime:
        return NOW

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        return None


class Email(pydantic.BaseModel):
    to: str
    retries: int = 0


class Resize(TypedDict):
    width: int
    height: int


@dataclasses.dataclass
class Report:
    month: int


@pytest.fixture
def fake() -> FakeDatabaseClient:
    return FakeDatabaseClient()


@pytest.fixture
def conductor(fake: FakeDatabaseClient) -> Conductor:
    return Conductor(fake, context={"db": "the-db"}, clock=FixedClock())


def make_ctx(extra: dict[str, Any] | None = None) -> TaskContext:
    return TaskContext(
        uuid.uuid4(),
        "t",
        "default",
        1,
        3,
        asyncio.Event(),
        extra or {},
        logging.getLogger("t"),
    )


# -- registration -----------------------------------------------------------------------


def test_task_registers_a_spec(conductor: Conductor) -> None:
    @conductor.task(
        "send",
        queue="mail",
        max_attempts=5,
        backoff=(2, dt.timedelta(minutes=1)),
        window=("22:00", "06:00"),
        timezone="Europe/Paris",
        timeout=1.5,
    )
    async def send(ctx: TaskContext, payload: Any) -> str:
        """Send mail."""
        return "sent"

    assert conductor.tasks == {"send": send}
    assert send.spec == TaskSpec(
        key="send",
        queue="mail",
        max_attempts=5,
        window_start=dt.time(22),
        window_end=dt.time(6),
        timezone="Europe/Paris",
        backoff_base=dt.timedelta(seconds=2),
        backoff_cap=dt.timedelta(minutes=1),
        timeout=dt.timedelta(seconds=1.5),
        declared=frozenset(
            {
                "queue",
                "max_attempts",
                "window_start",
                "window_end",
                "timezone",
                "backoff_base",
                "backoff_cap",
                "timeout",
            }
        ),
    )
    assert send.key == "send"
    assert send.is_async
    assert send.__doc__ == "Send mail."
    assert send.__name__ == "send"
    assert repr(send) == "Task('send', queue='mail')"


def test_defaults_and_backoff_object(conductor: Conductor) -> None:
    @conductor.task(
        "plain",
        backoff=Backoff(dt.timedelta(seconds=5), dt.timedelta(hours=1)),
        window=(dt.time(9), dt.time(17)),
        timeout=dt.timedelta(seconds=3),
    )
    def plain(ctx: TaskContext, payload: Any) -> int:
        return 1

    assert not plain.is_async
    assert plain.spec.backoff_base == dt.timedelta(seconds=5)
    assert plain.spec.window_start == dt.time(9)
    assert plain.spec.timeout == dt.timedelta(seconds=3)

    @conductor.task("defaults")
    def defaults(ctx: TaskContext, payload: Any) -> None:
        return None

    assert defaults.spec == TaskSpec("defaults")
    assert plain(make_ctx(), {}) == 1


@pytest.mark.parametrize(
    ("key", "options", "message"),
    [
        ("", {}, "non-empty"),
        ("dup", {}, "already registered"),
        ("x", {"max_attempts": 0}, "max_attempts"),
        ("x", {"window": ("9am", "17:00")}, "not a time of day"),
        ("x", {"timeout": -1}, "must not be negative"),
        ("x", {"backoff": (-1, 10)}, "must not be negative"),
    ],
)
def test_bad_task_options_are_rejected(
    conductor: Conductor, key: str, options: dict[str, Any], message: str
) -> None:
    conductor.task("dup")(lambda ctx, payload: None)
    with pytest.raises(InvalidInput, match=message):
        conductor.task(key, **options)(lambda ctx, payload: None)


def test_decorating_a_non_function_fails(conductor: Conductor) -> None:
    with pytest.raises(TypeError):
        conductor.task("x")(42)  # type: ignore[arg-type]


# -- payload validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload_type", "good", "bad", "parsed"),
    [
        (Email, {"to": "a@b"}, {"retries": "x"}, Email(to="a@b")),
        (
            Resize,
            {"width": 1, "height": 2},
            {"width": "wide"},
            {"width": 1, "height": 2},
        ),
        (Report, {"month": 3}, {"month": "march"}, Report(month=3)),
    ],
)
async def test_payloads_are_validated_before_any_sql(
    conductor: Conductor,
    fake: FakeDatabaseClient,
    payload_type: Any,
    good: Any,
    bad: Any,
    parsed: Any,
) -> None:
    task = conductor.task("typed", payload=payload_type)(lambda ctx, payload: None)
    await task.invoke(good)
    ((args, _),) = fake.calls_to("invoke")
    assert args[1] == task.dump_payload(good)
    assert task.parse_payload(good) == parsed
    with pytest.raises(PayloadValidationError) as caught:
        await task.invoke(bad)
    assert caught.value.errors
    assert "typed" in str(caught.value)
    with pytest.raises(PayloadValidationError):
        task.parse_payload(bad)
    assert fake.call_count("invoke") == 1


async def test_model_instances_are_dumped_as_json(
    conductor: Conductor, fake: FakeDatabaseClient
) -> None:
    class Event(pydantic.BaseModel):
        at: dt.datetime
        id: uuid.UUID

    task = conductor.task("ev", payload=Event)(lambda ctx, payload: None)
    await task.invoke(Event(at=NOW, id=uuid.UUID(int=1)))
    ((args, _),) = fake.calls_to("invoke")
    assert args[1] == {
        "at": "2030-01-01T12:00:00Z",
        "id": "00000000-0000-0000-0000-000000000001",
    }
    assert task.parse_payload(args[1]).at == NOW


def test_untyped_payloads_pass_through(conductor: Conductor) -> None:
    task = conductor.task("free")(lambda ctx, payload: None)
    assert task.parse_payload([1, "x"]) == [1, "x"]
    assert task.dump_payload(None) == {}
    assert task.dump_payload({"a": 1}) == {"a": 1}


def test_root_errors_name_the_root(conductor: Conductor) -> None:
    task = conductor.task("n", payload=int)(lambda ctx, payload: None)
    with pytest.raises(PayloadValidationError, match="<root>"):
        task.parse_payload("not a number")


# -- invoke ------------------------------------------------------------------------------


async def test_invoke_uses_the_tasks_queue_and_options(
    conductor: Conductor, fake: FakeDatabaseClient
) -> None:
    task = conductor.task("t", queue="mail")(lambda ctx, payload: None)
    fake.responses["invoke"] = uuid.UUID(int=7)
    assert await conductor.invoke(task, {"a": 1}, priority=-1, dedupe_key="k") == uuid.UUID(int=7)
    await conductor.invoke("t", None, queue="other", delay=30)
    await conductor.invoke("unknown", None, run_at=NOW)
    calls = fake.calls_to("invoke")
    assert calls[0] == (
        ("t", {"a": 1}),
        {
            "queue": "mail",
            "run_at": None,
            "priority": -1,
            "dedupe_key": "k",
            "conn": None,
        },
    )
    assert calls[1][0] == ("t", {})
    assert calls[1][1]["queue"] == "other"
    assert calls[1][1]["run_at"] == NOW + dt.timedelta(seconds=30)
    assert calls[2][0] == ("unknown", {})
    assert calls[2][1]["queue"] is None
    assert calls[2][1]["run_at"] == NOW


async def test_a_task_given_no_queue_is_invoked_where_sql_has_it(
    conductor: Conductor, fake: FakeDatabaseClient
) -> None:
    task = conductor.task("anywhere")(lambda ctx, payload: None)
    await conductor.invoke(task, {})
    await conductor.invoke_many(task, [{}, {}])
    conductor.invoke_sync(task, {})
    assert fake.calls_to("invoke")[0][1]["queue"] is None  # SQL: the registered queue
    assert fake.calls_to("invoke_batch")[0][1]["queues"] == [None, None]
    assert fake.calls_to("invoke_sync")[0][1]["queue"] is None


async def test_invoke_passes_the_callers_connection(
    conductor: Conductor, fake: FakeDatabaseClient
) -> None:
    marker: Any = object()
    await conductor.invoke("t", {}, conn=marker)
    assert fake.calls_to("invoke")[0][1]["conn"] is marker
    assert fake.call_count("create_queue") == 0  # no queue named: SQL picks an existing one


async def test_a_named_queue_is_created_before_using_the_callers_connection(
    conductor: Conductor, fake: FakeDatabaseClient
) -> None:
    marker: Any = object()
    await conductor.invoke("t", {}, queue="new", conn=marker)
    await conductor.invoke_many("t", [{}], queue="new", conn=marker)
    await conductor.invoke("t", {}, queue="other")  # own transaction: nothing to do
    assert [name for name, _, _ in fake.calls] == [
        "create_queue",
        "invoke",
        "invoke_batch",
        "invoke",
    ]
    assert fake.calls_to("create_queue") == [(("new",), {})]


async def test_run_at_and_delay_exclude_each_other(conductor: Conductor) -> None:
    with pytest.raises(InvalidInput, match="not both"):
        await conductor.invoke("t", {}, run_at=NOW, delay=1)


async def test_invoke_many_sends_chunks(conductor: Conductor, fake: FakeDatabaseClient) -> None:
    task = conductor.task("t", queue="q")(lambda ctx, payload: None)
    ids = await task.invoke_many(
        [{"n": n} for n in range(5)],
        chunk_size=2,
        priority=3,
        dedupe_keys=list("abcde"),
        delay=dt.timedelta(seconds=1),
    )
    assert len(ids) == 5
    calls = fake.calls_to("invoke_batch")
    assert [len(args[0]) for args, _ in calls] == [2, 2, 1]
    args, kwargs = calls[2]
    assert args == (["t"], [{"n": 4}])
    assert kwargs["queues"] == ["q"]
    assert kwargs["priorities"] == [3]
    assert kwargs["dedupe_keys"] == ["e"]
    assert kwargs["run_ats"] == [NOW + dt.timedelta(seconds=1)]


async def test_invoke_many_of_nothing_makes_no_call(
    conductor: Conductor, fake: FakeDatabaseClient
) -> None:
    assert await conductor.invoke_many("t", []) == []
    assert fake.calls == []


async def test_invoke_many_checks_dedupe_keys(conductor: Conductor) -> None:
    with pytest.raises(InvalidInput, match="2 dedupe keys for 1 payloads"):
        await conductor.invoke_many("t", [{}], dedupe_keys=["a", "b"])


def test_sync_forms(conductor: Conductor, fake: FakeDatabaseClient) -> None:
    task = conductor.task("t", queue="q", payload=Report)(lambda ctx, payload: None)
    marker: Any = object()
    task.invoke_sync({"month": 1}, conn=marker)
    ids = conductor.invoke_many_sync(task, [{"month": 2}] * 3, chunk_size=2, conn=marker)
    assert len(ids) == 3
    ((args, kwargs),) = fake.calls_to("invoke_sync")
    assert args == ("t", {"month": 1})
    assert kwargs["conn"] is marker
    assert kwargs["queue"] == "q"
    batches = fake.calls_to("invoke_batch_sync")
    assert [len(a[0]) for a, _ in batches] == [2, 1]
    assert fake.calls_to("create_queue_sync") == [(("q",), {})]
    with pytest.raises(PayloadValidationError):
        conductor.invoke_sync(task, {"month": "x"})
    with pytest.raises(InvalidInput):
        conductor.invoke_many_sync(task, [{"month": 1}], dedupe_keys=[])


def test_sync_forms_need_a_sync_capable_client() -> None:
    class AsyncOnly:
        async def invoke(self, *args: Any, **kwargs: Any) -> uuid.UUID:
            return uuid.uuid4()

    conductor = Conductor(AsyncOnly())  # type: ignore[arg-type]
    with pytest.raises(PgConductorError, match="no blocking invoke"):
        conductor.invoke_sync("t", {})


# -- client lifecycle --------------------------------------------------------------------


async def test_client_from_url_is_owned_and_closed() -> None:
    conductor = Conductor("postgresql://u@localhost/db")
    client = conductor.client
    assert isinstance(client, SqlDatabaseClient)
    assert conductor.client is client
    async with conductor:
        pass
    assert conductor._client is None


async def test_client_from_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@localhost/env")
    conductor = Conductor()
    assert isinstance(conductor.client, SqlDatabaseClient)
    await conductor.close()


def test_no_database_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(PgConductorError, match="no database") as caught:
        _ = Conductor().client
    assert caught.value.hint is not None
    assert "DATABASE_URL" in caught.value.hint


async def test_a_given_client_is_not_closed(fake: FakeDatabaseClient) -> None:
    conductor = Conductor(fake)
    await conductor.close()
    assert not fake.closed
    other = FakeDatabaseClient()
    conductor.client = other
    assert conductor.client is other


async def test_register_tasks(conductor: Conductor, fake: FakeDatabaseClient) -> None:
    a = conductor.task("a")(lambda ctx, payload: None)
    b = conductor.task("b", queue="q", max_retry_after=3)(lambda ctx, payload: None)
    fake.responses["declare_task"] = lambda spec: dataclasses.replace(spec, max_attempts=7)
    kept = await conductor.register_tasks()
    sent = [args[0] for args, _ in fake.calls_to("declare_task")]
    assert [s.declared for s in sent] == [frozenset(), frozenset({"queue", "max_retry_after"})]
    assert (a.spec.max_attempts, b.spec.max_attempts) == (7, 7)  # the effective settings
    assert b.spec.max_retry_after == 3
    assert kept == {"a": {"max_attempts": 7}, "b": {"max_attempts": 7}}
    assert fake.call_count("register_task") == 0


async def test_register_tasks_falls_back_before_0_4_0(
    conductor: Conductor, fake: FakeDatabaseClient
) -> None:
    a = conductor.task("a")(lambda ctx, payload: None)
    b = conductor.task("b")(lambda ctx, payload: None)
    fake.simulate_error("declare_task", PgConductorError("no function", sqlstate="42883"))
    assert await conductor.register_tasks() == {}
    assert fake.call_count("declare_task") == 1  # asked once, then register_task for all
    assert [args[0] for args, _ in fake.calls_to("register_task")] == [a.spec, b.spec]


def test_task_rejects_a_negative_max_retry_after(conductor: Conductor) -> None:
    with pytest.raises(InvalidInput, match="max_retry_after"):
        conductor.task("x", max_retry_after=-1)


# -- TaskContext and extra context -------------------------------------------------------


def test_task_context_exposes_extras_and_cancellation() -> None:
    ctx = make_ctx({"db": "conn", "mailer": 1})
    assert ctx.db == "conn"
    assert ctx.extra["mailer"] == 1
    assert not ctx.is_cancelled()
    assert not ctx.cancelled
    ctx.raise_if_cancelled()  # not cancelled: nothing happens
    ctx.cancel_event.set()
    assert ctx.is_cancelled()
    assert ctx.cancelled
    with pytest.raises(Cancelled, match="was asked to stop"):
        ctx.raise_if_cancelled()
    with pytest.raises(AttributeError, match="nope"):
        _ = ctx.nope
    with pytest.raises(AttributeError):
        _ = ctx.__wrapped__
    assert TaskContext(uuid.uuid4(), "t", "q", 1, 1, asyncio.Event()).logger.name == (
        "pgconductor.task"
    )


def test_ctx_logger_names_the_task_and_the_execution(caplog: pytest.LogCaptureFixture) -> None:
    ctx = TaskContext(uuid.UUID(int=7), "send", "q", 1, 3)
    assert ctx.logger is ctx.logger  # made once, on first use
    with caplog.at_level(logging.INFO, logger="pgconductor.task"):
        ctx.logger.info("sent %d mails", 2, extra={"mails": 2})
    [record] = caplog.records
    assert record.getMessage() == f"send {uuid.UUID(int=7)}: sent 2 mails"
    assert (record.task_key, record.execution_id, record.mails) == (  # type: ignore[attr-defined]
        "send",
        str(uuid.UUID(int=7)),
        2,
    )


@dataclasses.dataclass
class Services:
    db: str
    cache: int


class Plain:
    def __init__(self) -> None:
        self.db = "plain"
        self._hidden = 1


class Slotted:
    __slots__ = ("db",)

    def __init__(self) -> None:
        self.db = "slotted"


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (None, {}),
        ({"db": "m"}, {"db": "m"}),
        (Services("d", 2), {"db": "d", "cache": 2}),
        (Plain(), {"db": "plain"}),
    ],
)
def test_context_is_normalised_to_a_mapping(context: Any, expected: dict[str, Any]) -> None:
    assert Conductor(FakeDatabaseClient(), context=context).context == expected


def test_slotted_context_objects_work() -> None:
    assert Conductor(FakeDatabaseClient(), context=Slotted()).context["db"] == "slotted"


def test_task_is_callable_with_a_context(conductor: Conductor) -> None:
    task: Task[str] = conductor.task("echo")(lambda ctx, payload: f"{ctx.db}:{payload}")
    assert task(make_ctx(conductor.context), 5) == "the-db:5"
