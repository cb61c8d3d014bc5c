"""The only package with SQL text: `SqlDatabaseClient` and what it is made of.

| module | job |
|---|---|
| `statements` | every SQL statement, for SQLAlchemy and for psycopg |
| `rows` | bind parameters in, rows out as the `pgconductor.types` dataclasses |
| `runner` | where a statement runs (pooled psycopg connection, SQLAlchemy, the caller's), retries |
| `client` | `SqlDatabaseClient`: one typed method per SQL function |
"""

from __future__ import annotations

from pgconductor.db.client import SqlDatabaseClient
from pgconductor.db.statements import SCHEMA_LOCK_KEY
from pgconductor.encoding import to_json, to_sqlalchemy_url
from pgconductor.protocol import DatabaseClient, SchemaClient
from pgconductor.retry import RetryPolicy

__all__ = [
    "SCHEMA_LOCK_KEY",
    "DatabaseClient",
    "RetryPolicy",
    "SchemaClient",
    "SqlDatabaseClient",
    "to_json",
    "to_sqlalchemy_url",
]
