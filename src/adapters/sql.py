"""SQL storage: the Repository port on SQLAlchemy 2 Core, for SQLite and PostgreSQL.

    repository = SqlRepository.connect("sqlite:///credits.db", migrate=True)
    service = CreditService(repository=repository, verifier=..., clock=...)

One code path serves both databases; a statement differs per dialect only where a
dialect needs it, and says why. SQLite (the stdlib `sqlite3` driver) is the embedded
default; PostgreSQL goes through psycopg 3 (`postgresql+psycopg://...`).

Concurrency (the port's promise: while a unit of work has loaded an account's wallet,
no other unit of work changes that account):
- PostgreSQL, READ COMMITTED: `load_wallet` is `SELECT ... FOR UPDATE` on the wallet
  row. Every writer of an account loads its wallet first, so the writers of one account
  queue on that row lock and see each other's committed rows; writers of different
  accounts never wait for each other. A lock wait is bounded by `lock_timeout`.
- SQLite: one writer at a time for the whole file. Every unit of work starts with
  `BEGIN IMMEDIATE`, which takes the write lock up front (a deferred transaction that
  reads and then writes would fail at once with SQLITE_BUSY instead of waiting); WAL lets
  readers go on meanwhile; the busy timeout bounds the wait.
- Belt and braces: `save_wallet` updates the row only `WHERE version = <loaded version>`.
- A lost race (unique violation, serialization failure, deadlock, lock timeout,
  SQLITE_BUSY after the timeout) surfaces as `ConcurrencyConflict`, which the service
  retries a bounded number of times.
A unit of work never keeps its transaction after it exits; the service opens none while
the verifier runs (R16).

Bounded work: everything is read by key through an index; a request's ownership is
looked up in chunks of `OWNERSHIP_CHUNK` contacts, and its ledger entries, ownership
records and holds are written with one executemany each. Nothing ever loads an
account's whole ledger or ownership set.

The schema is created and upgraded by the Alembic migrations shipped in
`adapters.sql_migrations`; its constraints and triggers enforce the rules by themselves
(see the migrations). This module's table objects describe the columns it reads and
writes, for building statements.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import sqlite3
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Dialect, Engine, Row
from sqlalchemy.pool import QueuePool

from credits_domain import (
    AlreadyRefunded,
    Cause,
    Channel,
    ChargeResult,
    ConcurrencyConflict,
    Contact,
    Credits,
    CreditsError,
    EntryKind,
    Hold,
    IdempotencyRecord,
    InvalidRequest,
    ItemResult,
    LedgerEntry,
    NotCharged,
    Operation,
    Outcome,
    Ownership,
    Plan,
    Price,
    Status,
    Verdict,
    Wallet,
)
from credits_domain.errors import invariant
from credits_domain.periods import require_utc

__all__ = [
    "DEFAULT_URL",
    "SchemaOutOfDate",
    "SqlRepository",
    "SqlUnitOfWork",
    "UnknownSchemaRevision",
    "UnsupportedDatabase",
    "UtcInstant",
    "create_engine",
    "schema_head",
    "schema_revision",
    "schema_script",
    "upgrade",
]

DEFAULT_URL = "sqlite:///credits.db"
"""The embedded default: an SQLite file in the current directory."""

VERSION_TABLE = "credits_alembic_version"  # not alembic_version: the host app may use Alembic
MIGRATIONS = "adapters:sql_migrations"  # Alembic's script_location, as a package resource

OWNERSHIP_CHUNK = 500
"""Contacts per ownership lookup (`IN` list): bounded statements, few round trips."""

DEFAULT_LOCK_WAIT_S = 30.0
"""How long a unit of work waits for another writer's lock before it counts as lost."""

# Execution option marking a read-only transaction (on SQLite it begins deferred).
READ_ONLY_OPTION = "credits_read_only"

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


class UnknownSchemaRevision(CreditsError):
    """The database's schema is newer than this version of the package knows."""

    def __init__(self, url: str, current: Collection[str]) -> None:
        super().__init__(
            f"the database {url} has schema revision {', '.join(sorted(current))}, unknown "
            "to this version of credits; upgrade the credits-domain package"
        )
        self.url = url


class UnsupportedDatabase(CreditsError, ValueError):
    """The URL names a database or driver this adapter does not support."""


# -- column types ----------------------------------------------------------------------


class UtcInstant(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC instant.

    PostgreSQL: TIMESTAMPTZ. SQLite has no time type: the instant is stored as
    fixed-width ISO-8601 UTC text with microseconds, so that comparing and ordering the
    text in SQL is comparing and ordering the instants.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(32))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        utc = require_utc(value, "a stored instant")
        if dialect.name == "sqlite":
            return utc.isoformat(timespec="microseconds")
        return utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        invariant(isinstance(value, datetime), "a stored instant reads back as a datetime")
        return require_utc(value, "a stored instant")


_INSTANT = UtcInstant()
_JSON = sa.JSON(none_as_null=True)  # a Python None is SQL NULL, not the JSON text 'null'

metadata = sa.MetaData()

wallets = sa.Table(
    "credits_wallets",
    metadata,
    sa.Column("account", sa.String(200), primary_key=True),
    sa.Column("plan", _JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("anchor", UtcInstant, nullable=False),
    sa.Column("period_index", sa.Integer, nullable=False),
    sa.Column("ends_at", UtcInstant),
    sa.Column("pending_plan", _JSON),
    sa.Column("email_balance", sa.BigInteger, nullable=False),
    sa.Column("mobile_balance", sa.BigInteger, nullable=False),
    sa.Column("next_seq", sa.BigInteger, nullable=False),
    sa.Column("next_hold_no", sa.BigInteger, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("next_boundary_at", UtcInstant),
)

holds = sa.Table(
    "credits_holds",
    metadata,
    sa.Column("account", sa.String(200), primary_key=True),
    sa.Column("hold_id", sa.String(230), primary_key=True),
    sa.Column("email_credits", sa.BigInteger, nullable=False),
    sa.Column("mobile_credits", sa.BigInteger, nullable=False),
    sa.Column("created_at", UtcInstant, nullable=False),
    sa.Column("expires_at", UtcInstant, nullable=False),
)

ledger = sa.Table(
    "credits_ledger",
    metadata,
    sa.Column("account", sa.String(200), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("pool", sa.String(16), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("at", UtcInstant, nullable=False),
    sa.Column("balance_after", sa.BigInteger, nullable=False),
    sa.Column("operation", sa.String(16), nullable=False),
    sa.Column("datum", sa.String(330)),
    sa.Column("plan", sa.Text),
    sa.Column("period", sa.Integer),
    sa.Column("idempotency_key", sa.String(255)),
    sa.Column("destination", sa.String(100)),
    sa.Column("note", sa.Text),
)

ownership = sa.Table(
    "credits_ownership",
    metadata,
    sa.Column("account", sa.String(200), primary_key=True),
    sa.Column("channel", sa.String(16), primary_key=True),
    sa.Column("value", sa.String(320), primary_key=True),
    sa.Column("pool", sa.String(16), nullable=False),
    sa.Column("credits", sa.BigInteger, nullable=False),
    sa.Column("charged_at", UtcInstant, nullable=False),
    sa.Column("entry_seq", sa.BigInteger, nullable=False),
    sa.Column("refunded_at", UtcInstant),
)

idempotency = sa.Table(
    "credits_idempotency",
    metadata,
    sa.Column("account", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("hold_id", sa.String(230)),
    sa.Column("created_at", UtcInstant, nullable=False),
    sa.Column("result", _JSON),
)


# -- statements, built once: a call binds parameters, it never rebuilds or re-keys SQL ----

_P = sa.bindparam
_SELECT_WALLET = sa.select(wallets).where(wallets.c.account == _P("account")).with_for_update()
_INSERT_WALLET = sa.insert(wallets)
# Parameters named after columns are the SET clause; the WHERE takes prefixed names.
_UPDATE_WALLET = sa.update(wallets).where(
    wallets.c.account == _P("w_account"), wallets.c.version == _P("w_version")
)
_SELECT_HOLDS = sa.select(holds).where(holds.c.account == _P("account"))
_SELECT_HOLD_IDS = sa.select(holds.c.hold_id).where(holds.c.account == _P("account"))
_INSERT_HOLDS = sa.insert(holds)
_DELETE_HOLDS = sa.delete(holds).where(
    holds.c.account == _P("account"), holds.c.hold_id.in_(_P("hold_ids", expanding=True))
)
_SELECT_OWNED = sa.select(ownership).where(
    ownership.c.account == _P("account"),
    ownership.c.channel == _P("channel"),
    ownership.c.value.in_(_P("values", expanding=True)),
)
# PostgreSQL: the same lookup as one primary-key probe per value, whatever the planner's
# statistics. With `value IN (...)`, PostgreSQL 15 keys the index scan on (account,
# channel) only and filters the values, reading the account's whole ownership history
# per lookup when statistics are missing (a fresh table before autovacuum's first
# ANALYZE: a batch of 10,000 then took 17 s at 20,000 owned data), or picks a seq scan
# when they are skewed. A LATERAL subquery with LIMIT is never flattened into a join, so
# each value is a nested-loop probe of the full key: O(log n) per value, with or without
# statistics (tests/test_sql_lookup_plans.py checks the plan). SQLite probes the key once
# per IN value by itself.
_WANTED = (
    sa.func.unnest(sa.cast(_P("values"), postgresql.ARRAY(sa.String)))
    .table_valued("value")
    .render_derived(name="wanted")
)
_PROBE = (
    sa.select(ownership)
    .where(
        ownership.c.account == _P("account"),
        ownership.c.channel == _P("channel"),
        ownership.c.value == _WANTED.c.value,
    )
    .limit(1)  # at most one row per key anyway; the LIMIT is what keeps the probe a probe
    .lateral("found")
)
_SELECT_OWNED_POSTGRESQL = sa.select(_PROBE).select_from(_WANTED).join(_PROBE, sa.true())
_OWNERSHIP_KEY = (
    ownership.c.account == _P("o_account"),
    ownership.c.channel == _P("o_channel"),
    ownership.c.value == _P("o_value"),
)
_MARK_REFUNDED = sa.update(ownership).where(*_OWNERSHIP_KEY, ownership.c.refunded_at.is_(None))
_SELECT_REFUNDED_AT = sa.select(ownership.c.refunded_at).where(*_OWNERSHIP_KEY)
_SELECT_RECORD = sa.select(idempotency).where(
    idempotency.c.account == _P("account"), idempotency.c.key == _P("key")
)
_UPDATE_RECORD = sa.update(idempotency).where(
    idempotency.c.account == _P("r_account"), idempotency.c.key == _P("r_key")
)
_INSERT_RECORD = sa.insert(idempotency)


_MISSING = object()


class _RowInsert:
    """An INSERT of every column of one table, for many rows: Core's own statement,
    compiled once per dialect, sent with one executemany at the driver level.

    Why not `connection.execute(sa.insert(table), rows)`: that builds each row's
    parameters anew and runs each column's bind processor per row, which was about a
    third of the adapter's time in a batch of 10,000 charges (bench/bench_sql.py). Here
    a row is built once, directly as the driver takes it; the instants go through
    `UtcInstant.process_bind_param`, exactly as SQLAlchemy would send them. Only ledger
    entries and ownership records, the rows a batch multiplies, are written this way.
    """

    def __init__(self, table: sa.Table, instants: frozenset[str]) -> None:
        self._table = table
        self._instants = instants
        # (dialect, paramstyle) -> (SQL text, parameter order if positional)
        self._compiled: dict[tuple[str, str], tuple[str, tuple[str, ...] | None]] = {}

    def _statement(self, dialect: Dialect) -> tuple[str, tuple[str, ...] | None]:
        style = (dialect.name, dialect.paramstyle)
        found = self._compiled.get(style)
        if found is None:
            keys = [column.key for column in self._table.c]
            compiled = sa.insert(self._table).compile(dialect=dialect, column_keys=keys)
            positions = tuple(compiled.positiontup or ()) if compiled.positional else None
            found = self._compiled[style] = (compiled.string, positions)
        return found

    def execute(self, connection: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert `rows` (column key -> domain value; converted in place: pass fresh dicts)."""
        dialect = connection.dialect
        sql, positions = self._statement(dialect)
        # A batch's rows share a few instants (its `now`, None): convert each once.
        converted: dict[datetime | None, Any] = {}
        for row in rows:
            for key in self._instants:
                instant = row[key]
                value = converted.get(instant, _MISSING)
                if value is _MISSING:
                    value = converted[instant] = _INSTANT.process_bind_param(instant, dialect)
                row[key] = value
        params: list[Any] = rows
        if positions is not None:
            as_tuple = operator.itemgetter(*positions)  # a table has several columns
            params = [as_tuple(row) for row in rows]
        connection.exec_driver_sql(sql, params)


_INSERT_ENTRIES = _RowInsert(ledger, frozenset({"at"}))
_INSERT_OWNERSHIP = _RowInsert(ownership, frozenset({"charged_at", "refunded_at"}))


# -- plans and results as JSON (plans are data: the Plan itself is stored) -------------


def _credits_to_json(credits: Credits) -> dict[str, int]:
    return {"email": credits.email, "mobile": credits.mobile}


def _credits_from_json(data: Mapping[str, Any]) -> Credits:
    return Credits(email=int(data["email"]), mobile=int(data["mobile"]))


def plan_to_json(plan: Plan) -> dict[str, Any]:
    return {
        "name": plan.name,
        "monthly": _credits_to_json(plan.monthly),
        "prices": {
            channel.value: {"pool": price.pool.value, "credits": price.credits}
            for channel, price in plan.prices.items()
        },
        "rollover_cap": None if plan.rollover_cap is None else _credits_to_json(plan.rollover_cap),
    }


def plan_from_json(data: Mapping[str, Any]) -> Plan:
    cap = data["rollover_cap"]
    return Plan(
        name=data["name"],
        monthly=_credits_from_json(data["monthly"]),
        prices={
            Channel(channel): Price(pool=Channel(price["pool"]), credits=int(price["credits"]))
            for channel, price in data["prices"].items()
        },
        rollover_cap=None if cap is None else _credits_from_json(cap),
    )


def _optional_value(member: Verdict | Channel | None) -> str | None:
    return None if member is None else member.value


def result_to_json(result: ChargeResult) -> dict[str, Any]:
    """A ChargeResult as JSON; items are compact arrays, since a batch may hold 10,000."""
    return {
        "operation": result.operation.value,
        "idempotency_key": result.idempotency_key,
        "replayed": result.replayed,
        "items": [
            [
                item.contact.channel.value,
                item.contact.value,
                item.outcome.value,
                _optional_value(item.verdict),
                _optional_value(item.pool),
                item.credits,
            ]
            for item in result.items
        ],
    }


def result_from_json(data: Mapping[str, Any]) -> ChargeResult:
    items = []
    for channel, value, outcome, verdict, pool, credits in data["items"]:
        items.append(
            ItemResult(
                contact=Contact(Channel(channel), value),
                outcome=Outcome(outcome),
                verdict=None if verdict is None else Verdict(verdict),
                pool=None if pool is None else Channel(pool),
                credits=int(credits),
            )
        )
    return ChargeResult(
        operation=Operation(data["operation"]),
        items=tuple(items),
        idempotency_key=data["idempotency_key"],
        replayed=bool(data["replayed"]),
    )


# -- rows <-> domain objects -----------------------------------------------------------


def _wallet_values(wallet: Wallet) -> dict[str, Any]:
    return {
        "plan": plan_to_json(wallet.plan),
        "status": wallet.status.value,
        "anchor": wallet.anchor,
        "period_index": wallet.period_index,
        "ends_at": wallet.ends_at,
        "pending_plan": None if wallet.pending_plan is None else plan_to_json(wallet.pending_plan),
        "email_balance": wallet.balances[Channel.EMAIL],
        "mobile_balance": wallet.balances[Channel.MOBILE],
        "next_seq": wallet.next_seq,
        "next_hold_no": wallet.next_hold_no,
        "next_boundary_at": wallet.next_boundary_at,
    }


def _hold_from_row(row: Row[Any]) -> Hold:
    return Hold(
        hold_id=row.hold_id,
        credits=Credits(email=row.email_credits, mobile=row.mobile_credits),
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


def _hold_values(account: str, hold: Hold) -> dict[str, Any]:
    return {
        "account": account,
        "hold_id": hold.hold_id,
        "email_credits": hold.credits.email,
        "mobile_credits": hold.credits.mobile,
        "created_at": hold.created_at,
        "expires_at": hold.expires_at,
    }


def _wallet_from_rows(row: Row[Any], hold_rows: Sequence[Row[Any]]) -> Wallet:
    return Wallet.restore(
        account=row.account,
        plan=plan_from_json(row.plan),
        status=Status(row.status),
        anchor=row.anchor,
        period_index=row.period_index,
        ends_at=row.ends_at,
        pending_plan=None if row.pending_plan is None else plan_from_json(row.pending_plan),
        balances={Channel.EMAIL: row.email_balance, Channel.MOBILE: row.mobile_balance},
        holds={hold.hold_id: hold for hold in map(_hold_from_row, hold_rows)},
        next_seq=row.next_seq,
        next_hold_no=row.next_hold_no,
        version=row.version,
    )


# The builders of rows that a batch multiplies read an enum member's value as `_value_`
# (the documented sunder attribute): `.value` is a Python-level descriptor, several times
# slower, and ran 50,000 times in a batch of 10,000 charges.


def _entry_values(entry: LedgerEntry) -> dict[str, Any]:
    cause = entry.cause
    return {
        "account": entry.account,
        "seq": entry.seq,
        "kind": entry.kind._value_,
        "pool": entry.pool._value_,
        "amount": entry.amount,
        "at": entry.at,
        "balance_after": entry.balance_after,
        "operation": cause.operation._value_,
        "datum": cause.datum,
        "plan": cause.plan,
        "period": cause.period,
        "idempotency_key": cause.idempotency_key,
        "destination": cause.destination,
        "note": cause.note,
    }


def _entry_from_row(row: Row[Any]) -> LedgerEntry:
    return LedgerEntry(
        account=row.account,
        seq=row.seq,
        kind=EntryKind(row.kind),
        pool=Channel(row.pool),
        amount=row.amount,
        at=row.at,
        balance_after=row.balance_after,
        cause=Cause(
            operation=Operation(row.operation),
            datum=row.datum,
            plan=row.plan,
            period=row.period,
            idempotency_key=row.idempotency_key,
            destination=row.destination,
            note=row.note,
        ),
    )


def _ownership_values(record: Ownership) -> dict[str, Any]:
    return {
        "account": record.account,
        "channel": record.contact.channel._value_,
        "value": record.contact.value,
        "pool": record.pool._value_,
        "credits": record.credits,
        "charged_at": record.charged_at,
        "entry_seq": record.entry_seq,
        "refunded_at": record.refunded_at,
    }


def _ownership_from_row(row: Row[Any], contact: Contact) -> Ownership:
    return Ownership(
        account=row.account,
        contact=contact,
        pool=Channel(row.pool),
        credits=row.credits,
        charged_at=row.charged_at,
        entry_seq=row.entry_seq,
        refunded_at=row.refunded_at,
    )


def _record_from_row(row: Row[Any]) -> IdempotencyRecord:
    return IdempotencyRecord(
        account=row.account,
        key=row.key,
        fingerprint=row.fingerprint,
        hold_id=row.hold_id,
        created_at=row.created_at,
        result=None if row.result is None else result_from_json(row.result),
    )


# -- driver errors ---------------------------------------------------------------------


def _is_conflict(error: sa_exc.DBAPIError) -> bool:
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None)  # psycopg
    if sqlstate is not None:
        return sqlstate in _CONFLICT_SQLSTATES
    return getattr(original, "sqlite_errorname", None) in _CONFLICT_SQLITE_ERRORS


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn a driver's "another writer won" into the one error the service retries."""
    try:
        yield
    except sa_exc.DBAPIError as error:
        if _is_conflict(error):
            raise ConcurrencyConflict(
                f"{what} lost a race with another writer: {error.orig}"
            ) from error
        raise
    except sa_exc.StatementError as error:
        # Our own bind processing refused a value (a naive instant): SQLAlchemy wraps
        # it; the caller is owed the domain error itself, as the read methods raise it.
        if isinstance(error.orig, CreditsError):
            raise error.orig from None
        raise
    except sa_exc.TimeoutError as error:
        # The pool had no connection free for the whole lock wait: on an in-memory
        # database, another unit of work held the one connection that long.
        raise ConcurrencyConflict(f"{what} waited too long for the database: {error}") from error


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


def create_engine(url: str, *, lock_wait_s: float = DEFAULT_LOCK_WAIT_S) -> Engine:
    """An engine set up as this adapter needs it (SQLite: WAL, foreign keys, our own
    BEGIN IMMEDIATE, busy timeout; PostgreSQL: psycopg 3, READ COMMITTED, lock timeout).

    `SqlRepository.connect()` uses it; benchmarks and operators' scripts may too.
    """
    if not lock_wait_s > 0:
        raise InvalidRequest(f"lock_wait_s must be > 0, got {lock_wait_s!r}")
    try:
        parsed = sa.make_url(url)
    except sa_exc.ArgumentError as error:
        raise UnsupportedDatabase(f"not a database URL: {url!r} ({error})") from error
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite":
        if driver != "pysqlite":
            raise UnsupportedDatabase(f"SQLite is supported through sqlite3 only, got {url!r}")
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
                f"PostgreSQL is supported through psycopg 3 (postgresql+psycopg://), got {url!r}"
            )
        # READ COMMITTED (the server default) with row locks; a lock wait is bounded,
        # and its expiry (55P03) counts as a lost race. Server options given in the URL
        # (`?options=-csearch_path%3Dbilling`) are kept.
        given = parsed.query.get("options", "")
        options_text = " ".join([*((given,) if isinstance(given, str) else given)])
        lock_timeout = f"-c lock_timeout={int(lock_wait_s * 1000)}"
        return sa.create_engine(
            parsed.difference_update_query(["options"]),
            isolation_level="READ COMMITTED",
            connect_args={"options": f"{options_text} {lock_timeout}".strip()},
            # A pooled connection the server dropped (restart, failover, idle kill) is
            # replaced at checkout instead of failing the next request in the driver.
            pool_pre_ping=True,
        )
    raise UnsupportedDatabase(
        f"unsupported database {backend!r} in {url!r}; use sqlite:///path.db "
        "or postgresql+psycopg://user@host/db"
    )


def _display(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return url


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


def schema_revision(engine: Engine) -> tuple[str, ...]:
    """The revision(s) the database is at; empty for an empty database."""
    with engine.connect() as connection:
        connection.execution_options(**{READ_ONLY_OPTION: True})
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return tuple(context.get_current_heads())


def _upgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:  # on SQLite: BEGIN IMMEDIATE, one writer at a time
        if connection.dialect.name == "postgresql":
            # PostgreSQL: a second process upgrading at the same time waits here for the
            # first to commit, then finds the schema at head and does nothing.
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
        config = _alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def upgrade(url: str, *, revision: str = "head") -> None:
    """Bring the database's schema to `revision` (default: the newest), in one transaction."""
    engine = create_engine(url)
    try:
        _upgrade(engine, revision)
    finally:
        engine.dispose()


def _require_head(engine: Engine, url: str) -> None:
    current, head = set(schema_revision(engine)), set(schema_head())
    if current == head:
        return
    known = {script.revision for script in schema_script().walk_revisions()}
    if current - known:
        raise UnknownSchemaRevision(_display(url), current)
    raise SchemaOutOfDate(_display(url), current, head)


# -- the unit of work ------------------------------------------------------------------


class SqlDedupRegistry:
    """Ownership (R12), looked up per request in bounded chunks, never loaded whole."""

    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    def owned(self, account: str, contacts: Collection[Contact]) -> Mapping[Contact, Ownership]:
        wanted = {(contact.channel._value_, contact.value): contact for contact in contacts}
        by_channel: dict[str, list[str]] = {}
        for channel, value in wanted:
            by_channel.setdefault(channel, []).append(value)
        found: dict[Contact, Ownership] = {}
        connection = self._uow.connection
        postgres = connection.dialect.name == "postgresql"
        with _translated("ownership lookup"):
            for channel, values in by_channel.items():
                for start in range(0, len(values), OWNERSHIP_CHUNK):
                    chunk = values[start : start + OWNERSHIP_CHUNK]
                    # One value: `IN (x)` is planned as `value = x`, a full-key probe.
                    many = postgres and len(chunk) > 1
                    rows = connection.execute(
                        _SELECT_OWNED_POSTGRESQL if many else _SELECT_OWNED,
                        {"account": account, "channel": channel, "values": chunk},
                    )
                    for row in rows:
                        contact = wanted[(row.channel, row.value)]
                        found[contact] = _ownership_from_row(row, contact)
        return found

    def add(self, records: Sequence[Ownership]) -> None:
        if not records:
            return
        # A datum already owned violates the primary key: a concurrent buyer won (R12).
        with _translated("recording ownership"):
            _INSERT_OWNERSHIP.execute(
                self._uow.connection, [_ownership_values(record) for record in records]
            )

    def mark_refunded(self, account: str, contact: Contact, at: datetime) -> None:
        key = {"o_account": account, "o_channel": contact.channel.value, "o_value": contact.value}
        connection = self._uow.connection
        with _translated("marking a refund"):
            done = connection.execute(_MARK_REFUNDED, {**key, "refunded_at": at})
            if done.rowcount == 1:
                return
            refunded_at = connection.execute(_SELECT_REFUNDED_AT, key).one_or_none()
        if refunded_at is None:
            raise NotCharged(f"{contact} was never charged to account {account!r}")
        raise AlreadyRefunded(f"{contact} was refunded at {refunded_at[0]}")


class SqlIdempotencyStore:
    """Idempotency records (R17), unique per (account, key)."""

    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    def get(self, account: str, key: str) -> IdempotencyRecord | None:
        with _translated("reading an idempotency key"):
            row = self._uow.connection.execute(
                _SELECT_RECORD, {"account": account, "key": key}
            ).one_or_none()
        return None if row is None else _record_from_row(row)

    def put(self, record: IdempotencyRecord) -> None:
        values = {
            "fingerprint": record.fingerprint,
            "hold_id": record.hold_id,
            "created_at": record.created_at,
            "result": None if record.result is None else result_to_json(record.result),
        }
        connection = self._uow.connection
        # Update, else insert: portable, and safe because the caller holds the account's
        # wallet lock; a concurrent first insert of the same key is a unique violation,
        # i.e. a lost race.
        with _translated("storing an idempotency key"):
            done = connection.execute(
                _UPDATE_RECORD, {"r_account": record.account, "r_key": record.key, **values}
            )
            if done.rowcount == 0:
                connection.execute(
                    _INSERT_RECORD, {"account": record.account, "key": record.key, **values}
                )


class SqlUnitOfWork:
    """One database transaction; see the module's docstring for how it locks."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None
        self._transaction: sa.RootTransaction | None = None
        # What this unit of work loaded or wrote, per account: the wallet row's version
        # (for the guarded UPDATE) and the ids of its stored holds (to write only changes).
        self._versions: dict[str, int] = {}
        self._hold_ids: dict[str, frozenset[str]] = {}
        self.dedup = SqlDedupRegistry(self)
        self.idempotency = SqlIdempotencyStore(self)

    @property
    def connection(self) -> Connection:
        """The open transaction's connection (for this module and for tests)."""
        invariant(
            self._connection is not None
            and self._transaction is not None
            and self._transaction.is_active,
            "a unit of work is used only inside its `with` block, before commit()",
        )
        assert self._connection is not None  # narrowed for mypy; checked just above
        return self._connection

    def __enter__(self) -> Self:
        invariant(self._connection is None, "a unit of work is entered once")
        with _translated("opening a unit of work"):  # in-memory: waits for the connection
            connection = self._engine.connect()
        try:
            with _translated("beginning a transaction"):
                self._transaction = connection.begin()  # SQLite: BEGIN IMMEDIATE, may wait
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, transaction = self._connection, self._transaction
        self._connection, self._transaction = None, None
        if connection is None:
            return
        try:
            if transaction is not None and transaction.is_active:
                transaction.rollback()
        except sa_exc.DBAPIError:
            if exc is None:  # never mask the error that made us leave
                raise
        finally:
            connection.close()  # back to the pool, with no transaction open

    def load_wallet(self, account: str) -> Wallet | None:
        connection = self.connection
        with _translated("loading a wallet"):
            # PostgreSQL: the row lock that serialises the writers of this account.
            # SQLite ignores FOR UPDATE: BEGIN IMMEDIATE already made us the only writer.
            row = connection.execute(_SELECT_WALLET, {"account": account}).one_or_none()
            if row is None:
                return None
            hold_rows = connection.execute(_SELECT_HOLDS, {"account": account}).all()
        wallet = _wallet_from_rows(row, hold_rows)
        self._versions[account] = wallet.version
        self._hold_ids[account] = frozenset(wallet.holds)
        return wallet

    def add_wallet(self, wallet: Wallet) -> None:
        wallet.check_invariants()
        with _translated("adding a wallet"):  # an existing account: unique violation
            self.connection.execute(
                _INSERT_WALLET,
                {"account": wallet.account, "version": wallet.version, **_wallet_values(wallet)},
            )
        self._versions[wallet.account] = wallet.version
        self._hold_ids[wallet.account] = frozenset()
        self._write_holds_and_entries(wallet)

    def save_wallet(self, wallet: Wallet) -> None:
        wallet.check_invariants()
        account = wallet.account
        expected = self._versions.get(account, wallet.version)
        with _translated("saving a wallet"):
            done = self.connection.execute(
                _UPDATE_WALLET,
                {
                    "w_account": account,
                    "w_version": expected,
                    "version": expected + 1,
                    **_wallet_values(wallet),
                },
            )
        if done.rowcount != 1:
            raise ConcurrencyConflict(
                f"the wallet of {account!r} changed since it was loaded (version {expected})"
            )
        self._versions[account] = expected + 1
        self._write_holds_and_entries(wallet)

    def _write_holds_and_entries(self, wallet: Wallet) -> None:
        account, connection = wallet.account, self.connection
        with _translated("saving holds and ledger entries"):
            stored = self._hold_ids.get(account)
            if stored is None:  # saved without being loaded here: ask the database
                stored = frozenset(
                    connection.execute(_SELECT_HOLD_IDS, {"account": account}).scalars()
                )
            gone = sorted(stored - wallet.holds.keys())
            new = [hold for hold_id, hold in wallet.holds.items() if hold_id not in stored]
            if gone:
                connection.execute(_DELETE_HOLDS, {"account": account, "hold_ids": gone})
            if new:
                connection.execute(_INSERT_HOLDS, [_hold_values(account, h) for h in new])
            self._hold_ids[account] = frozenset(wallet.holds)
            # R19: the new entries are appended; the ledger's key (account, seq) refuses
            # a second writer of the same seq.
            entries = wallet.entries_saved()
            if entries:
                _INSERT_ENTRIES.execute(connection, [_entry_values(e) for e in entries])

    def commit(self) -> None:
        transaction = self._transaction
        invariant(
            transaction is not None and transaction.is_active,
            "commit() inside the `with` block, once",
        )
        assert transaction is not None  # narrowed for mypy; checked just above
        with _translated("commit"):
            transaction.commit()


# -- the repository --------------------------------------------------------------------


class SqlRepository:
    """The Repository port on a SQL database. Open it with `SqlRepository.connect(url)`."""

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine made by `create_engine`, as is: the schema is not checked."""
        self._engine = engine

    @classmethod
    def connect(
        cls,
        url: str = DEFAULT_URL,
        *,
        migrate: bool = False,
        lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
    ) -> SqlRepository:
        """Open the database at `url`; with `migrate=True` first upgrade its schema.

        Raises SchemaOutOfDate when the schema is older than this package (or the
        database is empty) and `migrate` is false.
        """
        engine = create_engine(url, lock_wait_s=lock_wait_s)
        try:
            if migrate:
                _upgrade(engine, "head")
            _require_head(engine, url)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for operators' queries and tests)."""
        return self._engine

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def unit_of_work(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self._engine)

    @staticmethod
    def _check_limit(limit: int) -> int:
        # Every read is bounded: SQLite reads a negative LIMIT as "no limit" at all.
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise InvalidRequest(f"limit must be a whole number >= 0, got {limit!r}")
        return limit

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[Connection]:
        with _translated(what), self._engine.connect() as connection:
            connection.execution_options(**{READ_ONLY_OPTION: True})
            yield connection

    def entries(
        self,
        account: str,
        *,
        after_seq: int = -1,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> Sequence[LedgerEntry]:
        query = sa.select(ledger).where(ledger.c.account == account, ledger.c.seq > after_seq)
        if since is not None:
            query = query.where(ledger.c.at >= require_utc(since, "since"))
        if until is not None:
            query = query.where(ledger.c.at < require_utc(until, "until"))
        query = query.order_by(ledger.c.seq).limit(self._check_limit(limit))
        with self._reading("reading the ledger") as connection:
            return [_entry_from_row(row) for row in connection.execute(query)]

    def last_entry(self, account: str, pool: Channel, at: datetime) -> LedgerEntry | None:
        # Newest first along the (account, pool, at, seq) index: one index probe (R21).
        query = (
            sa.select(ledger)
            .where(
                ledger.c.account == account,
                ledger.c.pool == pool.value,
                ledger.c.at <= require_utc(at, "at"),
            )
            .order_by(ledger.c.at.desc(), ledger.c.seq.desc())
            .limit(1)
        )
        with self._reading("reading the ledger") as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else _entry_from_row(row)

    def due_accounts(self, now: datetime, limit: int) -> Sequence[str]:
        # Oldest boundary first, along the (next_boundary_at, account) index; a lapsed
        # wallet has no boundary (NULL) and is never due.
        query = (
            sa.select(wallets.c.account)
            .where(wallets.c.next_boundary_at <= require_utc(now, "now"))
            .order_by(wallets.c.next_boundary_at, wallets.c.account)
            .limit(self._check_limit(limit))
        )
        with self._reading("finding due accounts") as connection:
            return list(connection.execute(query).scalars())
