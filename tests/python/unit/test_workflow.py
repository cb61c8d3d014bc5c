"""TaskContext's durable methods with the database faked: replay, keys, suspension plans.

Each test runs a handler through `executor.execute` with a `DurableRun` whose saver is a
`StepWriter` over the fake client, so what a test checks is what SQL would receive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from fakes import FakeDatabaseClient
from pgconductor.conductor import Conductor, TaskContext
from pgconductor.errors import Fatal, InvalidInput, InvalidState
from pgconductor.executor import execute
from pgconductor.steps import StepWriter
from pgconductor.types import ClaimedExecution, ExecutionResult, ResultStatus
from pgconductor.workflow import (
    ChildFailed,
    ChildTimedOut,
    DurableRun,
    NonDeterminism,
    StoredStep,
    Suspend,
    Wait,
    check_name,
    json_value,
)

from .engine_helpers import Backlog, claimed, context, flushed

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


class FixedClock:
    """A clock standing at NOW."""

    def now(self) -> dt.datetime:
        return NOW

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


@pytest.fixture
def fake() -> FakeDatabaseClient:
    return FakeDatabaseClient()


@pytest.fixture
def conductor(fake: FakeDatabaseClient) -> Conductor:
    conductor = Conductor(fake)

    @conductor.task("child")
    async def child(ctx: TaskContext, payload: Any) -> Any:
        return payload

    return conductor


Handler = Callable[[TaskContext, Any], Any]


async def run(
    fake: FakeDatabaseClient,
    conductor: Conductor,
    handler: Handler,
    steps: dict[str, Any] | None = None,
) -> tuple[ExecutionResult | None, DurableRun]:
    """Run `handler` once as a claimed workflow holding `steps`; return its result and run."""
    task = conductor.task(f"wf-{uuid.uuid4()}")(handler)
    row: ClaimedExecution = claimed(task.key)
    writer = StepWriter(fake, uuid.uuid4(), interval=0.001)
    ctx = context(row)
    durable = DurableRun(
        row.id,
        row.lease,
        steps,
        saver=writer,
        tasks=conductor.tasks,
        clock=FixedClock(),
    )
    ctx._run = durable
    try:
        result = await execute(task, row, ctx)
    finally:
        await writer.close(1.0)
    return result, durable


def saved(fake: FakeDatabaseClient) -> list[tuple[str, int, Any]]:
    """(key, seq, result) of every step sent to save_steps, in order."""
    found = []
    for args, _ in fake.calls_to("save_steps"):
        found += list(zip(args[3], args[4], args[5], strict=True))
    return found


def done(seq: int, result: Any = None, kind: str = "step", **extra: Any) -> dict[str, Any]:
    return {"seq": seq, "kind": kind, "state": "done", "result": result, **extra}


# -- steps ----------------------------------------------------------------------------------


async def test_a_step_runs_once_is_saved_and_returns_its_json(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    calls: list[int] = []

    async def charge(amount: int) -> dict[str, Any]:
        calls.append(amount)
        return {"charged": amount, "at": NOW}

    async def handler(ctx: TaskContext, payload: Any) -> Any:
        return await ctx.step("charge", charge, 5)

    result, _ = await run(fake, conductor, handler)
    assert result is not None
    assert result.status is ResultStatus.COMPLETED
    assert result.result == {"charged": 5, "at": NOW.isoformat()}
    assert calls == [5]
    assert saved(fake) == [("charge", 0, {"charged": 5, "at": NOW.isoformat()})]


async def test_a_replay_returns_stored_steps_without_running_them(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    ran: list[str] = []

    def effect(name: str) -> str:
        ran.append(name)
        return name.upper()

    async def handler(ctx: TaskContext, payload: Any) -> Any:
        return [await ctx.step(name, effect, name) for name in ("a", "b", "c")]

    stored = {"a": done(0, "stored-a"), "b": done(1, "stored-b")}
    result, _ = await run(fake, conductor, handler, stored)
    assert result is not None
    assert result.result == ["stored-a", "stored-b", "C"]
    assert ran == ["c"]
    assert saved(fake) == [("c", 2, "C")]


async def test_a_sync_step_runs_off_the_event_loop(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    threads: list[str] = []

    def blocking() -> int:
        threads.append(threading.current_thread().name)
        return 1

    async def handler(ctx: TaskContext, payload: Any) -> Any:
        return await ctx.step("blocking", blocking)

    result, _ = await run(fake, conductor, handler)
    assert result is not None
    assert result.result == 1
    assert threads
    assert threads[0] != threading.current_thread().name


async def test_a_name_used_again_gets_a_numbered_key(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    async def handler(ctx: TaskContext, payload: Any) -> Any:
        for n in range(3):
            await ctx.step("poll", lambda n=n: n)
        await ctx.step("x#2", lambda: "explicit")
        await ctx.step("x", lambda: 0)
        await ctx.step("x", lambda: 1)  # x#2 is taken: x#3

    await run(fake, conductor, handler)
    assert [key for key, _, _ in saved(fake)] == [
        "poll",
        "poll#2",
        "poll#3",
        "x#2",
        "x",
        "x#3",
    ]
    assert [seq for _, seq, _ in saved(fake)] == [0, 1, 2, 3, 4, 5]


async def test_keys_under_gather_follow_the_calls_not_the_finishing_order(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    second_done = asyncio.Event()

    async def slow() -> str:
        await second_done.wait()
        return "slow"

    async def fast() -> str:
        second_done.set()
        return "fast"

    async def handler(ctx: TaskContext, payload: Any) -> Any:
        return await asyncio.gather(ctx.step("fetch", slow), ctx.step("fetch", fast))

    result, _ = await run(fake, conductor, handler)
    assert result is not None
    assert result.result == ["slow", "fast"]
    assert sorted(saved(fake)) == [("fetch", 0, "slow"), ("fetch#2", 1, "fast")]
    fake.calls.clear()

    # The replay gives each call its own stored result, in the same order.
    stored = {"fetch": done(0, "slow"), "fetch#2": done(1, "fast")}
    result, _ = await run(fake, conductor, handler, stored)
    assert result is not None
    assert result.result == ["slow", "fast"]
    assert saved(fake) == []


async def test_writes_of_concurrent_steps_share_one_save_steps_call(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    async def handler(ctx: TaskContext, payload: Any) -> Any:
        return await asyncio.gather(*(ctx.step(f"s{n}", lambda n=n: n) for n in range(20)))

    result, _ = await run(fake, conductor, handler)
    assert result is not None
    assert result.result == list(range(20))
    assert fake.call_count("save_steps") == 1
    assert len(saved(fake)) == 20


async def test_a_different_step_at_a_stored_position_is_fatal_naming_both(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    caught: list[BaseException] = []

    async def handler(ctx: TaskContext, payload: Any) -> Any:
        try:
            await ctx.step("refund", lambda: 1)
        except Fatal as exc:  # swallowing it changes nothing
            caught.append(exc)
        return "done anyway"

    result, durable = await run(fake, conductor, handler, {"charge": done(0, 1)})
    assert result is not None
    assert result.status is ResultStatus.FATAL
    assert "'refund'" in (result.error or "")
    assert "'charge'" in (result.error or "")
    assert isinstance(caught[0], NonDeterminism)
    assert durable.failure is caught[0]
    assert saved(fake) == []


async def test_a_stored_key_met_as_another_kind_is_fatal(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    async def sleeper(ctx: TaskContext, payload: Any) -> Any:
        await ctx.sleep("nap", 1)

    result, _ = await run(fake, conductor, sleeper, {"nap": done(0, 1)})
    assert result is not None
    assert result.status is ResultStatus.FATAL
    assert "sleep 'nap' at position 0; the recorded run had step 'nap'" in (result.error or "")


async def test_steps_gathered_after_other_awaits_may_start_in_another_order(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    delays = {"x": 0.02, "y": 0.0}
    ran: list[str] = []

    async def branch(ctx: TaskContext, name: str) -> Any:
        await asyncio.sleep(delays[name])  # some I/O first: the step's position is a race
        return await ctx.step(name, lambda: ran.append(name) or name)

    async def handler(ctx: TaskContext, payload: Any) -> Any:
        return await asyncio.gather(branch(ctx, "x"), branch(ctx, "y"))

    result, _ = await run(fake, conductor, handler)
    assert result is not None
    assert result.result == ["x", "y"]
    assert sorted(saved(fake)) == [("x", 1, "x"), ("y", 0, "y")]

    # The replay reaches them the other way round: each still finds its own stored result.
    delays.update(x=0.0, y=0.02)
    stored = {"x": done(1, "x"), "y": done(0, "y")}
    result, _ = await run(fake, conductor, handler, stored)
    assert result is not None
    assert result.status is ResultStatus.COMPLETED
    assert result.result == ["x", "y"]
    assert ran == ["y", "x"]  # nothing ran again


async def test_a_step_that_raises_fails_the_attempt_and_stores_nothing(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    async def boom() -> None:
        raise RuntimeError("card declined")

    async def handler(ctx: TaskContext, payload: Any) -> Any:
        await ctx.step("charge", boom)

    result, _ = await run(fake, conductor, handler)
    assert result is not None
    assert result.status is ResultStatus.FAILED
    assert "card declined" in (result.error or "")
    assert saved(fake) == []


async def test_a_step_result_that_is_not_json_is_fatal(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    async def handler(ctx: TaskContext, payload: Any) -> Any:
        await ctx.step("obj", object)

    result, _ = await run(fake, conductor, handler)
    assert result is not None
    assert result.status is ResultStatus.FATAL
    assert "the result of step 'obj' is not JSON serialisable" in (result.error or "")


# -- suspensions ----------------------------------------------------------------------------


async def test_a_sleep_suspends_with_its_wake_time_and_a_replay_goes_on(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    async def handler(ctx: TaskContext, payload: Any) -> Any:
        await ctx.step("charge", lambda: 1)
        await ctx.sleep("cool-down", dt.timedelta(minutes=5))
        return "after"

    result, _ = await run(fake, conductor, handler)
    assert result is not None
    assert result.status is ResultStatus.SUSPEND
    until = (NOW + dt.timedelta(minutes=5)).isoformat()
    assert result.result == {"sleep": {"key": "cool-down", "seq": 1, "until": until}}

    stored = {"charge": done(0, 1), "cool-down": done(1, None, "sleep", until=until)}
    result, _ = await run(fake, conductor, handler, stored)
    assert result is not None
    assert result.result == "after"


async def test_sleep_until_sends_the_given_time(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    when = NOW + dt.timedelta(days=1)

    async def handler(ctx: TaskContext, payload: Any) -> Any:
        await ctx.sleep_until("tomorrow", when)

    result, _ = await run(fake, conductor, handler)
    assert result is not None
    assert result.result == {"sleep": {"key": "tomorrow", "seq": 0, "until": when.isoformat()}}


async def test_invokes_gathered_suspend_together_in_one_children_plan(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    async def handler(ctx: TaskContext, payload: Any) -> Any:
        return await ctx.gather(
            ctx.invoke("email", "child", {"to": "a"}, timeout=60),
            ctx.invoke("sms", conductor.tasks["child"], {"to": "b"}, timeout=30, priority=3),
            ctx.invoke("push", "child", queue="mobile"),
        )

    result, _ = await run(fake, conductor, handler)
    assert result is not None
    assert result.status is ResultStatus.SUSPEND
    assert result.result == {
        "children": {
            "create": [
                {"key": "email", "seq": 0, "task": "child", "payload": {"to": "a"}}
                | {"queue": None, "priority": 0},
                {"key": "sms", "seq": 1, "task": "child", "payload": {"to": "b"}}
                | {"queue": None, "priority": 3},
                {"key": "push", "seq": 2, "task": "child", "payload": {}}
                | {"queue": "mobile", "priority": 0},
            ],
            "deadline": (NOW + dt.timedelta(seconds=30)).isoformat(),
        }
    }


async def test_children_return_results_or_raise_child_failed(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    child_id = uuid.uuid4()
    outcomes: list[Any] = []

    async def handler(ctx: TaskContext, payload: Any) -> Any:
        outcomes.append(await ctx.invoke("ok", "child", 1))
        for name in ("bad", "slow"):
            try:
                await ctx.invoke(name, "child", 2)
            except ChildFailed as exc:
                outcomes.append((type(exc), exc.child_id, exc.state, exc.error))
        return "handled"

    stored = {
        "ok": done(0, "fine", "child"),
        "bad": {"seq": 1, "kind": "child", "state": "failed", "result": None}
        | {"error": "boom", "child_id": str(child_id)},
        "slow": {"seq": 2, "kind": "child", "state": "timed_out", "result": None},
    }
    result, _ = await run(fake, conductor, handler, stored)
    assert result is not None
    assert result.result == "handled"
    assert outcomes == [
        "fine",
        (ChildFailed, child_id, "failed", "boom"),
        (ChildTimedOut, None, "timed_out", None),
    ]


async def test_invoke_many_creates_one_child_per_payload_and_joins_them(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    async def handler(ctx: TaskContext, payload: Any) -> Any:
        return await ctx.invoke_many("fan", "child", [{"n": n} for n in range(1000)])

    result, _ = await run(fake, conductor, handler)
    assert result is not None
    assert result.status is ResultStatus.SUSPEND
    create = result.result["children"]["create"]
    assert len(create) == 1000
    assert [c["key"] for c in create[:3]] == ["fan/0", "fan/1", "fan/2"]
    assert create[999] == {
        "key": "fan/999",
        "seq": 999,
        "task": "child",
        "payload": {"n": 999},
    } | {
        "queue": None,
        "priority": 0,
    }

    # Some ended, some still wait: the plan creates nobody and waits again.
    stored = {f"fan/{n}": done(n, n, "child") for n in range(1000)}
    stored["fan/7"] = {"seq": 7, "kind": "child", "state": "waiting", "result": None}
    result, _ = await run(fake, conductor, handler, stored)
    assert result is not None
    assert result.result == {"children": {"create": [], "deadline": None}}

    stored["fan/7"] = done(7, 7, "child")
    result, _ = await run(fake, conductor, handler, stored)
    assert result is not None
    assert result.result == list(range(1000))

    stored["fan/3"] = {"seq": 3, "kind": "child", "state": "cancelled", "result": None}
    result, _ = await run(fake, conductor, handler, stored)
    assert result is not None
    assert result.status is ResultStatus.FAILED
    assert "ChildFailed" in (result.error or "")
    assert "'fan/3' cancelled" in (result.error or "")


async def test_invoke_many_of_nothing_returns_at_once(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    async def handler(ctx: TaskContext, payload: Any) -> Any:
        return await ctx.invoke_many("none", "child", [])

    result, _ = await run(fake, conductor, handler)
    assert result is not None
    assert result.result == []


async def test_wait_for_event_suspends_then_returns_the_payload_or_none(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    async def handler(ctx: TaskContext, payload: Any) -> Any:
        return await ctx.wait_for_event(
            "shipped",
            "order.shipped",
            match={"order_id": 7},
            timeout=dt.timedelta(hours=1),
        )

    result, _ = await run(fake, conductor, handler)
    assert result is not None
    assert result.result == {
        "event": {
            "key": "shipped",
            "seq": 0,
            "name": "order.shipped",
            "match": {"order_id": 7},
            "deadline": (NOW + dt.timedelta(hours=1)).isoformat(),
        }
    }
    payload = {"order_id": 7, "carrier": "ups"}
    result, _ = await run(fake, conductor, handler, {"shipped": done(0, payload, "event")})
    assert result is not None
    assert result.result == payload
    timed_out = {"seq": 0, "kind": "event", "state": "timed_out", "result": None}
    result, _ = await run(fake, conductor, handler, {"shipped": timed_out})
    assert result is not None
    assert result.status is ResultStatus.COMPLETED
    assert result.result is None


async def test_siblings_suspending_in_one_turn_and_running_steps_are_all_kept(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    after: list[str] = []

    async def slow() -> str:
        await asyncio.sleep(0.01)  # still running when the others suspend
        return "slow"

    async def chain() -> None:
        await ctx_holder[0].step("slow", slow)
        after.append("next")
        await ctx_holder[0].step("never", lambda: 1)  # suspends at once: the run ends

    ctx_holder: list[TaskContext] = []

    async def handler(ctx: TaskContext, payload: Any) -> Any:
        ctx_holder.append(ctx)
        await asyncio.gather(
            ctx.sleep("nap", 60),
            ctx.wait_for_event("ev", "e"),
            chain(),
            ctx.invoke("c", "child"),
        )

    result, durable = await run(fake, conductor, handler)
    assert result is not None
    assert result.status is ResultStatus.SUSPEND
    assert [w.kind for w in durable.pending] == ["sleep", "event", "child"]
    assert list(result.result) == ["children"]  # children first; the others wait again later
    # Saved before the suspend result; position 3: the other three calls were made first,
    # as gather's arguments, while chain()'s body ran only once gather started it.
    assert saved(fake) == [("slow", 3, "slow")]
    assert after == ["next"]


def test_a_plan_without_children_takes_the_first_event_else_the_earliest_sleep() -> None:
    durable = DurableRun(uuid.uuid4(), 1)
    later, sooner = NOW + dt.timedelta(hours=2), NOW + dt.timedelta(hours=1)
    durable.pending += [Wait("sleep", "a", 0, later), Wait("sleep", "b", 1, sooner)]
    assert durable.plan()["sleep"]["key"] == "b"
    durable.pending.append(Wait("event", "e", 2, None, {"name": "x", "match": {}}))
    assert durable.plan() == {
        "event": {"key": "e", "seq": 2, "name": "x", "match": {}, "deadline": None}
    }
    with pytest.raises(RuntimeError):
        DurableRun(uuid.uuid4(), 1).plan()


async def test_a_handler_swallowing_the_suspension_still_suspends(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    async def handler(ctx: TaskContext, payload: Any) -> Any:
        try:
            await ctx.sleep("nap", 1)
        except BaseException:
            return "swallowed"

    result, _ = await run(fake, conductor, handler)
    assert result is not None
    assert result.status is ResultStatus.SUSPEND


async def test_a_stale_step_stops_the_handler_with_no_result(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    fake.responses["save_steps"] = lambda o, ids, leases, keys, seqs, results: [
        (i, k, "stale") for i, k in zip(ids, keys, strict=True)
    ]
    after: list[str] = []

    async def handler(ctx: TaskContext, payload: Any) -> Any:
        await ctx.step("charge", lambda: 1)
        after.append("ran on")

    result, _ = await run(fake, conductor, handler)
    assert result is None
    assert after == []


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ctx: ctx.step("", lambda: 1), "a step name must be a non-empty string"),
        (lambda ctx: ctx.step("x" * 201, lambda: 1), "is 201 characters long"),
        (lambda ctx: ctx.step("a\nb", lambda: 1), "contains a control character"),
        (lambda ctx: ctx.step("a", 5), "fn must be callable"),
        (lambda ctx: ctx.sleep("s", -1), "must not be negative"),
        (lambda ctx: ctx.sleep("s", 1e20), "must be at most 100 years"),
        (lambda ctx: ctx.sleep("s", float("nan")), "must be at most 100 years"),
        (lambda ctx: ctx.invoke("c", "child", timeout=dt.timedelta(days=10**6)), "100 years"),
        (lambda ctx: ctx.sleep("s", "soon"), "must be seconds or a timedelta"),
        (lambda ctx: ctx.sleep_until("s", dt.datetime(2030, 1, 1)), "timezone-aware"),
        (lambda ctx: ctx.invoke("c", "nope"), "unknown child task 'nope'"),
        (lambda ctx: ctx.invoke("c", 42), "a child task is a Task or a task key"),
        (
            lambda ctx: ctx.invoke("c", "child", timeout=-5),
            "timeout must not be negative",
        ),
        (
            lambda ctx: ctx.invoke("c", "child", {"x": object()}),
            "not JSON serialisable",
        ),
        (
            lambda ctx: ctx.invoke("c", "child", priority="hi"),
            "priority must be an integer",
        ),
        (lambda ctx: ctx.invoke("c", "child", priority=2**40), "fit a 32-bit integer"),
        (lambda ctx: ctx.invoke("c", "child", queue="Mail"), "invalid queue name 'Mail'"),
        (
            lambda ctx: ctx.invoke_many("f" * 198, "child", [1] * 20),
            "too long for 20 children",
        ),
        (
            lambda ctx: ctx.wait_for_event("w", ""),
            "event name must be a non-empty string",
        ),
        (
            lambda ctx: ctx.wait_for_event("w", "e", match=[1]),
            "match must be a JSON object",
        ),
    ],
)
async def test_bad_input_is_a_one_line_error_before_anything_is_sent(
    fake: FakeDatabaseClient, conductor: Conductor, call: Any, message: str
) -> None:
    ctx = context(claimed("t"))
    ctx._run = DurableRun(ctx.execution_id, 1, tasks=conductor.tasks)
    with pytest.raises(InvalidInput) as info:
        call(ctx)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert fake.calls == []
    assert ctx._run._seq == 0  # no key was taken


def test_check_name_and_json_value() -> None:
    assert check_name("order.paid", "event name") == "order.paid"
    with pytest.raises(InvalidInput):
        check_name(None)
    assert json_value((1, 2), "x") == [1, 2]
    with pytest.raises(Fatal):
        json_value(float("nan"), "x")


def test_stored_steps_parse_the_claims_json() -> None:
    child = uuid.uuid4()
    step = StoredStep.parse(
        "c",
        {"seq": 2, "kind": "child", "state": "failed", "result": None}
        | {"error": "x", "child_id": str(child), "until": "2030-01-01T12:00:00+00:00"},
    )
    assert step == StoredStep("c", 2, "child", "failed", None, "x", child, NOW)


# -- outside a worker ----------------------------------------------------------------------


async def test_outside_a_worker_steps_run_in_memory_and_waits_are_refused() -> None:
    ctx = TaskContext(uuid.uuid4(), "t", "q", 1, 3)
    assert await ctx.step("a", lambda: 1) == 1
    assert await ctx.step("a", lambda: 2) == 2  # a#2
    with pytest.raises(InvalidInput, match="needs a worker"):
        await ctx.sleep("nap", 1)


def test_durable_methods_need_an_async_handler() -> None:
    ctx = TaskContext(uuid.uuid4(), "t", "q", 1, 3)
    with pytest.raises(InvalidState, match="needs an async handler"):
        ctx.step("a", lambda: 1)


async def test_a_failure_or_suspension_ends_later_calls_at_once() -> None:
    durable = DurableRun(uuid.uuid4(), 1, {"a": done(0)})
    with pytest.raises(NonDeterminism):
        durable.begin("b", "step")
    with pytest.raises(NonDeterminism):
        durable.begin("c", "step")
    closed = DurableRun(uuid.uuid4(), 1)
    closed.closed = True

    with pytest.raises(Suspend):
        closed.begin("a", "step")


# -- in a worker ----------------------------------------------------------------------------


async def test_a_worker_replays_the_claimed_steps_and_flushes_the_suspension(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    from pgconductor.worker import Worker

    ran: list[str] = []

    @conductor.task("flow")
    async def flow(ctx: TaskContext, payload: Any) -> Any:
        first = await ctx.step("first", lambda: ran.append("first") or 1)
        second = await ctx.step("second", lambda: ran.append("second") or 2)
        await ctx.sleep("nap", 30)
        return first + second

    row = dataclasses.replace(claimed("flow"), steps={"first": done(0, 10)})
    fake.responses["get_executions"] = Backlog([row])
    worker = Worker(fake, "default", conductor.tasks, uuid.uuid4(), poll_interval=60.0)
    await worker.start()
    try:
        await fake.wait_for_call("return_executions")
    finally:
        await worker.stop()
    assert ran == ["second"]
    assert saved(fake) == [("second", 1, 2)]
    (result,) = flushed(fake)
    assert result.status is ResultStatus.SUSPEND
    assert result.result["sleep"]["key"] == "nap"
    assert result.result["sleep"]["seq"] == 2


@pytest.mark.parametrize(("version", "works"), [("0.5.0", False), ("0.6.0", True)])
async def test_on_an_extension_without_workflows_durable_calls_fail_with_one_line(
    version: str, works: bool
) -> None:
    from pgconductor.orchestrator import Orchestrator

    fake = FakeDatabaseClient(version=version)
    conductor = Conductor(fake)

    @conductor.task("flow")
    async def flow(ctx: TaskContext, payload: Any) -> Any:
        return await ctx.step("a", lambda: 1)

    fake.responses["get_executions"] = Backlog([claimed("flow")])
    orchestrator = Orchestrator(conductor, heartbeat_interval=60, stale_after=7200)
    await orchestrator.start()
    try:
        await fake.wait_for_call("return_executions")
    finally:
        await orchestrator.stop()
    (result,) = flushed(fake)
    if works:
        assert result.status is ResultStatus.COMPLETED
    else:
        assert result.status is ResultStatus.FAILED
        assert "InvalidState: durable workflows (ctx.step, ctx.sleep, ...) need pgconductor" in (
            result.error or ""
        )
        assert fake.call_count("save_steps") == 0


async def test_gather_with_return_exceptions_keeps_failures_but_still_suspends(
    fake: FakeDatabaseClient, conductor: Conductor
) -> None:
    async def handler(ctx: TaskContext, payload: Any) -> Any:
        outcomes = await ctx.gather(
            ctx.invoke("ok", "child", 1), ctx.invoke("bad", "child", 2), return_exceptions=True
        )
        return [o if not isinstance(o, ChildFailed) else f"failed: {o.error}" for o in outcomes]

    bad = {"seq": 1, "kind": "child", "state": "failed", "result": None, "error": "boom"}
    result, _ = await run(fake, conductor, handler, {"ok": done(0, "fine", "child"), "bad": bad})
    assert result is not None
    assert result.result == ["fine", "failed: boom"]

    result, _ = await run(fake, conductor, handler, {"bad": bad})
    assert result is not None
    assert result.status is ResultStatus.SUSPEND
    assert [c["key"] for c in result.result["children"]["create"]] == ["ok"]
