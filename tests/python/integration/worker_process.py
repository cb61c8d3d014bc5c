"""Run `python -m pgconductor worker start` as a real subprocess for shutdown tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from pgtest import execute

#: The app the subprocess serves: handlers that nap (async or in a thread).
APP = textwrap.dedent(
    """
    import asyncio
    import time

    from pgconductor import Conductor

    conductor = Conductor()


    @conductor.task("nap", max_attempts=3)
    async def nap(ctx, payload):
        await asyncio.sleep(payload["seconds"])
        return "rested"


    @conductor.task("stubborn", max_attempts=3)
    def stubborn(ctx, payload):
        time.sleep(payload["seconds"])  # never looks at ctx.cancelled
        return "done"
    """
)


class WorkerProcess:
    """A worker subprocess with its stderr captured in a file."""

    def __init__(self, directory: Path, url: str, *args: str) -> None:
        (directory / "shutdown_app.py").write_text(APP)
        self.log_path = directory / f"worker-{len(list(directory.glob('worker-*.log')))}.log"
        env = {**os.environ, "DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
        command = [
            sys.executable,
            "-m",
            "pgconductor",
            "worker",
            "start",
            "--app",
            "shutdown_app:conductor",
            "--stats-interval",
            "0",
            *args,
        ]
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Send a signal to the worker."""
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the worker to exit; return its exit code."""
        return self.process.wait(timeout)

    @property
    def output(self) -> str:
        """Everything the worker printed so far."""
        return self.log_path.read_text()

    def kill(self) -> None:
        """SIGKILL the worker if it still runs (cleanup)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def running_count(url: str) -> int:
    """How many executions are claimed right now."""
    rows = execute(url, "SELECT count(*) FROM pgconductor.executions WHERE locked_by IS NOT NULL")
    return int(rows[0][0])


def states(url: str) -> dict[str, int]:
    """Count of executions per state (`pending` / `running` / finished states)."""
    rows = execute(
        url,
        "SELECT CASE WHEN locked_by IS NULL THEN 'pending' ELSE 'running' END, count(*)"
        " FROM pgconductor.executions GROUP BY 1"
        " UNION ALL SELECT state, count(*) FROM pgconductor.finished_executions GROUP BY 1",
    )
    return {state: int(n) for state, n in rows}
