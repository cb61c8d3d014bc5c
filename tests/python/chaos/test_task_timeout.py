"""Task timeout: a handler that runs past its task's timeout loses that attempt (failed,
"timed out"), is retried with backoff, and completes, or fails for good once its attempts
are spent. Async handlers are cancelled; a sync handler is told through ctx.cancel_event."""

from __future__ import annotations

from chaos.app import make_conductor
from chaos.support import (
    check_invariants,
    finished_count,
    invoke,
    make_orchestrator,
    prepare,
    running,
)
from pgtest import wait_until


async def test_timed_out_attempts_fail_and_are_retried(fresh_db_url: str) -> None:
    prepare(fresh_db_url)
    recovers = invoke(fresh_db_url, [{"n": 1, "hang_on": [1, 2]}])
    recovers_sync = invoke(fresh_db_url, [{"n": 2, "hang_on": [1]}], task="chaos.sync")
    never = invoke(fresh_db_url, [{"n": 3, "hang_on": [1, 2, 3]}])
    never_sync = invoke(fresh_db_url, [{"n": 4, "hang_on": [1, 2, 3]}], task="chaos.sync")
    orch = make_orchestrator(make_conductor(fresh_db_url, "A", timeout=0.3, max_attempts=3))
    async with running(orch):
        await wait_until(
            lambda: (
                finished_count(fresh_db_url, recovers + recovers_sync) == 2
                and finished_count(fresh_db_url, never + never_sync, "failed") == 2
            ),
            timeout=15,
        )

    done = check_invariants(fresh_db_url, recovers + recovers_sync, orchestrators={"A": orch.id})
    assert done.attempts == {recovers[0]: 3, recovers_sync[0]: 2}
    for eid in recovers + recovers_sync:
        final = done.attempts[eid]
        assert [a for a, _ in done.starts[eid]] == list(range(1, final + 1))
        assert done.effects[eid] == [(final, "A")]  # the timed-out attempts had no effect
        assert done.errors[eid] == "timed out after 0.3 s"  # the last lost attempt's error

    failed = check_invariants(fresh_db_url, never + never_sync, state="failed")
    for eid in never + never_sync:
        assert failed.attempts[eid] == 3
        assert [a for a, _ in failed.starts[eid]] == [1, 2, 3]
        assert failed.effects[eid] == []
        assert failed.errors[eid] == "timed out after 0.3 s"
