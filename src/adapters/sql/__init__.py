"""SQL storage: the Repository port (and the API key store) on SQLAlchemy 2 Core, for
SQLite (the embedded default) and PostgreSQL.

    repository = SqlRepository.connect("sqlite:///credits.db", migrate=True)

The package's rooms, in the order a statement travels:
- `schema`: the tables and the UTC instant column type;
- `statements`: every statement of the charging path, built once;
- `codecs`: rows to domain objects and back (plans and results as JSON);
- `engine`: one set-up per dialect (SQLite: WAL, BEGIN IMMEDIATE; PostgreSQL: psycopg 3);
- `errors`: where driver errors become domain errors (none escapes this package);
- `migrate` and `migrations/`: the schema's Alembic revisions;
- `unit_of_work`, `repository`: the port itself; `api_keys`: the API key store;
  `webhooks`: the webhook endpoint registry (R24).
"""

from adapters.sql.api_keys import SqlApiKeyStore
from adapters.sql.engine import (
    DEFAULT_LOCK_WAIT_S,
    DEFAULT_URL,
    create_engine,
    describe_url,
    display_url,
    sqlite_file,
)
from adapters.sql.errors import (
    DatabaseNotFound,
    SchemaOutOfDate,
    UnknownSchemaRevision,
    UnsupportedDatabase,
)
from adapters.sql.migrate import Upgraded, schema_head, schema_revision, schema_script, upgrade
from adapters.sql.repository import SqlRepository
from adapters.sql.schema import UtcInstant
from adapters.sql.unit_of_work import SqlUnitOfWork
from adapters.sql.webhooks import SqlEndpointStore

__all__ = [
    "DEFAULT_LOCK_WAIT_S",
    "DEFAULT_URL",
    "DatabaseNotFound",
    "SchemaOutOfDate",
    "SqlApiKeyStore",
    "SqlEndpointStore",
    "SqlRepository",
    "SqlUnitOfWork",
    "UnknownSchemaRevision",
    "UnsupportedDatabase",
    "Upgraded",
    "UtcInstant",
    "create_engine",
    "describe_url",
    "display_url",
    "schema_head",
    "schema_revision",
    "schema_script",
    "sqlite_file",
    "upgrade",
]
