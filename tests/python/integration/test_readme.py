"""The README's snippets run as written, in order, on a throwaway database.

Each fenced block in README.md is preceded by a marker comment saying what to do with it:

    <!-- readme-test: run -->          a shell snippet: run by bash, in order with the others
    <!-- readme-test: psql -->         SQL: run by psql on $DATABASE_URL at that point
    <!-- readme-test: file NAME -->    a file the later snippets use (app.py): written first
    <!-- readme-test: skip (REASON) --> not run (the whole build, installs); REASON is required

Every snippet runs verbatim in one bash process (`set -e`), from a directory that looks like
the root of the clone (`.venv` and `scripts/` linked), with `DATABASE_URL` naming a fresh
database without the extension.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgtest import execute, libpq_url

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- readme-test: (run|psql|file \S+|skip \((?P<reason>[^)]+)\)) -->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Snippet:
    """One fenced block of the README and what its marker says to do with it."""

    line: int
    kind: str  # run | psql | file | skip
    text: str
    name: str = ""


def snippets(markdown: str) -> list[Snippet]:
    """Every fenced block with its marker; a block without one fails the test."""
    lines = markdown.splitlines()
    found: list[Snippet] = []
    i = 0
    while i < len(lines):
        if not FENCE.match(lines[i]):
            i += 1
            continue
        start = i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        body = "\n".join(lines[start + 1 : end]) + "\n"
        marker = MARKER.match(lines[start - 1]) if start > 0 else None
        if marker is None:
            raise AssertionError(
                f"README.md:{start + 1}: a fenced block without a '<!-- readme-test: ... -->' "
                "marker on the line before it"
            )
        what = marker.group(1)
        if what.startswith("skip"):
            found.append(Snippet(start + 1, "skip", body, marker.group("reason").strip()))
        elif what.startswith("file "):
            found.append(Snippet(start + 1, "file", body, what.split(maxsplit=1)[1]))
        else:
            found.append(Snippet(start + 1, what, body))
        i = end + 1
    return found


def test_every_snippet_is_marked_and_every_skip_says_why() -> None:
    found = snippets(README.read_text())
    kinds = [s.kind for s in found]
    assert kinds.count("run") >= 3
    assert kinds.count("psql") >= 1
    assert kinds.count("file") >= 1
    for snippet in found:
        if snippet.kind == "skip":
            assert len(snippet.name) >= 10, f"README.md:{snippet.line}: say why it is not run"


def test_a_fence_without_a_marker_is_refused() -> None:
    with pytest.raises(AssertionError, match="without a"):
        snippets("text\n\n```bash\necho hi\n```\n")


def _script(found: list[Snippet], workdir: Path) -> str:
    """The bash script: the run snippets verbatim, psql ones through psql, in README order."""
    # On a failure, stop the background worker too, or it would hold the output pipe open.
    parts = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for n, snippet in enumerate(found):
        if snippet.kind == "file":
            (workdir / snippet.name).write_text(snippet.text)
        elif snippet.kind == "psql":
            path = workdir / f"snippet_{n}.sql"
            path.write_text(snippet.text)
            parts.append(f"echo '== README.md:{snippet.line} (psql)'")
            parts.append(
                f'psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -f {shlex.quote(str(path))}'
            )
        elif snippet.kind == "run":
            parts.append(f"echo '== README.md:{snippet.line}'")
            parts.append(snippet.text)
    return "\n".join(parts) + "\n"


def test_readme_snippets_run_in_order(bare_db_url: str, tmp_path: Path) -> None:
    workdir = tmp_path / "clone"
    workdir.mkdir()
    for name in (".venv", "scripts"):
        (workdir / name).symlink_to(ROOT / name)
    script = _script(snippets(README.read_text()), workdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGCONDUCTOR_", "VIRTUAL_ENV"))}
    env["DATABASE_URL"] = libpq_url(bare_db_url)
    process = subprocess.Popen(
        ["bash", "-c", script],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=180)
    finally:  # the session's processes: a worker a failed run left behind, or a hung one
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
    assert "invoked 1000 executions of send-email" in output
    assert re.search(r"^execution [0-9a-f-]{36}$", output, re.MULTILINE), output
    assert "retried 0 failed executions of task 'send-email'" in output
    # what the snippets made is in the database: 1004 from psql (4 invokes and a batch of
    # 1000), 1001 from the command line, the checkout workflow with its e-mail child, and 7
    # from schedules, events and table triggers (4 backfilled reports, 1 event, 2 row changes),
    # 250 for the batch task
    total = execute(
        bare_db_url,
        "SELECT (SELECT count(*) FROM pgconductor.executions)"
        " + (SELECT count(*) FROM pgconductor.finished_executions)",
    )[0][0]
    assert total == 1004 + 1001 + 2 + 7 + 250
    # the batch task: each of the 250 completed once with the result of its own payload
    assert execute(
        bare_db_url,
        "SELECT count(*), bool_and(state = 'completed' AND attempts = 1"
        " AND result->'indexed' = payload->'doc')"
        " FROM pgconductor.finished_executions WHERE task_key = 'index-document'",
    ) == [(250, True)]
    sizes = [int(n) for n in re.findall(r"index-document batch of (\d+): one bulk", output)]
    assert (sum(sizes), max(sizes) <= 100, len(sizes) >= 3) == (250, True, True), sizes
    # the workflow ran every step: charged once, slept, sent the receipt, got the event
    checkout = execute(
        bare_db_url,
        "SELECT state, result->>'carrier', result->'receipt'->>'sent_to',"
        " (SELECT count(*) FROM pgconductor.steps s"
        "   WHERE s.execution_id = f.id AND s.state = 'done')"
        " FROM pgconductor.finished_executions f WHERE task_key = 'checkout'",
    )
    assert checkout == [("completed", "DHL", "ada@example.com", 4)]

    # schedules: the SQL backfill ran on the drained worker, each run knowing its occurrence
    # (02:30 in Berlin = 01:30 UTC); the command line's backfill of the static one is pending
    reports = execute(
        bare_db_url,
        "SELECT state, result->>'for' FROM pgconductor.finished_executions"
        " WHERE task_key = 'report' ORDER BY result->>'for'",
    )
    assert reports == [("completed", f"2026-01-0{day}T01:30:00+00:00") for day in (1, 2, 3)], (
        reports
    )
    assert execute(
        bare_db_url,
        "SELECT run_at FROM pgconductor.executions WHERE task_key = 'report'",
    ) == [(dt.datetime(2026, 1, 5, 6, tzinfo=dt.UTC),)]
    # the code's declarations: static; the schedule made by the command line is gone
    assert execute(
        bare_db_url,
        "SELECT string_agg(name || ':' || static || ':' || paused, ',' ORDER BY name)"
        " FROM pgconductor.schedules()",
    ) == [("nightly-report:false:false,poll-feeds:false:true,report:true:true",)]
    # the event: one execution with the projected payload; the table: insert of order 2,
    # update of order 1 (the draft insert and the card update made none)
    sources = execute(
        bare_db_url,
        "SELECT task_key, state, payload FROM pgconductor.finished_executions"
        " WHERE task_key IN ('notify-warehouse', 'order-changed')"
        " ORDER BY task_key, payload->>'op'",
    )
    assert sources == [
        ("notify-warehouse", "completed", {"order_id": 7}),
        (
            "order-changed",
            "completed",
            {
                "op": "insert",
                "table": "public.orders",
                "old": None,
                "new": {"id": 2, "status": "paid"},
            },
        ),
        (
            "order-changed",
            "completed",
            {
                "op": "update",
                "table": "public.orders",
                "old": {"id": 1, "status": "draft"},
                "new": {"id": 1, "status": "paid"},
            },
        ),
    ], sources
    assert execute(
        bare_db_url,
        "SELECT (SELECT bool_and(static) FROM pgconductor.subscriptions())"
        " AND (SELECT bool_and(static) FROM pgconductor.table_subscriptions())",
    ) == [(True,)]
