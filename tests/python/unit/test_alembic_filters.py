"""`pgconductor.alembic`'s autogenerate filters, on SQLAlchemy objects (no database)."""

from __future__ import annotations

import sqlalchemy as sa

from pgconductor.alembic import include_name, include_object


def test_include_name_skips_the_schema_and_what_is_in_it() -> None:
    assert not include_name("pgconductor", "schema", {})
    assert include_name("public", "schema", {})
    assert include_name(None, "schema", {})  # the default schema
    assert not include_name("executions", "table", {"schema_name": "pgconductor"})
    assert include_name("executions", "table", {"schema_name": None})
    assert include_name("accounts", "table", {"schema_name": "public"})
    assert not include_name("id", "column", {"schema_name": "pgconductor", "table_name": "tasks"})


def test_include_object_skips_pgconductor_tables_and_their_parts() -> None:
    metadata = sa.MetaData()
    theirs = sa.Table(
        "executions", metadata, sa.Column("id", sa.Integer, primary_key=True), schema="pgconductor"
    )
    ours = sa.Table("executions", metadata, sa.Column("id", sa.Integer, primary_key=True))
    index = sa.Index("executions_id", theirs.c.id)
    assert not include_object(theirs, "executions", "table", True, None)
    assert not include_object(theirs.c.id, "id", "column", True, None)
    assert not include_object(index, "executions_id", "index", True, None)
    assert include_object(ours, "executions", "table", False, None)
    assert include_object(ours.c.id, "id", "column", False, None)
