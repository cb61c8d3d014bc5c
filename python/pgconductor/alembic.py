"""alembic support: install and upgrade the extension from your migrations, and keep
autogenerate away from pgconductor's schema. Needs alembic (`pip install pgconductor[alembic]`).

In a revision (importing this module registers the operations on `op`)::

    import pgconductor.alembic  # noqa: F401

    def upgrade():
        op.install_pgconductor()            # CREATE EXTENSION IF NOT EXISTS pgconductor
        op.upgrade_pgconductor("0.4.0")     # a later revision: ALTER EXTENSION ... UPDATE TO

    def downgrade():
        op.drop_pgconductor()               # DROP EXTENSION: every execution is lost

`upgrade_pgconductor(to)` (default: the newest version this package supports) does nothing
when `to` is installed and refuses a `to` older than the installed version: extension
updates only go forward, so the revision's downgrade should leave the version alone.
Install and upgrade take the same transaction-scoped advisory lock as `SchemaManager`, so a
worker that installs at the same moment waits for the migration's transaction. In offline
mode (`alembic upgrade --sql`) the statements are written out without the checks.

In `env.py`, pass the filters to `context.configure(...)` so that autogenerate (with or
without `include_schemas=True`) never proposes to drop or alter pgconductor's tables::

    from pgconductor.alembic import include_name, include_object
    context.configure(..., include_name=include_name, include_object=include_object)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alembic.operations import MigrateOperation, Operations

from pgconductor.db.statements import (
    CALLS,
    SCHEMA_LOCK,
    SCHEMA_LOCK_KEY,
    alter_extension,
    create_extension,
    drop_extension,
)
from pgconductor.errors import ExtensionMissing
from pgconductor.schema import SUPPORTED_EXTENSION_VERSIONS, _version_key, refuse_downgrade

__all__ = [
    "SCHEMA",
    "DropPgconductorOp",
    "InstallPgconductorOp",
    "UpgradePgconductorOp",
    "include_name",
    "include_object",
]

#: The schema the extension owns (`schema = pgconductor` in its control file).
SCHEMA = "pgconductor"


@Operations.register_operation("install_pgconductor")
class InstallPgconductorOp(MigrateOperation):
    """`op.install_pgconductor(version=None)`: CREATE EXTENSION IF NOT EXISTS pgconductor."""

    def __init__(self, version: str | None = None) -> None:
        self.version = version

    @classmethod
    def install_pgconductor(cls, operations: Operations, version: str | None = None) -> Any:
        """Install the extension (`version`, else the server's default) unless it is there."""
        return operations.invoke(cls(version))

    def reverse(self) -> DropPgconductorOp:
        """The undo of an install: drop the extension."""
        return DropPgconductorOp()


@Operations.register_operation("upgrade_pgconductor")
class UpgradePgconductorOp(MigrateOperation):
    """`op.upgrade_pgconductor(to=None)`: ALTER EXTENSION pgconductor UPDATE TO `to`."""

    def __init__(self, to: str | None = None) -> None:
        self.to = to

    @classmethod
    def upgrade_pgconductor(cls, operations: Operations, to: str | None = None) -> Any:
        """Update the extension to `to` (default: the newest this package supports)."""
        return operations.invoke(cls(to))


@Operations.register_operation("drop_pgconductor")
class DropPgconductorOp(MigrateOperation):
    """`op.drop_pgconductor()`: DROP EXTENSION IF EXISTS pgconductor, with all its data."""

    @classmethod
    def drop_pgconductor(cls, operations: Operations) -> Any:
        """Drop the extension, its schema and every execution in it."""
        return operations.invoke(cls())

    def reverse(self) -> InstallPgconductorOp:
        """The undo of a drop: install the extension again (empty)."""
        return InstallPgconductorOp()


def _online(operations: Operations) -> bool:
    return not operations.get_context().as_sql


def _installed(operations: Operations) -> str | None:
    found = operations.get_bind().execute(CALLS["extension_version"].text).scalar()
    return None if found is None else str(found)


def _lock(operations: Operations) -> None:
    if _online(operations):
        operations.get_bind().execute(SCHEMA_LOCK, {"key": SCHEMA_LOCK_KEY})


@Operations.implementation_for(InstallPgconductorOp)
def _install(operations: Operations, operation: InstallPgconductorOp) -> None:
    _lock(operations)
    operations.execute(create_extension(operation.version))


@Operations.implementation_for(UpgradePgconductorOp)
def _upgrade(operations: Operations, operation: UpgradePgconductorOp) -> None:
    target = operation.to or max(SUPPORTED_EXTENSION_VERSIONS, key=_version_key)
    if _online(operations):
        _lock(operations)
        installed = _installed(operations)
        if installed is None:
            raise ExtensionMissing(
                "the pgconductor extension is not installed, so it cannot be upgraded",
                hint="call op.install_pgconductor() in an earlier revision",
            )
        refuse_downgrade(installed, target)
        if installed == target:
            return
    operations.execute(alter_extension(target))


@Operations.implementation_for(DropPgconductorOp)
def _drop(operations: Operations, operation: DropPgconductorOp) -> None:
    _lock(operations)
    operations.execute(drop_extension())


def include_name(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
    """alembic `include_name` hook: skip schema `pgconductor` and everything reflected in it."""
    if type_ == "schema":
        return name != SCHEMA
    return parent_names.get("schema_name") != SCHEMA


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """alembic `include_object` hook: skip tables (and their columns, indexes, constraints)
    of schema `pgconductor`, from the database or from a metadata that declares them."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    return getattr(table, "schema", None) != SCHEMA
