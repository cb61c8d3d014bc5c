"""A small fault-injection TCP proxy for chaos tests (a toxiproxy stand-in).

`FaultProxy(upstream_host, upstream_port)` listens on 127.0.0.1 (a free port, `.port`) and
forwards every connection to the upstream server. It runs its own asyncio event loop in a
background thread, so the faults it injects never depend on the loop of the code under
test (a blocked test loop cannot "heal" a fault by accident). Every control call is
synchronous: when it returns, the fault is in force.

Directions: `"upstream"` is client → server, `"downstream"` is server → client, `"both"`.

Faults:
- `cut()`: close every open connection and close new ones at once until `restore()`.
- `latency(ms, direction)`: hold each chunk `ms` after it arrived before forwarding it
  (`latency(0)` releases what is held at once: a spike ends when the latency is removed).
- `stall(direction)` / `unstall(direction)`: stop forwarding bytes without closing
  anything (packet-loss-like; TCP delivers what was held once the stall ends).
- `slow_close(seconds)`: when one side closes, keep the other side open that long.
- `trigger(patterns, action)`: when a connection's client → server stream has shown each
  byte pattern in order (e.g. `[b"get_executions"]`), act on that connection alone:
  `"cut"` closes it right after forwarding the matching chunk (the server got the query);
  `"stall"` holds every server → client byte from the reply to that chunk on;
  `"lose_reply"` lets replies through until the server reports the transaction ended
  (ReadyForQuery, idle: committed in autocommit or after COMMIT) and holds that reply and
  everything after it: the server has committed, the client never hears so. Cut the
  proxy then, and the client faces a commit whose outcome it cannot know.

  A prepared statement's text crosses the wire once per connection, in the Parse message
  that precedes its first run (psycopg waits for that reply before executing). To act on
  the run rather than the preparation, end the patterns with `EXECUTE`, the Execute message
  libpq sends to run a statement of the extended protocol.
- `reset()`: clear every fault and trigger (held bytes flow again, cut ends).

Counters (`stats()`): connections accepted, refused while cut, active, peak active, bytes each
way, connections cut. Use as a context manager, or call `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy.engine import make_url

__all__ = ["EXECUTE", "Direction", "FaultProxy", "ProxyStats", "Trigger"]

log = logging.getLogger("faultproxy")
T = TypeVar("T")
Direction = Literal["upstream", "downstream", "both"]
_DIRECTIONS = ("upstream", "downstream")
_CHUNK = 65536
#: ReadyForQuery, transaction status idle: the server has ended the transaction (committed,
#: or rolled back) and is ready for the next query.
_READY_IDLE = b"Z\x00\x00\x00\x05I"
#: Execute of the unnamed portal, all rows: libpq runs an extended-protocol statement.
EXECUTE = b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00"


def _directions(direction: str) -> tuple[str, ...]:
    if direction == "both":
        return _DIRECTIONS
    if direction in _DIRECTIONS:
        return (direction,)
    raise ValueError(f"direction must be 'upstream', 'downstream' or 'both', not {direction!r}")


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """A snapshot of the proxy's counters."""

    accepted: int
    refused: int
    active: int
    peak_active: int
    bytes_upstream: int
    bytes_downstream: int
    cut: int


class Trigger:
    """A one-shot fault armed on byte patterns of the client → server stream."""

    def __init__(self, patterns: Iterable[bytes], action: str) -> None:
        self.patterns = [bytes(p) for p in patterns]
        if not self.patterns or any(not p for p in self.patterns):
            raise ValueError("a trigger needs at least one non-empty byte pattern")
        if action not in ("cut", "stall", "lose_reply"):
            raise ValueError(
                f"trigger action must be 'cut', 'stall' or 'lose_reply', not {action!r}"
            )
        self.action = action
        self.fired = threading.Event()
        self.connection_id: int | None = None
        self.armed = True
        self._progress: dict[int, tuple[int, bytes]] = {}  # connection id -> (index, tail)

    def wait(self, timeout: float) -> bool:
        """Block until the trigger fired (True) or `timeout` seconds passed (False)."""
        return self.fired.wait(timeout)

    async def wait_async(self, timeout: float) -> bool:
        """`wait` for async callers (polls, so the caller's loop keeps running)."""
        deadline = time.monotonic() + timeout
        while not self.fired.is_set():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    def _feed(self, conn_id: int, data: bytes) -> bool:
        """Advance this connection's match with `data`; True when the last pattern matched."""
        if not self.armed:
            return False
        index, tail = self._progress.get(conn_id, (0, b""))
        window = tail + data
        while index < len(self.patterns):
            found = window.find(self.patterns[index])
            if found < 0:
                break
            window = window[found + len(self.patterns[index]) :]
            index += 1
        if index == len(self.patterns):
            self.armed = False
            self.connection_id = conn_id
            self._progress.clear()
            return True
        keep = max(len(p) for p in self.patterns) - 1
        self._progress[conn_id] = (index, window[-keep:] if keep else b"")
        return False

    def _forget(self, conn_id: int) -> None:
        self._progress.pop(conn_id, None)


class _Connection:
    """One proxied client connection and its upstream twin."""

    def __init__(self, conn_id: int, sock: socket.socket) -> None:
        self.id = conn_id
        self.sock = sock  # the accepted client socket, until `client` wraps it
        self.client: asyncio.StreamWriter | None = None
        self.server: asyncio.StreamWriter | None = None
        self.stalled: set[str] = set()  # directions held for this connection only
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.lose_reply: Trigger | None = None  # armed "lose_reply" trigger
        self.reply_tail = b""

    def abort(self) -> None:
        self.closed = True
        if self.client is None:
            self.sock.close()
        for writer in (self.client, self.server):
            if writer is not None:
                writer.transport.abort()


class FaultProxy:
    """A TCP proxy on 127.0.0.1 with injectable faults; see the module docstring."""

    def __init__(
        self,
        upstream_host: str = "127.0.0.1",
        upstream_port: int = 5432,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = listen_host
        self.connect_timeout = connect_timeout
        self._cut = False
        self._latency = dict.fromkeys(_DIRECTIONS, 0.0)  # seconds
        self._stalled: set[str] = set()
        self._slow_close = 0.0
        self._triggers: list[Trigger] = []
        self._connections: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._counts = {
            "accepted": 0,
            "refused": 0,
            "peak_active": 0,
            "bytes_upstream": 0,
            "bytes_downstream": 0,
            "cut": 0,
        }
        self._lock = threading.Lock()  # guards the counters read from other threads
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._changed = asyncio.Event()  # replaced at each change; created on the proxy loop
        self._listener: socket.socket | None = None
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run_loop, args=(ready,), name="faultproxy", daemon=True
        )
        self._thread.start()
        ready.wait()
        try:
            self.port: int = self._call(self._listen(listen_host, listen_port))
        except BaseException:
            self._stop_loop()
            raise

    # -- addresses -------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the proxy listens on."""
        return self.host, self.port

    def url_for(self, db_url: str, *, sslmode: str | None = "disable") -> str:
        """`db_url` (a postgres URL or a libpq conninfo) with host/port pointing here.

        `sslmode=disable` is added unless the URL sets one (`sslmode=None`: leave it): the
        proxy's triggers match plaintext protocol bytes.
        """
        if "://" not in db_url:
            params = conninfo_to_dict(db_url)
            params.update(host=self.host, port=str(self.port))
            if sslmode is not None:
                params.setdefault("sslmode", sslmode)
            return make_conninfo(**params)
        url = make_url(db_url).set(host=self.host, port=self.port)
        if sslmode is not None and "sslmode" not in url.query:
            url = url.update_query_dict({"sslmode": sslmode})
        return url.render_as_string(hide_password=False)

    # -- faults ----------------------------------------------------------------------------

    def cut(self) -> None:
        """Close every open connection and close new ones at once, until `restore()`."""

        def apply() -> None:
            self._cut = True
            for conn in list(self._connections.values()):
                self._abort(conn)

        self._apply(apply)

    def restore(self) -> None:
        """End a `cut()`: new connections are proxied again."""
        self._apply(lambda: setattr(self, "_cut", False))

    @property
    def is_cut(self) -> bool:
        """True between `cut()` and `restore()`."""
        return self._cut

    def latency(self, ms: float, direction: Direction = "both") -> None:
        """Hold every chunk `ms` milliseconds (per direction) before forwarding it."""
        if ms < 0:
            raise ValueError("latency must not be negative")
        chosen = _directions(direction)

        def apply() -> None:
            for d in chosen:
                self._latency[d] = ms / 1000.0

        self._apply(apply)

    def stall(self, direction: Direction = "both") -> None:
        """Stop forwarding bytes in `direction` without closing anything."""
        chosen = _directions(direction)
        self._apply(lambda: self._stalled.update(chosen))

    def unstall(self, direction: Direction = "both") -> None:
        """Forward again what `stall()` held (also clears per-connection trigger stalls)."""
        chosen = _directions(direction)

        def apply() -> None:
            self._stalled.difference_update(chosen)
            for conn in self._connections.values():
                conn.stalled.difference_update(chosen)

        self._apply(apply)

    def slow_close(self, seconds: float) -> None:
        """When one side of a connection closes, keep the other open `seconds` longer."""
        if seconds < 0:
            raise ValueError("slow_close must not be negative")
        self._apply(lambda: setattr(self, "_slow_close", float(seconds)))

    def trigger(self, patterns: Iterable[bytes] | bytes, action: str = "cut") -> Trigger:
        """Arm a one-shot fault on client → server byte patterns (see the module docstring)."""
        trig = Trigger([patterns] if isinstance(patterns, bytes) else patterns, action)
        self._apply(lambda: self._triggers.append(trig))
        return trig

    def reset(self) -> None:
        """Clear every fault and trigger: no cut, no latency, no stall, no slow close."""

        def apply() -> None:
            self._cut = False
            self._latency = dict.fromkeys(_DIRECTIONS, 0.0)
            self._stalled.clear()
            self._slow_close = 0.0
            for trig in self._triggers:
                trig.armed = False
            self._triggers.clear()
            for conn in self._connections.values():
                conn.stalled.clear()
                conn.lose_reply = None

        self._apply(apply)

    # -- counters --------------------------------------------------------------------------

    def stats(self) -> ProxyStats:
        """A snapshot of the counters."""
        with self._lock:
            return ProxyStats(
                accepted=self._counts["accepted"],
                refused=self._counts["refused"],
                active=len(self._connections),
                peak_active=self._counts["peak_active"],
                bytes_upstream=self._counts["bytes_upstream"],
                bytes_downstream=self._counts["bytes_downstream"],
                cut=self._counts["cut"],
            )

    @property
    def active(self) -> int:
        """Connections open through the proxy now."""
        return len(self._connections)

    def reset_counters(self) -> None:
        """Zero the counters (`active` is not a counter and stays)."""
        with self._lock:
            for key in self._counts:
                self._counts[key] = 0
            self._counts["peak_active"] = len(self._connections)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop listening, close every connection, stop the loop and its thread."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._call(self._shutdown(), timeout=10.0)
        self._stop_loop()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"FaultProxy(127.0.0.1:{self.port} -> {self.upstream_host}:{self.upstream_port},"
            f" cut={self._cut}, latency={self._latency}, stalled={sorted(self._stalled)})"
        )

    # -- loop plumbing ---------------------------------------------------------------------

    def _run_loop(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(ready.set)
        self._loop.run_forever()
        with contextlib.suppress(Exception):
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.run_until_complete(asyncio.sleep(0.01))  # transports' close callbacks
        self._loop.close()

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10.0)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run `coro` on the proxy loop and wait for its result."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("FaultProxy controls must not be called from its own thread")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _apply(self, change: Callable[[], None]) -> None:
        """Make a state change on the proxy loop, wake waiting pumps, return when done."""
        if self._closed:
            raise RuntimeError("the FaultProxy is closed")

        async def run() -> None:
            change()
            self._wake()

        self._call(run())

    def _wake(self) -> None:
        """Tell every waiting pump that the faults changed."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, timeout: float | None) -> None:
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def _listen(self, host: str, port: int) -> int:
        self._changed = asyncio.Event()
        listener = socket.create_server((host, port))
        listener.setblocking(False)
        self._listener = listener
        asyncio.get_running_loop().add_reader(listener, self._accept_ready, listener)
        return int(listener.getsockname()[1])

    async def _shutdown(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener)
            self._listener.close()  # the kernel resets connections not accepted yet
        for conn in list(self._connections.values()):
            conn.abort()
            if conn.task is not None:
                conn.task.cancel()
        self._connections.clear()
        self._wake()
        await asyncio.sleep(0.01)  # let the aborted transports close their sockets

    # -- proxying --------------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _abort(self, conn: _Connection) -> None:
        if conn.closed:
            return
        self._count("cut")
        conn.abort()
        self._forget(conn)

    def _forget(self, conn: _Connection) -> None:
        self._connections.pop(conn.id, None)
        for trig in self._triggers:
            trig._forget(conn.id)

    def _accept_ready(self, listener: socket.socket) -> None:
        """Accept every waiting client; each is registered at once (no await in between)."""
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            if self._cut or self._closed:
                self._count("refused")
                sock.close()
                continue
            conn = _Connection(next(self._ids), sock)
            self._connections[conn.id] = conn
            with self._lock:
                self._counts["accepted"] += 1
                active = len(self._connections)
                self._counts["peak_active"] = max(self._counts["peak_active"], active)
            conn.task = asyncio.ensure_future(self._serve(conn))

    async def _serve(self, conn: _Connection) -> None:
        """Connect upstream, then pump both ways until either side ends."""
        with contextlib.suppress(OSError):
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            reader, writer = await asyncio.open_connection(sock=conn.sock)
        except OSError:
            conn.abort()
            self._forget(conn)
            return
        conn.client = writer
        if conn.closed:  # cut meanwhile
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            log.warning(
                "faultproxy: upstream %s:%s unreachable: %s",
                self.upstream_host,
                self.upstream_port,
                exc,
            )
            conn.abort()
            self._forget(conn)
            return
        conn.server = up_writer
        if conn.closed:  # cut while connecting
            up_writer.transport.abort()
            return
        up = asyncio.ensure_future(self._pump(conn, "upstream", reader, up_writer))
        down = asyncio.ensure_future(self._pump(conn, "downstream", up_reader, writer))
        try:
            await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
            if not conn.closed:
                if self._slow_close > 0:
                    await asyncio.sleep(self._slow_close)
                conn.abort()
                self._forget(conn)
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)

    def _held(self, conn: _Connection, direction: str) -> bool:
        return direction in self._stalled or direction in conn.stalled

    async def _pump(
        self,
        conn: _Connection,
        direction: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Forward `direction` of one connection chunk by chunk, applying the faults."""
        counter = f"bytes_{direction}"
        loop = asyncio.get_running_loop()
        try:
            while not conn.closed:
                data = await reader.read(_CHUNK)
                if not data:
                    return
                arrived = loop.time()
                fired: list[Trigger] = []
                if direction == "upstream":
                    fired = self._match_triggers(conn, data)  # before forwarding: no race
                elif conn.lose_reply is not None:
                    self._watch_reply(conn, data)
                while not conn.closed:
                    if self._held(conn, direction):
                        await self._wait_change(None)
                        continue
                    remaining = arrived + self._latency[direction] - loop.time()
                    if remaining > 0:
                        await self._wait_change(remaining)
                        continue
                    break
                if conn.closed:
                    return
                writer.write(data)
                await writer.drain()
                self._count(counter, len(data))
                for trig in fired:
                    if trig.action == "cut":
                        self._abort(conn)
                    trig.fired.set()
                if fired:
                    self._wake()
        except (ConnectionError, OSError):
            return

    def _match_triggers(self, conn: _Connection, data: bytes) -> list[Trigger]:
        """Triggers completed by this client chunk; stall-like ones take effect now."""
        fired = []
        for trig in list(self._triggers):
            if not trig._feed(conn.id, data):
                continue
            self._triggers.remove(trig)
            log.info("faultproxy: trigger %s fired on connection %d", trig.patterns, conn.id)
            if trig.action == "stall":
                conn.stalled.add("downstream")
                fired.append(trig)
            elif trig.action == "lose_reply":
                conn.lose_reply = trig  # fired once the commit's reply is held
                conn.reply_tail = b""
            else:
                fired.append(trig)
        return fired

    def _watch_reply(self, conn: _Connection, data: bytes) -> None:
        """Hold the server's reply from its first end-of-transaction ReadyForQuery on."""
        window = conn.reply_tail + data
        conn.reply_tail = window[-(len(_READY_IDLE) - 1) :]
        if _READY_IDLE in window and conn.lose_reply is not None:
            conn.stalled.add("downstream")
            conn.lose_reply.fired.set()
            conn.lose_reply = None
