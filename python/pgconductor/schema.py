"""`SchemaManager`: which extension version is installed, and install / upgrade / check it.

Install and upgrade take a transaction-scoped Postgres advisory lock (in `db/runner.py`), so
orchestrators that migrate at the same moment do not collide (behind a transaction-mode
pooler too). `pgconductor.alembic` runs the same operations from alembic migrations.

Where the server has no extension files (managed Postgres), `install(sql_only=True)` runs the
released install script shipped in the package (`sql/versions`, a link to
extension/versions) as plain SQL into schema `pgconductor` and records it in
`pgconductor.sql_install`; `upgrade()` then runs the same update scripts (`sql/updates`) in
order, each recorded. The extension's files are not used and `pg_extension` stays empty.
"""

from __future__ import annotations

import logging
import re
from importlib import resources

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from pgconductor import __version__
from pgconductor.db import SqlDatabaseClient
from pgconductor.errors import ExtensionMissing, InvalidInput, InvalidState, VersionMismatch
from pgconductor.protocol import SchemaClient
from pgconductor.upgrade import BreakingStep, UpgradeClient, apply_breaking, breaking_steps

__all__ = [
    "PACKAGE_VERSION",
    "SUPPORTED_EXTENSION_VERSIONS",
    "SchemaManager",
    "install_scripts",
    "refuse_downgrade",
    "update_chain",
]

_log = logging.getLogger("pgconductor.upgrade")

#: Extension versions this Python package can drive.
SUPPORTED_EXTENSION_VERSIONS: tuple[str, ...] = (
    "0.1.0",
    "0.2.0",
    "0.3.0",
    "0.4.0",
    "0.5.0",
    "0.6.0",
    "0.6.1",
    "0.7.0",
    "0.8.0",
    "0.9.0",
)
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


#: A released script's first line, which stops psql from running it outside CREATE/ALTER EXTENSION.
_PSQL_GUARD = re.compile(r"^\\echo .*\\quit[ \t]*$", re.MULTILINE)
_UPDATE_NAME = re.compile(r"^pgconductor--(.+)--(.+)\.sql$")


def _plain_sql(text: str) -> str:
    """A released script without its psql guard line."""
    return _PSQL_GUARD.sub("", text, count=1)


def install_scripts(version: str) -> list[tuple[str, str, str]]:
    """`(version, file name, SQL)` of the scripts that install `version`: its released install
    script, or (as CREATE EXTENSION does) the newest older one and the updates from there."""
    released = {
        entry.name.removeprefix("pgconductor--").removesuffix(".sql"): entry
        for entry in resources.files("pgconductor").joinpath("sql", "versions").iterdir()
        if entry.name.startswith("pgconductor--") and entry.name.endswith(".sql")
    }
    base = max(
        (v for v in released if _version_key(v) <= _version_key(version)),
        key=_version_key,
        default=None,
    )
    if base is None:
        raise InvalidInput(
            f"pgconductor {version} has no install script in this package",
            sqlstate="22023",
            hint=f"pick one of {', '.join(sorted(released, key=_version_key))}",
        )
    script = (base, released[base].name, _plain_sql(released[base].read_text()))
    return [script, *update_chain(base, version)]


def update_chain(installed: str, target: str) -> list[tuple[str, str, str]]:
    """`(version, file name, SQL)` of each update script from `installed` to `target`."""
    edges: dict[str, list[tuple[str, str]]] = {}
    for entry in resources.files("pgconductor").joinpath("sql", "updates").iterdir():
        matched = _UPDATE_NAME.match(entry.name)
        if matched:
            edges.setdefault(matched.group(1), []).append((matched.group(2), entry.name))
    chain, current = [], installed
    while current != target:
        steps = [
            (to, name)
            for to, name in edges.get(current, [])
            if _version_key(to) <= _version_key(target)
        ]
        if not steps:
            raise InvalidInput(
                f"no update path from pgconductor {current} to {target} in this package",
                sqlstate="22023",
                hint="pick a released version, or upgrade the Python package",
            )
        current, name = max(steps, key=lambda step: _version_key(step[0]))
        text = resources.files("pgconductor").joinpath("sql", "updates", name).read_text()
        chain.append((current, name, _plain_sql(text)))
    return chain


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
        """The installed version (the extension's, else a plain-SQL install's), or None.

        A plain-SQL install's is what `pgconductor.version()` says (from 0.5.0 on it reads
        the install record for any member of the group roles, who may not read the table),
        else the record itself (older versions' `version()` knows only `pg_extension`).
        """
        found = await self.client.extension_version()
        if found is None and isinstance(self.client, SqlDatabaseClient):
            found = await self.client.version() or await self.client.sql_install_version()
        return found

    async def install(self, version: str | None = None, *, sql_only: bool = False) -> str | None:
        """`CREATE EXTENSION IF NOT EXISTS pgconductor`; return the installed version.

        `sql_only` runs the package's copy of the released install script as plain SQL
        instead (default: the newest supported release), unless some version is installed.
        """
        if not sql_only:
            return await self.client.install_extension(version)
        client = self._plain_sql_client()
        installed = await self.installed()
        if installed is not None:
            return installed
        scripts = install_scripts(version or max(self.supported, key=_version_key))
        await client.run_sql_scripts(scripts, create_schema=True)
        return await self.installed()

    async def upgrade(self, to: str | None = None, *, timeout: float = 60.0) -> str | None:
        """`ALTER EXTENSION pgconductor UPDATE TO` `to` (default: the newest supported).

        A `to` older than the installed version is refused (`refuse_downgrade`). A breaking
        update on the way (`pgconductor.upgrade`) first stops the orchestrators of older
        packages and waits up to `timeout` seconds until none is live; a non-breaking one
        applies while they keep running.
        """
        installed = await self.installed()
        if installed is None:
            raise self._missing()
        target = to or max(self.supported, key=_version_key)
        refuse_downgrade(installed, target)
        steps = self._breaking_steps(installed, target)
        if not steps:
            return await self._apply(installed, target)
        if not isinstance(self.client, UpgradeClient):
            raise TypeError("a breaking upgrade needs a client that can stop orchestrators")
        return await apply_breaking(
            self.client, steps, lambda: self._apply(installed, target), timeout=timeout
        )

    async def _apply(self, installed: str, target: str) -> str | None:
        # A plain-SQL install (no extension; read again: another upgrader may have just
        # updated the extension while this one waited): the same scripts, run by the package.
        if isinstance(self.client, SqlDatabaseClient) and (
            await self.client.extension_version() is None
        ):
            if installed != target:
                chain = update_chain(installed, target)
                await self.client.run_sql_scripts(chain, expected=installed)
            return await self.installed()
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

    def _breaking_steps(self, installed: str, target: str) -> list[BreakingStep]:
        """The breaking scripts from `installed` to `target` (`upgrade.py`)."""
        try:
            return breaking_steps(update_chain(installed, target)) if installed != target else []
        except InvalidInput:  # only the server's extension files know this path
            _log.warning(
                "pgconductor %s -> %s: no update script in this package: cannot tell whether "
                "it is breaking",
                installed,
                target,
            )
            return []

    def _plain_sql_client(self) -> SqlDatabaseClient:
        if not isinstance(self.client, SqlDatabaseClient):
            raise TypeError("a plain-SQL install needs a SqlDatabaseClient")
        return self.client

    def _missing(self) -> ExtensionMissing:
        return ExtensionMissing(
            "the pgconductor extension is not installed in this database",
            hint="run `pgconductor schema install` (CREATE EXTENSION pgconductor)",
        )

    async def close(self) -> None:
        """Close the client this manager created (a caller's is left alone)."""
        if self._owns_client:
            await self.client.close()
