"""`SchemaManager`: which extension version is installed, and install / upgrade / check it.

Install and upgrade take a transaction-scoped Postgres advisory lock (in `db/runner.py`), so
orchestrators that migrate at the same moment do not collide (behind a transaction-mode
pooler too). `pgconductor.alembic` runs the same operations from alembic migrations.
"""

from __future__ import annotations

import re

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from pgconductor import __version__
from pgconductor.db import SqlDatabaseClient
from pgconductor.errors import ExtensionMissing, InvalidState, VersionMismatch
from pgconductor.protocol import SchemaClient

__all__ = ["PACKAGE_VERSION", "SUPPORTED_EXTENSION_VERSIONS", "SchemaManager", "refuse_downgrade"]

#: Extension versions this Python package can drive.
SUPPORTED_EXTENSION_VERSIONS: tuple[str, ...] = ("0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0")
#: This package's own version (the installed distribution's), quoted in mismatch messages.
PACKAGE_VERSION = __version__


def _version_key(version: str) -> tuple[int, ...]:
    """`"0.10.2"` → `(0, 10, 2)`; non-numeric parts count as 0."""
    return tuple(int(part) if part.isdigit() else 0 for part in re.split(r"[.-]", version))


def refuse_downgrade(installed: str, target: str) -> None:
    """Raise `InvalidState` when `target` is older than `installed`: updates only go forward."""
    if _version_key(target) < _version_key(installed):
        raise InvalidState(
            f"pgconductor {installed} is installed and cannot be downgraded to {target}",
            sqlstate="55000",
            hint=f"extension updates only go forward: keep {installed} (a newer package "
            "drives it), or restore a backup taken before the upgrade",
        )


class SchemaManager:
    """Compare, install and upgrade the `pgconductor` extension in one database."""

    def __init__(
        self,
        database: SchemaClient | str | URL | AsyncEngine,
        *,
        supported: tuple[str, ...] = SUPPORTED_EXTENSION_VERSIONS,
    ) -> None:
        if isinstance(database, str | URL | AsyncEngine):
            self.client: SchemaClient = SqlDatabaseClient(database)
            self._owns_client = True
        else:
            self.client, self._owns_client = database, False
        self.supported = supported

    async def installed(self) -> str | None:
        """The installed extension version, or None."""
        return await self.client.extension_version()

    async def install(self, version: str | None = None) -> str | None:
        """`CREATE EXTENSION IF NOT EXISTS pgconductor`; return the installed version."""
        return await self.client.install_extension(version)

    async def upgrade(self, to: str | None = None) -> str | None:
        """`ALTER EXTENSION pgconductor UPDATE TO` `to` (default: the newest supported).

        A `to` older than the installed version is refused (`refuse_downgrade`).
        """
        installed = await self.installed()
        if installed is None:
            raise self._missing()
        target = to or max(self.supported, key=_version_key)
        refuse_downgrade(installed, target)
        return await self.client.upgrade_extension(target)

    async def check(self) -> str:
        """Return the installed version; raise `ExtensionMissing` or `VersionMismatch`."""
        installed = await self.installed()
        if installed is None:
            raise self._missing()
        if installed in self.supported:
            return installed
        newest = max(self.supported, key=_version_key)
        message = (
            f"pgconductor extension {installed} is installed, but this package "
            f"(pgconductor {PACKAGE_VERSION}) supports {', '.join(self.supported)}"
        )
        if _version_key(installed) < _version_key(newest):
            hint = (
                f"run `pgconductor schema upgrade` "
                f"(ALTER EXTENSION pgconductor UPDATE TO '{newest}')"
            )
        else:
            hint = "upgrade the Python package: pip install --upgrade pgconductor"
        raise VersionMismatch(message, hint=hint)

    def _missing(self) -> ExtensionMissing:
        return ExtensionMissing(
            "the pgconductor extension is not installed in this database",
            hint="run `pgconductor schema install` (CREATE EXTENSION pgconductor)",
        )

    async def close(self) -> None:
        """Close the client this manager created (a caller's is left alone)."""
        if self._owns_client:
            await self.client.close()
