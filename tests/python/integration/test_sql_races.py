"""Races of the SQL core against a real PostgreSQL, with psycopg 3 only.

These tests call the extension's functions directly (not through the pgconductor package):
concurrent claims never hand one execution to two claimers, a killed orchestrator's
executions are recovered by another orchestrator's heartbeat, a stale orchestrator's late
result is fenced, and the NOTIFY channels fire when the API says they do.

Time-dependent rules are driven with `pgconductor.fake_now`, set per connection.
Nothing sleeps: every wait polls a condition or blocks on the server with a deadline.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
STALE_AFTER = "30 seconds"

ORCH_A = uuid.UUID("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa")
ORCH_B = uuid.UUID("bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb")
ORCH_C = uuid.UUID("cccccccc-cccc-cccc-cccc-cccccccccccc")

RETURN_SQL = """
    SELECT id, outcome FROM pgconductor.return_executions(
        %s, %s::uuid[], %s::int[], %s::text[], %s::text[], %s::jsonb[])
"""


def connect(url: str, fake_now: datetime | None = None, autocommit: bool = True) -> Any:
    """A psycopg connection; with `fake_now`, pgconductor's clock reads that time.

    Statements time out after 15 s, so a lock wait the test did not expect fails the test
    instead of hanging it.
    """
    conn = psycopg.connect(url, autocommit=autocommit, options="-c statement_timeout=15s")
    if fake_now is not None:
        set_fake_now(conn, fake_now)
    return conn


def set_fake_now(conn: Any, at: datetime) -> None:
    conn.execute("SELECT set_config('pgconductor.fake_now', %s, false)", [at.isoformat()])


def scalar(conn: Any, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def heartbeat(conn: Any, orchestrator: uuid.UUID) -> list[tuple[str, uuid.UUID | None]]:
    return conn.execute(
        "SELECT kind, execution_id FROM pgconductor.heartbeat(%s, p_stale_after => %s)",
        [orchestrator, STALE_AFTER],
    ).fetchall()


def claim(conn: Any, task_key: str, orchestrator: uuid.UUID, batch: int) -> list[tuple[Any, ...]]:
    """get_executions(task, orchestrator, batch) -> [(id, attempt)]."""
    return conn.execute(
        "SELECT id, attempt FROM pgconductor.get_executions(%s, %s, %s)",
        [task_key, orchestrator, batch],
    ).fetchall()


def invoke_many(conn: Any, task_key: str, count: int) -> list[uuid.UUID]:
    rows = conn.execute(
        "SELECT pgconductor.invoke_batch(%s, "
        "  ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, %s) AS g))",
        [task_key, count],
    ).fetchall()
    return [r[0] for r in rows]


def notifications_until(conn: Any, marker: str, timeout: float = 10.0) -> list[tuple[str, str]]:
    """(channel, payload) received on `conn` up to and including the one with `marker`."""
    got: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    while not any(payload == marker for _, payload in got):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {marker!r} notification within {timeout} s; got {got}")
        got.extend((n.channel, n.payload) for n in conn.notifies(timeout=remaining, stop_after=1))
    return got


@pytest.fixture
def races_db(db_url: str) -> str:
    """The module's database, emptied of executions and orchestrators before each test."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE pgconductor.executions, pgconductor.finished_executions, "
            "pgconductor.signals, pgconductor.orchestrators, pgconductor.tasks"
        )
    return db_url


# --- concurrent claims --------------------------------------------------------------------

CLAIMERS = 8
EXECUTIONS = 5000
BATCH = 50


def test_concurrent_claims_hand_out_every_execution_exactly_once(races_db: str) -> None:
    with connect(races_db) as conn:
        ids = invoke_many(conn, "race", EXECUTIONS)
    assert len(set(ids)) == EXECUTIONS

    orchestrators = [uuid.UUID(int=i + 1) for i in range(CLAIMERS)]
    start = threading.Barrier(CLAIMERS, timeout=30)
    deadline = time.monotonic() + 20

    def claimer(orchestrator: uuid.UUID) -> list[tuple[Any, ...]]:
        got: list[tuple[Any, ...]] = []
        with connect(races_db) as conn:
            start.wait()
            while True:
                assert time.monotonic() < deadline, "claimers did not drain the queue in 20 s"
                rows = claim(conn, "race", orchestrator, BATCH)
                assert len(rows) <= BATCH
                got.extend(rows)
                # An empty batch ends this claimer only once nothing is pending any more
                # (rows skipped because another claimer held them locked are not lost).
                if not rows and not scalar(
                    conn,
                    "SELECT count(*) FROM pgconductor.executions WHERE locked_by IS NULL",
                ):
                    return got

    with ThreadPoolExecutor(CLAIMERS) as pool:
        results = dict(zip(orchestrators, pool.map(claimer, orchestrators), strict=True))

    claimed = [row[0] for rows in results.values() for row in rows]
    assert len(claimed) == EXECUTIONS, "claims in total"
    duplicates = [i for i, n in Counter(claimed).items() if n > 1]
    assert duplicates == [], "executions handed to two claimers"
    assert set(claimed) == set(ids), "every execution claimed"
    assert {row[1] for rows in results.values() for row in rows} == {1}, "attempt numbers"
    busy = [o for o, rows in results.items() if rows]
    assert len(busy) >= 2, f"only {len(busy)} claimer got work: the claims did not overlap"

    with connect(races_db) as conn:
        per_orchestrator = dict(
            conn.execute(
                "SELECT locked_by, count(*) FROM pgconductor.executions GROUP BY locked_by"
            ).fetchall()
        )
        assert per_orchestrator == {o: len(rows) for o, rows in results.items() if rows}
        assert scalar(conn, "SELECT count(*) FROM pgconductor.executions WHERE attempts <> 1") == 0


# --- recovery after a killed orchestrator ---------------------------------------------------


def test_recovery_after_killed_orchestrator(
    races_db: str, wait_until_sync: Callable[..., Any]
) -> None:
    with connect(races_db, fake_now=T0) as conn:
        conn.execute("SELECT pgconductor.register_task('last_chance', p_max_attempts => 1)")
        retryable = set(invoke_many(conn, "retryable", 10))
        last_chance = set(invoke_many(conn, "last_chance", 4))

    # Orchestrator A claims everything (committed), then starts completing two executions
    # and is killed before it commits.
    conn_a = connect(races_db, fake_now=T0, autocommit=False)
    try:
        heartbeat(conn_a, ORCH_A)
        claimed = claim(conn_a, "retryable", ORCH_A, 100) + claim(
            conn_a, "last_chance", ORCH_A, 100
        )
        conn_a.commit()
        assert {r[0] for r in claimed} == retryable | last_chance
        assert {r[1] for r in claimed} == {1}
        half_done = sorted(retryable)[:2]
        outcomes = conn_a.execute(
            RETURN_SQL, [ORCH_A, half_done, [1, 1], ["completed"] * 2, None, None]
        ).fetchall()
        assert [o for _, o in outcomes] == ["completed", "completed"]  # not committed
        pid_a = conn_a.info.backend_pid

        with (
            connect(races_db, fake_now=T0 + timedelta(seconds=10)) as conn_b,
            connect(races_db) as listener,
        ):
            listener.execute("LISTEN pgconductor_invoke")
            listener.execute("LISTEN pgconductor_signal")
            assert scalar(conn_b, "SELECT pg_terminate_backend(%s)", [pid_a]) is True

            def a_is_gone() -> bool:
                # Its open transaction (the two completions) is rolled back once it is gone.
                query = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
                return scalar(conn_b, query, [pid_a]) == 0

            wait_until_sync(a_is_gone, timeout=10)
            with pytest.raises(psycopg.OperationalError):
                conn_a.execute("SELECT 1")

            # 10 s after A's last heartbeat (stale_after 30 s): A is not stale yet.
            assert heartbeat(conn_b, ORCH_B) == []
            assert (
                scalar(
                    conn_b,
                    "SELECT count(*) FROM pgconductor.executions WHERE locked_by = %s",
                    [ORCH_A],
                )
                == 14
            )

            # 5 minutes later B's heartbeat recovers A's executions.
            recovered_at = T0 + timedelta(minutes=5)
            set_fake_now(conn_b, recovered_at)
            assert heartbeat(conn_b, ORCH_B) == []

            live = conn_b.execute(
                "SELECT id, attempts, locked_by, run_at, last_error FROM pgconductor.executions"
            ).fetchall()
            assert {r[0] for r in live} == retryable  # the rolled-back completions included
            lost = f"attempt 1 of 3 lost: orchestrator {ORCH_A} stopped sending heartbeats"
            for _, attempts, locked_by, run_at, last_error in live:
                assert (attempts, locked_by, run_at) == (1, None, recovered_at)
                assert last_error.startswith(lost), last_error

            finished = conn_b.execute(
                "SELECT id, state, attempts, last_error FROM pgconductor.finished_executions"
            ).fetchall()
            assert {r[0] for r in finished} == last_chance
            lost_last = f"attempt 1 of 1 lost: orchestrator {ORCH_A} stopped sending heartbeats"
            for _, state, attempts, last_error in finished:
                assert (state, attempts) == ("failed", 1)
                assert last_error.startswith(lost_last), last_error

            expired, drained = conn_b.execute(
                "SELECT expired_at, drained FROM pgconductor.orchestrators WHERE id = %s",
                [ORCH_A],
            ).fetchone()
            assert (expired, drained) == (recovered_at, True)
            signals = conn_b.execute(
                "SELECT kind, execution_id FROM pgconductor.signals WHERE orchestrator_id = %s",
                [ORCH_A],
            ).fetchall()
            assert sorted(signals) == sorted(("lease_lost", i) for i in retryable | last_chance)

            # Notifications: nothing for the early heartbeat; after the recovery one wake-up
            # for the queue and one signal for A (NOTIFY folds repeats in a transaction).
            conn_b.execute("NOTIFY pgconductor_invoke, 'marker'")
            got = notifications_until(listener, "marker")
            assert sorted(got[:-1]) == [
                ("pgconductor_invoke", "default"),
                ("pgconductor_signal", str(ORCH_A)),
            ]
            assert got[-1] == ("pgconductor_invoke", "marker")

            # The lost attempt counted: B's claim is attempt 2.
            reclaimed = claim(conn_b, "retryable", ORCH_B, 100)
            assert sorted(reclaimed) == sorted((i, 2) for i in retryable)
    finally:
        conn_a.close()


# --- fencing ----------------------------------------------------------------------------------


def test_stale_result_is_fenced(races_db: str) -> None:
    later = T0 + timedelta(minutes=5)
    with (
        connect(races_db, fake_now=T0) as conn_a,
        connect(races_db, fake_now=later) as conn_b,
    ):
        x, y, z = invoke_many(conn_a, "fenced", 3)
        heartbeat(conn_a, ORCH_A)
        assert sorted(claim(conn_a, "fenced", ORCH_A, 10)) == sorted([(x, 1), (y, 1), (z, 1)])

        # A stops heartbeating; B's heartbeat recovers, B re-claims: attempt 2.
        assert heartbeat(conn_b, ORCH_B) == []
        assert sorted(claim(conn_b, "fenced", ORCH_B, 10)) == sorted([(x, 2), (y, 2), (z, 2)])

        def snapshot() -> dict[uuid.UUID, Any]:
            rows = conn_b.execute(
                "SELECT e.id, to_jsonb(e) FROM pgconductor.executions AS e"
            ).fetchall()
            return dict(rows)

        before = snapshot()
        assert {v["locked_by"] for v in before.values()} == {str(ORCH_B)}

        # A's late results for its attempt 1, one of each status: all stale.
        late = conn_a.execute(
            RETURN_SQL,
            [
                ORCH_A,
                [x, y, z],
                [1, 1, 1],
                ["completed", "failed", "released"],
                [None, "late failure", None],
                [Jsonb({"by": "A"}), None, None],
            ],
        ).fetchall()
        assert late == [(x, "stale"), (y, "stale"), (z, "stale")]
        # Quoting B's attempt number does not help A; B quoting A's attempt is stale too.
        assert conn_a.execute(
            RETURN_SQL, [ORCH_A, [x], [2], ["completed"], None, None]
        ).fetchall() == [(x, "stale")]
        assert conn_b.execute(
            RETURN_SQL, [ORCH_B, [x], [1], ["completed"], None, None]
        ).fetchall() == [(x, "stale")]
        assert snapshot() == before, "a stale result changed an execution"
        assert scalar(conn_b, "SELECT count(*) FROM pgconductor.finished_executions") == 0

        # B holds the lease: its results apply.
        applied = conn_b.execute(
            RETURN_SQL,
            [
                ORCH_B,
                [x, y, z],
                [2, 2, 2],
                ["completed", "failed", "released"],
                [None, "b failure", None],
                [Jsonb({"by": "B"}), None, None],
            ],
        ).fetchall()
        assert applied == [(x, "completed"), (y, "retry_scheduled"), (z, "released")]

        finished = conn_b.execute(
            "SELECT id, state, attempts, orchestrator_id, result "
            "FROM pgconductor.finished_executions"
        ).fetchall()
        assert finished == [(x, "completed", 2, ORCH_B, {"by": "B"})]
        live = {
            r[0]: r[1:]
            for r in conn_b.execute(
                "SELECT id, attempts, locked_by, last_error FROM pgconductor.executions"
            ).fetchall()
        }
        assert live[y][:3] == (2, None, "b failure")
        assert live[z][:2] == (1, None)  # a release does not count the attempt
        assert live[z][2].startswith(f"attempt 1 of 3 lost: orchestrator {ORCH_A}")

        # A learns on its next heartbeat that it lost all three leases.
        assert sorted(heartbeat(conn_a, ORCH_A)) == sorted(("lease_lost", i) for i in (x, y, z))


# --- notifications ------------------------------------------------------------------------


def test_invoke_notifies_the_queue(races_db: str) -> None:
    with (
        connect(races_db) as listener,
        connect(races_db) as conn,
        connect(races_db) as tx,
    ):
        listener.execute("LISTEN pgconductor_invoke")

        # Delayed: no notification (only due work wakes workers).
        conn.execute(
            "SELECT pgconductor.invoke('notified', '{}', 'nq-later', now() + interval '1 hour')"
        )
        conn.execute("SELECT pgconductor.invoke('notified', '{}', 'nq-single')")
        batch_sql = (
            "SELECT pgconductor.invoke_batch('notified', ARRAY['{}', '{}', '{}']::jsonb[], "
            "'nq-batch')"
        )
        assert len(conn.execute(batch_sql).fetchall()) == 3
        # The general form: one notification per distinct queue.
        assert (
            len(
                conn.execute(
                    "SELECT pgconductor.invoke_batch(ARRAY['notified', 'notified', 'notified'], "
                    "ARRAY['{}', '{}', '{}']::jsonb[], ARRAY['nq-a', 'nq-b', 'nq-a'])"
                ).fetchall()
            )
            == 3
        )
        # Sent at commit: an invoke committed later is heard later. (The queues exist first:
        # creating one takes an exclusive lock on pgconductor.executions until commit.)
        conn.execute(
            "SELECT pgconductor.create_queue('nq-tx'), pgconductor.create_queue('nq-after')"
        )
        with tx.transaction():
            tx.execute("SELECT pgconductor.invoke('notified', '{}', 'nq-tx')")
            conn.execute("SELECT pgconductor.invoke('notified', '{}', 'nq-after')")
        conn.execute("NOTIFY pgconductor_invoke, 'marker'")

        got = notifications_until(listener, "marker")
        assert {channel for channel, _ in got} == {"pgconductor_invoke"}
        payloads = [payload for _, payload in got]
        assert payloads[:2] == ["nq-single", "nq-batch"]
        assert sorted(payloads[2:4]) == ["nq-a", "nq-b"]
        assert payloads[4:] == ["nq-after", "nq-tx", "marker"]


def test_cancel_of_running_execution_signals_its_orchestrator(races_db: str) -> None:
    with connect(races_db) as listener, connect(races_db) as conn:
        listener.execute("LISTEN pgconductor_signal")
        pending = scalar(conn, "SELECT pgconductor.invoke('sig_pending')")
        running = scalar(conn, "SELECT pgconductor.invoke('sig_running')")
        heartbeat(conn, ORCH_C)
        assert claim(conn, "sig_running", ORCH_C, 1) == [(running, 1)]

        cancel = "SELECT pgconductor.cancel(%s, 'stop')"
        assert scalar(conn, cancel, [pending]) == "cancelled"  # no orchestrator to tell
        assert scalar(conn, cancel, [running]) == "cancelling"
        assert scalar(conn, cancel, [running]) == "cancelling"  # recorded once, signalled once
        conn.execute("NOTIFY pgconductor_signal, 'marker'")

        got = notifications_until(listener, "marker")
        assert got == [
            ("pgconductor_signal", str(ORCH_C)),
            ("pgconductor_signal", "marker"),
        ]
        assert heartbeat(conn, ORCH_C) == [("cancel", running)]
        assert heartbeat(conn, ORCH_C) == []  # delivered once
