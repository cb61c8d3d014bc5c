"""Notifier with a fake LISTEN connection: dispatch, keepalive, reconnect, polling fallback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from sqlalchemy.engine import make_url

from pgconductor.notifier import (
    INVOKE_CHANNEL,
    SIGNAL_CHANNEL,
    Notifier,
    conninfo_from_url,
)

WaitUntil = Callable[..., Any]


@dataclass
class Note:
    """What psycopg's `notifies()` yields."""

    channel: str
    payload: str


class FakeConnection:
    """Records statements; `notifies()` yields what the test pushes, or raises a drop."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.queue: asyncio.Queue[Note | BaseException] = asyncio.Queue()
        self.closed = False

    async def execute(self, statement: Any) -> None:
        self.statements.append(statement.as_string(None))

    async def notifies(self, *, timeout: float | None = None) -> AsyncIterator[Note]:
        while True:
            try:
                async with asyncio.timeout(timeout):
                    item = await self.queue.get()
            except TimeoutError:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def close(self) -> None:
        self.closed = True


class Connector:
    """A `connect` function handing out fake connections (or failing on demand)."""

    def __init__(self) -> None:
        self.connections: list[FakeConnection] = []
        self.failures = 0
        self.connected = asyncio.Event()

    async def __call__(self, conninfo: str) -> Any:
        if self.failures:
            self.failures -= 1
            raise psycopg.OperationalError("connection refused")
        conn = FakeConnection()
        self.connections.append(conn)
        self.connected.set()
        return conn


@pytest.fixture
async def notifier_and_connector() -> AsyncIterator[tuple[Notifier, Connector]]:
    connector = Connector()
    notifier = Notifier(
        "host=nowhere",
        connect=connector,
        keepalive=60.0,
        reconnect_base=0.01,
        reconnect_cap=0.02,
        poll_interval=0.005,
    )
    yield notifier, connector
    await notifier.stop()


async def test_listens_on_both_channels(
    notifier_and_connector: tuple[Notifier, Connector],
) -> None:
    notifier, connector = notifier_and_connector
    await notifier.start()
    await asyncio.wait_for(notifier.wait_connected(), 2.0)
    assert connector.connections[0].statements == [
        'LISTEN "pgconductor_invoke"',
        'LISTEN "pgconductor_signal"',
    ]
    assert notifier.connected


async def test_dispatches_by_queue_and_orchestrator(
    notifier_and_connector: tuple[Notifier, Connector],
) -> None:
    notifier, connector = notifier_and_connector
    seen: list[str] = []
    woke = asyncio.Event()
    me, other = uuid4(), uuid4()
    notifier.on_queue("mail", lambda: seen.append("mail"))
    notifier.on_queue("reports", lambda: seen.append("reports"))
    notifier.on_signal(me, lambda: seen.append("me"))
    notifier.on_signal(other, lambda: (seen.append("other"), woke.set()))
    await notifier.start()
    await asyncio.wait_for(notifier.wait_connected(), 2.0)
    seen.clear()  # connecting wakes everybody once
    woke.clear()
    conn = connector.connections[0]
    for note in (
        Note(INVOKE_CHANNEL, "mail"),
        Note(SIGNAL_CHANNEL, str(me)),
        Note(INVOKE_CHANNEL, "unknown"),
        Note(SIGNAL_CHANNEL, str(other)),
    ):
        conn.queue.put_nowait(note)
    await asyncio.wait_for(woke.wait(), 2.0)
    assert seen == ["mail", "me", "other"]


def test_empty_signal_payload_wakes_every_orchestrator() -> None:
    notifier = Notifier(None)
    seen: list[str] = []
    notifier.on_signal(uuid4(), lambda: seen.append("a"))
    notifier.on_signal(uuid4(), lambda: seen.append("b"))
    notifier.on_queue("q", lambda: seen.append("q"))
    notifier.dispatch(SIGNAL_CHANNEL, "")
    assert sorted(seen) == ["a", "b"]


def test_unsubscribe_and_failing_callbacks(caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(None)
    seen: list[str] = []

    def broken() -> None:
        raise RuntimeError("subscriber bug")

    notifier.on_queue("q", broken)
    unsubscribe = notifier.on_queue("q", lambda: seen.append("q"))
    notifier.dispatch(INVOKE_CHANNEL, "q")
    unsubscribe()
    unsubscribe()  # twice is harmless
    notifier.dispatch(INVOKE_CHANNEL, "q")
    assert seen == ["q"]
    assert any("subscriber failed" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="unknown channel"):
        notifier.subscribe("elsewhere", "q", lambda: None)


async def test_keepalive_relistens_when_quiet(
    notifier_and_connector: tuple[Notifier, Connector], wait_until: WaitUntil
) -> None:
    notifier, connector = notifier_and_connector
    notifier.keepalive = 0.01
    await notifier.start()
    await asyncio.wait_for(notifier.wait_connected(), 2.0)
    conn = connector.connections[0]
    await wait_until(lambda: len(conn.statements) >= 4, timeout=2.0, interval=0.005)
    assert conn.statements[2] == 'LISTEN "pgconductor_invoke"'


async def test_reconnects_and_polls_while_disconnected(
    notifier_and_connector: tuple[Notifier, Connector], wait_until: WaitUntil
) -> None:
    notifier, connector = notifier_and_connector
    wakes = 0

    def wake() -> None:
        nonlocal wakes
        wakes += 1

    notifier.on_queue("q", wake)
    await notifier.start()
    await asyncio.wait_for(notifier.wait_connected(), 2.0)
    before = wakes
    connector.failures = 3  # the next three connection attempts fail
    connector.connections[0].queue.put_nowait(psycopg.OperationalError("server closed"))
    await wait_until(lambda: notifier.reconnects == 1 and notifier.connected, timeout=5.0)
    assert len(connector.connections) == 2
    assert connector.connections[0].closed
    assert wakes >= before + 4  # woken while disconnected, and after reconnecting


async def test_without_listen_it_never_connects() -> None:
    connector = Connector()
    notifier = Notifier("host=nowhere", use_listen=False, connect=connector)
    await notifier.start()
    assert notifier.started
    assert not notifier.connected
    await notifier.stop()
    assert connector.connections == []


async def test_stop_closes_the_connection(
    notifier_and_connector: tuple[Notifier, Connector],
) -> None:
    notifier, connector = notifier_and_connector
    await notifier.stop()  # before start
    await notifier.start()
    await asyncio.wait_for(notifier.wait_connected(), 2.0)
    await notifier.stop()
    await notifier.stop()
    assert connector.connections[0].closed
    assert not notifier.connected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://u:p@h:5433/db", "postgresql://u:p@h:5433/db"),
        ("postgres://u@h/db", "postgresql://u@h/db"),
        ("host=/tmp dbname=x", "host=/tmp dbname=x"),
        (make_url("postgresql+psycopg://u:secret@h/db"), "postgresql://u:secret@h/db"),
    ],
)
def test_conninfo_from_url(url: Any, expected: str) -> None:
    assert conninfo_from_url(url) == expected
