"""Testing helpers and a pytest plugin: throwaway databases, handlers run in-process.

Load it in your top-level `conftest.py` with `pytest_plugins = ["pgconductor.testing"]` (or
`pytest -p pgconductor.testing`). It offers:

- the fixture `pgconductor_url`: the URL of a throwaway database with the extension, cloned
  for each test from a template made once per session on the server named by
  `--pgconductor-url`, else `$PGCONDUCTOR_TEST_URL`, else `$DATABASE_URL` (the role must be
  allowed to create databases). Its test clock is enabled (`pgconductor.test_clock`).
- the fixture `pgconductor_clock`: a `DatabaseClock` on that database, started at a fixed
  time; `set()` and `advance()` move the time every SQL function sees.
- `connected(conductor, url)`: point a conductor at a database for a block.
- `await run_inline(conductor, task, payload)`: invoke one execution and run one attempt of
  it in this process through the real claim and `return_executions`; returns a `Ran`. A
  batch task's handler gets a batch of that one execution (`[payload]`).
- `await run_execution(conductor, execution_id)`: the same for an execution that exists.
- `await drain(conductor, queue=...)`: run a queue in-process until no due work is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from pgconductor.batch_run import Batch, BatchMember, refuse_durable, run_batch
from pgconductor.conductor import Conductor, Task, TaskContext
from pgconductor.db import SqlDatabaseClient, to_sqlalchemy_url
from pgconductor.errors import NotFound, PgConductorError
from pgconductor.executor import execute
from pgconductor.source_types import SOURCES_SINCE, SourceClient
from pgconductor.sources import OccurrenceReader, release_of
from pgconductor.steps import StepWriter
from pgconductor.types import ClaimedExecution, ExecutionResult, ResultStatus
from pgconductor.worker import Worker
from pgconductor.workflow import DurableRun

if TYPE_CHECKING:
    from pgconductor.protocol import DatabaseClient

__all__ = [
    "DatabaseClock",
    "Ran",
    "connected",
    "drain",
    "run_execution",
    "run_inline",
    "server_url",
]

#: Where the clock of `pgconductor_clock` starts.
CLOCK_START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
#: How many executions one claim of `run_execution` takes while looking for its own.
CLAIM_BATCH = 100
_ENV_URLS = ("PGCONDUCTOR_TEST_URL", "DATABASE_URL")
_counter = itertools.count(1)


# -- running handlers in-process ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ran:
    """What one in-process attempt did: SQL's outcome and the execution as it is now.

    `outcome` is what `return_executions` answered (completed, retry_scheduled, failed,
    rescheduled, cancelled, and for a workflow that waits suspended or resumed); `state` is
    the execution's state afterwards (completed, failed, cancelled, pending when it will run
    again, or sleeping / waiting_for_children / waiting_for_event).
    """

    id: UUID
    outcome: str
    state: str
    attempts: int
    result: Any
    error: str | None

    @property
    def completed(self) -> bool:
        """True when the execution completed."""
        return self.state == "completed"


async def run_inline(
    conductor: Conductor, task: Task[Any] | str, payload: Any = None, **options: Any
) -> Ran:
    """Invoke one execution (`Conductor.invoke` options) and run one attempt of it here.

    The tasks are declared first, as a worker does at start. Raises `PgConductorError` when
    the execution is not due (a delay, a window: move the clock first).
    """
    await conductor.register_tasks()
    execution_id = await conductor.invoke(task, payload, **options)
    return await _run_one(conductor, execution_id)


async def run_execution(conductor: Conductor, execution_id: UUID) -> Ran:
    """Run one attempt of an existing, due execution here (say, after moving the clock)."""
    await conductor.register_tasks()
    return await _run_one(conductor, execution_id)


async def _run_one(conductor: Conductor, execution_id: UUID) -> Ran:
    client = conductor.client
    info = await client.get_execution(execution_id)
    if info is None:
        raise NotFound(f"execution {execution_id} does not exist", sqlstate="P0002")
    task = conductor.tasks.get(info.task_key)
    if task is None:
        raise PgConductorError(f"the conductor has no task {info.task_key!r}")
    orchestrator_id = uuid.uuid4()
    held: list[ClaimedExecution] = []
    try:
        mine = await _claim(client, orchestrator_id, info.queue, info.task_key, execution_id, held)
        ctx = TaskContext(
            mine.id,
            mine.task_key,
            mine.queue,
            mine.attempt,
            mine.max_attempts,
            extra=conductor.context,
        )
        ctx._occurrence = await _occurrences(client)
        if task.batch is not None:
            result = await _run_batch_of_one(conductor, task, mine, ctx)
        else:
            result = await _run_alone(conductor, task, mine, ctx, orchestrator_id)
        if result is None:  # only a lost lease gives none, and nothing here loses one
            raise PgConductorError(f"execution {execution_id} reported no result")
        [outcome] = await client.return_executions(orchestrator_id, [result])
    finally:
        await _give_back(client, orchestrator_id, held)
    after = await client.get_execution(execution_id)
    assert after is not None
    return Ran(
        execution_id, outcome.outcome, after.state, after.attempts, after.result, after.last_error
    )


async def _occurrences(client: DatabaseClient) -> OccurrenceReader:
    """What reads `ctx.scheduled_at()`, as a worker has it (no client before 0.8.0)."""
    found = await client.version()
    recent = found is not None and release_of(found) >= release_of(SOURCES_SINCE)
    usable = client if recent and isinstance(client, SourceClient) else None
    return OccurrenceReader(usable, asyncio.get_running_loop())


async def _run_alone(
    conductor: Conductor,
    task: Task[Any],
    mine: ClaimedExecution,
    ctx: TaskContext,
    orchestrator_id: UUID,
) -> ExecutionResult | None:
    """One attempt of an ordinary (maybe durable) task, its steps saved as a worker does."""
    steps = StepWriter(conductor.client, orchestrator_id, interval=0.0)
    ctx._run = DurableRun(
        mine.id,
        mine.lease,
        mine.steps,
        saver=steps,
        tasks=conductor.tasks,
        clock=conductor.clock,
    )
    try:
        return await execute(task, mine, ctx)
    finally:
        await steps.close()


async def _run_batch_of_one(
    conductor: Conductor, task: Task[Any], mine: ClaimedExecution, ctx: TaskContext
) -> ExecutionResult | None:
    """One attempt of a batch task: its handler gets a batch of this one execution."""
    ctx._run_factory, ctx._claim = refuse_durable, mine
    member = BatchMember(mine, ctx)
    batch = Batch(task)
    batch.members.append(member)
    member.batch = batch
    [(_, result)] = await run_batch(task, batch, extra=conductor.context)
    return result


async def _claim(
    client: DatabaseClient,
    orchestrator_id: UUID,
    queue: str,
    task_key: str,
    execution_id: UUID,
    held: list[ClaimedExecution],
) -> ClaimedExecution:
    """Claim the task's due executions until `execution_id` is among them; the others
    are collected in `held` (given back afterwards, attempt not counted)."""
    while True:
        batch = await client.get_executions(orchestrator_id, queue, [task_key], CLAIM_BATCH)
        for row in batch:
            if row.id == execution_id:
                return row
            held.append(row)
        if len(batch) < CLAIM_BATCH:
            raise PgConductorError(
                f"execution {execution_id} is not due",
                hint="it runs later (a delay, a window, a backoff): move the clock first",
            )


async def _give_back(
    client: DatabaseClient, orchestrator_id: UUID, held: list[ClaimedExecution]
) -> None:
    if held:
        await client.return_executions(
            orchestrator_id,
            [ExecutionResult(row.id, row.lease, ResultStatus.RELEASED) for row in held],
        )
    await client.release_orchestrator(orchestrator_id)


async def drain(conductor: Conductor, queue: str | None = None) -> int:
    """Run `queue` (by default every queue of the conductor's tasks) here until no due work
    is left; return how many attempts ran. Retries that are not due yet stay pending."""
    await conductor.register_tasks()
    client = conductor.client
    queues = (
        [queue] if queue is not None else sorted({t.spec.queue for t in conductor.tasks.values()})
    )
    orchestrator_id = uuid.uuid4()
    ran = 0
    try:
        for name in queues:
            worker = Worker(
                client,
                name,
                conductor.tasks,
                orchestrator_id,
                poll_interval=0.05,
                context=conductor.context,
                clock=conductor.clock,
            )
            await worker.drain()
            ran += worker.stats.finished
    finally:
        await client.release_orchestrator(orchestrator_id)
    return ran


@contextlib.asynccontextmanager
async def connected(conductor: Conductor, url: str) -> AsyncIterator[Conductor]:
    """Point `conductor` at the database `url` for the block (its own client, closed after);
    the conductor's previous client is put back at the end."""
    previous = conductor._client, conductor._owns_client
    client = SqlDatabaseClient(url)
    conductor.client = client
    try:
        yield conductor
    finally:
        conductor._client, conductor._owns_client = previous
        await client.close()


# -- the database's clock ----------------------------------------------------------------


class DatabaseClock:
    """The fake clock of one database (`pgconductor.fake_now`), also a `Clock` for Python.

    Each move sets the time database-wide and ends the database's other sessions so every
    connection sees it at once (clients reconnect: a transient error they retry). Give it to
    the conductor (`conductor.clock = clock`) so `delay=` counts from the same time.
    """

    def __init__(self, url: str, start: datetime = CLOCK_START) -> None:
        self.url = _libpq(url)
        self._now = start
        self.set(start)

    def now(self) -> datetime:
        """The time the database sees now."""
        return self._now

    def monotonic(self) -> float:
        """Real monotonic time (intervals inside the process are not faked)."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """A real sleep."""
        await asyncio.sleep(max(0.0, seconds))

    def set(self, when: datetime) -> None:
        """Move the database's time to `when` (timezone-aware)."""
        if when.tzinfo is None:
            raise ValueError("the clock needs a timezone-aware datetime")
        with psycopg.connect(self.url, autocommit=True) as conn:
            name = conn.execute("SELECT current_database()").fetchone()
            assert name is not None
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET pgconductor.fake_now = {}").format(
                    sql.Identifier(name[0]), sql.Literal(when.isoformat())
                )
            )
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        self._now = when

    def advance(self, delta: timedelta | float) -> datetime:
        """Move the time forward by `delta` (a timedelta or seconds); return the new time."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        self.set(self._now + step)
        return self._now


# -- throwaway databases -----------------------------------------------------------------


def _libpq(url: str) -> str:
    """A URL psycopg accepts (a SQLAlchemy `+driver` suffix dropped)."""
    return to_sqlalchemy_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _on(url: str, database: str) -> str:
    return make_url(_libpq(url)).set(database=database).render_as_string(hide_password=False)


def server_url(config: pytest.Config) -> str | None:
    """The server where throwaway databases are made: the option, else the environment."""
    given = config.getoption("pgconductor_url", default=None)
    if given:
        return str(given)
    for name in _ENV_URLS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def _admin(server: str, statement: sql.Composed) -> None:
    with psycopg.connect(_libpq(server), autocommit=True) as conn:
        conn.execute(statement)


def create_database(server: str, name: str, template: str | None = None) -> str:
    """Create database `name` (from `template` when given, dropping any old one); its URL."""
    ident = sql.Identifier(name)
    _admin(server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
    if template is None:
        _admin(server, sql.SQL("CREATE DATABASE {}").format(ident))
    else:
        _admin(
            server,
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(ident, sql.Identifier(template)),
        )
    return _on(server, name)


def drop_database(server: str, name: str) -> None:
    """Drop database `name` (ending its sessions)."""
    _admin(server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def pytest_addoption(parser: pytest.Parser) -> None:
    """`--pgconductor-url`: the server for throwaway databases."""
    parser.getgroup("pgconductor").addoption(
        "--pgconductor-url",
        dest="pgconductor_url",
        default=None,
        help="PostgreSQL server URL where pgconductor's test databases are created"
        " (default: $PGCONDUCTOR_TEST_URL, then $DATABASE_URL)",
    )


@pytest.fixture(scope="session")
def pgconductor_template(request: pytest.FixtureRequest) -> Iterator[str]:
    """The name of this session's template database, with the extension installed."""
    server = server_url(request.config)
    if server is None:
        pytest.fail(
            "pgconductor.testing needs a PostgreSQL server: pass --pgconductor-url or set"
            " PGCONDUCTOR_TEST_URL (or DATABASE_URL)",
            pytrace=False,
        )
    name = f"pgconductor_test_tpl_{os.getpid()}"
    url = create_database(server, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgconductor")
    try:
        yield name
    finally:
        drop_database(server, name)


@pytest.fixture
def pgconductor_url(request: pytest.FixtureRequest, pgconductor_template: str) -> Iterator[str]:
    """The URL of a throwaway database with the extension and its test clock enabled."""
    server = server_url(request.config)
    assert server is not None  # the template fixture failed otherwise
    name = f"pgconductor_test_{os.getpid()}_{next(_counter)}"
    url = create_database(server, name, template=pgconductor_template)
    # Only the database's owner (us) may allow the fake clock; a clone does not inherit it.
    _admin(
        url,
        sql.SQL("ALTER DATABASE {} SET pgconductor.test_clock = on").format(sql.Identifier(name)),
    )
    try:
        yield url
    finally:
        drop_database(server, name)


@pytest.fixture
def pgconductor_clock(pgconductor_url: str) -> DatabaseClock:
    """The throwaway database's fake clock, started at `CLOCK_START`."""
    return DatabaseClock(pgconductor_url)
