"""Fresh install == upgrade path (the procrastinate schema-diff test, in extension form).

For every frozen release older than the current version, `CREATE EXTENSION ... VERSION v`
followed by `ALTER EXTENSION ... UPDATE` must give the same catalog as a fresh
`CREATE EXTENSION`. The comparator itself is checked against a real difference, so the test
cannot pass by comparing nothing.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgtest import execute, libpq_url, with_database

ROOT = Path(__file__).resolve().parents[3]
CONTROL = (ROOT / "pgconductor.control").read_text()
CURRENT = re.search(r"default_version\s*=\s*'([^']+)'", CONTROL).group(1)  # type: ignore[union-attr]


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


FROZEN = sorted(
    (
        p.name.removeprefix("pgconductor--").removesuffix(".sql")
        for p in (ROOT / "extension/versions").glob("pgconductor--*.sql")
    ),
    key=_version_key,
)
OLDER = [v for v in FROZEN if _version_key(v) < _version_key(CURRENT)]

# One query per kind of catalog object in schema pgconductor; each row is a stable string.
SNAPSHOT_QUERIES = {
    "columns": """
        SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
               || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'pgconductor'::regnamespace
           AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": """
        SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
          FROM pg_constraint WHERE connamespace = 'pgconductor'::regnamespace""",
    "indexes": "SELECT indexdef FROM pg_indexes WHERE schemaname = 'pgconductor'",
    "functions": """
        SELECT p.oid::regprocedure::text || ' ' || md5(p.prosrc)
               || ' ' || md5(coalesce(pg_get_function_sqlbody(p.oid), ''))
               || ' ' || p.provolatile::text || ' '
               || coalesce(array_to_string(p.proconfig, ','), '') || ' ' || p.prosecdef
               || ' ' || coalesce(array_to_string(p.proacl, ','), 'default-acl')
               || ' returns ' || format_type(p.prorettype, NULL)
          FROM pg_proc p WHERE p.pronamespace = 'pgconductor'::regnamespace""",
    "triggers": """
        SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = 'pgconductor'::regnamespace AND NOT t.tgisinternal""",
    "types": """
        SELECT t.typname || ' ' || t.typtype::text FROM pg_type t
         WHERE t.typnamespace = 'pgconductor'::regnamespace AND t.typname NOT LIKE '\\_%'""",
    "members": """
        SELECT pg_describe_object(d.classid, d.objid, d.objsubid) FROM pg_depend d
         JOIN pg_extension e ON e.oid = d.refobjid
        WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
          AND e.extname = 'pgconductor'""",
    "data": "SELECT 'queue ' || name FROM pgconductor.queues",
}


def snapshot(url: str) -> dict[str, list[str]]:
    """The catalog of schema pgconductor, as sorted strings per kind of object."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        return {
            kind: sorted(str(r[0]) for r in conn.execute(q.encode()))
            for kind, q in SNAPSHOT_QUERIES.items()
        }


def diff(a: dict[str, list[str]], b: dict[str, list[str]]) -> list[str]:
    """Lines present in only one of two snapshots, prefixed with - or +."""
    out: list[str] = []
    for kind in SNAPSHOT_QUERIES:
        out += [f"- {kind}: {x}" for x in sorted(set(a[kind]) - set(b[kind]))]
        out += [f"+ {kind}: {x}" for x in sorted(set(b[kind]) - set(a[kind]))]
    return out


@pytest.fixture
def make_db(server_url: str) -> Iterator[object]:
    """A factory of empty databases (dropped afterwards): make_db() -> URL."""
    names: list[str] = []

    def make() -> str:
        name = f"pgc_upgrade_{uuid.uuid4().hex[:10]}"
        execute(server_url, f'CREATE DATABASE "{name}"')
        names.append(name)
        return with_database(server_url, name)

    yield make
    for name in names:
        execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_snapshot_sees_a_real_difference(make_db: object) -> None:
    """The comparator is not blind: a changed function and a new index both show up."""
    a, b = make_db(), make_db()  # type: ignore[operator]
    for url in (a, b):
        execute(url, "CREATE EXTENSION pgconductor")
    execute(b, "CREATE INDEX extra_idx ON pgconductor.tasks (queue)")
    execute(
        b,
        "CREATE OR REPLACE FUNCTION pgconductor.version() RETURNS text LANGUAGE sql STABLE "
        "SET search_path = pg_catalog, pg_temp AS $$ SELECT 'x' $$",
    )
    found = diff(snapshot(a), snapshot(b))
    assert any("extra_idx" in line for line in found), found
    assert any("version()" in line for line in found), found
    assert diff(snapshot(a), snapshot(a)) == []


def test_frozen_versions_are_releases_before_or_at_current() -> None:
    """Every frozen script names a version no newer than the control file's default."""
    assert all(_version_key(v) <= _version_key(CURRENT) for v in FROZEN), (
        FROZEN,
        CURRENT,
    )


@pytest.mark.parametrize("version", OLDER or ["(none yet)"])
def test_upgrade_path_equals_fresh_install(version: str, make_db: object) -> None:
    """CREATE EXTENSION ... VERSION v + UPDATE gives the catalog of a fresh install.

    Before the second release there is no older version: then the frozen script of the
    current version (if any) must install the same catalog as the build.
    """
    fresh, upgraded = make_db(), make_db()  # type: ignore[operator]
    execute(fresh, "CREATE EXTENSION pgconductor")
    if version == "(none yet)":
        if CURRENT not in FROZEN:
            # Nothing released yet: the only installable script is the build itself.
            assert FROZEN == [], FROZEN
            return
        execute(upgraded, f"CREATE EXTENSION pgconductor VERSION '{CURRENT}'")
    else:
        execute(upgraded, f"CREATE EXTENSION pgconductor VERSION '{version}'")
        execute(upgraded, "ALTER EXTENSION pgconductor UPDATE")
    assert execute(
        upgraded, "SELECT extversion FROM pg_extension WHERE extname = 'pgconductor'"
    ) == [(CURRENT,)]
    assert diff(snapshot(fresh), snapshot(upgraded)) == []
