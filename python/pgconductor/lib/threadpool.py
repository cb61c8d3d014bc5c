"""A thread pool for sync handlers whose threads never keep the process alive.

`concurrent.futures.ThreadPoolExecutor` joins its threads at interpreter exit, so one
handler stuck in a sync call would block a shutdown forever. This pool uses daemon threads,
starts one when none is idle (the worker's slots bound how many run at once) and reuses
idle ones; a handler that never returns costs one thread and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["DaemonThreadPool"]

T = TypeVar("T")
_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    """Resolve `future` on its loop unless it was cancelled meanwhile."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class DaemonThreadPool:
    """Run sync callables on daemon threads and await them as asyncio futures."""

    def __init__(self, name: str = "pgconductor-handler") -> None:
        self._name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False

    @property
    def size(self) -> int:
        """Number of threads started so far (alive or not)."""
        return len(self._threads)

    def submit(self, fn: Callable[..., T], /, *args: Any) -> asyncio.Future[T]:
        """Run `fn(*args)` on a pool thread (with the caller's context); return a future."""
        if self._closed:
            raise RuntimeError("the thread pool is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        ctx = contextvars.copy_context()
        self._queue.put((loop, future, lambda: ctx.run(fn, *args)))
        if not self._idle.acquire(blocking=False):
            self._start_thread()
        return future

    def _start_thread(self) -> None:
        with self._lock:
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            loop, future, call = item
            value: Any = None
            error: BaseException | None = None
            try:
                value = call()
            except BaseException as exc:  # handed to the awaiting coroutine
                error = exc
            self._idle.release()  # before the caller hears back, so its next call reuses us
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, value, error)
            del item, future, value, error

    def close(self) -> None:
        """Let idle threads exit; threads still running a call finish it and then exit."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
