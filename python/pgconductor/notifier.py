"""`Notifier`: one LISTEN connection that wakes workers and orchestrators promptly.

It holds one dedicated psycopg `AsyncConnection` (autocommit) listening on
`pgconductor_invoke` (payload: a queue with new due work) and `pgconductor_signal`
(payload: an orchestrator id with a signal waiting) and calls the subscribers of that
queue or id. When the connection drops it reconnects with backoff, and meanwhile wakes every
subscriber each `poll_interval`, so polling covers the gap (and once more after reconnecting,
for what was missed). With `use_listen=False` (transaction-mode poolers) it never connects
and the subscribers' own jittered polling does all the work. The orchestrator passes no
conninfo when its database URL is a transaction-mode pooler's and no direct `listen_url` was
given: a pooler hands each transaction to any server session, so a LISTEN there would
hear nothing.

Besides `db.py` this is the only module that sends SQL, and only `LISTEN <channel>`; while
idle it re-sends a LISTEN every `keepalive` seconds to find out whether the connection died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from pgconductor.clock import Clock, SystemClock
from pgconductor.lib.backoff import exponential
from pgconductor.service import Service

__all__ = ["CHANNELS", "INVOKE_CHANNEL", "SIGNAL_CHANNEL", "Notifier", "conninfo_from_url"]

#: NOTIFY channel of new due work; the payload is the queue name.
INVOKE_CHANNEL = "pgconductor_invoke"
#: NOTIFY channel of orchestrator signals; the payload is the orchestrator id.
SIGNAL_CHANNEL = "pgconductor_signal"
CHANNELS = (INVOKE_CHANNEL, SIGNAL_CHANNEL)

Callback = Callable[[], None]
Connect = Callable[[str], Awaitable[psycopg.AsyncConnection[Any]]]


def conninfo_from_url(url: str | URL) -> str:
    """A libpq connection string from a SQLAlchemy URL or a `postgresql+psycopg://` text."""
    if isinstance(url, str):
        if "://" not in url:
            return url  # already a "host=... dbname=..." conninfo
        url = make_url(url.replace("postgres://", "postgresql://", 1))
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _connect(conninfo: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(
        conninfo, autocommit=True, application_name="pgconductor-notifier"
    )


class Notifier(Service):
    """LISTEN on the pgconductor channels and call subscribers; reconnect when dropped."""

    def __init__(
        self,
        conninfo: str | None,
        *,
        use_listen: bool = True,
        poll_interval: float = 1.0,
        keepalive: float = 30.0,
        reconnect_base: float = 0.5,
        reconnect_cap: float = 30.0,
        clock: Clock | None = None,
        connect: Connect | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__("notifier", logger)
        self.conninfo = conninfo
        self.use_listen = use_listen and conninfo is not None
        self.poll_interval = poll_interval
        self.keepalive = keepalive
        self.reconnect_base = reconnect_base
        self.reconnect_cap = reconnect_cap
        self.clock: Clock = clock or SystemClock()
        self._connect: Connect = connect or _connect
        self._subscribers: dict[tuple[str, str], list[Callback]] = defaultdict(list)
        self._connected = asyncio.Event()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        """True while the LISTEN connection is up."""
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Wait until the LISTEN connection is up (tests and start-up checks)."""
        await self._connected.wait()

    def subscribe(self, channel: str, key: str, callback: Callback) -> Callable[[], None]:
        """Call `callback()` on a NOTIFY on `channel` with payload `key`; returns unsubscribe."""
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        callbacks = self._subscribers[(channel, key)]
        callbacks.append(callback)
        return lambda: callbacks.remove(callback) if callback in callbacks else None

    def on_queue(self, queue: str, callback: Callback) -> Callable[[], None]:
        """Call `callback()` when new work is due in `queue`."""
        return self.subscribe(INVOKE_CHANNEL, queue, callback)

    def on_signal(self, orchestrator_id: UUID, callback: Callback) -> Callable[[], None]:
        """Call `callback()` when a signal waits for `orchestrator_id`."""
        return self.subscribe(SIGNAL_CHANNEL, str(orchestrator_id), callback)

    def dispatch(self, channel: str, payload: str) -> None:
        """Deliver one notification; an empty payload on the signal channel wakes every id."""
        if channel == SIGNAL_CHANNEL and payload in ("", "*"):
            for (chan, _), callbacks in list(self._subscribers.items()):
                if chan == SIGNAL_CHANNEL:
                    self._call(callbacks)
            return
        matching = self._subscribers.get((channel, payload))
        if matching:
            self._call(matching)

    def wake_all(self) -> None:
        """Call every subscriber (after a gap in which notifications may have been missed)."""
        for callbacks in list(self._subscribers.values()):
            self._call(callbacks)

    def _call(self, callbacks: list[Callback]) -> None:
        for callback in list(callbacks):
            try:
                callback()
            except Exception:
                self.log.exception("notifier: a subscriber failed")

    async def _on_start(self) -> None:
        if self.use_listen:
            self.spawn(self._listen_loop(), "listen")
        else:
            self.log.info(
                "notifier: no LISTEN connection (%s); workers poll every %gs",
                "no direct URL to LISTEN on" if self.conninfo is None else "turned off",
                self.poll_interval,
            )

    async def _on_stop(self) -> None:
        self._connected.clear()
        await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _listen_loop(self) -> None:
        assert self.conninfo is not None
        failures = 0
        while True:
            try:
                self._conn = conn = await self._connect(self.conninfo)
                for channel in CHANNELS:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                if failures:
                    self.reconnects += 1
                    self.log.info("notifier: reconnected")
                failures = 0
                self._connected.set()
                self.wake_all()
                while True:
                    async for note in conn.notifies(timeout=self.keepalive):
                        self.dispatch(note.channel, note.payload)
                    # Quiet for `keepalive` seconds: prove the connection is still alive.
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(INVOKE_CHANNEL)))
            except (psycopg.Error, OSError) as exc:
                failures += 1
                self._connected.clear()
                await self._close()
                delay = exponential(failures, self.reconnect_base, self.reconnect_cap)
                self.log.warning(
                    "notifier: LISTEN connection lost (%s); reconnecting in %.1fs",
                    str(exc).strip() or type(exc).__name__,
                    delay,
                )
                await self._poll_for(delay)

    async def _poll_for(self, seconds: float) -> None:
        """While disconnected, wake everybody every `poll_interval` for `seconds`."""
        end = self.clock.monotonic() + seconds
        while True:
            self.wake_all()
            left = end - self.clock.monotonic()
            if left <= 0:
                return
            await self.clock.sleep(min(left, self.poll_interval))
