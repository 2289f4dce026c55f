"""The schema's revisions: the shipped Alembic migrations, applied in one transaction."""

from __future__ import annotations

import functools

import attrs
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy.engine import Engine

from adapters.sql.engine import (
    READ_ONLY_OPTION,
    create_engine,
    display_url,
)
from adapters.sql.errors import (
    SchemaOutOfDate,
    UnknownSchemaRevision,
    translated,
)
from credits_domain import InvalidRequest

VERSION_TABLE = "credits_alembic_version"  # not alembic_version: the host app may use Alembic
MIGRATIONS = "adapters.sql:migrations"  # Alembic's script_location, as a package resource

# -- migrations ------------------------------------------------------------------------

# Any fixed number: it names the advisory lock that serialises concurrent upgrades.
_MIGRATION_LOCK_KEY = 0x63726564  # "cred"


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.set_main_option("version_table", VERSION_TABLE)
    return config


@functools.cache
def schema_script() -> ScriptDirectory:
    """The shipped migrations (Alembic's script directory)."""
    return ScriptDirectory.from_config(_alembic_config())


def schema_head() -> tuple[str, ...]:
    """The revision(s) this version of the package expects."""
    return tuple(schema_script().get_heads())


def _known_revisions() -> set[str]:
    return {script.revision for script in schema_script().walk_revisions()}


def _current(connection: sa.Connection) -> tuple[str, ...]:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return tuple(context.get_current_heads())


def schema_revision(engine: Engine) -> tuple[str, ...]:
    """The revision(s) the database is at; empty for an empty database."""
    with (
        translated("reading the schema's revision", url=engine.url),
        engine.connect() as connection,
    ):
        connection.execution_options(**{READ_ONLY_OPTION: True})
        return _current(connection)


def upgrade_engine(engine: Engine, revision: str) -> None:
    shown = engine.url.render_as_string(hide_password=True)
    # On SQLite: BEGIN IMMEDIATE, one writer at a time.
    with translated("upgrading the schema", url=engine.url), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # PostgreSQL: a second process upgrading at the same time waits here for the
            # first to commit, then finds the schema at head and does nothing.
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
        # Alembic would only say it "can't locate revision" of a newer database.
        current = set(_current(connection))
        if current - _known_revisions():
            raise UnknownSchemaRevision(shown, current)
        config = _alembic_config()
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, revision)
        except (CommandError, RevisionError) as error:
            known = ", ".join(sorted(_known_revisions()))
            raise InvalidRequest(
                f"cannot upgrade the schema of {shown} to revision {revision!r} "
                f"({' '.join(str(error).split())}); give 'head', '+N' or one of: {known}"
            ) from error


@attrs.frozen(kw_only=True)
class Upgraded:
    """What an upgrade did: the revision(s) before and after (equal: nothing to do)."""

    before: tuple[str, ...]
    after: tuple[str, ...]


def upgrade(url: str, *, revision: str = "head") -> Upgraded:
    """Bring the database's schema to `revision` (default: the newest), in one transaction."""
    engine = create_engine(url)
    try:
        before = schema_revision(engine)
        upgrade_engine(engine, revision)
        return Upgraded(before=before, after=schema_revision(engine))
    finally:
        engine.dispose()


def require_head(engine: Engine, url: str) -> None:
    current, head = set(schema_revision(engine)), set(schema_head())
    if current == head:
        return
    if current - _known_revisions():
        raise UnknownSchemaRevision(display_url(url), current)
    raise SchemaOutOfDate(display_url(url), current, head)
