"""`pgconductor.alembic` in a real alembic environment, built in a temporary directory.

The environment is what a user writes: `env.py` with the autogenerate filters and
`include_schemas=True`, and two revisions of the user's own (a table; then pgconductor
installed at an old version and upgraded, and another table). It upgrades to head and
downgrades to base; offline mode writes the statements out; autogenerate against the
upgraded database proposes nothing (and without the filters it would drop pgconductor's
tables, so the check can fail); a downgrade of the extension is refused with its reason.
"""

from __future__ import annotations

import io
import textwrap
import warnings
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import Operations

from pgconductor.alembic import include_name, include_object
from pgconductor.db import to_sqlalchemy_url
from pgconductor.errors import ExtensionMissing, InvalidState
from pgconductor.schema import SUPPORTED_EXTENSION_VERSIONS, _version_key
from pgtest import execute

NEWEST = max(SUPPORTED_EXTENSION_VERSIONS, key=_version_key)

MODELS = """
import sqlalchemy as sa

metadata = sa.MetaData()
sa.Table("accounts", metadata, sa.Column("id", sa.Integer, primary_key=True),
         sa.Column("email", sa.Text, nullable=False))
sa.Table("invoices", metadata, sa.Column("id", sa.Integer, primary_key=True),
         sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False))
"""

ENV = """
import sqlalchemy as sa
from alembic import context

from models import metadata
from pgconductor.alembic import include_name, include_object

config = context.config
options = dict(target_metadata=metadata, include_schemas=True,
               include_name=include_name, include_object=include_object)

if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
                      **options)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"),
                              poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
"""

ACCOUNTS = '''
"""accounts"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("accounts", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("email", sa.Text, nullable=False))


def downgrade():
    op.drop_table("accounts")
'''

WITH_PGCONDUCTOR = '''
"""pgconductor, and invoices"""
import sqlalchemy as sa
from alembic import op

import pgconductor.alembic  # noqa: F401  (registers the operations on op)

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.install_pgconductor("0.2.0")
    op.upgrade_pgconductor()
    op.create_table("invoices", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"),
                              nullable=False))


def downgrade():
    op.drop_table("invoices")
    op.drop_pgconductor()
'''

SCRIPT_MAKO = '''"""${message}"""
from alembic import op
import sqlalchemy as sa
${imports if imports else ""}
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade():
    ${upgrades if upgrades else "pass"}


def downgrade():
    ${downgrades if downgrades else "pass"}
'''


@pytest.fixture
def project(tmp_path: Path, bare_db_url: str, monkeypatch: pytest.MonkeyPatch) -> Config:
    """A user's alembic project on an empty database; its `Config`."""
    (tmp_path / "models.py").write_text(textwrap.dedent(MODELS))
    migrations = tmp_path / "migrations"
    (migrations / "versions").mkdir(parents=True)
    (migrations / "env.py").write_text(textwrap.dedent(ENV))
    (migrations / "script.py.mako").write_text(SCRIPT_MAKO)
    (migrations / "versions" / "0001_accounts.py").write_text(textwrap.dedent(ACCOUNTS))
    (migrations / "versions" / "0002_pgconductor.py").write_text(textwrap.dedent(WITH_PGCONDUCTOR))
    monkeypatch.syspath_prepend(str(tmp_path))  # env.py imports models
    config = Config()
    config.set_main_option("script_location", str(migrations))
    url = to_sqlalchemy_url(bare_db_url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def extension_version(url: str) -> str | None:
    rows = execute(url, "SELECT extversion FROM pg_extension WHERE extname = 'pgconductor'")
    return str(rows[0][0]) if rows else None


def user_tables(url: str) -> list[str]:
    rows = execute(
        url,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )
    return [str(row[0]) for row in rows]


def test_upgrade_autogenerate_and_downgrade(project: Config, bare_db_url: str) -> None:
    command.upgrade(project, "head")
    assert extension_version(bare_db_url) == NEWEST
    assert user_tables(bare_db_url) == ["accounts", "alembic_version", "invoices"]
    assert execute(bare_db_url, "SELECT pgconductor.invoke('alembic.t', '{}') IS NOT NULL") == [
        (True,)
    ]

    engine = sa.create_engine(to_sqlalchemy_url(bare_db_url), poolclass=sa.pool.NullPool)
    models = __import__("models")
    with engine.connect() as conn:
        filtered = MigrationContext.configure(
            conn,
            opts={
                "include_schemas": True,
                "include_name": include_name,
                "include_object": include_object,
            },
        )
        assert compare_metadata(filtered, models.metadata) == []
        unfiltered = MigrationContext.configure(conn, opts={"include_schemas": True})
        with warnings.catch_warnings():
            # Unfiltered, SQLAlchemy reflects pgconductor's own types too (cron_spec) and warns
            # that it does not know them: one more thing the filters keep away.
            warnings.simplefilter("ignore", sa.exc.SAWarning)
            diffs = compare_metadata(unfiltered, models.metadata)
        removed = [
            diff[1].fullname
            for diff in diffs
            if isinstance(diff, tuple) and diff[0] == "remove_table"
        ]
        assert "pgconductor.executions" in removed
    engine.dispose()

    generated = command.revision(project, message="nothing new", autogenerate=True)
    assert generated is not None
    assert not isinstance(generated, list)
    body = Path(generated.path).read_text()
    assert "pgconductor" not in body
    assert "op." not in body  # upgrade() and downgrade() are both `pass`

    command.downgrade(project, "base")
    assert extension_version(bare_db_url) is None
    assert user_tables(bare_db_url) == ["alembic_version"]
    assert execute(bare_db_url, "SELECT count(*) FROM alembic_version") == [(0,)]


def test_offline_mode_writes_the_statements(project: Config) -> None:
    out = io.StringIO()
    project.output_buffer = out
    command.upgrade(project, "head", sql=True)
    sql = out.getvalue()
    assert "CREATE EXTENSION IF NOT EXISTS pgconductor VERSION '0.2.0'" in sql
    assert f"ALTER EXTENSION pgconductor UPDATE TO '{NEWEST}'" in sql
    assert sql.index("CREATE TABLE accounts") < sql.index("CREATE EXTENSION")


def test_a_downgrade_of_the_extension_is_refused(project: Config, bare_db_url: str) -> None:
    command.upgrade(project, "head")
    engine = sa.create_engine(to_sqlalchemy_url(bare_db_url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            op = Operations(MigrationContext.configure(conn))
            with pytest.raises(InvalidState) as caught:
                op.upgrade_pgconductor("0.1.0")  # type: ignore[attr-defined]
            op.upgrade_pgconductor(NEWEST)  # type: ignore[attr-defined]  # already there
    finally:
        engine.dispose()
    assert str(caught.value) == (
        f"pgconductor {NEWEST} is installed and cannot be downgraded to 0.1.0"
    )
    assert caught.value.sqlstate == "55000"
    assert caught.value.hint is not None
    assert "only go forward" in caught.value.hint
    assert extension_version(bare_db_url) == NEWEST


def test_an_upgrade_before_the_install_says_what_to_do(bare_db_url: str) -> None:
    engine = sa.create_engine(to_sqlalchemy_url(bare_db_url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            op = Operations(MigrationContext.configure(conn))
            with pytest.raises(ExtensionMissing) as caught:
                op.upgrade_pgconductor()  # type: ignore[attr-defined]
    finally:
        engine.dispose()
    assert caught.value.hint == "call op.install_pgconductor() in an earlier revision"
