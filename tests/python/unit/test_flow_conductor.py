"""Conductor flow control with the fake client: enqueue options, submit, task limits, and
the operations (pause, resume, cancel by key, fair share, status, one maintenance pass)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pydantic
import pytest

from fakes import FakeDatabaseClient
from pgconductor.conductor import Conductor, TaskContext
from pgconductor.errors import InvalidInput, InvalidState, PgConductorError
from pgconductor.flow import check_task_limits
from pgconductor.types import FlowStatus, Submitted

NOW = dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(hours=1)


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


@pytest.fixture
def fake() -> FakeDatabaseClient:
    return FakeDatabaseClient()


@pytest.fixture
def conductor(fake: FakeDatabaseClient) -> Conductor:
    return Conductor(fake, clock=FixedClock())


# -- enqueue options --------------------------------------------------------------------


async def test_invoke_sends_the_flow_options_converted(
    conductor: Conductor, fake: FakeDatabaseClient
) -> None:
    await conductor.invoke(
        "t",
        {"a": 1},
        dedupe_key="d",
        concurrency_key="tenant-1",
        on_conflict="supersede",
        throttle=2.5,
        debounce=dt.timedelta(seconds=1),
        debounce_max=60,
        start_by=LATER,
    )
    ((args, kwargs),) = fake.calls_to("invoke")
    assert args == ("t", {"a": 1})
    assert kwargs["dedupe_key"] == "d"
    assert kwargs["concurrency_key"] == "tenant-1"
    assert kwargs["on_conflict"] == "supersede"
    assert kwargs["throttle"] == dt.timedelta(seconds=2.5)
    assert kwargs["debounce"] == dt.timedelta(seconds=1)
    assert kwargs["debounce_max"] == dt.timedelta(minutes=1)
    assert kwargs["start_by"] == LATER


async def test_invoke_without_options_calls_as_before(
    conductor: Conductor, fake: FakeDatabaseClient
) -> None:
    await conductor.invoke("t")
    ((_, kwargs),) = fake.calls_to("invoke")
    assert set(kwargs) == {"queue", "run_at", "priority", "dedupe_key", "conn"}


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"on_conflict": "ignore"}, InvalidInput, "on_conflict must be one of"),
        ({"throttle": -1}, InvalidInput, "throttle must not be negative"),
        ({"debounce_max": dt.timedelta(seconds=-1)}, InvalidInput, "debounce_max"),
        (
            {"concurrency_kee": "x"},
            TypeError,
            "unexpected keyword argument 'concurrency_kee'",
        ),
    ],
)
async def test_bad_options_fail_before_any_sql(
    conductor: Conductor,
    fake: FakeDatabaseClient,
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        await conductor.invoke("t", {}, **options)
    with pytest.raises(error, match=message):
        await conductor.submit("t", {}, **options)
    assert fake.calls == []


async def test_invoke_many_cuts_concurrency_keys_per_chunk(
    conductor: Conductor, fake: FakeDatabaseClient
) -> None:
    ids = await conductor.invoke_many(
        "t",
        [{"n": n} for n in range(5)],
        chunk_size=2,
        concurrency_keys=["a", "b", "c", "d", "e"],
        throttle=1,
        start_by=LATER,
    )
    assert len(ids) == 5
    calls = fake.calls_to("invoke_batch")
    assert [kwargs["concurrency_keys"] for _, kwargs in calls] == [
        ["a", "b"],
        ["c", "d"],
        ["e"],
    ]
    assert [kwargs["start_bys"] for _, kwargs in calls] == [
        [LATER] * 2,
        [LATER] * 2,
        [LATER],
    ]
    assert all(kwargs["throttle"] == dt.timedelta(seconds=1) for _, kwargs in calls)
    assert "on_conflict" not in calls[0][1]  # not given: not sent


async def test_invoke_many_checks_the_concurrency_keys(conductor: Conductor) -> None:
    with pytest.raises(InvalidInput, match="1 concurrency keys for 2 payloads"):
        await conductor.invoke_many("t", [{}, {}], concurrency_keys=["a"])


def test_sync_forms_take_the_options(conductor: Conductor, fake: FakeDatabaseClient) -> None:
    conductor.invoke_sync("t", {}, concurrency_key="k", on_conflict="keep")
    conductor.invoke_many_sync("t", [{}, {}], concurrency_keys=["a", "b"], debounce=3)
    ((_, kwargs),) = fake.calls_to("invoke_sync")
    assert (kwargs["concurrency_key"], kwargs["on_conflict"]) == ("k", "keep")
    ((_, batch),) = fake.calls_to("invoke_batch_sync")
    assert batch["concurrency_keys"] == ["a", "b"]
    assert batch["debounce"] == dt.timedelta(seconds=3)


# -- submit -----------------------------------------------------------------------------


async def test_submit_validates_the_payload_and_returns_the_outcome(
    conductor: Conductor, fake: FakeDatabaseClient
) -> None:
    task = conductor.task("send", queue="mail", payload=Email)(lambda ctx, payload: None)
    fake.responses["submit"] = Submitted(uuid.UUID(int=5), "debounced")
    found = await conductor.submit(task, {"to": "a@b"}, dedupe_key="a", debounce=10, delay=1)
    assert found == Submitted(uuid.UUID(int=5), "debounced")
    ((args, kwargs),) = fake.calls_to("submit")
    assert args == ("send", {"to": "a@b"})
    assert kwargs["queue"] == "mail"
    assert kwargs["run_at"] == NOW + dt.timedelta(seconds=1)
    assert kwargs["debounce"] == dt.timedelta(seconds=10)
    with pytest.raises(PgConductorError):
        await conductor.submit(task, {"too": 1})
    assert fake.call_count("submit") == 1


async def test_submit_on_the_callers_connection_creates_the_queue_first(
    conductor: Conductor, fake: FakeDatabaseClient
) -> None:
    marker: Any = object()
    await conductor.submit("t", {}, queue="q", conn=marker)
    assert [name for name, _, _ in fake.calls] == ["create_queue", "submit"]
    assert fake.calls_to("submit")[0][1]["conn"] is marker


async def test_submit_many_returns_every_outcome_in_order(
    conductor: Conductor, fake: FakeDatabaseClient
) -> None:
    def answer(task_keys: list[str], payloads: list[Any], **_: Any) -> list[Submitted]:
        return [Submitted(uuid.UUID(int=p["n"]), "created") for p in payloads]

    fake.responses["submit_batch"] = answer
    found = await conductor.submit_many(
        "t", [{"n": n} for n in range(1, 4)], chunk_size=2, dedupe_keys=["a", "b", "c"]
    )
    assert [s.id.int for s in found] == [1, 2, 3]
    calls = fake.calls_to("submit_batch")
    assert [kwargs["dedupe_keys"] for _, kwargs in calls] == [["a", "b"], ["c"]]
    assert await conductor.submit_many("t", []) == []
    assert fake.call_count("submit_batch") == 2


async def test_a_client_without_flow_calls_is_refused(conductor: Conductor) -> None:
    class Bare:
        """Has none of the flow-control methods."""

    conductor.client = Bare()  # type: ignore[assignment]
    with pytest.raises(PgConductorError, match="Bare has no flow-control calls"):
        await conductor.pause_queue("q")


# -- task limits ------------------------------------------------------------------------


def test_task_limits_are_declared_settings(conductor: Conductor) -> None:
    @conductor.task(
        "fetch",
        max_running=10,
        max_running_per_key=2,
        rate_limit=100,
        rate_limit_per_key=5,
        rate_period=60,
        start_within=dt.timedelta(minutes=5),
        keep_completed=0,
        keep_failed=dt.timedelta(days=90),
    )
    def fetch(ctx: TaskContext, payload: Any) -> None:
        return None

    spec = fetch.spec
    assert (spec.max_running, spec.max_running_per_key) == (10, 2)
    assert (spec.rate_limit, spec.rate_limit_per_key) == (100, 5)
    assert spec.rate_period == dt.timedelta(minutes=1)
    assert spec.start_within == dt.timedelta(minutes=5)
    assert (spec.keep_completed, spec.keep_failed) == (
        dt.timedelta(0),
        dt.timedelta(days=90),
    )
    assert spec.declared == {
        "max_running",
        "max_running_per_key",
        "rate_limit",
        "rate_limit_per_key",
        "rate_period",
        "start_within",
        "keep_completed",
        "keep_failed",
    }


def test_limits_left_out_are_not_declared(conductor: Conductor) -> None:
    task = conductor.task("t", max_running=None, rate_limit=3)(lambda ctx, payload: None)
    assert task.spec.declared == {"rate_limit"}
    assert task.spec.max_running is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_running": 0}, "max_running must be a whole number >= 1"),
        ({"rate_limit_per_key": 1.5}, "rate_limit_per_key must be a whole number"),
        ({"max_running_per_key": True}, "max_running_per_key must be a whole number"),
        ({"rate_period": 0}, "rate_period must be longer than zero"),
        ({"start_within": -1}, "start_within must not be negative"),
        ({"keep_failed": -1}, "keep_failed must not be negative"),
    ],
)
def test_bad_limits_are_refused_at_registration(
    conductor: Conductor, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        conductor.task("t", **options)
    assert caught.value.sqlstate == "22023"
    assert conductor.tasks == {}


def test_an_unknown_task_option_is_a_type_error(conductor: Conductor) -> None:
    with pytest.raises(TypeError, match="'max_runing'"):
        conductor.task("t", max_runing=3)  # type: ignore[call-arg]


def test_limits_on_an_older_extension_are_refused_with_the_version(
    conductor: Conductor,
) -> None:
    conductor.task("plain")(lambda ctx, payload: None)
    conductor.task("limited", max_running=2, keep_failed=0)(lambda ctx, payload: None)
    check_task_limits(conductor.tasks.values(), (0, 7, 0))
    with pytest.raises(InvalidState) as caught:
        check_task_limits(conductor.tasks.values(), (0, 6, 1))
    assert str(caught.value) == (
        "task 'limited' sets max_running, keep_failed, which needs pgconductor extension "
        "0.7.0 or later (installed: 0.6.1)"
    )
    assert caught.value.hint == "upgrade the extension: pgconductor schema upgrade"
    del conductor.tasks["limited"]
    check_task_limits(conductor.tasks.values(), (0, 4, 0))


# -- operations -------------------------------------------------------------------------


async def test_pause_and_resume_take_tasks_or_keys(
    conductor: Conductor, fake: FakeDatabaseClient
) -> None:
    task = conductor.task("send")(lambda ctx, payload: None)
    fake.responses["resume_task"] = False
    assert await conductor.pause_queue("mail") is True
    assert await conductor.resume_queue("mail") is True
    assert await conductor.pause_task(task) is True
    assert await conductor.resume_task("send") is False
    assert [(name, args) for name, args, _ in fake.calls] == [
        ("pause_queue", ("mail",)),
        ("resume_queue", ("mail",)),
        ("pause_task", ("send",)),
        ("resume_task", ("send",)),
    ]


async def test_cancel_by_key_needs_exactly_one_key(
    conductor: Conductor, fake: FakeDatabaseClient
) -> None:
    fake.responses["cancel_by_key"] = 4
    assert await conductor.cancel_by_key("t", concurrency_key="tenant-1", reason="flood") == 4
    assert fake.calls_to("cancel_by_key") == [
        (("t",), {"dedupe_key": None, "concurrency_key": "tenant-1", "reason": "flood"})
    ]
    for keys in ({}, {"dedupe_key": "a", "concurrency_key": "b"}):
        with pytest.raises(InvalidInput, match="exactly one of dedupe_key and concurrency_key"):
            await conductor.cancel_by_key("t", **keys)
    assert fake.call_count("cancel_by_key") == 1


async def test_fair_share_status_and_maintenance(
    conductor: Conductor, fake: FakeDatabaseClient
) -> None:
    row = FlowStatus("q", "t", "k", 1, 2, 0, 3, 1, False)
    fake.responses["flow_status"] = [row]
    fake.responses["maintain"] = {"expired": 1}
    await conductor.set_fair_share("q")
    await conductor.set_fair_share("q", enabled=False)
    await conductor.set_key_weight("q", "big", 10)
    assert await conductor.flow_status("q") == [row]
    assert await conductor.maintain(limit=5) == {"expired": 1}
    assert [(name, args) for name, args, _ in fake.calls] == [
        ("set_fair_share", ("q", True)),
        ("set_fair_share", ("q", False)),
        ("set_key_weight", ("q", "big", 10)),
        ("flow_status", ("q",)),
        ("maintain", (5,)),
    ]


async def test_a_task_submits_itself(conductor: Conductor, fake: FakeDatabaseClient) -> None:
    task = conductor.task("send", queue="mail")(lambda ctx, payload: None)
    found = await task.submit({"n": 1}, concurrency_key="k", on_conflict="keep")
    assert found.outcome == "created"
    ((args, kwargs),) = fake.calls_to("submit")
    assert args == ("send", {"n": 1})
    assert (kwargs["queue"], kwargs["concurrency_key"], kwargs["on_conflict"]) == (
        "mail",
        "k",
        "keep",
    )
    await task.invoke({}, throttle=5)
    assert fake.calls_to("invoke")[0][1]["throttle"] == dt.timedelta(seconds=5)


async def test_a_client_of_the_older_protocol_still_takes_plain_invokes() -> None:
    class OldClient(FakeDatabaseClient):
        """`invoke` and `invoke_batch` as they were before the flow options."""

        async def invoke(  # type: ignore[override]
            self,
            task_key: str,
            payload: Any,
            *,
            queue: Any = None,
            run_at: Any = None,
            priority: int = 0,
            dedupe_key: Any = None,
            conn: Any = None,
        ) -> uuid.UUID:
            return uuid.UUID(int=1)

        async def invoke_batch(  # type: ignore[override]
            self,
            task_keys: Any,
            payloads: Any,
            *,
            queues: Any = None,
            run_ats: Any = None,
            priorities: Any = None,
            dedupe_keys: Any = None,
            conn: Any = None,
        ) -> list[uuid.UUID]:
            return [uuid.UUID(int=2)] * len(task_keys)

    conductor = Conductor(OldClient(), clock=FixedClock())
    assert await conductor.invoke("t", {}, dedupe_key="d") == uuid.UUID(int=1)
    assert await conductor.invoke_many("t", [{}, {}]) == [uuid.UUID(int=2)] * 2
