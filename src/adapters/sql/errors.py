"""SQL adapter errors, and the one place where driver errors become domain errors.

No SQLAlchemy, psycopg or sqlite3 exception leaves this adapter: a lost race is
`ConcurrencyConflict` (the service retries it), a database that cannot be reached is
`StorageUnavailable`, our own bind processing refusing a value is the domain error it
raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator

from sqlalchemy import exc as sa_exc

from credits_domain import (
    ConcurrencyConflict,
    CreditsError,
    StorageError,
    StorageUnavailable,
)

# Driver errors that mean "another writer won": the service retries the transaction.
_CONFLICT_SQLSTATES = frozenset(
    {
        "23505",  # unique_violation: a concurrent insert of the same key
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available: lock_timeout expired
    }
)
_CONFLICT_SQLITE_ERRORS = frozenset(
    {
        "SQLITE_BUSY",  # the write lock stayed taken for the whole busy timeout
        "SQLITE_BUSY_SNAPSHOT",
        "SQLITE_BUSY_RECOVERY",
        "SQLITE_BUSY_TIMEOUT",
        "SQLITE_LOCKED",
        "SQLITE_LOCKED_SHAREDCACHE",
        "SQLITE_CONSTRAINT_UNIQUE",
        "SQLITE_CONSTRAINT_PRIMARYKEY",
    }
)


# -- errors ----------------------------------------------------------------------------


class SchemaOutOfDate(CreditsError):
    """The database's schema is older than this version of the package (or empty)."""

    def __init__(self, url: str, current: Collection[str], head: Collection[str]) -> None:
        found = ", ".join(sorted(current)) or "none (empty database)"
        super().__init__(
            f"the database {url} has schema revision {found}, this version of credits "
            f"needs {', '.join(sorted(head))}; run `credits db upgrade --db {url}`"
        )
        self.url = url
        self.current = tuple(sorted(current))
        self.head = tuple(sorted(head))


class DatabaseNotFound(SchemaOutOfDate):
    """The SQLite file does not exist. A SchemaOutOfDate (it holds no schema), so that
    callers who upgrade on SchemaOutOfDate create it; only the upgrade may create it."""

    def __init__(self, url: str, path: str, head: Collection[str]) -> None:
        CreditsError.__init__(
            self,
            f"there is no database at {path} (no such file); to create it, "
            f"run `credits db upgrade --db {url}`",
        )
        self.url = url
        self.path = path
        self.current = ()
        self.head = tuple(sorted(head))


class UnknownSchemaRevision(CreditsError):
    """The database's schema is newer than this version of the package knows."""

    def __init__(self, url: str, current: Collection[str]) -> None:
        super().__init__(
            f"the database {url} has schema revision {', '.join(sorted(current))}, unknown "
            "to this version of credits; upgrade the credits-domain package"
        )
        self.url = url


class ApiKeysTableMissing(CreditsError):
    """The database has no API keys table: its migrations have not been applied."""


class UnsupportedDatabase(CreditsError, ValueError):
    """The URL names a database or driver this adapter does not support."""


# -- driver errors ---------------------------------------------------------------------


def _is_conflict(error: sa_exc.DBAPIError) -> bool:
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None)  # psycopg
    if sqlstate is not None:
        return sqlstate in _CONFLICT_SQLSTATES
    return getattr(original, "sqlite_errorname", None) in _CONFLICT_SQLITE_ERRORS


# PostgreSQL SQLSTATE classes and codes that mean "the server is not there right now":
# 08 connection exception, 53 insufficient resources, 57P01..57P03 shutdown or startup.
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P01", "57P02", "57P03")
_UNAVAILABLE_SQLITE_ERRORS = frozenset(
    {"SQLITE_CANTOPEN", "SQLITE_FULL", "SQLITE_PROTOCOL", "SQLITE_READONLY", "SQLITE_NOLFS"}
)


def _unavailable(error: sa_exc.DBAPIError) -> bool:
    if error.connection_invalidated:
        return True  # the driver saw the connection die under it
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate is not None:
        return str(sqlstate).startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)
    name = getattr(original, "sqlite_errorname", None)
    if name is not None:
        return name in _UNAVAILABLE_SQLITE_ERRORS or name.startswith("SQLITE_IOERR")
    # psycopg raises OperationalError without a SQLSTATE when it cannot connect at all.
    return isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError))


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """The one place where driver errors become domain errors: a lost race is
    ConcurrencyConflict (the service retries it), an unreachable database is
    StorageUnavailable, anything else the database refused is StorageError."""
    try:
        yield
    except sa_exc.DBAPIError as error:
        if _is_conflict(error):
            raise ConcurrencyConflict(
                f"{what} lost a race with another writer: {error.orig}"
            ) from error
        words = " ".join(str(error.orig).split())
        if _unavailable(error):
            raise StorageUnavailable(
                f"{what}: the database cannot be reached or used right now "
                f"({type(error.orig).__name__}: {words}); retry later"
            ) from error
        raise StorageError(
            f"{what}: the database refused ({type(error.orig).__name__}: {words})"
        ) from error
    except sa_exc.StatementError as error:
        # Our own bind processing refused a value (a naive instant): SQLAlchemy wraps
        # it; the caller is owed the domain error itself, as the read methods raise it.
        if isinstance(error.orig, CreditsError):
            raise error.orig from None
        raise StorageError(f"{what}: {error}") from error
    except sa_exc.TimeoutError as error:
        # The pool had no connection free for the whole lock wait: on an in-memory
        # database, another unit of work held the one connection that long.
        raise ConcurrencyConflict(f"{what} waited too long for the database: {error}") from error
    except sa_exc.SQLAlchemyError as error:
        raise StorageError(f"{what}: {type(error).__name__}: {error}") from error
