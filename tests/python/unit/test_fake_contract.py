"""The fake client cannot drift from the protocols: same methods, same signatures."""

from __future__ import annotations

import inspect

import pytest

from fakes import FakeDatabaseClient
from pgconductor.db import SqlDatabaseClient
from pgconductor.protocol import DatabaseClient, FlowClient, SchemaClient, SyncInvoker

PROTOCOLS = (DatabaseClient, SyncInvoker, SchemaClient, FlowClient)


def _methods(protocol: type) -> list[str]:
    return [
        name
        for name, value in vars(protocol).items()
        if not name.startswith("_") and inspect.isfunction(value)
    ]


@pytest.mark.parametrize("implementation", [FakeDatabaseClient, SqlDatabaseClient])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_implementation_matches_protocol(implementation: type, protocol: type) -> None:
    for name in _methods(protocol):
        expected = inspect.signature(getattr(protocol, name))
        actual = inspect.signature(getattr(implementation, name))
        assert str(actual) == str(expected), f"{implementation.__name__}.{name}"
        assert inspect.iscoroutinefunction(getattr(implementation, name)) == (
            inspect.iscoroutinefunction(getattr(protocol, name))
        )


def test_fake_is_an_instance_of_every_protocol() -> None:
    fake = FakeDatabaseClient()
    assert all(isinstance(fake, protocol) for protocol in PROTOCOLS)


async def test_fake_records_answers_and_raises() -> None:
    fake = FakeDatabaseClient()
    fake.responses["cancel"] = lambda execution_id, reason: f"cancelling:{reason}"
    assert await fake.cancel("id", "why") == "cancelling:why"  # type: ignore[arg-type]
    fake.simulate_error("queue_stats", RuntimeError("boom"), times=2)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await fake.queue_stats()
    assert await fake.queue_stats() == []
    fake.simulate_error("version", RuntimeError("always"))
    with pytest.raises(RuntimeError):
        await fake.version()
    fake.clear_error("version")
    assert await fake.version() == "0.1.0"
    assert fake.call_count("queue_stats") == 3
    await fake.wait_for_call("queue_stats", 3, timeout=1)


async def test_fake_awaits_awaitable_responses() -> None:
    fake = FakeDatabaseClient()

    async def later(*args: object) -> list[object]:
        return ["claimed"]

    fake.responses["get_executions"] = later
    assert await fake.get_executions(None, "q", None, 1) == ["claimed"]  # type: ignore[arg-type]
