"""One adapter per measured system: pgconductor and its peers (pgqueuer, procrastinate; for
durable workflows, pgconductor's workflows and DBOS Transact).

Every adapter knows its database, how to install its schema, empty it, bulk-enqueue N no-op
jobs (not timed), tell whether any job is still unfinished, verify that all N completed,
run a worker loop (in a subprocess, see worker_proc.py) and enqueue single jobs.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from datetime import timedelta
from typing import Any, ClassVar

import psycopg
from common import url

_HERE = os.path.dirname(os.path.abspath(__file__))
REC_ADDR = os.environ.get("BENCH_REC_ADDR")  # "host:port" of the latency client
_rec_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if REC_ADDR else None


def _record(seq: Any) -> None:
    """Latency runs: the job body sends "<seq> <wall clock>" to BENCH_REC_ADDR (UDP)."""
    if _rec_sock is not None and REC_ADDR and seq is not None:
        host, port = REC_ADDR.rsplit(":", 1)
        _rec_sock.sendto(f"{seq} {time.time()}".encode(), (host, int(port)))


async def _sql(db: str, *statements: str) -> None:
    async with await psycopg.AsyncConnection.connect(url(db), autocommit=True) as conn:
        for s in statements:
            await conn.execute(s)


async def _rows(db: str, query: str, params: Any = None) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(url(db), autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()


async def ensure_database(db: str) -> None:
    async with await psycopg.AsyncConnection.connect(url("postgres"), autocommit=True) as conn:
        cur = await conn.execute("select 1 from pg_database where datname = %s", (db,))
        if not await cur.fetchone():
            await conn.execute(f'create database "{db}"')


class System:
    name = ""
    db = ""
    vacuum_tables: ClassVar[list[str]] = []
    remaining_sql = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def cfg(self, cfg: dict[str, Any]) -> dict[str, Any]:
        return {**self.defaults, **cfg}

    async def install(self) -> None: ...
    async def reset(self) -> None: ...
    async def enqueue_bulk(self, n: int) -> None: ...
    async def verify(self, n: int, cfg: dict[str, Any]) -> tuple[bool, str]: ...
    async def worker(self, cfg: dict[str, Any], ready: Any) -> None: ...
    def enqueuer(self) -> Any: ...


# ------------------------------------------------------------------------------------------
def _orchestrator_defaults() -> dict[str, Any]:
    """concurrency, fetch_batch, flush_batch and flush_interval as Orchestrator() defaults them."""
    import inspect

    from pgconductor.orchestrator import Orchestrator

    params = inspect.signature(Orchestrator.__init__).parameters
    names = ("concurrency", "fetch_batch", "flush_batch", "flush_interval")
    return {name: params[name].default for name in names}


class PgConductor(System):
    name = "pgconductor"
    db = "bench_pgconductor"
    queue = "bench"
    vacuum_tables: ClassVar[list[str]] = [
        "pgconductor.executions",
        "pgconductor.finished_executions",
        "pgconductor.orchestrators",
    ]
    remaining_sql = "select exists(select 1 from pgconductor.executions where queue = 'bench')"
    # The Orchestrator's own defaults, read from its signature (so "default" never drifts).
    defaults: ClassVar[dict[str, Any]] = {
        **_orchestrator_defaults(),
        "uvloop": False,
        "mode": "api",
    }

    async def install(self) -> None:
        await ensure_database(self.db)
        # A fresh copy of whatever `make install` put in the share dir.
        await _sql(
            self.db,
            "drop extension if exists pgconductor cascade",
            "create extension pgconductor",
            "create extension if not exists pg_stat_statements",
            f"select pgconductor.register_task('noop', '{self.queue}')",
        )

    async def reset(self) -> None:
        await _sql(
            self.db,
            "truncate pgconductor.executions, pgconductor.finished_executions,"
            " pgconductor.signals, pgconductor.orchestrators",
        )

    async def enqueue_bulk(self, n: int) -> None:
        async with await psycopg.AsyncConnection.connect(url(self.db), autocommit=True) as conn:
            for lo in range(0, n, 5000):
                k = min(5000, n - lo)
                await conn.execute(
                    "select count(*) from pgconductor.invoke_batch("
                    "'noop', array_fill('{}'::jsonb, array[%s]), %s)",
                    (k, self.queue),
                )

    async def verify(self, n: int, cfg: dict[str, Any]) -> tuple[bool, str]:
        live = (await _rows(self.db, "select count(*) from pgconductor.executions"))[0][0]
        states = dict(
            await _rows(
                self.db, "select state, count(*) from pgconductor.finished_executions group by 1"
            )
        )
        return live == 0 and states == {"completed": n}, f"live={live} finished={states}"

    async def worker(self, cfg: dict[str, Any], ready: Any) -> None:
        from bench_app import conductor

        from pgconductor.orchestrator import Orchestrator

        cfg = self.cfg(cfg)
        orch = Orchestrator(
            conductor,
            queues=[self.queue],
            concurrency=cfg["concurrency"],
            fetch_batch=cfg["fetch_batch"],
            flush_batch=cfg["flush_batch"],
            flush_interval=cfg["flush_interval"],
        )
        await conductor.client.version()  # connect the pool before GO
        await ready()
        await orch.serve()

    def enqueuer(self) -> Any:
        return _PgcEnqueuer(self)


class _PgcEnqueuer:
    """Single invokes through the Python API (Conductor.invoke)."""

    def __init__(self, system: PgConductor) -> None:
        self.system = system

    async def __aenter__(self) -> _PgcEnqueuer:
        from pgconductor import Conductor

        self.conductor = Conductor(url(self.system.db))
        await self.conductor.client.version()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conductor.close()

    async def one(self, seq: int | None = None) -> None:
        await self.conductor.invoke("noop", {} if seq is None else {"seq": seq}, queue="bench")

    async def many(self, k: int) -> None:
        await self.conductor.invoke_many("noop", [{}] * k, queue="bench")


class PgConductorSql(PgConductor):
    """Same system; single invokes as one `SELECT pgconductor.invoke(...)` on a psycopg conn."""

    name = "pgconductor-sql"

    def enqueuer(self) -> Any:
        return _PgcSqlEnqueuer(self)


class _PgcSqlEnqueuer:
    def __init__(self, system: PgConductor) -> None:
        self.system = system

    async def __aenter__(self) -> _PgcSqlEnqueuer:
        self.conn = await psycopg.AsyncConnection.connect(url(self.system.db), autocommit=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()

    async def one(self, seq: int | None = None) -> None:
        payload = "{}" if seq is None else json.dumps({"seq": seq})
        await self.conn.execute(
            "select pgconductor.invoke('noop', %s::jsonb, 'bench')", (payload,), prepare=True
        )

    async def many(self, k: int) -> None:
        await self.conn.execute(
            "select count(*) from pgconductor.invoke_batch('noop', array_fill('{}'::jsonb,"
            " array[%s]), 'bench')",
            (k,),
            prepare=True,
        )


# ------------------------------------------------------------------------------------------
class PgQueuer(System):
    name = "pgqueuer"
    db = "bench_pgqueuer"
    vacuum_tables: ClassVar[list[str]] = ["pgqueuer", "pgqueuer_log", "pgqueuer_statistics"]
    remaining_sql = "select exists(select 1 from pgqueuer where status in ('queued', 'picked'))"
    defaults: ClassVar[dict[str, Any]] = {
        "qms": 1,
        "batch": 10,
        "uvloop": True,
        "dequeue_timeout": 30.0,
    }

    async def _connect(self) -> Any:
        import asyncpg

        return await asyncpg.connect(url(self.db))

    async def install(self) -> None:
        from pgqueuer import AsyncpgDriver, Queries

        await ensure_database(self.db)
        have = (await _rows(self.db, "select to_regclass('pgqueuer') is not null"))[0][0]
        if not have:
            conn = await self._connect()
            await Queries(AsyncpgDriver(conn)).install()
            await conn.close()

    async def reset(self) -> None:
        await _sql(self.db, "truncate pgqueuer, pgqueuer_log, pgqueuer_statistics restart identity")

    async def enqueue_bulk(self, n: int) -> None:
        from pgqueuer import AsyncpgDriver, Queries

        conn = await self._connect()
        queries = Queries(AsyncpgDriver(conn))
        for lo in range(0, n, 5000):
            k = min(5000, n - lo)
            await queries.enqueue(["noop"] * k, [None] * k, [0] * k)
        await conn.close()

    async def verify(self, n: int, cfg: dict[str, Any]) -> tuple[bool, str]:
        left = (await _rows(self.db, "select count(*) from pgqueuer"))[0][0]
        log = dict(
            await _rows(self.db, "select status::text, count(*) from pgqueuer_log group by 1")
        )
        return left == 0 and log.get("successful", 0) == n, f"left={left} log={log}"

    async def worker(self, cfg: dict[str, Any], ready: Any) -> None:
        from pgqueuer import AsyncpgDriver
        from pgqueuer import PgQueuer as Pgq

        cfg = self.cfg(cfg)
        managers = []
        for _ in range(cfg["qms"]):
            pgq = Pgq(AsyncpgDriver(await self._connect()))

            @pgq.entrypoint("noop")
            async def noop(job: Any) -> None:
                if job.payload:
                    _record(job.payload.decode())

            managers.append(pgq)
        await ready()
        await asyncio.gather(
            *(
                m.run(
                    batch_size=cfg["batch"],
                    dequeue_timeout=timedelta(seconds=cfg["dequeue_timeout"]),
                )
                for m in managers
            )
        )

    def enqueuer(self) -> Any:
        return _PgqEnqueuer(self)


class _PgqEnqueuer:
    def __init__(self, system: PgQueuer) -> None:
        self.system = system

    async def __aenter__(self) -> _PgqEnqueuer:
        from pgqueuer import AsyncpgDriver, Queries

        self.conn = await self.system._connect()
        self.queries = Queries(AsyncpgDriver(self.conn))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()

    async def one(self, seq: int | None = None) -> None:
        await self.queries.enqueue("noop", None if seq is None else str(seq).encode())

    async def many(self, k: int) -> None:
        await self.queries.enqueue(["noop"] * k, [None] * k, [0] * k)


# ------------------------------------------------------------------------------------------
class Procrastinate(System):
    name = "procrastinate"
    db = "bench_procrastinate"
    vacuum_tables: ClassVar[list[str]] = [
        "procrastinate_jobs",
        "procrastinate_events",
        "procrastinate_workers",
    ]
    remaining_sql = (
        "select exists(select 1 from procrastinate_jobs where status in ('todo', 'doing'))"
    )
    defaults: ClassVar[dict[str, Any]] = {
        "concurrency": 1,
        "delete_jobs": "never",
        "polling": 5.0,
        "uvloop": False,
    }

    def app(self, pool: int = 4) -> Any:
        import procrastinate

        app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=url(self.db), min_size=pool, max_size=pool
            )
        )

        @app.task(name="noop")
        async def noop(seq: Any = None) -> None:
            _record(seq)

        self.noop = noop
        return app

    async def install(self) -> None:
        await ensure_database(self.db)
        have = (await _rows(self.db, "select to_regclass('procrastinate_jobs') is not null"))[0][0]
        if not have:
            app = self.app()
            async with app.open_async():
                await app.schema_manager.apply_schema_async()

    async def reset(self) -> None:
        await _sql(
            self.db,
            "truncate procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers,"
            " procrastinate_workers restart identity cascade",
        )

    async def enqueue_bulk(self, n: int) -> None:
        app = self.app()
        async with app.open_async():
            for lo in range(0, n, 5000):
                await self.noop.batch_defer_async(*([{}] * min(5000, n - lo)))

    async def verify(self, n: int, cfg: dict[str, Any]) -> tuple[bool, str]:
        cfg = self.cfg(cfg)
        counts = dict(
            await _rows(self.db, "select status::text, count(*) from procrastinate_jobs group by 1")
        )
        ok = not counts if cfg["delete_jobs"] == "always" else counts == {"succeeded": n}
        return ok, f"status={counts}"

    async def worker(self, cfg: dict[str, Any], ready: Any) -> None:
        cfg = self.cfg(cfg)
        app = self.app(pool=min(cfg["concurrency"] + 2, 40))
        async with app.open_async():
            await ready()
            await app.run_worker_async(
                concurrency=cfg["concurrency"],
                wait=True,
                listen_notify=True,
                fetch_job_polling_interval=cfg["polling"],
                delete_jobs=cfg["delete_jobs"],
                install_signal_handlers=False,
            )

    def enqueuer(self) -> Any:
        return _ProcEnqueuer(self)


class _ProcEnqueuer:
    def __init__(self, system: Procrastinate) -> None:
        self.system = system

    async def __aenter__(self) -> _ProcEnqueuer:
        self.app = self.system.app(pool=1)
        await self.app.open_async()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.app.close_async()

    async def one(self, seq: int | None = None) -> None:
        await self.system.noop.defer_async(seq=seq)

    async def many(self, k: int) -> None:
        await self.system.noop.batch_defer_async(*([{}] * k))


# ------------------------------------------------------------------------------------------
# Durable workflows: pgconductor's `wf10` and its peer, DBOS Transact (bench/dbos_app.py).
# enqueue_bulk(n) makes n 10-step workflows; `kind` picks another workflow of the section.

WF_STEPS = 10


class PgcWorkflow(PgConductor):
    """pgconductor's durable workflows (bench_app.py, queue `bench_wf`)."""

    name = "pgconductor-wf"
    queue = "bench_wf"
    remaining_sql = "select exists(select 1 from pgconductor.executions where queue = 'bench_wf')"

    async def install(self) -> None:
        await super().install()
        await _sql(
            self.db,
            *(
                f"select pgconductor.register_task('{t}', '{self.queue}')"
                for t in ("wf10", "wf1", "child", "fanout")
            ),
        )

    async def reset(self) -> None:
        await _sql(
            self.db,
            "truncate pgconductor.executions, pgconductor.finished_executions,"
            " pgconductor.signals, pgconductor.orchestrators, pgconductor.steps",
        )

    async def enqueue_bulk(self, n: int) -> None:
        async with await psycopg.AsyncConnection.connect(url(self.db), autocommit=True) as conn:
            for lo in range(0, n, 5000):
                k = min(5000, n - lo)
                await conn.execute(
                    "select count(*) from pgconductor.invoke_batch('wf10',"
                    " array_fill(jsonb_build_object('n', %s::int), array[%s]), %s)",
                    (WF_STEPS, k, self.queue),
                )

    async def verify(self, n: int, cfg: dict[str, Any]) -> tuple[bool, str]:
        live = (await _rows(self.db, "select count(*) from pgconductor.executions"))[0][0]
        states = dict(
            await _rows(
                self.db, "select state, count(*) from pgconductor.finished_executions group by 1"
            )
        )
        results = dict(
            await _rows(
                self.db,
                "select result::text, count(*) from pgconductor.finished_executions group by 1",
            )
        )
        want = str(sum(range(WF_STEPS)))
        ok = live == 0 and states == {"completed": n} and results == {want: n}
        return ok, f"live={live} finished={states} results={results}"

    async def worker(self, cfg: dict[str, Any], ready: Any) -> None:
        from bench_app import conductor

        from pgconductor.orchestrator import Orchestrator

        cfg = self.cfg(cfg)
        orch = Orchestrator(
            conductor,
            queues=[self.queue],
            concurrency=cfg["concurrency"],
            fetch_batch=cfg["fetch_batch"],
            flush_batch=cfg["flush_batch"],
            flush_interval=cfg["flush_interval"],
        )
        await conductor.client.version()
        await ready()
        await orch.serve()

    def enqueuer(self) -> Any:
        return _PgcWorkflowEnqueuer(self)


class _PgcWorkflowEnqueuer(_PgcEnqueuer):
    """`wf1` (latency) and `fanout` through the Python API."""

    async def one(self, seq: int | None = None) -> None:
        await self.conductor.invoke("wf1", {"seq": seq}, queue="bench_wf")

    async def fanout(self, n: int) -> None:
        await self.conductor.invoke("fanout", {"n": n}, queue="bench_wf")


class Dbos(System):
    """DBOS Transact on its own database of the same server (bench/dbos_app.py)."""

    name = "dbos"
    db = "bench_dbos"
    vacuum_tables: ClassVar[list[str]] = [
        "dbos.workflow_status",
        "dbos.operation_outputs",
        "dbos.workflow_input",
        "dbos.workflow_output",
    ]
    remaining_sql = (
        "select exists(select 1 from dbos.workflow_status"
        " where status in ('ENQUEUED', 'PENDING', 'DELAYED'))"
    )
    defaults: ClassVar[dict[str, Any]] = {
        "worker_concurrency": 100,  # per process; None (unlimited) lets one process take all
        "polling": 0.01,  # queue polling interval, s (DBOS's default is 1.0)
        "pool": 20,  # system database pool per process
        "uvloop": False,
    }
    wf10 = "wf10"  # async workflow and steps

    async def install(self) -> None:
        import subprocess
        import sys

        await ensure_database(self.db)
        code = f"import dbos_app; dbos_app.migrate({url(self.db)!r})"
        await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], cwd=_HERE, check=True)
        await _sql(self.db, "create extension if not exists pg_stat_statements")

    async def reset(self) -> None:
        tables = ", ".join([*self.vacuum_tables, "dbos.workflow_events", "dbos.notifications"])
        await _sql(self.db, f"truncate {tables} cascade")

    async def enqueue_bulk(self, n: int) -> None:
        import dbos_app

        await asyncio.to_thread(dbos_app.enqueue_many, url(self.db), self.wf10, [WF_STEPS] * n)

    async def verify(self, n: int, cfg: dict[str, Any]) -> tuple[bool, str]:
        states = dict(
            await _rows(self.db, "select status, count(*) from dbos.workflow_status group by 1")
        )
        steps = (await _rows(self.db, "select count(*) from dbos.operation_outputs"))[0][0]
        ok = states == {"SUCCESS": n} and steps == n * WF_STEPS
        return ok, f"status={states} steps={steps}"

    async def worker(self, cfg: dict[str, Any], ready: Any) -> None:
        import dbos_app

        cfg = self.cfg(cfg)
        dbos_app.configure(url(self.db), f"bench-{os.getpid()}", cfg["pool"])
        await asyncio.to_thread(dbos_app.launch, cfg["polling"])
        await ready()
        await asyncio.to_thread(dbos_app.go, cfg["worker_concurrency"])
        await asyncio.Event().wait()

    def enqueuer(self) -> Any:
        return _DbosEnqueuer(self)


class DbosSync(Dbos):
    """The same with sync workflows and steps (DBOS runs them on its thread pool)."""

    name = "dbos-sync"
    wf10 = "wf10s"


class _DbosEnqueuer:
    """`wf1` and `fanout` enqueued by a DBOSClient (one transaction each)."""

    def __init__(self, system: Dbos) -> None:
        self.system = system
        self.wf1 = "wf1s" if system.wf10 == "wf10s" else "wf1"

    async def __aenter__(self) -> _DbosEnqueuer:
        from dbos import DBOSClient
        from dbos_app import APP

        self.client = DBOSClient(system_database_url=url(self.system.db), application_name=APP)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.client.destroy)

    async def one(self, seq: int | None = None) -> None:
        from dbos_app import QUEUE

        await self.client.enqueue_async({"workflow_name": self.wf1, "queue_name": QUEUE}, seq)

    async def fanout(self, n: int) -> None:
        from dbos_app import QUEUE

        await self.client.enqueue_async({"workflow_name": "fanout", "queue_name": QUEUE}, n)


SYSTEMS: dict[str, type[System]] = {
    "pgconductor": PgConductor,
    "pgconductor-sql": PgConductorSql,
    "pgqueuer": PgQueuer,
    "procrastinate": Procrastinate,
    "pgconductor-wf": PgcWorkflow,
    "dbos": Dbos,
    "dbos-sync": DbosSync,
}


def get(name: str) -> System:
    return SYSTEMS[name]()
