"""SQL adapter errors, and the one place where driver errors become domain errors.

No SQLAlchemy, psycopg, sqlite3 or Alembic exception leaves this adapter: a lost race
is `ConcurrencyConflict` (the service retries it), a database that cannot be reached is
`StorageUnavailable`, anything else the database refuses is `StorageError` (a missing
table or column, and a connection refused for good, say what to fix), our own bind
processing refusing a value is the domain error it raised. Every message is one line:
the operation, the database's URL without its password, the driver's words, what to do.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Collection, Iterator

import sqlalchemy as sa
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


def _is_conflict(error: sa_exc.DBAPIError | sqlite3.Error) -> bool:
    original = error.orig if isinstance(error, sa_exc.DBAPIError) else error
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
# A failed connection carries no SQLSTATE in psycopg, only libpq's text (in the
# server's language). Most failures pass with time (no route, refused, the server
# starting, stopping or out of connection slots); these do not (no such database or
# role, a wrong or missing password, no pg_hba.conf entry): a configuration to fix, not
# an outage to wait out. An unrecognised text counts as an outage.
_PERMANENT_CONNECT_REFUSALS = (
    "does not exist",
    "authentication failed",
    "no password supplied",
    "no pg_hba.conf entry",
    "permission denied",
)
# PostgreSQL: undefined table, undefined column; SQLite says it in words.
_MISSING_SCHEMA_SQLSTATES = frozenset({"42P01", "42703"})
_MISSING_SCHEMA_SQLITE_WORDS = ("no such table", "no such column")


def _unavailable(error: sa_exc.DBAPIError | sqlite3.Error) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True  # the driver saw the connection die under it
    original = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate is not None:
        return str(sqlstate).startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)
    name = getattr(original, "sqlite_errorname", None)
    if name is not None:
        return name in _UNAVAILABLE_SQLITE_ERRORS or name.startswith("SQLITE_IOERR")
    if isinstance(original, sqlite3.Error):
        return False
    # psycopg raises OperationalError without a SQLSTATE when it cannot connect at all.
    if not isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return False
    return not _refused_connection(error)


def _refused_connection(error: sa_exc.DBAPIError | sqlite3.Error) -> bool:
    """The server (or libpq) refused to connect for a reason that does not pass."""
    if not isinstance(error, sa_exc.OperationalError) or isinstance(error.orig, sqlite3.Error):
        return False
    if getattr(error.orig, "sqlstate", None) is not None:
        return False
    words = str(error.orig)
    return any(refusal in words for refusal in _PERMANENT_CONNECT_REFUSALS)


def _missing_schema(error: sa_exc.DBAPIError | sqlite3.Error) -> bool:
    original = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in _MISSING_SCHEMA_SQLSTATES
    return isinstance(original, sqlite3.OperationalError) and str(original).startswith(
        _MISSING_SCHEMA_SQLITE_WORDS
    )


def _words(error: BaseException) -> str:
    """The driver's message on one line (psycopg's run over several), with its class."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _domain_error(
    error: sa_exc.DBAPIError | sqlite3.Error,
    what: str,
    url: sa.URL | None,
    outcome_unknown: bool,
) -> CreditsError:
    original = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    said = _words(error if original is None else original)
    if _is_conflict(error):
        return ConcurrencyConflict(f"{what} lost a race with another writer ({said}); retry")
    database = "the database" if url is None else f"the database {_display(url)}"
    if _unavailable(error):
        then = (
            "; whether it committed is unknown: retry with the same idempotency key"
            if outcome_unknown
            else "; retry later"
        )
        return StorageUnavailable(
            f"{what}: {database} cannot be reached or used right now ({said}){then}"
        )
    if _refused_connection(error):
        return StorageError(
            f"{what}: {database} refused the connection ({said}); check the URL's "
            "database name, user and password"
        )
    if _missing_schema(error):
        return StorageError(
            f"{what}: {database} lacks a table or column this version of credits uses "
            f"({said}); its schema was changed outside credits or is not at this version's "
            "revision (`credits db upgrade` applies the migrations)"
        )
    return StorageError(f"{what}: {database} refused ({said})")


def _display(url: sa.URL) -> str:
    """A URL for messages: without its password."""
    return url.render_as_string(hide_password=True)


@contextlib.contextmanager
def translated(
    what: str, *, url: sa.URL | None = None, outcome_unknown: bool = False
) -> Iterator[None]:
    """The one place where driver errors become domain errors: a lost race is
    ConcurrencyConflict (the service retries it), an unreachable database is
    StorageUnavailable, anything else the database refused is StorageError.

    `what` names the operation and `url` the database in the message (one line);
    `outcome_unknown` says the operation was a commit, whose fate a lost connection
    leaves unknown.
    """
    try:
        yield
    except sa_exc.DBAPIError as error:
        raise _domain_error(error, what, url, outcome_unknown) from error
    except sqlite3.Error as error:  # raised by the driver outside SQLAlchemy's wrapping
        raise _domain_error(error, what, url, outcome_unknown) from error
    except sa_exc.StatementError as error:
        # Our own bind processing refused a value (a naive instant): SQLAlchemy wraps
        # it; the caller is owed the domain error itself, as the read methods raise it.
        if isinstance(error.orig, CreditsError):
            raise error.orig from None
        raise StorageError(f"{what}: {_words(error)}") from error
    except sa_exc.TimeoutError as error:
        # The pool had no connection free for the whole lock wait: on an in-memory
        # database, another unit of work held the one connection that long.
        raise ConcurrencyConflict(
            f"{what} waited too long for the database ({_words(error)}); retry"
        ) from error
    except sa_exc.SQLAlchemyError as error:
        raise StorageError(f"{what}: {_words(error)}") from error
