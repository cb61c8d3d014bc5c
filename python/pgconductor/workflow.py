"""The durable state of one handler run: step keys, replay of stored steps, the suspension plan.

A workflow handler is re-run from the top after every suspension (suspend and replay). Each
durable call (`ctx.step`, `ctx.sleep`, `ctx.invoke`, `ctx.wait_for_event`) gets, when it is
made, a key (its name; `name#2` for the second use of a name in one run) and a position
(`seq`, counted from 0 in the order the calls start). A call whose key was stored by an
earlier run returns the stored outcome without running; a call whose key was never stored,
reached at a position where the record has another step, fails the execution for good
(`NonDeterminism`); a stored key is found wherever it is reached.

A call that has to wait registers what it waits for and yields to the event loop twice, so
siblings started in the same turn (`asyncio.gather`) register theirs; then each raises
`Suspend`, once every step still running has been saved. The executor turns that into a
`suspend` result carrying `DurableRun.plan()`. SQL parks the execution and wakes it; the
waiting itself costs no worker slot and no attempt.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import json
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from pgconductor.clock import Clock, SystemClock
from pgconductor.encoding import json_default
from pgconductor.errors import Fatal, InvalidInput, InvalidState

__all__ = [
    "MAX_KEY_CHARS",
    "ChildFailed",
    "ChildTimedOut",
    "DurableRun",
    "LeaseLost",
    "NonDeterminism",
    "StepSaver",
    "StoredStep",
    "Suspend",
    "Wait",
    "check_name",
    "json_value",
]

#: The longest step key or event name SQL accepts.
MAX_KEY_CHARS = 200
#: How many loop turns a waiting call lets pass before suspending (siblings register theirs).
SUSPEND_YIELDS = 2


class Suspend(BaseException):
    """Internal: the run waits for something; the executor reports a `suspend` result.

    A `BaseException`, so a handler's `except Exception` does not swallow it.
    """


class LeaseLost(BaseException):
    """Internal: a step was written under a lease that no longer holds ('stale')."""


class NonDeterminism(Fatal):
    """A replay met a different durable call than the stored run had at that position."""


class ChildFailed(Exception):
    """A child task awaited by `ctx.invoke` failed for good or was cancelled.

    `child_id` is the child execution, `error` its last error, `state` the child step's state
    (failed | cancelled | timed_out), `key` the parent's step key.
    """

    def __init__(self, key: str, child_id: UUID | None, state: str, error: str | None) -> None:
        super().__init__(f"child {child_id} of step {key!r} {state}: {error or 'no error text'}")
        self.key = key
        self.child_id = child_id
        self.state = state
        self.error = error


class ChildTimedOut(ChildFailed):
    """The parent stopped waiting for a child at its `timeout` (the child was cancelled)."""


class StepSaver(Protocol):
    """Writes one step result durably (`steps.StepWriter`); raises `LeaseLost` when stale."""

    async def save(self, execution_id: UUID, lease: int, key: str, seq: int, result: Any) -> None:
        """Return once the result is committed."""
        ...


@dataclass(frozen=True, slots=True)
class StoredStep:
    """One step of the claim's `steps` object (what an earlier run recorded)."""

    key: str
    seq: int
    kind: str  # step | sleep | child | event
    state: str  # done | waiting | failed | cancelled | timed_out
    result: Any = None
    error: str | None = None
    child_id: UUID | None = None
    until: dt.datetime | None = None

    @classmethod
    def parse(cls, key: str, raw: Mapping[str, Any]) -> StoredStep:
        """Read one entry of the claim's `steps` JSON."""
        child, until = raw.get("child_id"), raw.get("until")
        return cls(
            key=key,
            seq=int(raw["seq"]),
            kind=str(raw["kind"]),
            state=str(raw["state"]),
            result=raw.get("result"),
            error=raw.get("error"),
            child_id=None if child is None else UUID(str(child)),
            until=None if until in (None, "infinity") else dt.datetime.fromisoformat(str(until)),
        )


@dataclass(frozen=True, slots=True)
class Wait:
    """What one waiting call asks SQL for; `plan()` folds the waits of one turn together."""

    kind: str  # sleep | child | event
    key: str
    seq: int
    #: sleep: the wake time; child and event: the deadline (None: none).
    until: dt.datetime | None = None
    #: child: the `create` entry (None when the child exists already); event: name and match.
    spec: Mapping[str, Any] | None = None


def check_name(name: object, what: str = "step name") -> str:
    """A step or event name: 1-200 characters, no control characters (raise `InvalidInput`)."""
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"a {what} must be a non-empty string", sqlstate="22023")
    if len(name) > MAX_KEY_CHARS:
        raise InvalidInput(
            f"{what} {name[:40]!r}... is {len(name)} characters long (at most {MAX_KEY_CHARS})",
            sqlstate="22023",
        )
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise InvalidInput(f"{what} {name!r} contains a control character", sqlstate="22023")
    return name


def json_value(value: Any, what: str) -> Any:
    """`value` as plain JSON data (what a replay will return); `Fatal` when it is not JSON."""
    if value is None or isinstance(value, str | bool | int):
        return value
    try:
        return json.loads(json.dumps(value, default=json_default, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise Fatal(f"the result of {what} is not JSON serialisable: {exc}") from None


class DurableRun:
    """The durable state of one run of one execution (made by the worker from the claim).

    With no `saver` (a handler called outside a worker) steps run and are remembered only
    in memory, and a call that would wait raises `InvalidInput`.
    """

    __slots__ = (
        "_by_seq",
        "_idle",
        "_keys",
        "_running",
        "_seq",
        "_uses",
        "clock",
        "closed",
        "execution_id",
        "failure",
        "lease",
        "pending",
        "refuse",
        "saver",
        "stored",
        "tasks",
    )

    def __init__(
        self,
        execution_id: UUID,
        lease: int,
        stored: Mapping[str, Any] | None = None,
        *,
        saver: StepSaver | None = None,
        tasks: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        refuse: str | None = None,
    ) -> None:
        self.execution_id = execution_id
        #: Why durable calls cannot work here (an extension without workflows), or None.
        self.refuse = refuse
        self.lease = lease
        self.saver = saver
        #: The known tasks (key -> `Task`): children are checked against them when given.
        self.tasks = tasks
        self.clock: Clock = clock or SystemClock()
        self.stored: dict[str, StoredStep] = (
            {key: StoredStep.parse(key, raw) for key, raw in stored.items()} if stored else {}
        )
        self._by_seq = {step.seq: step for step in self.stored.values()} if stored else {}
        self._uses: dict[str, int] = {}
        self._keys: set[str] = set()
        self._seq = 0
        self.pending: list[Wait] = []
        #: Set once a waiting call raised `Suspend`: later durable calls suspend at once.
        self.closed = False
        #: The non-determinism found, if any: the execution fails whatever the handler does.
        self.failure: NonDeterminism | None = None
        self._running = 0
        self._idle: asyncio.Event | None = None  # made when a step first runs

    @property
    def suspending(self) -> bool:
        """True when some call waits: the run must end with a `suspend` result."""
        return bool(self.pending)

    # -- keys and replay -------------------------------------------------------------------

    def begin(self, name: str, kind: str) -> tuple[str, int, StoredStep | None]:
        """Give a durable call its key and position; return them with the stored step."""
        self.check_open()
        key = self._key_for(name)
        seq = self._seq
        self._seq += 1
        return key, seq, self.recorded(key, seq, kind)

    def begin_many(self, name: str, count: int) -> list[tuple[str, int, StoredStep | None]]:
        """Keys `name/0` ... `name/{count-1}` (one position each) for `invoke_many`."""
        self.check_open()
        base = self._key_for(name)
        if count and len(f"{base}/{count - 1}") > MAX_KEY_CHARS:
            raise InvalidInput(
                f"step name {name!r} is too long for {count} children"
                f" (each key {base}/N must fit {MAX_KEY_CHARS} characters)",
                sqlstate="22023",
            )
        found = []
        for index in range(count):
            key = f"{base}/{index}"
            self._keys.add(key)
            seq = self._seq
            self._seq += 1
            found.append((key, seq, self.recorded(key, seq, "child")))
        return found

    def check_open(self) -> None:
        """Raise what ends this run now: its non-determinism, or `Suspend` once it suspends
        (`InvalidState` when durable calls cannot work here)."""
        if self.refuse is not None:
            raise InvalidState(self.refuse, hint="pgconductor schema upgrade")
        if self.failure is not None:
            raise self.failure
        if self.closed:
            raise Suspend()

    def _key_for(self, name: str) -> str:
        uses = self._uses.get(name, 0) + 1
        key = name if uses == 1 else f"{name}#{uses}"
        while key in self._keys:  # a name spelled like a repeat ("a#2") took it already
            uses += 1
            key = f"{name}#{uses}"
        self._uses[name] = uses
        if len(key) > MAX_KEY_CHARS:
            raise InvalidInput(
                f"step key {key[:40]!r}... is longer than {MAX_KEY_CHARS} characters",
                sqlstate="22023",
            )
        self._keys.add(key)
        return key

    def recorded(self, key: str, seq: int, kind: str) -> StoredStep | None:
        """The stored step for `key`, after checking the replay meets what was recorded.

        A key stored by an earlier run is found wherever this run reaches it (calls started
        together under `gather` after some other await may start in another order); a key
        never stored, reached where the record has another step, is a non-determinism, and
        so is a stored key reached as another kind of call.
        """
        stored = self.stored.get(key)
        if stored is None:
            at_seq = self._by_seq.get(seq)
            if at_seq is not None and at_seq.key != key:
                self._fail(
                    f"non-determinism: this run reached {kind} {key!r} at position {seq}, where"
                    f" the recorded run had {at_seq.kind} {at_seq.key!r}"
                )
        elif stored.kind != kind:
            self._fail(
                f"non-determinism: this run reached {kind} {key!r} at position {seq}; the"
                f" recorded run had {stored.kind} {key!r} at position {stored.seq}"
            )
        return stored

    def _fail(self, message: str) -> None:
        self.failure = NonDeterminism(message)
        raise self.failure

    # -- steps -----------------------------------------------------------------------------

    async def run_step(
        self, key: str, seq: int, stored: StoredStep | None, fn: Callable[..., Any], args: Any
    ) -> Any:
        """Return the stored result, or run `fn(*args)`, save its JSON result, return that."""
        if stored is not None:
            return stored.result
        self._running += 1
        if self._idle is None:
            self._idle = asyncio.Event()
        self._idle.clear()
        try:
            if inspect.iscoroutinefunction(fn):
                value = await fn(*args)
            else:
                value = await asyncio.to_thread(fn, *args)
                if inspect.isawaitable(value):
                    value = await value
            data = json_value(value, f"step {key!r}")
            if self.saver is not None:
                await self.saver.save(self.execution_id, self.lease, key, seq, data)
            self.stored[key] = StoredStep(key, seq, "step", "done", data)
            return data
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    # -- waiting ---------------------------------------------------------------------------

    async def park(self, *waits: Wait) -> None:
        """Register `waits`, let siblings register theirs, wait for running steps, suspend."""
        if self.saver is None:
            first = waits[0]
            raise InvalidInput(
                f"{first.kind} {first.key!r} needs a worker: the execution must be claimed"
                " (run it with a worker, pgconductor.testing.run_inline or drain)",
                sqlstate="22023",
            )
        self.pending.extend(waits)
        for _ in range(SUSPEND_YIELDS):
            await asyncio.sleep(0)
        self.closed = True
        if self._idle is not None:
            await self._idle.wait()
        raise Suspend()

    def deadline(self, timeout: dt.timedelta | None) -> dt.datetime | None:
        """`now + timeout` (None for no timeout)."""
        return None if timeout is None else self.clock.now() + timeout

    def plan(self) -> dict[str, Any]:
        """The `suspend` result's plan for what this run waits for (SQL's format).

        Children waited for in one turn go in one plan (the earliest deadline applies to
        all); otherwise the first event wait, else the earliest sleep. A wait left out is
        registered again by the next run.
        """
        if not self.pending:
            raise RuntimeError("no durable call is waiting")
        children = [w for w in self.pending if w.kind == "child"]
        if children:
            deadlines = [w.until for w in children if w.until is not None]
            return {
                "children": {
                    "create": [dict(w.spec) for w in children if w.spec is not None],
                    "deadline": _stamp(min(deadlines)) if deadlines else None,
                }
            }
        events = sorted((w for w in self.pending if w.kind == "event"), key=_seq_of)
        if events:
            wait = events[0]
            spec = wait.spec or {}
            return {
                "event": {
                    "key": wait.key,
                    "seq": wait.seq,
                    "name": spec["name"],
                    "match": spec["match"],
                    "deadline": _stamp(wait.until),
                }
            }
        wait = min(self.pending, key=_wake_order)
        return {"sleep": {"key": wait.key, "seq": wait.seq, "until": _stamp(wait.until)}}


def _seq_of(wait: Wait) -> int:
    return wait.seq


_NEVER = dt.datetime.max.replace(tzinfo=dt.UTC)


def _wake_order(wait: Wait) -> tuple[dt.datetime, int]:
    return (wait.until or _NEVER, wait.seq)


def _stamp(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()
