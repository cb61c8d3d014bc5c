"""SchemaManager: installed vs supported versions, install, upgrade, check messages."""

from __future__ import annotations

import pytest

from fakes import FakeDatabaseClient
from pgconductor.db import SqlDatabaseClient
from pgconductor.errors import ExtensionMissing, VersionMismatch
from pgconductor.schema import SUPPORTED_EXTENSION_VERSIONS, SchemaManager, _version_key


async def test_check_passes_on_a_supported_version() -> None:
    manager = SchemaManager(FakeDatabaseClient("0.1.0"))
    assert await manager.check() == "0.1.0"
    assert await manager.installed() == "0.1.0"


async def test_check_without_the_extension() -> None:
    manager = SchemaManager(FakeDatabaseClient(None))
    with pytest.raises(ExtensionMissing) as caught:
        await manager.check()
    assert caught.value.hint is not None
    assert "pgconductor schema install" in caught.value.hint


async def test_older_extension_asks_for_an_upgrade() -> None:
    manager = SchemaManager(FakeDatabaseClient("0.0.9"))
    with pytest.raises(VersionMismatch) as caught:
        await manager.check()
    assert "0.0.9 is installed" in str(caught.value)
    assert f"supports {', '.join(SUPPORTED_EXTENSION_VERSIONS)}" in str(caught.value)
    assert caught.value.hint is not None
    assert "pgconductor schema upgrade" in caught.value.hint
    assert f"UPDATE TO '{SUPPORTED_EXTENSION_VERSIONS[-1]}'" in caught.value.hint


async def test_newer_extension_asks_for_a_newer_package() -> None:
    manager = SchemaManager(FakeDatabaseClient("0.10.0"))
    with pytest.raises(VersionMismatch) as caught:
        await manager.check()
    assert caught.value.hint is not None
    assert "pip install --upgrade pgconductor" in caught.value.hint


async def test_install_and_upgrade() -> None:
    fake = FakeDatabaseClient(None)
    manager = SchemaManager(fake, supported=("0.1.0", "0.2.0"))
    with pytest.raises(ExtensionMissing):
        await manager.upgrade()
    assert await manager.install() == "0.1.0"
    assert await manager.install("9.9.9") == "0.1.0"  # already there: IF NOT EXISTS
    assert await manager.upgrade() == "0.2.0"
    assert await manager.upgrade("0.3.0") == "0.3.0"
    assert [args for args, _ in fake.calls_to("upgrade_extension")] == [
        ("0.2.0",),
        ("0.3.0",),
    ]


async def test_close_only_closes_an_own_client() -> None:
    fake = FakeDatabaseClient()
    await SchemaManager(fake).close()
    assert not fake.closed
    manager = SchemaManager("postgresql://u@localhost/db")
    assert isinstance(manager.client, SqlDatabaseClient)
    await manager.close()


def test_version_ordering() -> None:
    assert _version_key("0.10.0") > _version_key("0.9.1")
    assert _version_key("1.0.0-beta") == (1, 0, 0, 0)
    assert "0.1.0" in SUPPORTED_EXTENSION_VERSIONS
