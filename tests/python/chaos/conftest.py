"""Chaos-only fixtures.

- `proxy`: a `FaultProxy` in front of the test server (`upstream`: its address);
- `echo_server`, `closing_echo_server`: TCP echo servers for the proxy's own tests;
- `worker_process`: starts `pgconductor worker start` subprocesses, killed afterwards;
- `extension_script`: throwaway `pgconductor--<current>--<version>.sql` update scripts in the
  server's extension directory, removed afterwards.

The database fixtures (`db_url`, `fresh_db_url`, `bare_db_url`, `server_url`) and the
helpers (`execute`, `wait_until`) come from tests/python/conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chaos.faultproxy import FaultProxy
from chaos.support import EchoServer, WorkerProcess, scalar, upstream_of
from pgtest import EXTENSION_VERSION

#: The extension version every test database starts at.
BASE_VERSION = EXTENSION_VERSION


@pytest.fixture
def upstream(server_url: str) -> tuple[str, int]:
    """(host, port) of the PostgreSQL server under test."""
    return upstream_of(server_url)


@pytest.fixture
def proxy(upstream: tuple[str, int]) -> Iterator[FaultProxy]:
    """A `FaultProxy` in front of the test server, closed after the test."""
    with FaultProxy(*upstream) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def closing_echo_server() -> Iterator[EchoServer]:
    server = EchoServer(close_after_first=True)
    yield server
    server.close()


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory of subprocess workers (`pgconductor worker start`), all killed afterwards."""
    made: list[WorkerProcess] = []

    def start(url: str, label: str, *args: str) -> WorkerProcess:
        proc = WorkerProcess(url, label, tmp_path, *args)
        made.append(proc)
        return proc

    yield start
    for proc in made:
        proc.close()


@pytest.fixture
def extension_script(server_url: str) -> Iterator[Callable[[str, str], str]]:
    """Install `pgconductor--<current>--<version>.sql` update scripts; remove them afterwards."""
    sharedir = Path(
        str(scalar(server_url, "SELECT setting FROM pg_config WHERE name = 'SHAREDIR'"))
    )
    directory = sharedir / "extension"
    written: list[Path] = []

    def write(suffix: str, body: str) -> str:
        version = f"{BASE_VERSION}-{suffix}{os.getpid()}"
        path = directory / f"pgconductor--{BASE_VERSION}--{version}.sql"
        try:
            path.write_text(body)
        except OSError as exc:
            pytest.fail(f"cannot write a throwaway update script into {directory}: {exc}")
        written.append(path)
        return version

    yield write
    for path in written:
        path.unlink(missing_ok=True)
