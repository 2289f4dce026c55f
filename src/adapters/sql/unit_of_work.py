"""The unit of work: one database transaction, holding the account's wallet row."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from adapters.sql.codecs import (
    entry_values,
    event_values,
    hold_values,
    ownership_from_row,
    ownership_values,
    record_from_row,
    result_to_json,
    wallet_from_rows,
    wallet_values,
)
from adapters.sql.errors import (
    translated,
)
from adapters.sql.statements import (
    DELETE_HOLDS,
    INSERT_ENTRIES,
    INSERT_EVENTS,
    INSERT_HOLDS,
    INSERT_OWNERSHIP,
    INSERT_RECORD,
    INSERT_WALLET,
    MARK_REFUNDED,
    SELECT_HOLD_IDS,
    SELECT_HOLDS,
    SELECT_OWNED,
    SELECT_OWNED_POSTGRESQL,
    SELECT_RECORD,
    SELECT_REFUNDED_AT,
    SELECT_WALLET,
    UPDATE_RECORD,
    UPDATE_WALLET,
)
from credits_domain import (
    AlreadyRefunded,
    ConcurrencyConflict,
    Contact,
    CreditsError,
    IdempotencyRecord,
    NotCharged,
    Ownership,
    Wallet,
)
from credits_domain.errors import InvalidRequest, invariant
from credits_domain.limits import check_account, check_idempotency_key

OWNERSHIP_CHUNK = 500
"""Contacts per ownership lookup (`IN` list): bounded statements, few round trips."""

# -- the unit of work ------------------------------------------------------------------


def check_key(key: object) -> str:
    """An idempotency key as the port stores it (never None)."""
    checked = check_idempotency_key(key)
    if checked is None:
        raise InvalidRequest("an idempotency record needs a key, got None")
    return checked


def check_entry_seq(record: IdempotencyRecord) -> None:
    """A top-up's record points at a seq and holds nothing else (the schema checks it too,
    revision 0005; checked here first so that every adapter refuses it alike)."""
    seq = record.entry_seq
    if seq is None:
        return
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= 2**63 - 1:
        raise InvalidRequest(f"entry_seq must be a whole number from 0 to 2**63-1, got {seq!r}")
    if record.hold_id is not None or record.result is not None:
        raise InvalidRequest("a top-up's idempotency record has no hold and no charge result")


class SqlDedupRegistry:
    """Ownership (R12), looked up per request in bounded chunks, never loaded whole."""

    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    def owned(self, account: str, contacts: Collection[Contact]) -> Mapping[Contact, Ownership]:
        with self._uow.step("ownership lookup") as connection:
            check_account(account)
            wanted = {(contact.channel._value_, contact.value): contact for contact in contacts}
            by_channel: dict[str, list[str]] = {}
            for channel, value in wanted:
                by_channel.setdefault(channel, []).append(value)
            found: dict[Contact, Ownership] = {}
            postgres = connection.dialect.name == "postgresql"
            for channel, values in by_channel.items():
                for start in range(0, len(values), OWNERSHIP_CHUNK):
                    chunk = values[start : start + OWNERSHIP_CHUNK]
                    # One value: `IN (x)` is planned as `value = x`, a full-key probe.
                    many = postgres and len(chunk) > 1
                    rows = connection.execute(
                        SELECT_OWNED_POSTGRESQL if many else SELECT_OWNED,
                        {"account": account, "channel": channel, "values": chunk},
                    )
                    for row in rows:
                        contact = wanted[(row.channel, row.value)]
                        found[contact] = ownership_from_row(row, contact)
            return found

    def add(self, records: Sequence[Ownership]) -> None:
        with self._uow.step("recording ownership") as connection:
            accounts: set[str] = set()
            for record in records:
                if record.account not in accounts:
                    accounts.add(check_account(record.account))
                if record.credits <= 0:
                    # The schema refuses it too (a CHECK), but only a bug can ask: crash.
                    invariant(False, f"an owned datum cost credits: {record}")
            if records:
                # A datum already owned violates the primary key: a concurrent buyer won.
                INSERT_OWNERSHIP.execute(
                    connection, [ownership_values(record) for record in records]
                )

    def mark_refunded(self, account: str, contact: Contact, at: datetime) -> None:
        with self._uow.step("marking a refund") as connection:
            key = {
                "o_account": check_account(account),
                "o_channel": contact.channel.value,
                "o_value": contact.value,
            }
            done = connection.execute(MARK_REFUNDED, {**key, "refunded_at": at})
            if done.rowcount == 1:
                return
            refunded_at = connection.execute(SELECT_REFUNDED_AT, key).one_or_none()
            if refunded_at is None:
                raise NotCharged(f"{contact} was never charged to account {account!r}")
            raise AlreadyRefunded(f"{contact} was refunded at {refunded_at[0]}")


class SqlIdempotencyStore:
    """Idempotency records (R17), unique per (account, key)."""

    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    def get(self, account: str, key: str) -> IdempotencyRecord | None:
        with self._uow.step("reading an idempotency key") as connection:
            row = connection.execute(
                SELECT_RECORD, {"account": check_account(account), "key": check_key(key)}
            ).one_or_none()
        return None if row is None else record_from_row(row)

    def put(self, record: IdempotencyRecord) -> None:
        with self._uow.step("storing an idempotency key") as connection:
            ident = {"account": check_account(record.account), "key": check_key(record.key)}
            check_entry_seq(record)
            values = {
                "fingerprint": record.fingerprint,
                "hold_id": record.hold_id,
                "created_at": record.created_at,
                "result": None if record.result is None else result_to_json(record.result),
                "entry_seq": record.entry_seq,
            }
            # Update, else insert: portable, and safe because the caller holds the
            # account's wallet lock; a concurrent first insert of the same key is a
            # unique violation, i.e. a lost race.
            done = connection.execute(
                UPDATE_RECORD, {"r_account": ident["account"], "r_key": ident["key"], **values}
            )
            if done.rowcount == 0:
                connection.execute(INSERT_RECORD, {**ident, **values})


class SqlUnitOfWork:
    """One database transaction; see the module's docstring for how it locks.

    A call that raises spoils the unit of work: on PostgreSQL the transaction is aborted
    (and a COMMIT of it would quietly roll back), so on every dialect nothing more may be
    done in it but leave the `with` block, which rolls it back.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None
        self._transaction: sa.RootTransaction | None = None
        self._entered = False
        self._spoiled: str | None = None  # what failed, once a call raised
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
        invariant(
            self._spoiled is None,
            f"a unit of work is left once a call failed ({self._spoiled}): its transaction is lost",
        )
        assert self._connection is not None  # narrowed for mypy; checked just above
        return self._connection

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[Connection]:
        """One call of the port: driver errors translated; any error spoils the unit."""
        connection = self.connection
        try:
            with translated(what, url=self._engine.url):
                yield connection
        except CreditsError:
            self._spoiled = what
            raise

    def __enter__(self) -> Self:
        invariant(not self._entered, "a unit of work is entered once")
        self._entered = True
        with translated("opening a unit of work", url=self._engine.url):
            connection = self._engine.connect()  # in-memory: waits for the connection
        try:
            with translated("beginning a transaction", url=self._engine.url):
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
                # A rollback fails only when the connection is gone, and then the server
                # discards the transaction itself: nothing of it can commit any more, so
                # leaving never raises (nor masks the error that made us leave).
                with contextlib.suppress(sa.exc.SQLAlchemyError):
                    transaction.rollback()
        finally:
            connection.close()  # back to the pool (invalidated if it died)

    def load_wallet(self, account: str) -> Wallet | None:
        with self.step("loading a wallet") as connection:
            # PostgreSQL: the row lock that serialises the writers of this account.
            # SQLite ignores FOR UPDATE: BEGIN IMMEDIATE already made us the only writer.
            row = connection.execute(
                SELECT_WALLET, {"account": check_account(account)}
            ).one_or_none()
            if row is None:
                return None
            hold_rows = connection.execute(SELECT_HOLDS, {"account": account}).all()
        wallet = wallet_from_rows(row, hold_rows)
        self._versions[account] = wallet.version
        self._hold_ids[account] = frozenset(wallet.holds)
        return wallet

    def add_wallet(self, wallet: Wallet) -> None:
        wallet.check_invariants()
        with self.step("adding a wallet") as connection:  # an existing one: unique violation
            connection.execute(
                INSERT_WALLET,
                {
                    "account": check_account(wallet.account),
                    "version": wallet.version,
                    **wallet_values(wallet),
                },
            )
            self._versions[wallet.account] = wallet.version
            self._hold_ids[wallet.account] = frozenset()
            self._write_holds_and_entries(connection, wallet)

    def save_wallet(self, wallet: Wallet) -> None:
        wallet.check_invariants()
        with self.step("saving a wallet") as connection:
            account = check_account(wallet.account)
            expected = self._versions.get(account, wallet.version)
            done = connection.execute(
                UPDATE_WALLET,
                {
                    "w_account": account,
                    "w_version": expected,
                    "version": expected + 1,
                    **wallet_values(wallet),
                },
            )
            if done.rowcount != 1:
                raise ConcurrencyConflict(
                    f"saving a wallet: the wallet of {account!r} is not stored at version "
                    f"{expected} (another unit of work saved it since it was loaded, or "
                    "it was never added); load it again and retry"
                )
            self._versions[account] = expected + 1
            self._write_holds_and_entries(connection, wallet)

    def _write_holds_and_entries(self, connection: Connection, wallet: Wallet) -> None:
        account = wallet.account
        stored = self._hold_ids.get(account)
        if stored is None:  # saved without being loaded here: ask the database
            stored = frozenset(connection.execute(SELECT_HOLD_IDS, {"account": account}).scalars())
        gone = sorted(stored - wallet.holds.keys())
        new = [hold for hold_id, hold in wallet.holds.items() if hold_id not in stored]
        if gone:
            connection.execute(DELETE_HOLDS, {"account": account, "hold_ids": gone})
        if new:
            connection.execute(INSERT_HOLDS, [hold_values(account, h) for h in new])
        self._hold_ids[account] = frozenset(wallet.holds)
        # R19: the new entries are appended; the ledger's key (account, seq) refuses a
        # second writer of the same seq.
        entries = wallet.entries_saved()
        if entries:
            INSERT_ENTRIES.execute(connection, [entry_values(e) for e in entries])
        # R24: the outbox, in the same transaction; the key (account, seq) refuses a
        # second writer of the same seq, as the ledger's does.
        events = wallet.events_saved()
        if events:
            connection.execute(INSERT_EVENTS, [event_values(e) for e in events])

    def commit(self) -> None:
        transaction = self._transaction
        invariant(
            transaction is not None and transaction.is_active,
            "commit() inside the `with` block, once",
        )
        invariant(
            self._spoiled is None,
            f"a unit of work whose call failed ({self._spoiled}) is never committed",
        )
        assert transaction is not None  # narrowed for mypy; checked just above
        try:
            with translated("commit", url=self._engine.url, outcome_unknown=True):
                transaction.commit()
        except CreditsError:
            self._spoiled = "commit"
            raise
