"""`DurableContext`: the durable methods of `TaskContext` (steps, sleeps, children, events).

Every method checks its input and takes its key when it is called (before anything is
awaited or sent), so keys follow the order of the calls: `asyncio.gather(ctx.step("a", f),
ctx.step("b", g))` gives "a" and "b" whatever order the steps finish in. The methods need an
async handler; see `pgconductor.workflow` for replay and suspension.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar, overload
from uuid import UUID

from pgconductor.encoding import to_json
from pgconductor.errors import InvalidInput, InvalidState
from pgconductor.types import ClaimedExecution
from pgconductor.workflow import (
    ChildFailed,
    ChildTimedOut,
    DurableRun,
    LeaseLost,
    StoredStep,
    Suspend,
    Wait,
    check_name,
)

__all__ = ["DurableContext"]

T = TypeVar("T")
#: The longest sleep or timeout (a wake time must stay a valid timestamp).
_LONGEST = dt.timedelta(days=36525)
#: What SQL accepts as a queue name (`_valid_queue_name`).
_QUEUE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}\Z")


def _need_loop(method: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise InvalidState(
            f"ctx.{method} needs an async handler (async def): it is awaited on the event loop"
        ) from None


def _duration(value: dt.timedelta | float | int, what: str) -> dt.timedelta:
    if isinstance(value, bool) or not isinstance(value, dt.timedelta | float | int):
        raise InvalidInput(f"{what} must be seconds or a timedelta", sqlstate="22023")
    try:
        delta = value if isinstance(value, dt.timedelta) else dt.timedelta(seconds=value)
    except (OverflowError, ValueError):  # too large, or NaN
        delta = _LONGEST * 2
    if delta < dt.timedelta(0):
        raise InvalidInput(f"{what} must not be negative", sqlstate="22023")
    if not delta <= _LONGEST:
        raise InvalidInput(f"{what} must be at most 100 years", sqlstate="22023")
    return delta


def _timeout(value: dt.timedelta | float | None) -> dt.timedelta | None:
    return None if value is None else _duration(value, "timeout")


def _child_outcome(stored: StoredStep) -> Any:
    """A stored child step's result, or its failure raised."""
    if stored.state == "done":
        return stored.result
    error = ChildTimedOut if stored.state == "timed_out" else ChildFailed
    raise error(stored.key, stored.child_id, stored.state, stored.error)


class DurableContext:
    """Durable calls of a handler; `TaskContext` has them (`ctx.step(...)` and so on)."""

    __slots__ = ("_claim", "_run", "_run_factory")

    _run: DurableRun | None
    #: In a worker, what makes the run of `_claim` at the first durable call: most handlers
    #: make none, and a run per execution cost a plain drain ~20 % of its throughput.
    _run_factory: Callable[[ClaimedExecution], DurableRun] | None
    _claim: ClaimedExecution | None

    def _durable(self, method: str) -> DurableRun:
        _need_loop(method)
        run = self._run
        if run is None:
            factory, claim = self._run_factory, self._claim
            if factory is not None and claim is not None:
                run = self._run = factory(claim)
            else:  # called outside a worker: a run remembered in memory only
                execution_id: UUID = getattr(self, "execution_id", UUID(int=0))
                run = self._run = DurableRun(execution_id, 0)
        return run

    # -- steps -----------------------------------------------------------------------------

    @overload
    def step(self, name: str, fn: Callable[..., Awaitable[T]], *args: Any) -> Awaitable[T]: ...

    @overload
    def step(self, name: str, fn: Callable[..., T], *args: Any) -> Awaitable[T]: ...

    def step(self, name: str, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        """Run `fn(*args)` once per execution and return its JSON result (stored).

        A replay returns the stored result without running `fn`. A sync `fn` runs on a thread.
        A name used again in one run gets the key `name#2`, `name#3`, ...
        """
        check_name(name)
        if not callable(fn):
            raise InvalidInput(f"step {name!r}: fn must be callable", sqlstate="22023")
        run = self._durable("step")
        key, seq, stored = run.begin(name, "step")
        return run.run_step(key, seq, stored, fn, args)

    # -- sleeping --------------------------------------------------------------------------

    def sleep(self, name: str, duration: dt.timedelta | float) -> Coroutine[Any, Any, None]:
        """Park the execution for `duration` (seconds or a timedelta); a replay goes on at once."""
        check_name(name)
        delta = _duration(duration, f"sleep {name!r}")
        run = self._durable("sleep")
        key, seq, stored = run.begin(name, "sleep")
        until = stored.until if stored is not None and stored.until else run.clock.now() + delta
        return self._sleep(run, key, seq, stored, until)

    def sleep_until(self, name: str, when: dt.datetime) -> Coroutine[Any, Any, None]:
        """Park the execution until `when` (a timezone-aware datetime)."""
        check_name(name)
        if not isinstance(when, dt.datetime) or when.tzinfo is None:
            raise InvalidInput(
                f"sleep_until {name!r} needs a timezone-aware datetime", sqlstate="22023"
            )
        run = self._durable("sleep_until")
        key, seq, stored = run.begin(name, "sleep")
        return self._sleep(run, key, seq, stored, when)

    @staticmethod
    async def _sleep(
        run: DurableRun, key: str, seq: int, stored: StoredStep | None, until: dt.datetime
    ) -> None:
        if stored is not None and stored.state == "done":
            return
        await run.park(Wait("sleep", key, seq, until))

    # -- children --------------------------------------------------------------------------

    @staticmethod
    def _child_spec(
        run: DurableRun, task: Any, payloads: list[Any], queue: str | None, priority: int
    ) -> tuple[str, list[Any]]:
        """The child task's key and its payloads checked, before anything is sent."""
        known: Any = None
        if isinstance(task, str) and task:
            key = task
            if run.tasks is not None:
                known = run.tasks.get(key)
                if known is None:
                    raise InvalidInput(
                        f"unknown child task {key!r}",
                        sqlstate="22023",
                        hint="register it with @conductor.task in this app",
                    )
        elif isinstance(getattr(task, "key", None), str):
            key, known = task.key, task
        else:
            raise InvalidInput("a child task is a Task or a task key", sqlstate="22023")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidInput("priority must be an integer", sqlstate="22023")
        if queue is not None and not (isinstance(queue, str) and _QUEUE_NAME.match(queue)):
            raise InvalidInput(
                f"invalid queue name {queue!r}",
                sqlstate="22023",
                hint='a queue name is 1-48 characters of a-z, 0-9, "_" and "-"',
            )
        if not -(2**31) <= priority < 2**31:
            raise InvalidInput("priority must fit a 32-bit integer", sqlstate="22023")
        bodies = []
        for payload in payloads:
            body = known.dump_payload(payload) if known is not None else payload
            body = {} if body is None else body
            to_json(body)  # InvalidInput when it is not JSON
            bodies.append(body)
        return key, bodies

    def invoke(
        self,
        name: str,
        task: Any,
        payload: Any = None,
        *,
        timeout: dt.timedelta | float | None = None,
        queue: str | None = None,
        priority: int = 0,
    ) -> Coroutine[Any, Any, Any]:
        """Run `task` as a child and return its result; raise `ChildFailed` when it fails.

        The execution parks until the child ends (or `timeout` passes: `ChildTimedOut`, the
        child is cancelled). `queue` None: the child task's registered queue.
        """
        check_name(name)
        limit = _timeout(timeout)
        run = self._durable("invoke")
        task_key, (body,) = self._child_spec(run, task, [payload], queue, priority)
        key, seq, stored = run.begin(name, "child")
        create = _create(key, seq, task_key, body, queue, priority)
        return self._join(run, [(key, seq, stored, create)], run.deadline(limit), single=True)

    def invoke_many(
        self,
        name: str,
        task: Any,
        payloads: Iterable[Any],
        *,
        timeout: dt.timedelta | float | None = None,
        queue: str | None = None,
        priority: int = 0,
    ) -> Coroutine[Any, Any, Any]:
        """Run one child per payload (created in one statement); return their results in order.

        Keys `name/0`, `name/1`, ...; the first child that failed raises `ChildFailed`.
        """
        check_name(name)
        limit = _timeout(timeout)
        run = self._durable("invoke_many")
        task_key, bodies = self._child_spec(run, task, list(payloads), queue, priority)
        calls = [
            (key, seq, stored, _create(key, seq, task_key, body, queue, priority))
            for (key, seq, stored), body in zip(
                run.begin_many(name, len(bodies)), bodies, strict=True
            )
        ]
        return self._join(run, calls, run.deadline(limit), single=False)

    @staticmethod
    async def _join(
        run: DurableRun,
        calls: list[tuple[str, int, StoredStep | None, dict[str, Any]]],
        deadline: dt.datetime | None,
        *,
        single: bool,
    ) -> Any:
        ended = [
            stored for _, _, stored, _ in calls if stored is not None and stored.state != "waiting"
        ]
        if len(ended) < len(calls):
            await run.park(
                *(
                    Wait("child", key, seq, deadline, create if stored is None else None)
                    for key, seq, stored, create in calls
                    if stored is None or stored.state == "waiting"
                )
            )
        results = [_child_outcome(stored) for stored in ended]
        return results[0] if single else results

    async def gather(self, *calls: Awaitable[Any], return_exceptions: bool = False) -> list[Any]:
        """`asyncio.gather` over durable calls (several `ctx.invoke`): one suspension for all."""
        results = await asyncio.gather(*calls, return_exceptions=return_exceptions)
        for result in results:
            if isinstance(result, Suspend | LeaseLost | asyncio.CancelledError):
                raise result
        return list(results)

    # -- events ----------------------------------------------------------------------------

    def wait_for_event(
        self,
        name: str,
        event: str,
        *,
        match: Mapping[str, Any] | None = None,
        timeout: dt.timedelta | float | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Park until an event `event` whose payload contains `match` is emitted; return the
        payload, or None when `timeout` passes first."""
        check_name(name)
        check_name(event, "event name")
        if match is not None and not isinstance(match, Mapping):
            raise InvalidInput(
                f"wait_for_event {name!r}: match must be a JSON object (a dict)", sqlstate="22023"
            )
        wanted = dict(match or {})
        to_json(wanted)
        limit = _timeout(timeout)
        run = self._durable("wait_for_event")
        key, seq, stored = run.begin(name, "event")
        until = stored.until if stored is not None and stored.until else run.deadline(limit)
        spec = {"name": event, "match": wanted}
        return self._event(run, Wait("event", key, seq, until, spec), stored)

    @staticmethod
    async def _event(run: DurableRun, wait: Wait, stored: StoredStep | None) -> Any:
        if stored is not None and stored.state == "done":
            return stored.result
        if stored is not None and stored.state == "timed_out":
            return None
        await run.park(wait)
        return None  # not reached: park() raises Suspend


def _create(
    key: str, seq: int, task: str, payload: Any, queue: str | None, priority: int
) -> dict[str, Any]:
    """One entry of a children plan's `create` list."""
    return {
        "key": key,
        "seq": seq,
        "task": task,
        "payload": payload,
        "queue": queue,
        "priority": priority,
    }
