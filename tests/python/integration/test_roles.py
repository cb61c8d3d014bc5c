"""The package connected as each of the extension's group roles (least privilege).

A login role that is a member of `pgconductor_client` invokes and reads results; one that is
a member of `pgconductor_worker` runs the worker (declare its tasks, heartbeat, claim,
complete); neither reads a table, and the client cannot claim. The CLI's `invoke` and
`status` work as the client. Roles are cluster-wide: each test makes its own and drops them.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy.engine import make_url

from pgconductor.conductor import Conductor, TaskContext
from pgconductor.errors import InvalidState
from pgconductor.orchestrator import Orchestrator
from pgtest import execute, libpq_url

ROOT = Path(__file__).resolve().parents[3]


def _as_role(url: str, role: str, password: str) -> str:
    return (
        make_url(libpq_url(url))
        .set(username=role, password=password)
        .render_as_string(hide_password=False)
    )


@pytest.fixture
def role_urls(fresh_db_url: str) -> Iterator[dict[str, str]]:
    """URLs of fresh login roles, one per group role: client, worker, admin."""
    suffix = f"{os.getpid()}_{secrets.token_hex(3)}"
    password = secrets.token_hex(8)
    urls: dict[str, str] = {}
    for kind in ("client", "worker", "admin"):
        role = f"pgc_it_{kind}_{suffix}"
        execute(
            fresh_db_url,
            f"CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE pgconductor_{kind}",
        )
        urls[kind] = _as_role(fresh_db_url, role, password)
    yield urls
    for kind in urls:
        execute(fresh_db_url, f"DROP ROLE IF EXISTS pgc_it_{kind}_{suffix}")


@pytest.fixture
async def client(role_urls: dict[str, str]) -> AsyncIterator[Conductor]:
    conductor = Conductor(role_urls["client"])
    yield conductor
    await conductor.close()


async def test_client_invokes_and_a_worker_role_runs_it(
    role_urls: dict[str, str], client: Conductor, wait_until: Any
) -> None:
    worker = Conductor(role_urls["worker"])

    @worker.task("roles-echo", max_attempts=2)
    async def echo(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"echo": payload["n"]}

    orchestrator = Orchestrator(worker, heartbeat_interval=1.0)
    await orchestrator.start()
    try:
        execution_id: UUID = await client.invoke("roles-echo", {"n": 7})

        async def done() -> bool:
            info = await client.client.get_execution(execution_id)
            return info is not None and info.state == "completed"

        await wait_until(done, timeout=15.0)
        info = await client.client.get_execution(execution_id)
        assert info is not None
        assert info.result == {"echo": 7}
    finally:
        await orchestrator.stop()
        await worker.close()


async def test_a_client_cannot_claim(client: Conductor) -> None:
    with pytest.raises(InvalidState) as raised:
        await client.client.get_executions(UUID(int=1), "default", ["roles-echo"], 1)
    assert raised.value.sqlstate == "42501"


def test_no_role_reads_the_tables(role_urls: dict[str, str]) -> None:
    for kind in ("client", "worker", "admin"):
        with pytest.raises(Exception, match="permission denied for table executions"):
            execute(role_urls[kind], "SELECT count(*) FROM pgconductor.executions")


def test_the_cli_works_as_the_client(role_urls: dict[str, str]) -> None:
    env = {**os.environ, "DATABASE_URL": role_urls["client"]}
    cli = [sys.executable, "-m", "pgconductor"]
    invoked = subprocess.run(
        [*cli, "invoke", "roles-cli", "--payload", '{"n": 1}'],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert invoked.returncode == 0, invoked.stderr
    status = subprocess.run(
        [*cli, "status"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert "roles-cli" in status.stdout or "default" in status.stdout
