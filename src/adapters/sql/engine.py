"""Engines, one set-up per dialect: SQLite (sqlite3) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import re
import select
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

from adapters.sql.errors import (
    UnsupportedDatabase,
)
from credits_domain import (
    InvalidRequest,
)

DEFAULT_URL = "sqlite:///credits.db"
"""The embedded default: an SQLite file in the current directory."""


DEFAULT_LOCK_WAIT_S = 30.0
"""How long a unit of work waits for another writer's lock before it counts as lost."""

# Execution option marking a read-only transaction (on SQLite it begins deferred).
READ_ONLY_OPTION = "credits_read_only"


# -- engines ---------------------------------------------------------------------------


WAL_SWITCH_ATTEMPTS = 200
WAL_SWITCH_PAUSE_S = 0.05


def _switch_to_wal(cursor: Any) -> None:
    """Switch a new file to WAL. The switch needs the file to itself and SQLite does not
    wait on the busy timeout for it: when another process is creating the same file at
    the same moment (two `credits db upgrade` at once), retry for a bounded time."""
    for attempt in range(WAL_SWITCH_ATTEMPTS):
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == WAL_SWITCH_ATTEMPTS - 1:
                raise
            time.sleep(WAL_SWITCH_PAUSE_S)


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # SQLAlchemy's documented recipe for the sqlite3 driver: stop the driver from
    # beginning transactions by itself (it would begin them late, deferred, and not at
    # all before a SELECT); `_sqlite_on_begin` emits our own BEGIN instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")  # off by default in SQLite
        # WAL: readers never block the writer nor the writer them. Persistent in the
        # file, so only a new file needs switching (in-memory databases answer 'memory').
        (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
        if mode.lower() not in ("wal", "memory"):
            _switch_to_wal(cursor)
        # FULL: a committed charge survives a power cut too, not only a process crash.
        cursor.execute("PRAGMA synchronous = FULL")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # A unit of work writes: take the write lock up front, waiting up to the busy
    # timeout. Pure reads (entries, statements) begin deferred and never wait.
    if connection.get_execution_options().get(READ_ONLY_OPTION):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _postgresql_on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    # A pooled connection the server dropped (restart, failover, idle kill) is replaced
    # at checkout instead of failing the next request. An idle connection's socket has
    # nothing to read unless the server said goodbye (a FATAL notice, then EOF): one
    # zero-timeout select() tells, where a pre-ping costs a round trip per checkout.
    if dbapi_connection.closed or dbapi_connection.broken:
        raise sa_exc.DisconnectionError("the connection was closed")
    readable, _, _ = select.select([dbapi_connection.pgconn.socket], [], [], 0)
    if readable:
        raise sa_exc.DisconnectionError("the server closed the connection while it was idle")


def create_engine(url: str, *, lock_wait_s: float = DEFAULT_LOCK_WAIT_S) -> Engine:
    """An engine set up as this adapter needs it (SQLite: WAL, foreign keys, our own
    BEGIN IMMEDIATE, busy timeout; PostgreSQL: psycopg 3, READ COMMITTED, lock timeout).

    `SqlRepository.connect()` uses it; benchmarks and operators' scripts may too.
    """
    if not lock_wait_s > 0:
        raise InvalidRequest(f"lock_wait_s must be > 0, got {lock_wait_s!r}")
    try:
        return _create_engine(url, lock_wait_s)
    except (sa_exc.ArgumentError, ValueError) as error:
        # A malformed URL, port or query option (`?timeout=abc`): SQLAlchemy and the
        # dialects raise ArgumentError or a bare ValueError while reading it.
        if isinstance(error, UnsupportedDatabase):
            raise
        words = " ".join(str(error).split())
        raise UnsupportedDatabase(
            f"not a usable database URL: {display_url(url)} ({words})"
        ) from error


def _create_engine(url: str, lock_wait_s: float) -> Engine:
    parsed = sa.make_url(url)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite":
        if driver != "pysqlite":
            raise UnsupportedDatabase(
                f"SQLite is supported through sqlite3 only, got {display_url(url)}"
            )
        connect_args: dict[str, Any] = {"timeout": lock_wait_s}  # the busy timeout
        options: dict[str, Any] = {}
        if parsed.database in (None, "", ":memory:"):
            # An in-memory database lives in one connection, so SQLite's own locks cannot
            # separate two units of work: a pool of exactly that one connection hands it
            # to one unit of work at a time; the others wait up to the lock wait, then
            # lose (ConcurrencyConflict). Sharing it at once (StaticPool) let a second
            # unit of work's failed BEGIN, and its rollback on return, undo the first's
            # open transaction, whose later statements then committed one by one.
            connect_args["check_same_thread"] = False
            options.update(
                poolclass=QueuePool, pool_size=1, max_overflow=0, pool_timeout=lock_wait_s
            )
        engine = sa.create_engine(parsed, connect_args=connect_args, **options)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, not psycopg2
        elif driver != "psycopg":
            raise UnsupportedDatabase(
                "PostgreSQL is supported through psycopg 3 (postgresql+psycopg://), "
                f"got {display_url(url)}"
            )
        # READ COMMITTED (the server default) with row locks; a lock wait is bounded,
        # and its expiry (55P03) counts as a lost race. Server options given in the URL
        # (`?options=-csearch_path%3Dbilling`) are kept.
        given = parsed.query.get("options", "")
        options_text = " ".join([*((given,) if isinstance(given, str) else given)])
        lock_timeout = f"-c lock_timeout={int(lock_wait_s * 1000)}"
        engine = sa.create_engine(
            parsed.difference_update_query(["options"]),
            isolation_level="READ COMMITTED",
            connect_args={"options": f"{options_text} {lock_timeout}".strip()},
        )
        event.listen(engine, "checkout", _postgresql_on_checkout)
        return engine
    raise UnsupportedDatabase(
        f"unsupported database {backend!r} in {display_url(url)}; use sqlite:///path.db "
        "or postgresql+psycopg://user@host/db"
    )


# `scheme://user:password@...`: what to hide in a URL that SQLAlchemy cannot read.
_PASSWORD = re.compile(r"(://[^/@:]*:)[^@/]*@")


def display_url(url: str) -> str:
    """The URL without its password (for messages and logs); never raises."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (sa_exc.ArgumentError, ValueError):
        return repr(_PASSWORD.sub(r"\1***@", url))


def describe_url(url: str) -> str:
    """Where a database lives, for people: a file's absolute path, or the URL."""
    try:
        parsed = sa.make_url(url)
        backend = parsed.get_backend_name()
    except (sa_exc.ArgumentError, ValueError):
        return display_url(url)
    if backend != "sqlite":
        return display_url(url)
    if parsed.database in (None, "", ":memory:"):
        return "SQLite, in memory (gone when the command ends)"
    return f"SQLite file {Path(parsed.database).resolve()}"


def sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL (None for another database or an in-memory one)."""
    try:
        parsed = sa.make_url(url)
        backend = parsed.get_backend_name()
    except (sa_exc.ArgumentError, ValueError):
        return None
    if backend != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)
