"""`Worker`: one queue's pipeline, fetch (claim ≤ free slots) → execute → flush (batched).

- **fetch** claims `min(free slots, fetch_batch)` executions in one `get_executions` call and
  never more than there are free slots; a full batch is followed by another fetch at once,
  an empty one by a wait for `notify()` (NOTIFY on the queue) or a jittered poll, and a
  short one that took something by the same wait ended early by this worker's next flush:
  under concurrency limits a short claim is the norm, and the slots it waits for are freed
  by completions, which send no NOTIFY.
- **execute** runs each handler through `executor.execute` in one task; its slot is given
  back in a `finally`, so no path can leak a slot (the original's G2).
- **flush** buffers results and sends them with one `return_executions` call per batch (by
  size, or `flush_interval` after the first result); a failed call is retried with the same
  batch, which is safe because SQL applies a result only while its lease holds.

Batch tasks (`batch_run.py`): their claimed executions wait in a `BatchCollector`, each
holding its slot and lease like a running one, until the batch is full or `batch_timeout`
after its first; one run then reports a result per execution. `stop()` releases the
members of batches not launched yet before it waits for anything.

`stop()` stops fetching, waits `grace_period` for running handlers, aborts the rest (they
are released once they have stopped), waits `abort_grace`, gives up on handlers that still
run (no result: SQL recovery handles their lease) and flushes. `drain()` runs until no due
work is left, nothing runs and every result is flushed: an idle worker's empty claim ends it
only when `has_due_work` says no due execution waits for a limit either (other workers may
hold the slots, the rate bucket may be empty), not at the first empty fetch (G13).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pgconductor.batch_run import Batch, BatchCollector, BatchMember, refuse_durable, run_batch
from pgconductor.clock import Clock, SystemClock
from pgconductor.conductor import TaskContext
from pgconductor.executor import (
    Abort,
    Execution,
    HandlerTask,
    error_text,
    execute,
)
from pgconductor.lib.backoff import exponential, jittered
from pgconductor.lib.batcher import Batcher
from pgconductor.lib.event import wait_event
from pgconductor.lib.threadpool import DaemonThreadPool
from pgconductor.protocol import DatabaseClient
from pgconductor.service import Service
from pgconductor.source_types import SourceClient
from pgconductor.sources import OccurrenceReader
from pgconductor.steps import StepWriter
from pgconductor.types import ClaimedExecution, ExecutionResult, ResultStatus
from pgconductor.worker_log import log_outcome
from pgconductor.workflow import DurableRun

__all__ = ["Worker", "WorkerStats"]

#: The error of a durable call (`ctx.step`, ...) on an extension without workflows.
WORKFLOWS_MISSING = "durable workflows (ctx.step, ctx.sleep, ...) need pgconductor extension 0.6.0"
#: After a forced stop, how long aborted handlers get to wind down before being given up.
FORCED_ABORT_WAIT = 1.0
#: Cap of the backoff between failed fetches or flushes, in seconds.
RETRY_CAP = 5.0


@dataclass(slots=True)
class WorkerStats:
    """Counters of one worker since it started."""

    fetches: int = 0
    claimed: int = 0
    #: Handlers that ended with a result to report, but for the released ones.
    finished: int = 0
    #: Executions given back at a stop (aborted handlers, rows claimed while stopping).
    released: int = 0
    flushed: int = 0
    stale: int = 0
    abandoned: int = 0
    fetch_errors: int = 0
    flush_errors: int = 0


class Worker(Service):
    """Run the handlers of one queue for one orchestrator."""

    def __init__(
        self,
        client: DatabaseClient,
        queue: str,
        tasks: Mapping[str, HandlerTask],
        orchestrator_id: UUID,
        *,
        concurrency: int = 100,
        fetch_batch: int | None = None,
        flush_batch: int = 200,
        flush_interval: float = 0.005,
        poll_interval: float = 1.0,
        grace_period: float = 30.0,
        abort_grace: float = 10.0,
        flush_timeout: float = 10.0,
        context: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        pool: DaemonThreadPool | None = None,
        logger: logging.Logger | None = None,
        retry_after: bool = True,
        workflows: bool = True,
        sources: bool = True,
    ) -> None:
        if concurrency < 1 or flush_batch < 1 or (fetch_batch is not None and fetch_batch < 1):
            raise ValueError("concurrency, fetch_batch and flush_batch must be at least 1")
        super().__init__(f"worker[{queue}]", logger or logging.getLogger("pgconductor.worker"))
        self.client = client
        self.queue = queue
        self.tasks = dict(tasks)
        self.orchestrator_id = orchestrator_id
        self.concurrency = concurrency
        self.fetch_batch = fetch_batch or concurrency
        self.flush_batch = flush_batch
        self.flush_interval = flush_interval
        self.poll_interval = poll_interval
        self.grace_period = grace_period
        self.abort_grace = abort_grace
        self.flush_timeout = flush_timeout
        self.clock: Clock = clock or SystemClock()
        self.stats = WorkerStats()
        self._extra: Mapping[str, Any] = dict(context or {})
        self._task_keys = sorted(self.tasks)
        self._pool = pool or DaemonThreadPool(f"pgconductor-{queue}")
        self._owns_pool = pool is None
        self._handler_log = logging.getLogger("pgconductor.task")
        #: False on an extension before 0.4.0, which rejects the `retry_after` status.
        self.retry_after = retry_after
        #: Why durable calls fail at once: an extension before 0.6.0 has no workflows.
        self._no_workflows = None if workflows else WORKFLOWS_MISSING
        #: Whether `ctx.scheduled_at()` may read `occurrence_of` (extension 0.8.0 on).
        self._sources = sources
        self._occurrences: OccurrenceReader | None = None  # made on the loop, at start
        self._running: dict[UUID, Execution] = {}
        #: The batch tasks (`batch_size`): their executions are grouped before they run.
        self._batch_tasks: dict[str, Any] = {
            key: task for key, task in self.tasks.items() if getattr(task, "batch", None)
        }
        self._batches = BatchCollector(self._launch_batch, self.clock)
        #: The claim behind each result not yet answered by SQL (for the outcome's log line),
        #: by the id's int (hashing a UUID runs Python code; its int hashes in C).
        self._reported: dict[int, ClaimedExecution] = {}
        self._abandoned: set[asyncio.Task[None]] = set()
        self._abandoned_ids: set[UUID] = set()
        #: When the claim now on the wire was sent (clock.monotonic()), or None.
        self.fetch_sent_at: float | None = None
        self._results: Batcher[ExecutionResult] = Batcher(
            self._return,
            max_size=flush_batch,
            interval=flush_interval,
            clock=self.clock,
            retry_cap=RETRY_CAP,
            name=f"{self.name} flush",
            logger=self.log,
            on_sent=self._flushed,
            on_error=self._flush_failed,
        )
        #: Workflow steps of every handler: one `save_steps` per round trip. A handler waits
        #: for its step's write, so it goes at once; what arrives meanwhile goes next, together.
        self._steps = StepWriter(
            client,
            orchestrator_id,
            max_size=flush_batch,
            interval=0.0,
            clock=self.clock,
            on_stale=self.lose_lease,
            logger=self.log,
        )
        self._max_unflushed = 2 * max(flush_batch, concurrency)
        self._draining = False
        self._stopping = False
        self._wake = asyncio.Event()  # notify(), stop; a flush after a short non-empty claim
        self._wake_on_flush = False
        self._capacity = asyncio.Event()  # a slot freed, a batch flushed, stop
        self._settled = asyncio.Event()  # nothing runs any more, or a forced stop
        self._settled.set()
        self._drained = asyncio.Event()
        self._forced = False
        self._fetcher: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None

    # -- public controls -------------------------------------------------------------------

    @property
    def task_keys(self) -> list[str]:
        """The task keys this worker claims (sorted)."""
        return list(self._task_keys)

    @property
    def in_flight(self) -> int:
        """Number of executions held now: running, or waiting for their batch to start."""
        return len(self._running)

    def held(self) -> set[UUID]:
        """Executions whose lease this worker still needs: running, abandoned, or unflushed."""
        return {*self._running, *self._abandoned_ids, *(r.id for r in self._results.unsent())}

    @property
    def abandoned_ids(self) -> set[UUID]:
        """Executions whose handlers did not stop at stop: their leases must be kept."""
        return set(self._abandoned_ids)

    @property
    def abandoned(self) -> int:
        """Handlers given up on at stop because they did not stop in time."""
        return self.stats.abandoned

    def notify(self) -> None:
        """New work may be due in this queue: fetch now instead of at the next poll."""
        self._wake.set()
        self._capacity.set()

    def cancel(self, execution_id: UUID) -> bool:
        """Abort one running handler because its execution was cancelled; True if found."""
        return self._abort_one(execution_id, Abort.CANCEL)

    def lose_lease(self, execution_id: UUID) -> bool:
        """Abort one running handler whose lease is gone; its result is never reported."""
        return self._abort_one(execution_id, Abort.LEASE_LOST)

    def force(self) -> None:
        """Make a stop in progress (or the next one) skip the grace periods."""
        self._forced = True
        self._settled.set()

    async def drain(self) -> None:
        """Start (if needed), run until no due work is left and all is flushed, then stop."""
        self._draining = True
        self.notify()
        await self.start()
        try:
            await self._drained.wait()
        finally:
            await self.stop()

    # -- service contract ------------------------------------------------------------------

    async def _on_start(self) -> None:
        for key, task in self._batch_tasks.items():
            if task.batch.size > self.concurrency:
                self.log.warning(
                    "%s: task %s has batch_size %d above the concurrency %d: its batches"
                    " hold at most %d executions",
                    self.name,
                    key,
                    task.batch.size,
                    self.concurrency,
                    self.concurrency,
                )
        client = self.client if self._sources and isinstance(self.client, SourceClient) else None
        self._occurrences = OccurrenceReader(client, asyncio.get_running_loop())
        self._flusher = self.spawn(self._results.run(), "flush")
        self._fetcher = self.spawn(self._fetch_loop(), "fetch")
        self.log.info(
            "%s: started (concurrency %d, fetch batch %d, flush batch %d)",
            self.name,
            self.concurrency,
            self.fetch_batch,
            self.flush_batch,
        )

    async def _on_stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._capacity.set()
        for member in self._batches.close():  # never started: pending again at once
            member.done = True
            self.stats.released += 1
            self._finish(member, ExecutionResult(member.id, member.claimed.lease, RELEASED))
        if self._fetcher is not None and not self._fetcher.done():
            await asyncio.wait((self._fetcher,), timeout=max(self.grace_period, 1.0))
            self._fetcher.cancel()
        if self._running and not self._forced:
            await wait_event(self._settled, self.grace_period, self.clock)
        if self._running:
            self.log.info("%s: aborting %d running handler(s)", self.name, len(self._running))
            for execution in list(self._running.values()):
                execution.abort(Abort.SHUTDOWN)
            wait = min(self.abort_grace, FORCED_ABORT_WAIT) if self._forced else self.abort_grace
            self._settled.clear()
            if self._running:
                await wait_event(self._settled, wait, self.clock)
        self._abandon_remaining()
        await self._steps.close(self.flush_timeout)
        lost = await self._results.close(self._flusher, self.flush_timeout)
        if lost:
            self.log.error(
                "%s: %d result(s) could not be flushed; recovery will release them",
                self.name,
                lost,
            )
        if self._owns_pool:
            self._pool.close()
        self._drained.set()
        self.log.info(
            "%s: stopped (%d finished, %d released, %d flushed, %d stale, %d abandoned)",
            self.name,
            self.stats.finished,
            self.stats.released,
            self.stats.flushed,
            self.stats.stale,
            self.stats.abandoned,
        )

    def _abandon_remaining(self) -> None:
        """Give up on handlers that ignore the abort: they get no result (never released)."""
        for execution in list(self._running.values()):
            self.log.warning(
                "%s: handler of execution %s (%s) did not stop; leaving its lease to recovery",
                self.name,
                execution.id,
                execution.claimed.task_key,
            )
            del self._running[execution.id]
            self._abandoned_ids.add(execution.id)
            if execution.runner is not None:
                self._abandoned.add(execution.runner)
                execution.runner.add_done_callback(self._abandoned.discard)
            self.stats.abandoned += 1

    # -- fetch -----------------------------------------------------------------------------

    def _is_idle(self) -> bool:
        return not self._running and not self._results

    async def _fetch_loop(self) -> None:
        failures = 0
        try:
            while not self._stopping:
                self._capacity.clear()
                free = self.concurrency - len(self._running)
                if free <= 0 or len(self._results) >= self._max_unflushed:
                    await self._capacity.wait()
                    continue
                want = min(free, self.fetch_batch)
                idle_before = self._is_idle()
                self._wake.clear()
                self._wake_on_flush = False
                self.fetch_sent_at = self.clock.monotonic()
                self.stats.fetches += 1
                try:
                    claimed = await self.client.get_executions(
                        self.orchestrator_id, self.queue, self._task_keys, want
                    )
                except Exception as exc:
                    self.fetch_sent_at = None
                    failures += 1
                    self.stats.fetch_errors += 1
                    delay = exponential(failures, 0.1, RETRY_CAP)
                    self.log.warning("%s: fetch failed (%s); retry in %.2fs", self.name, exc, delay)
                    await wait_event(self._wake, delay, self.clock)
                    continue
                failures = 0
                self.fetch_sent_at = None
                self._start_all(claimed)
                if len(claimed) >= want:
                    continue
                # Short but not empty: the rest may wait for limit slots that completions free.
                self._wake_on_flush = bool(claimed)
                if self._draining:
                    if idle_before and not claimed and await self._nothing_due():
                        return
                    await wait_event(self._capacity, jittered(self.poll_interval), self.clock)
                else:
                    await wait_event(self._wake, jittered(self.poll_interval), self.clock)
        finally:
            if self._draining:
                self._drained.set()

    async def _nothing_due(self) -> bool:
        """After an idle drain's empty claim: True when no due work waits for a limit either
        (an error counts as work waiting: the next claim retries)."""
        try:
            return not await self.client.has_due_work(self.queue, self._task_keys)
        except Exception as exc:
            self.stats.fetch_errors += 1
            self.log.warning("%s: has_due_work failed (%s); claiming again", self.name, exc)
            return False

    def _start_all(self, claimed: list[ClaimedExecution]) -> None:
        self.stats.claimed += len(claimed)
        if self._stopping:  # claimed while stopping: hand them straight back
            self.stats.released += len(claimed)
            for row in claimed:
                self._push(ExecutionResult(row.id, row.lease, ResultStatus.RELEASED), row)
            return
        if not claimed:
            return
        self._settled.clear()
        create_task = asyncio.get_running_loop().create_task
        extra, logger, running = self._extra, self._handler_log, self._running
        make_run, occurrences = self._durable_run, self._occurrences
        batch_tasks = self._batch_tasks
        for row in claimed:
            ctx = TaskContext(
                row.id, row.task_key, row.queue, row.attempt, row.max_attempts, None, extra, logger
            )
            ctx._occurrence = occurrences
            if batch_tasks and row.task_key in batch_tasks:  # waits for its batch
                ctx._run_factory, ctx._claim = refuse_durable, row
                member = running[row.id] = BatchMember(row, ctx)
                self._batches.add(member, batch_tasks[row.task_key])
                continue
            # A replay's run now (its stored steps read at the claim); else at the first
            # durable call, if any: a plain handler never needs one.
            if row.steps is not None:
                ctx._run = make_run(row)
            else:
                ctx._run_factory, ctx._claim = make_run, row
            execution = Execution(row, ctx)
            running[row.id] = execution
            execution.runner = create_task(self._run(execution, ctx))

    def _durable_run(self, row: ClaimedExecution) -> DurableRun:
        """The durable state of one run of `row` (its stored steps, this worker's writer)."""
        return DurableRun(
            row.id,
            row.lease,
            row.steps,
            saver=self._steps,
            tasks=self.tasks,
            clock=self.clock,
            refuse=self._no_workflows,
        )

    # -- execute ---------------------------------------------------------------------------

    async def _run(self, execution: Execution, ctx: TaskContext) -> None:
        claimed = execution.claimed
        result: ExecutionResult | None = None
        try:
            task = self.tasks.get(claimed.task_key)
            if task is None:
                result = ExecutionResult(
                    claimed.id,
                    claimed.lease,
                    ResultStatus.FATAL,
                    error=f"no handler for task {claimed.task_key!r} in queue {self.queue!r}",
                )
            else:
                result = await execute(task, claimed, ctx, execution, pool=self._pool)
                if result is not None and result.status is RETRY_AFTER and not self.retry_after:
                    result = _without_retry_after(result)
        except asyncio.CancelledError:
            result = None  # cancelled from outside (event loop closing): report nothing
        except Exception as exc:
            self.log.error("%s: executor failed for %s", self.name, claimed.id, exc_info=exc)
            result = ExecutionResult(
                claimed.id, claimed.lease, ResultStatus.FAILED, error=error_text(exc)
            )
        finally:
            if result is not None and result.status is RELEASED:
                self.stats.released += 1
            else:
                self.stats.finished += 1
            self._finish(execution, result)

    def _finish(self, execution: Execution, result: ExecutionResult | None) -> None:
        """An execution's handler has stopped: free its slot and report `result` (if any)."""
        claimed = execution.claimed
        if self._running.get(claimed.id) is execution:
            del self._running[claimed.id]
            if result is not None:
                self._push(result, claimed)
        if not self._running:
            self._settled.set()
        self._capacity.set()

    def _launch_batch(self, batch: Batch) -> None:
        """Run a full or expired batch (its members hold their slots until it ends)."""
        runner = asyncio.get_running_loop().create_task(self._run_batch(batch))
        batch.runner = runner
        for member in batch.members:
            member.runner = runner

    async def _run_batch(self, batch: Batch) -> None:
        ended: list[tuple[BatchMember, ExecutionResult | None]] = []
        try:
            ended = await run_batch(
                batch.task, batch, extra=self._extra, logger=self._handler_log, pool=self._pool
            )
        except asyncio.CancelledError:
            pass  # cancelled from outside (event loop closing): report nothing
        except Exception as exc:
            self.log.error("%s: batch run failed for %s", self.name, batch.task, exc_info=exc)
            text = error_text(exc)
            ended = [
                (m, ExecutionResult(m.id, m.claimed.lease, ResultStatus.FAILED, error=text))
                for m in batch.members
            ]
        finally:
            results = dict(ended)
            for member in batch.members:
                result = results.get(member)
                if result is not None and result.status is RETRY_AFTER and not self.retry_after:
                    result = _without_retry_after(result)
                if result is not None and result.status is RELEASED:
                    self.stats.released += 1
                else:
                    self.stats.finished += 1
                self._finish(member, result)

    def _abort_one(self, execution_id: UUID, reason: Abort) -> bool:
        execution = self._running.get(execution_id)
        if execution is None:
            return False
        self.log.info("%s: aborting execution %s (%s)", self.name, execution_id, reason)
        execution.abort(reason)
        return True

    # -- flush -----------------------------------------------------------------------------

    def _push(self, result: ExecutionResult, claimed: ClaimedExecution) -> None:
        self._reported[result.id.int] = claimed
        self._results.push(result)

    def _flushed(self) -> None:
        self._capacity.set()
        if self._wake_on_flush:
            self._wake_on_flush = False
            self._wake.set()

    def _flush_failed(self, exc: Exception) -> None:
        self.stats.flush_errors += 1

    async def _return(self, batch: list[ExecutionResult]) -> None:
        """Send one batch with `return_executions` (the batcher retries it on errors)."""
        outcomes = await self.client.return_executions(self.orchestrator_id, batch)
        self.stats.flushed += len(batch)
        reported = self._reported
        for result, outcome in zip(batch, outcomes, strict=False):
            claimed = reported.pop(result.id.int, None)
            if outcome.outcome == "stale":
                self.stats.stale += 1
            if outcome.outcome != "completed" and claimed is not None:
                log_outcome(self.log, claimed, result, outcome)


# Read once: an enum member looked up on its class costs ~150 ns, a module global ~15 ns.
RETRY_AFTER = ResultStatus.RETRY_AFTER
RELEASED = ResultStatus.RELEASED


def _without_retry_after(result: ExecutionResult) -> ExecutionResult:
    """A `RetryAfter` as an ordinary failed attempt, for an extension that has no such status
    (one status SQL rejects would hold back its whole batch)."""
    reason = f": {result.error}" if result.error else ""
    return ExecutionResult(
        result.id,
        result.lease,
        ResultStatus.FAILED,
        error=f"RetryAfter needs pgconductor extension 0.4.0 or newer{reason}",
    )
