"""Alembic environment: runs on the connection that `adapters.sql.upgrade()` passes in.

The caller has already begun the transaction (on SQLite with BEGIN IMMEDIATE, on
PostgreSQL after an advisory lock), so that the whole upgrade is one atomic step and two
processes upgrading at once run one after the other.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "run the credits migrations through adapters.sql.upgrade(url) "
        "(or `credits db upgrade --db URL`), not the alembic command line"
    )
context.configure(
    connection=connection,
    target_metadata=None,
    version_table=context.config.get_main_option("version_table") or "alembic_version",
    # SQLite runs DDL inside our explicit BEGIN IMMEDIATE, so it is transactional too.
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
