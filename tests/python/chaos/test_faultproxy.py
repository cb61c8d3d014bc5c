"""The fault proxy itself, against a real PostgreSQL (and a TCP echo server for mechanics)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import psycopg
import pytest

from chaos.faultproxy import EXECUTE, FaultProxy
from chaos.support import EchoServer
from pgtest import execute


def query_time(url: str, sql: str = "SELECT 1") -> float:
    """Seconds one query takes on an already open connection."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT 1")  # connection set-up is not part of the measure
        start = time.monotonic()
        conn.execute(sql)
        return time.monotonic() - start


def test_passthrough_and_counters(proxy: FaultProxy, db_url: str) -> None:
    url = proxy.url_for(db_url)
    assert f"127.0.0.1:{proxy.port}" in url
    assert "sslmode=disable" in url
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT current_database(), 40 + 2").fetchone() == (
            db_url.rsplit("/", 1)[1],
            42,
        )
        assert conn.info.port == proxy.port
        assert proxy.active == 1
    stats = proxy.stats()
    assert stats.accepted == 1
    assert stats.refused == 0
    assert stats.cut == 0
    assert stats.bytes_upstream > 0
    assert stats.bytes_downstream > stats.bytes_upstream // 10
    assert stats.peak_active == 1
    proxy.reset_counters()
    assert proxy.stats().accepted == 0


def test_url_for_keeps_everything_but_the_address(proxy: FaultProxy) -> None:
    url = proxy.url_for("postgresql+psycopg://bob:s3cret@127.0.0.1:5432/appdb?application_name=x")
    assert url == (
        f"postgresql+psycopg://bob:s3cret@127.0.0.1:{proxy.port}/appdb"
        "?application_name=x&sslmode=disable"
    )
    assert proxy.url_for("postgresql://h/db?sslmode=require").endswith("sslmode=require")
    assert (
        proxy.url_for("postgresql://h/db", sslmode=None)
        == f"postgresql://127.0.0.1:{proxy.port}/db"
    )
    conninfo = proxy.url_for("host=db.example port=5433 dbname=app user=u")
    assert f"port={proxy.port}" in conninfo
    assert "host=127.0.0.1" in conninfo
    assert "dbname=app" in conninfo


def test_cut_breaks_open_and_new_connections_until_restore(proxy: FaultProxy, db_url: str) -> None:
    url = proxy.url_for(db_url)
    conn = psycopg.connect(url, autocommit=True)
    try:
        conn.execute("SELECT 1")
        proxy.cut()
        assert proxy.is_cut
        assert proxy.active == 0
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5).close()
    assert proxy.stats().refused >= 1
    assert proxy.stats().cut == 1
    proxy.restore()
    with psycopg.connect(url, autocommit=True) as again:
        assert again.execute("SELECT 7").fetchone() == (7,)


def test_latency_is_added_per_direction_and_removed_by_reset(
    proxy: FaultProxy, db_url: str
) -> None:
    url = proxy.url_for(db_url)
    base = query_time(url)
    proxy.latency(150, "downstream")
    assert query_time(url) >= 0.15
    proxy.latency(0, "downstream")
    proxy.latency(150, "upstream")
    assert query_time(url) >= 0.15
    proxy.latency(150)  # both ways: one round trip pays twice
    assert query_time(url) >= 0.30
    proxy.reset()
    assert min(query_time(url) for _ in range(3)) < base + 0.1


def test_ending_a_latency_spike_releases_held_bytes_at_once(proxy: FaultProxy, db_url: str) -> None:
    url = proxy.url_for(db_url)
    with psycopg.connect(url, autocommit=True) as conn:
        proxy.latency(30_000, "downstream")
        timer = threading.Timer(0.3, proxy.reset)
        timer.start()
        start = time.monotonic()
        assert conn.execute("SELECT 5").fetchone() == (5,)
        elapsed = time.monotonic() - start
        timer.join()
    assert 0.25 <= elapsed < 5


async def test_stall_holds_bytes_without_closing(proxy: FaultProxy, db_url: str) -> None:
    url = proxy.url_for(db_url)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        proxy.stall("downstream")
        # psycopg answers a cancelled query with a cancel request and waits for the reply:
        # end the stall shortly after the client-side timeout so that wait is short.
        timer = threading.Timer(0.8, proxy.unstall)
        timer.start()
        start = time.monotonic()
        with pytest.raises(TimeoutError):  # the client-side timeout fires: no reply came
            async with asyncio.timeout(0.5):
                await (await conn.execute("SELECT 1")).fetchone()
        assert time.monotonic() - start >= 0.5
        timer.join()
    assert proxy.stats().cut == 0  # nothing was closed by the proxy
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        proxy.stall("downstream")
        query = asyncio.ensure_future(conn.execute("SELECT 11"))
        await asyncio.sleep(0.3)
        assert not query.done()
        proxy.unstall("downstream")  # held bytes are delivered: nothing was lost
        cur = await asyncio.wait_for(query, 5)
        assert await cur.fetchone() == (11,)


def test_stall_upstream_keeps_the_query_from_the_server(proxy: FaultProxy, db_url: str) -> None:
    execute(db_url, "CREATE TABLE IF NOT EXISTS proxy_stall_probe (n int)")
    url = proxy.url_for(db_url)
    with psycopg.connect(url, autocommit=True) as conn:
        proxy.stall("upstream")
        worker = threading.Thread(
            target=lambda: conn.execute("INSERT INTO proxy_stall_probe VALUES (1)")
        )
        worker.start()
        time.sleep(0.3)  # holding the fault for a while
        assert execute(db_url, "SELECT count(*) FROM proxy_stall_probe") == [(0,)]
        proxy.unstall()
        worker.join(5)
        assert not worker.is_alive()
    assert execute(db_url, "SELECT count(*) FROM proxy_stall_probe") == [(1,)]


def test_trigger_cut_fires_on_the_matching_query_only(proxy: FaultProxy, db_url: str) -> None:
    url = proxy.url_for(db_url)
    trig = proxy.trigger([b"SELECT 'marker'"], action="cut")
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert not trig.fired.is_set()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 'marker'")
    assert trig.wait(1)
    assert trig.connection_id == 1
    with psycopg.connect(url, autocommit=True) as conn:  # one-shot: disarmed now
        assert conn.execute("SELECT 'marker'").fetchone() == ("marker",)


def test_trigger_stall_holds_the_reply_until_unstalled(proxy: FaultProxy, db_url: str) -> None:
    url = proxy.url_for(db_url)
    trig = proxy.trigger([b"SELECT 'held'"], action="stall")
    with psycopg.connect(url, autocommit=True) as conn:
        timer = threading.Timer(0.4, proxy.unstall)
        timer.start()
        start = time.monotonic()
        assert conn.execute("SELECT 'held'").fetchone() == ("held",)
        assert time.monotonic() - start >= 0.35
        timer.join()
    assert trig.fired.is_set()


@pytest.mark.parametrize("autocommit", [True, False])
def test_trigger_lose_reply_makes_a_commit_outcome_unknown(
    proxy: FaultProxy, db_url: str, autocommit: bool
) -> None:
    """The server commits; the client never hears it: the case a retry must cope with.
    Works for an autocommit statement and for an explicit transaction's COMMIT."""
    execute(db_url, "CREATE TABLE IF NOT EXISTS proxy_commit_probe (tag text)")
    tag = f"autocommit={autocommit}"
    url = proxy.url_for(db_url)
    trig = proxy.trigger([b"proxy_commit_probe"], action="lose_reply")
    conn = psycopg.connect(url, autocommit=autocommit)
    failure: list[BaseException] = []

    def write() -> None:
        try:
            conn.execute("INSERT INTO proxy_commit_probe VALUES (%s)", (tag,))
            if not autocommit:
                conn.commit()
        except BaseException as exc:
            failure.append(exc)

    def committed() -> bool:
        rows = execute(db_url, "SELECT count(*) FROM proxy_commit_probe WHERE tag = %s", tag)
        return bool(rows == [(1,)])

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert trig.wait(5)  # the end-of-transaction reply is held now
        deadline = time.monotonic() + 5
        while not committed():
            assert time.monotonic() < deadline, "the commit never reached the server"
            time.sleep(0.02)
        assert writer.is_alive()  # committed, but the client still waits for the reply
        proxy.cut()
        writer.join(5)
        assert len(failure) == 1
        assert isinstance(failure[0], psycopg.OperationalError)
        assert committed()
    finally:
        conn.close()


@pytest.mark.parametrize("prepare", [True, False])
def test_trigger_with_execute_acts_when_a_statement_runs(
    proxy: FaultProxy, db_url: str, prepare: bool
) -> None:
    """A prepared statement's text goes out in a Parse of its own, before it runs: ending the
    patterns with EXECUTE cuts after the run, so the server did the write either way."""
    execute(db_url, "CREATE TABLE IF NOT EXISTS proxy_prepared_probe (tag text)")
    tag = f"prepare={prepare}"
    trig = proxy.trigger([b"proxy_prepared_probe", EXECUTE], action="cut")
    with psycopg.connect(proxy.url_for(db_url), autocommit=True) as conn:
        with pytest.raises(psycopg.OperationalError):
            conn.execute("INSERT INTO proxy_prepared_probe VALUES (%s)", (tag,), prepare=prepare)
    assert trig.wait(1)
    rows = execute(db_url, "SELECT count(*) FROM proxy_prepared_probe WHERE tag = %s", tag)
    assert rows == [(1,)]


def test_slow_close_keeps_the_client_side_open(closing_echo_server: EchoServer) -> None:
    with FaultProxy("127.0.0.1", closing_echo_server.port) as proxy:
        proxy.slow_close(0.6)
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"ping")
            assert sock.recv(100) == b"ping"
            start = time.monotonic()
            assert sock.recv(100) == b""  # the server closed at once; we learn it late
            assert time.monotonic() - start >= 0.5
        proxy.slow_close(0)
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"pong")
            assert sock.recv(100) == b"pong"
            start = time.monotonic()
            assert sock.recv(100) == b""
            assert time.monotonic() - start < 0.5


def test_bytes_are_counted_each_way(echo_server: EchoServer) -> None:
    with FaultProxy("127.0.0.1", echo_server.port) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as sock:
            payload = b"x" * 100_000
            sock.sendall(payload)
            got = b""
            while len(got) < len(payload):
                got += sock.recv(65536)
        deadline = time.monotonic() + 5
        while proxy.stats().bytes_downstream < len(payload) and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = proxy.stats()
        assert stats.bytes_upstream == stats.bytes_downstream == len(payload)


def test_unreachable_upstream_closes_the_client() -> None:
    spare = socket.create_server(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # nothing listens there now
    with FaultProxy("127.0.0.1", port, connect_timeout=1) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as sock:
            assert sock.recv(10) == b""
        assert proxy.active == 0


def test_close_stops_listening_and_is_idempotent(echo_server: EchoServer) -> None:
    proxy = FaultProxy("127.0.0.1", echo_server.port)
    sock = socket.create_connection(proxy.address, timeout=5)
    proxy.close()
    proxy.close()
    try:
        assert sock.recv(10) == b""  # open connections were closed
    finally:
        sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=1).close()
    with pytest.raises(RuntimeError, match="closed"):
        proxy.cut()
    assert not proxy._thread.is_alive()


def test_bad_arguments_are_refused(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="direction"):
        proxy.latency(10, "sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        proxy.latency(-1)
    with pytest.raises(ValueError, match="negative"):
        proxy.slow_close(-1)
    with pytest.raises(ValueError, match="pattern"):
        proxy.trigger([b""], "cut")
    with pytest.raises(ValueError, match="action"):
        proxy.trigger([b"x"], "explode")
