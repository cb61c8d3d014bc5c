"""The state every fuzz example starts from, and the pools of values taken from it.

A fuzzed call gets past validation only when it names things that exist: registered tasks,
queues, executions in every state, orchestrators live, stale and stopped, the leases they
hold. `SEED_SQL` makes that state through the public API (plus two direct writes: high
attempt counts, and a heartbeat dated back so recovery has work); its ids are fixed so a
reproduction in the findings report can be replayed on a fresh database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ORCH_LIVE = "00000000-0000-4000-8000-00000000a001"
ORCH_STALE = "00000000-0000-4000-8000-00000000a002"
ORCH_STOPPED = "00000000-0000-4000-8000-00000000a003"


def _ex(n: int) -> str:
    return f"00000000-0000-4000-8000-0000000{n:05d}"


SEED_SQL = f"""
SELECT pgconductor.register_task('fuzz.task', 'fuzz', 5);
SELECT pgconductor.register_task('fuzz.windowed', 'default', 3, '09:00', '17:00', 'Europe/Berlin');
SELECT pgconductor.register_task('fuzz.heavy', 'default', 100, NULL, NULL, 'UTC',
                                 '10 seconds', '1 hour');
SELECT pgconductor.register_task('fuzz.timeout', 'fuzz', 3, NULL, NULL, 'UTC',
                                 '1 second', '10 minutes', '5 seconds');
INSERT INTO pgconductor.executions (id, task_key, queue, payload, priority, attempts, dedupe_key)
VALUES
  ('{_ex(1)}', 'fuzz.plain', 'default', '{{"n": 1}}', 0, 0, 'd1'),
  ('{_ex(2)}', 'fuzz.plain', 'default', '{{"n": 2}}', 0, 0, 'd2'),
  ('{_ex(3)}', 'fuzz.plain', 'default', '{{"n": 3}}', 0, 0, NULL),
  ('{_ex(4)}', 'fuzz.plain', 'default', '{{"n": 4}}', 0, 0, NULL),
  ('{_ex(5)}', 'fuzz.plain', 'default', '{{"n": 5}}', 1, 0, NULL),
  ('{_ex(6)}', 'fuzz.plain', 'default', '{{"n": 6}}', 1, 2, NULL),
  ('{_ex(10)}', 'fuzz.task', 'fuzz', '[]', 0, 0, 'd1'),
  ('{_ex(11)}', 'fuzz.task', 'fuzz', 'null', 0, 1, NULL),
  ('{_ex(20)}', 'fuzz.heavy', 'default', '{{}}', -10, 40, NULL),
  ('{_ex(21)}', 'fuzz.heavy', 'default', '{{}}', -10, 98, NULL),
  ('{_ex(22)}', 'fuzz.heavy', 'default', '{{}}', -10, 0, NULL),
  ('{_ex(30)}', 'fuzz.task', 'fuzz', '{{}}', -10, 4, NULL),
  ('{_ex(31)}', 'fuzz.timeout', 'fuzz', '{{}}', -10, 0, NULL),
  ('{_ex(40)}', 'fuzz.plain', 'default', '{{}}', -5, 0, NULL),
  ('{_ex(41)}', 'fuzz.plain', 'default', '{{}}', -5, 0, NULL),
  ('{_ex(42)}', 'fuzz.plain', 'default', '{{}}', 0, 0, NULL),
  ('{_ex(50)}', 'fuzz.windowed', 'default', '{{}}', 0, 0, NULL);
SELECT count(*) FROM pgconductor.heartbeat('{ORCH_LIVE}', 'fuzz', '1 hour');
SELECT count(*) FROM pgconductor.get_executions(ARRAY['fuzz.heavy'], '{ORCH_LIVE}', 3);
SELECT count(*) FROM pgconductor.get_executions(ARRAY['fuzz.plain'], '{ORCH_LIVE}', 2);
SELECT count(*) FROM pgconductor.return_executions('{ORCH_LIVE}',
    ARRAY['{_ex(40)}', '{_ex(41)}']::uuid[], ARRAY[1, 1], ARRAY['completed', 'fatal'],
    ARRAY[NULL, 'boom'], ARRAY['{{"ok": true}}'::jsonb, NULL]);
SELECT pgconductor.cancel('{_ex(42)}');
SELECT pgconductor.cancel('{_ex(22)}', 'fuzz cancel');
SELECT count(*) FROM pgconductor.heartbeat('{ORCH_STALE}', 'fuzz', '1 second');
SELECT count(*) FROM pgconductor.get_executions(ARRAY['fuzz.task', 'fuzz.timeout'], '{ORCH_STALE}',
                                                2, 'fuzz');
UPDATE pgconductor.orchestrators SET last_heartbeat_at = last_heartbeat_at - interval '1 hour'
 WHERE id = '{ORCH_STALE}';
SELECT count(*) FROM pgconductor.heartbeat('{ORCH_STOPPED}', 'fuzz');
SELECT pgconductor.release_orchestrator('{ORCH_STOPPED}');
"""


@dataclass(frozen=True)
class Subject:
    """One execution of the seeded database: a call about it names these values together."""

    id: str
    task_key: str
    queue: str
    lease: int
    locked_by: str | None


@dataclass(frozen=True)
class Pools:
    """Values that exist in the seeded database (and near misses), for the strategies."""

    subjects: tuple[Subject, ...]
    task_keys: tuple[str, ...]
    queues: tuple[str, ...]
    orchestrator_ids: tuple[str, ...]


def _column(conn: Any, query: str) -> tuple[Any, ...]:
    return tuple(row[0] for row in conn.execute(query).fetchall())


def load_pools(conn: Any) -> Pools:
    """Read the pools from the seeded database: whatever is there, not a copy of the seed.

    Queue names include every relation name of the schema (and what follows `executions_`):
    valid names that collide with objects the extension already made.
    """
    relation_names = _column(
        conn,
        "SELECT relname FROM pg_class WHERE relnamespace = 'pgconductor'::regnamespace ORDER BY 1",
    )
    derived = {n.removeprefix("executions_") for n in relation_names}
    queues = _column(conn, "SELECT name FROM pgconductor.queues ORDER BY 1")
    subjects = tuple(
        Subject(*row)
        for row in conn.execute(
            "SELECT id::text, task_key, queue, lease, locked_by::text FROM pgconductor.executions"
            " UNION ALL SELECT id::text, task_key, queue, lease, NULL FROM"
            " pgconductor.finished_executions ORDER BY 5 NULLS LAST, 1"
        ).fetchall()
    )
    return Pools(
        subjects=subjects,
        task_keys=_column(
            conn,
            "SELECT key FROM pgconductor.tasks UNION SELECT task_key FROM pgconductor.executions"
            " UNION SELECT task_key FROM pgconductor.finished_executions ORDER BY 1",
        ),
        queues=tuple(sorted(set(queues) | derived | set(relation_names))),
        orchestrator_ids=_column(conn, "SELECT id::text FROM pgconductor.orchestrators ORDER BY 1"),
    )
