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
from collections.abc import Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from adapters.sql.codecs import (
    entry_from_row,
    event_from_row,
    ownership_from_row,
)
from adapters.sql.engine import (
    DEFAULT_LOCK_WAIT_S,
    DEFAULT_URL,
    READ_ONLY_OPTION,
    create_engine,
    display_url,
    sqlite_file,
)
from adapters.sql.errors import (
    DatabaseNotFound,
    translated,
)
from adapters.sql.fast_path import FastPath
from adapters.sql.migrate import (
    require_head,
    schema_head,
    upgrade_engine,
)
from adapters.sql.schema import (
    events as event_rows,
)
from adapters.sql.schema import (
    ledger,
    ownership,
    wallets,
)
from adapters.sql.statements import RENEW_HOLD
from adapters.sql.unit_of_work import (
    SqlUnitOfWork,
)
from credits_domain import (
    BoughtMeanwhile,
    Channel,
    ChargeResult,
    Contact,
    Event,
    FastReservation,
    InvalidRequest,
    LedgerEntry,
    Ownership,
    Settled,
)
from credits_domain.charging import Candidates, ChargeRequest
from credits_domain.limits import check_account
from credits_domain.periods import require_utc

MAX_INT64 = 2**63 - 1  # the widest integer either database stores


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- the repository --------------------------------------------------------------------


def _require_sqlite_file(url: str) -> None:
    # SQLite creates a missing file on connect: a reader given a mistyped path would
    # leave an empty database behind and then report an outdated schema.
    path = sqlite_file(url)
    if path is None or sa.make_url(url).query.get("uri") is not None:
        return  # a server, memory, or a `file:` URI whose own `mode` decides
    if not path.exists():
        raise DatabaseNotFound(display_url(url), str(path.resolve()), schema_head())


class SqlRepository:
    """The Repository port on a SQL database. Open it with `SqlRepository.connect(url)`."""

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine made by `create_engine`, as is: the schema is not checked."""
        self._engine = engine
        self._fast = FastPath(engine)

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
        database is empty) and `migrate` is false; its subclass DatabaseNotFound, without
        creating the file, when an SQLite file does not exist.
        """
        engine = create_engine(url, lock_wait_s=lock_wait_s)
        try:
            if migrate:
                upgrade_engine(engine, "head")
            else:
                _require_sqlite_file(url)
            require_head(engine, url)
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

    def reserve_fast(
        self, request: ChargeRequest, *, now: datetime, expires_at: datetime
    ) -> FastReservation | None:
        """ports.ChargePath: reserve in one call (see adapters.sql.fast_path)."""
        return self._fast.reserve_fast(request, now=now, expires_at=expires_at)

    def settle_fast(
        self,
        request: ChargeRequest,
        *,
        now: datetime,
        hold_id: str | None,
        charged: Candidates,
        result: ChargeResult,
    ) -> Settled | BoughtMeanwhile | None:
        """ports.ChargePath: settle in one call (see adapters.sql.fast_path)."""
        return self._fast.settle_fast(
            request, now=now, hold_id=hold_id, charged=charged, result=result
        )

    def unit_of_work(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self._engine)

    def renew_hold(
        self, account: str, hold_id: str, *, now: datetime, expires_at: datetime
    ) -> bool:
        """Repository.renew_hold: one UPDATE of the hold's row in a transaction of its own
        (the wallet row is neither locked nor versioned)."""
        if not isinstance(hold_id, str):
            raise InvalidRequest(f"a hold id is a string, got {hold_id!r}")
        parameters = {
            "r_account": check_account(account),
            "r_hold_id": hold_id,
            "r_now": require_utc(now, "now"),
            "r_until": require_utc(expires_at, "expires_at"),
        }
        with translated("renewing a hold", url=self._engine.url), self._engine.begin() as c:
            return c.execute(RENEW_HOLD, parameters).rowcount == 1

    @staticmethod
    def _check_limit(limit: int) -> int:
        # Every read is bounded: SQLite reads a negative LIMIT as "no limit" at all, and
        # neither database takes an integer beyond 64 bits.
        if not _whole(limit) or not 0 <= limit <= MAX_INT64:
            raise InvalidRequest(f"limit must be a whole number from 0 to 2**63-1, got {limit!r}")
        return limit

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[Connection]:
        with translated(what, url=self._engine.url), self._engine.connect() as connection:
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
        if not _whole(after_seq) or not -1 <= after_seq <= MAX_INT64:
            raise InvalidRequest(
                f"after_seq must be a whole number from -1 to 2**63-1, got {after_seq!r}"
            )
        query = sa.select(ledger).where(
            ledger.c.account == check_account(account), ledger.c.seq > after_seq
        )
        if since is not None:
            query = query.where(ledger.c.at >= require_utc(since, "since"))
        if until is not None:
            query = query.where(ledger.c.at < require_utc(until, "until"))
        query = query.order_by(ledger.c.seq).limit(self._check_limit(limit))
        with self._reading("reading the ledger") as connection:
            return [entry_from_row(row) for row in connection.execute(query)]

    def events(self, account: str, *, after_seq: int = 0, limit: int) -> Sequence[Event]:
        if not _whole(after_seq) or not 0 <= after_seq <= MAX_INT64:
            raise InvalidRequest(
                f"after_seq must be a whole number from 0 to 2**63-1, got {after_seq!r}"
            )
        query = (
            sa.select(event_rows)
            .where(event_rows.c.account == check_account(account), event_rows.c.seq > after_seq)
            .order_by(event_rows.c.seq)
            .limit(self._check_limit(limit))
        )
        with self._reading("reading events") as connection:
            return [event_from_row(row) for row in connection.execute(query)]

    def last_entry(self, account: str, pool: Channel, at: datetime) -> LedgerEntry | None:
        if not isinstance(pool, Channel):
            raise InvalidRequest(f"pool must be a Channel, got {pool!r}")
        # Newest first along the (account, pool, at, seq) index: one index probe (R21).
        query = (
            sa.select(ledger)
            .where(
                ledger.c.account == check_account(account),
                ledger.c.pool == pool.value,
                ledger.c.at <= require_utc(at, "at"),
            )
            .order_by(ledger.c.at.desc(), ledger.c.seq.desc())
            .limit(1)
        )
        with self._reading("reading the ledger") as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else entry_from_row(row)

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

    def owned(
        self, account: str, *, after: Contact | None = None, limit: int
    ) -> Sequence[Ownership]:
        if after is not None and not isinstance(after, Contact):
            raise InvalidRequest(f"after must be a Contact or None, got {after!r}")
        # Along the primary key (account, channel, value): a row-value comparison is one
        # index range scan, so page n costs what page 1 does.
        query = sa.select(ownership).where(ownership.c.account == check_account(account))
        if after is not None:
            query = query.where(
                sa.tuple_(ownership.c.channel, ownership.c.value)
                > sa.tuple_(sa.literal(after.channel.value), sa.literal(after.value))
            )
        query = query.order_by(ownership.c.channel, ownership.c.value).limit(
            self._check_limit(limit)
        )
        with self._reading("reading owned data") as connection:
            return [
                ownership_from_row(row, Contact(Channel(row.channel), row.value))
                for row in connection.execute(query)
            ]

    def accounts(self, *, after: str | None = None, limit: int) -> Sequence[str]:
        account: sa.ColumnElement[str] = wallets.c.account
        if self.dialect == "postgresql":
            # Code-point order, as the port promises, whatever the database's collation
            # (SQLite compares text as bytes, which is code-point order in UTF-8). The
            # primary key's index then serves only if the column's collation is C: an
            # operator's listing reads the wallets' ids, which is acceptable.
            account = account.collate("C")
        query = sa.select(wallets.c.account)
        if after is not None:
            query = query.where(account > check_account(after))
        query = query.order_by(account).limit(self._check_limit(limit))
        with self._reading("listing accounts") as connection:
            return list(connection.execute(query).scalars())
