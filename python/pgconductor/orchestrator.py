"""`Orchestrator`: one per process; owns the workers, the heartbeat and the notifier.

`start()` checks the installed extension version (refusing to run on a mismatch), declares
the tasks with only the settings given in Python (the queues to serve follow the effective
settings; settings kept from SQL are logged), sends the first heartbeat, then starts the
notifier, the workers and the heartbeat loop; any failure stops what was started and
raises, bounded by `start_timeout` (never a hang: the original's G25). The heartbeat
(`pgconductor.heartbeat`, which also runs stale recovery in SQL) repeats every
`heartbeat_interval`, and at once when a
`pgconductor_signal` NOTIFY names this orchestrator, so a cancel reaches its handler in
milliseconds. Signals: `shutdown` → graceful stop, `cancel` → abort that handler,
`lease_lost` → abort it without reporting. Started on an extension without retry_after,
durable workflows, flow control or schedules and sources (0.8.0), it reads the version after
each heartbeat and warns when a live upgrade brings them (its workers go on as they started:
a restart picks them up). On extension 0.7.0 or later it also runs the maintenance service
(`maintenance.py`: `maintain()` every `maintenance_interval`, 10 s with jitter; None turns it
off in this process). On 0.8.0 or
later it declares the tasks' schedules and event sources after the tasks (`sources.py`:
static ones the code dropped are removed) and ticks schedules every `tick_interval` (1 s;
None: no ticks here).

`stop()` stops the workers (each waits `grace_period` for its handlers, aborts the rest and
waits `abort_grace` for them, then flushes), then the heartbeat and the notifier, then calls
`release_orchestrator`, unless a handler ignored the abort and still runs: its lease is
then left to stale recovery rather than released under a running handler (G5). `run()`
adds SIGTERM/SIGINT handling: the first signal stops gracefully, a second one forces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from pgconductor.clock import Clock
from pgconductor.conductor import Conductor
from pgconductor.db import SqlDatabaseClient
from pgconductor.flow import check_task_limits
from pgconductor.lib.backoff import jittered
from pgconductor.lib.event import wait_event
from pgconductor.maintenance import DEFAULT_INTERVAL, DEFAULT_TICK_INTERVAL, Maintenance, Ticker
from pgconductor.notifier import Notifier, conninfo_from_url
from pgconductor.protocol import DatabaseClient, FlowClient, SchemaClient
from pgconductor.schema import PACKAGE_VERSION, SchemaManager
from pgconductor.service import Service, ServiceState
from pgconductor.source_types import SourceClient
from pgconductor.sources import check_sources, declare_sources
from pgconductor.types import Signal
from pgconductor.worker import Worker

__all__ = ["Orchestrator", "WorkerConfig"]

#: The first extension version whose `return_executions` takes the `retry_after` status.
RETRY_AFTER_SINCE = (0, 4, 0)
#: The first extension version with durable workflows (steps, suspend, events).
WORKFLOWS_SINCE = (0, 6, 0)
#: The first extension version with flow control and `maintain()`.
FLOW_SINCE = (0, 7, 0)
#: The first extension version with schedules, event subscriptions and table triggers.
SOURCES_SINCE = (0, 8, 0)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """One queue to serve; unset fields take the orchestrator's defaults."""

    queue: str
    concurrency: int | None = None
    fetch_batch: int | None = None
    flush_batch: int | None = None


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _release(version: str) -> tuple[int, ...]:
    """`"0.4.0"` → `(0, 4, 0)` (a part that is not a number ends it)."""
    numbers: list[int] = []
    for part in version.split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def _task_queues(conductor: Conductor) -> list[str]:
    return sorted({t.spec.queue for t in conductor.tasks.values()})


def _check_queues(conductor: Conductor, configs: Sequence[WorkerConfig], *, settled: bool) -> None:
    """Every queue served must hold some task; before `settled` (the tasks are declared), a
    task whose queue Python left to SQL may be on any queue."""
    for config in configs:
        if not any(
            t.spec.queue == config.queue or (not settled and "queue" not in t.spec.declared)
            for t in conductor.tasks.values()
        ):
            raise ValueError(f"no task is registered for queue {config.queue!r}")


def _shown(value: Any) -> str:
    """A setting as a log line shows it: durations in seconds, times as HH:MM:SS."""
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g}s"
    return str(value)


class Orchestrator(Service):
    """Run a `Conductor`'s handlers for some queues in this process."""

    def __init__(
        self,
        conductor: Conductor,
        *,
        queues: Sequence[str | WorkerConfig] | None = None,
        concurrency: int = 100,
        fetch_batch: int | None = None,
        flush_batch: int = 200,
        flush_interval: float = 0.005,
        poll_interval: float = 1.0,
        heartbeat_interval: timedelta | float = 5.0,
        stale_after: timedelta | float = 30.0,
        grace_period: timedelta | float = 30.0,
        abort_grace: timedelta | float = 10.0,
        start_timeout: float = 60.0,
        use_listen: bool = True,
        listen_url: str | None = None,
        maintenance_interval: timedelta | float | None = DEFAULT_INTERVAL,
        tick_interval: timedelta | float | None = DEFAULT_TICK_INTERVAL,
        orchestrator_id: UUID | None = None,
        clock: Clock | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__("orchestrator", logger)
        self.conductor = conductor
        self.id = orchestrator_id or uuid.uuid4()
        self.clock: Clock = clock or conductor.clock
        self.heartbeat_interval = _seconds(heartbeat_interval)
        self.stale_after = timedelta(seconds=_seconds(stale_after))
        self.grace_period = _seconds(grace_period)
        self.abort_grace = _seconds(abort_grace)
        self.start_timeout = start_timeout
        self.use_listen = use_listen
        self.listen_url = listen_url
        #: Seconds between `maintain()` passes (0.7.0 on), None for none in this process.
        self.maintenance_interval = (
            None if maintenance_interval is None else _seconds(maintenance_interval)
        )
        if self.maintenance_interval is not None and not self.maintenance_interval > 0:
            raise ValueError("maintenance_interval must be longer than zero (None: no passes)")
        self.maintenance: Maintenance | None = None
        #: Seconds between schedule ticks (0.8.0 on), None for none in this process.
        self.tick_interval = None if tick_interval is None else _seconds(tick_interval)
        if self.tick_interval is not None and not self.tick_interval > 0:
            raise ValueError("tick_interval must be longer than zero (None: no ticks)")
        self.ticker: Ticker | None = None
        self._defaults: dict[str, Any] = {
            "concurrency": concurrency,
            "fetch_batch": fetch_batch,
            "flush_batch": flush_batch,
            "flush_interval": flush_interval,
            "poll_interval": poll_interval,
        }
        #: The queues follow the tasks' effective settings (known once they are declared).
        self._queues_follow_tasks = queues is None
        names = queues if queues is not None else _task_queues(conductor)
        self.configs = [q if isinstance(q, WorkerConfig) else WorkerConfig(q) for q in names]
        if not self.configs:
            raise ValueError("nothing to run: the conductor has no tasks and no queue was given")
        _check_queues(conductor, self.configs, settled=False)
        if len({c.queue for c in self.configs}) != len(self.configs):
            raise ValueError("a queue is listed twice")
        if (
            self.heartbeat_interval <= 0
            or self.stale_after.total_seconds() <= self.heartbeat_interval
        ):
            raise ValueError("stale_after must be longer than heartbeat_interval (a few beats)")
        self.workers: list[Worker] = []
        self.notifier: Notifier | None = None
        self.client: DatabaseClient | None = None
        self.signals_received: list[Signal] = []
        self._beat_now = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._registered = False
        self._supervised = False
        self._stop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._beat_settled_at = float("-inf")  # clock.monotonic() when the last beat ended
        self._serve_task: asyncio.Task[Any] | None = None
        self._start_abandoned = False
        self._retry_after = True
        self._workflows = True
        self._flow = True
        self._sources = True
        self._installed: str | None = None  # the extension version at start

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Check, register, heartbeat, then start notifier, workers and heartbeat loop."""
        await super().start()
        if self._stop_requested.is_set() and self.started:  # `shutdown` came during start
            self._stop_unless_supervised()

    async def _on_start(self) -> None:
        async with asyncio.timeout(self.start_timeout):
            self.client = client = self.conductor.client
            installed = await SchemaManager(self._schema_client(client)).check()
            self._installed = installed
            self._retry_after = _release(installed) >= RETRY_AFTER_SINCE
            self._workflows = _release(installed) >= WORKFLOWS_SINCE
            self._flow = _release(installed) >= FLOW_SINCE
            self._sources = _release(installed) >= SOURCES_SINCE
            check_task_limits(self.conductor.tasks.values(), _release(installed))
            check_sources(self.conductor.tasks.values(), _release(installed))
            await self._declare_tasks()
            self.workers = [self._make_worker(client, c) for c in self.configs]
            await self._beat(raise_errors=True)
            self._registered = True
            self.notifier = Notifier(
                self._conninfo(client),
                use_listen=self.use_listen,
                poll_interval=self._defaults["poll_interval"],
                clock=self.clock,
            )
            self.notifier.on_signal(self.id, self._beat_now.set)
            for worker in self.workers:
                self.notifier.on_queue(worker.queue, worker.notify)
            await self.notifier.start()
            for worker in self.workers:
                await worker.start()
            self._heartbeat_task = self.spawn(self._heartbeat_loop(), "heartbeat")
            await self._start_maintenance(client, installed)
        self.log.info(
            "orchestrator %s: started (queues %s, pid %d)",
            self.id,
            ", ".join(w.queue for w in self.workers),
            os.getpid(),
        )

    async def _declare_tasks(self) -> None:
        """Declare the tasks; the queues to serve follow the effective settings."""
        kept = await self.conductor.register_tasks()
        for key, settings in kept.items():
            self.log.info(
                "task %s: keeping settings made in SQL (not given in Python): %s",
                key,
                ", ".join(f"{name}={_shown(value)}" for name, value in settings.items()),
            )
        if self._queues_follow_tasks:
            self.configs = [WorkerConfig(q) for q in _task_queues(self.conductor)]
        _check_queues(self.conductor, self.configs, settled=True)
        if self._sources:
            removed = await declare_sources(self.conductor.client, self.conductor.tasks.values())
            for count, what in zip(
                removed, ("schedule", "subscription", "table trigger"), strict=True
            ):
                if count:
                    self.log.info(
                        "removed %d static %s(s) the code no longer declares", count, what
                    )

    async def _start_maintenance(self, client: DatabaseClient, installed: str) -> None:
        """Run `maintain()` passes (0.7.0 on) and schedule ticks (0.8.0 on) unless disabled."""
        if self.tick_interval is not None and self._sources and isinstance(client, SourceClient):
            self.ticker = Ticker(client, interval=self.tick_interval, clock=self.clock)
            await self.ticker.start()
        if self.maintenance_interval is None or not self._flow:
            return
        if not isinstance(client, FlowClient):
            self.log.warning("orchestrator %s: the client cannot run maintain()", self.id)
            return
        self.maintenance = Maintenance(client, interval=self.maintenance_interval, clock=self.clock)
        await self.maintenance.start()

    def _schema_client(self, client: DatabaseClient) -> SchemaClient:
        if not isinstance(client, SchemaClient):
            raise TypeError("the conductor's client cannot report the extension version")
        return client

    def _conninfo(self, client: DatabaseClient) -> str | None:
        if self.listen_url is not None:
            return conninfo_from_url(self.listen_url)
        if isinstance(client, SqlDatabaseClient) and not client.behind_pooler:
            return conninfo_from_url(client.engine.url)
        return None  # no direct URL (a pooler's connection cannot LISTEN): poll only

    def _make_worker(self, client: DatabaseClient, config: WorkerConfig) -> Worker:
        d = self._defaults
        return Worker(
            client,
            config.queue,
            self.conductor.tasks,  # any known task: invoke() may pick another queue
            self.id,
            concurrency=config.concurrency or d["concurrency"],
            fetch_batch=config.fetch_batch or d["fetch_batch"],
            flush_batch=config.flush_batch or d["flush_batch"],
            flush_interval=d["flush_interval"],
            poll_interval=d["poll_interval"],
            grace_period=self.grace_period,
            abort_grace=self.abort_grace,
            context=self.conductor.context,
            clock=self.clock,
            retry_after=self._retry_after,
            workflows=self._workflows,
            sources=self._sources,
        )

    async def _on_stop(self) -> None:
        self._stop_requested.set()
        if not self._registered:  # start failed before the first heartbeat
            return
        self.log.info("orchestrator %s: stopping", self.id)
        # The heartbeat and the notifier keep running while handlers finish: leases stay
        # alive and a cancel still reaches its handler during the grace period.
        outcomes = await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)
        for worker, outcome in zip(self.workers, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self.log.error("%s: stop failed", worker.name, exc_info=outcome)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.wait((self._heartbeat_task,))
        if self.ticker is not None:
            await self.ticker.stop()
        if self.maintenance is not None:
            await self.maintenance.stop()
        if self.notifier is not None:
            await self.notifier.stop()
        keep = set().union(*(w.abandoned_ids for w in self.workers))
        if keep:
            self.log.warning(
                "orchestrator %s: %d handler(s) still running; keeping their leases: "
                "stale recovery will take them",
                self.id,
                len(keep),
            )
        if self.client is not None:
            try:
                async with asyncio.timeout(max(self.abort_grace, 5.0)):
                    released = await self.client.release_orchestrator(self.id, keep=keep)
                if released:
                    self.log.info("orchestrator %s: released %d execution(s)", self.id, released)
            except Exception as exc:
                self.log.warning(
                    "orchestrator %s: release failed (%s); stale recovery will "
                    "release its executions",
                    self.id,
                    exc,
                )
        self.log.info("orchestrator %s: stopped", self.id)

    def request_stop(self) -> None:
        """Ask for a graceful stop (signals, `shutdown`); returns at once."""
        if self._stop_requested.is_set():
            return
        self._stop_requested.set()
        if self.state is ServiceState.RUNNING:
            self._stop_unless_supervised()

    def _stop_unless_supervised(self) -> None:
        if not self._supervised:  # nobody waits in run_until_stopped(): stop by ourselves
            self._stop_task = asyncio.get_running_loop().create_task(self.stop())

    def force(self) -> None:
        """Stop without waiting for handlers any longer (a second Ctrl-C)."""
        for worker in self.workers:
            worker.force()
        self.request_stop()

    async def run_until_stopped(self) -> None:
        """Start, run until a stop is requested (signal, `shutdown`), then stop."""
        self._supervised = True
        await self.start()
        await self._stop_requested.wait()
        await self.stop()

    async def drain(self) -> None:
        """Start, run until every queue has no due work left, then stop."""
        self._supervised = True
        await self.start()
        drains = asyncio.ensure_future(asyncio.gather(*(w.drain() for w in self.workers)))
        stop = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait((drains, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            await self.stop()
            await asyncio.wait((drains, stop))
            if not drains.cancelled():
                drains.exception()  # errors were logged by the workers

    def run(self, *, drain: bool = False) -> None:
        """Blocking entry point: run (or drain) with SIGTERM/SIGINT handling."""
        asyncio.run(self.serve(drain=drain))

    async def serve(self, *, drain: bool = False) -> None:
        """Run (or drain) until stopped, with SIGTERM/SIGINT handlers installed meanwhile."""
        loop = asyncio.get_running_loop()
        installed = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(RuntimeError, ValueError):  # no signals here: skip
                loop.add_signal_handler(signum, self.handle_os_signal, signum)
                installed.append(signum)
        self._serve_task = task = asyncio.current_task()
        try:
            await (self.drain() if drain else self.run_until_stopped())
        except asyncio.CancelledError:
            if not self._start_abandoned:
                raise
            if task is not None:
                task.uncancel()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    def handle_os_signal(self, signum: int) -> None:
        """SIGTERM/SIGINT: the first stops gracefully, the next one forces."""
        name = signal.Signals(signum).name
        if self.state is ServiceState.STARTING and self._serve_task is not None:
            self.log.info("orchestrator %s: %s during start: giving up", self.id, name)
            self._start_abandoned = True
            self._stop_requested.set()
            self._serve_task.cancel()  # start() cleans up what it began
            return
        if self._stop_requested.is_set():
            self.log.warning("orchestrator %s: %s again: forcing the stop", self.id, name)
            self.force()
            return
        self.log.info(
            "orchestrator %s: %s: stopping gracefully (up to %gs; send it again to force)",
            self.id,
            name,
            self.grace_period,
        )
        self.request_stop()

    # -- heartbeat and signals -------------------------------------------------------------

    def beat_now(self) -> None:
        """Send a heartbeat at once (a signal is waiting)."""
        self._beat_now.set()

    def _info(self) -> dict[str, Any]:
        """What the heartbeat reports: per queue its slots, what runs, the task keys served."""
        queues = {
            w.queue: {"concurrency": w.concurrency, "running": w.in_flight, "tasks": w.task_keys}
            for w in self.workers
        }
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "package": PACKAGE_VERSION,
            "queues": queues,
        }

    async def _heartbeat_loop(self) -> None:
        while True:
            await wait_event(self._beat_now, jittered(self.heartbeat_interval, 0.1), self.clock)
            self._beat_now.clear()
            await self._beat()
            if not (self._retry_after and self._workflows and self._flow and self._sources):
                await self._note_upgrade()

    async def _note_upgrade(self) -> None:
        """Started on an extension without some feature: warn once when a live upgrade brings
        it. The workers go on as they started (durable workflows keep failing at once); a
        restart picks the feature up."""
        assert self.client is not None
        try:
            found = await SchemaManager(self._schema_client(self.client)).installed()
        except Exception:
            return  # the heartbeat reports database trouble
        if found is None or found == self._installed:
            return
        gained = [
            name
            for name, since, had in (
                ("retry_after", RETRY_AFTER_SINCE, self._retry_after),
                ("durable workflows", WORKFLOWS_SINCE, self._workflows),
                ("maintenance and flow-control limits", FLOW_SINCE, self._flow),
                ("schedules, event subscriptions and table triggers", SOURCES_SINCE, self._sources),
            )
            if not had and _release(found) >= since
        ]
        self.log.warning(
            "orchestrator %s: the extension was upgraded from %s to %s while it ran; "
            "restart it to use %s",
            self.id,
            self._installed,
            found,
            ", ".join(gained) or "what the new version adds",
        )
        self._installed = found

    async def _beat(self, *, raise_errors: bool = False) -> None:
        assert self.client is not None
        try:
            signals = await self.client.heartbeat(
                self.id, PACKAGE_VERSION, self.stale_after, self._info(), held=self._held()
            )
        except Exception as exc:
            if raise_errors:
                raise
            self.log.warning("orchestrator %s: heartbeat failed: %s", self.id, exc)
            return
        finally:
            self._beat_settled_at = self.clock.monotonic()
        for sig in signals:
            self.dispatch_signal(sig)

    def _held(self) -> set[UUID] | None:
        """Every lease the process still needs, so SQL gives back the others (claims whose
        reply was lost); None (give back nothing) while a claim sent before the last heartbeat
        settled still waits for its reply: its rows may predate that beat and be on their way.
        """
        settled = self._beat_settled_at
        if any(w.fetch_sent_at is not None and w.fetch_sent_at <= settled for w in self.workers):
            return None
        return set().union(*(w.held() for w in self.workers))

    def dispatch_signal(self, sig: Signal) -> None:
        """Act on one signal taken by the heartbeat."""
        self.signals_received.append(sig)
        self.log.info("orchestrator %s: signal %s %s", self.id, sig.kind, sig.execution_id or "")
        if sig.kind == "shutdown":
            self.request_stop()
        elif sig.kind in ("cancel", "lease_lost") and sig.execution_id is not None:
            for worker in self.workers:
                found = (
                    worker.cancel(sig.execution_id)
                    if sig.kind == "cancel"
                    else worker.lose_lease(sig.execution_id)
                )
                if found:
                    break
        else:
            self.log.warning("orchestrator %s: unknown signal %r", self.id, sig)

    @property
    def stats(self) -> Mapping[str, Any]:
        """Per-queue worker counters (claimed, finished, flushed, stale, ...)."""
        return {w.queue: w.stats for w in self.workers}
