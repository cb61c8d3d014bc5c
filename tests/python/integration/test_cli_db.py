"""The inspection commands and the unserved-task warning against a real database.

`show`, `list`, `retry --state` and `status` read SQL's `get_execution`, `list_executions`,
`retry_executions` and `task_overview`; executions are failed through `return_executions`
as a worker would, and the CLI runs in-process (typer's runner) with `--database-url`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from typer.testing import CliRunner

from pgconductor import cli
from pgconductor.db import SqlDatabaseClient
from pgtest import execute, libpq_url

ORCH = "6f1c0c2e-0000-4000-8000-000000000001"


def cli_run(url: str, *args: str) -> Any:
    return CliRunner().invoke(cli.app, [*args, "--database-url", libpq_url(url)])


def fail_once(url: str, task: str, error: str) -> str:
    """Claim one due execution of `task` and return it `failed` with `error`; its id."""
    ((eid, lease),) = execute(
        url,
        "SELECT id, lease FROM pgconductor.get_executions(ARRAY[%s], %s, 1, 'mail')",
        task,
        ORCH,
    )
    execute(
        url,
        "SELECT pgconductor.return_executions(%s, ARRAY[%s]::uuid[], ARRAY[%s],"
        " ARRAY['failed'], ARRAY[%s])",
        ORCH,
        eid,
        lease,
        error,
    )
    return str(eid)


@pytest.fixture
def failed(fresh_db_url: str) -> tuple[str, str]:
    """A database with one `send-email` execution failed for good after two attempts."""
    execute(
        fresh_db_url,
        "SELECT pgconductor.register_task('send-email', p_queue => 'mail', p_max_attempts => 2,"
        " p_backoff_base => '1 millisecond', p_backoff_cap => '1 millisecond')",
    )
    execute(fresh_db_url, "SELECT pgconductor.invoke('send-email', '{\"to\": \"ada@x\"}')")
    eid = fail_once(fresh_db_url, "send-email", "Traceback\nSMTPError: 421 try later")
    execute(fresh_db_url, "SELECT pg_sleep(0.01)")  # the 1 ms backoff
    assert fail_once(fresh_db_url, "send-email", "SMTPError: 550 no such user") == eid
    return fresh_db_url, eid


def test_show_prints_each_attempts_error(failed: tuple[str, str]) -> None:
    url, eid = failed
    result = cli_run(url, "show", eid)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"execution {eid}"
    assert "  state      failed" in lines
    assert "  attempts   2 of 2" in lines
    assert '  payload    {"to": "ada@x"}' in lines
    errors = lines[lines.index("  errors:") + 1 :]
    assert errors[0].startswith("    attempt 1 at ")
    assert errors[0].endswith(": retry_scheduled")
    assert errors[1:3] == ["      Traceback", "      SMTPError: 421 try later"]
    assert errors[3].endswith(": failed")
    assert errors[4] == "      SMTPError: 550 no such user"
    missing = cli_run(url, "show", str(uuid.uuid4()))
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: execution ")


def test_list_filters_and_pages(failed: tuple[str, str]) -> None:
    url, eid = failed
    for n in range(3):
        execute(url, "SELECT pgconductor.invoke('send-email', %s::jsonb)", json.dumps({"n": n}))
    only_failed = json.loads(cli_run(url, "list", "--state", "failed", "--json").stdout)
    assert [(row["id"], row["last_error"]) for row in only_failed] == [
        (eid, "SMTPError: 550 no such user")
    ]
    first = cli_run(url, "list", "--task", "send-email", "--limit", "2")
    assert first.exit_code == 0, first.output
    before = first.stderr.strip().removeprefix("next page: --before ")
    rest = json.loads(cli_run(url, "list", "--limit", "2", "--before", before, "--json").stdout)
    everything = json.loads(cli_run(url, "list", "--json").stdout)
    assert len(everything) == 4
    assert [row["id"] for row in everything][2:] == [row["id"] for row in rest]
    assert everything[-1]["id"] == eid  # newest first: the failed one was invoked first


def test_bulk_retry_puts_failed_executions_back(failed: tuple[str, str]) -> None:
    url, eid = failed
    other = cli_run(url, "retry", "--state", "failed", "--task", "other-task")
    assert other.stdout.strip() == "retried 0 failed executions of task 'other-task'"
    result = cli_run(url, "retry", "--state", "failed", "--task", "send-email")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "retried 1 failed execution of task 'send-email'"
    pending = json.loads(cli_run(url, "list", "--state", "pending", "--json").stdout)
    assert [row["id"] for row in pending] == [eid]


def test_invoke_warns_about_a_task_no_worker_serves(fresh_db_url: str) -> None:
    execute(fresh_db_url, "SELECT pgconductor.register_task('send-email', p_queue => 'mail')")
    execute(
        fresh_db_url,
        "SELECT pgconductor.heartbeat(%s, 'test', '1 minute',"
        ' \'{"queues": {"mail": {"concurrency": 1, "running": 0, "tasks": ["send-email"]}}}\')',
        ORCH,
    )
    served = cli_run(fresh_db_url, "invoke", "send-email")
    assert served.exit_code == 0, served.output
    assert "warning" not in served.stderr
    typo = cli_run(fresh_db_url, "invoke", "send-emial")
    assert typo.exit_code == 0, typo.output
    assert typo.stderr.splitlines() == [
        "warning: no live worker has registered task 'send-emial'; did you mean 'send-email'?"
    ]
    uuid.UUID(typo.stdout.strip())
    elsewhere = cli_run(fresh_db_url, "invoke", "send-email", "--queue", "prio")
    assert "in queue 'prio' (it is served in 'mail')" in elsewhere.stderr
    status = cli_run(fresh_db_url, "status")
    assert status.exit_code == 0, status.output
    unserved = status.stdout.split("no live worker serves")[1]
    assert "send-emial" in unserved
    assert "prio" in unserved


async def test_get_execution_on_extension_0_3_reads_the_old_columns(bare_db_url: str) -> None:
    execute(bare_db_url, "CREATE EXTENSION pgconductor VERSION '0.3.0'")
    eid = execute(bare_db_url, "SELECT pgconductor.invoke('t', '{}')")[0][0]
    client = SqlDatabaseClient(bare_db_url)
    try:
        info = await client.get_execution(eid)
    finally:
        await client.close()
    assert info is not None
    assert (info.id, info.state, info.max_attempts, info.errors) == (eid, "pending", None, [])
