"""The unit of work: one database transaction, holding the account's wallet row."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from adapters.sql.codecs import (
    entry_values,
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
    IdempotencyRecord,
    NotCharged,
    Ownership,
    Wallet,
)
from credits_domain.errors import invariant

OWNERSHIP_CHUNK = 500
"""Contacts per ownership lookup (`IN` list): bounded statements, few round trips."""

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
        with translated("ownership lookup"):
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
        if not records:
            return
        # A datum already owned violates the primary key: a concurrent buyer won (R12).
        with translated("recording ownership"):
            INSERT_OWNERSHIP.execute(
                self._uow.connection, [ownership_values(record) for record in records]
            )

    def mark_refunded(self, account: str, contact: Contact, at: datetime) -> None:
        key = {"o_account": account, "o_channel": contact.channel.value, "o_value": contact.value}
        connection = self._uow.connection
        with translated("marking a refund"):
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
        with translated("reading an idempotency key"):
            row = self._uow.connection.execute(
                SELECT_RECORD, {"account": account, "key": key}
            ).one_or_none()
        return None if row is None else record_from_row(row)

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
        with translated("storing an idempotency key"):
            done = connection.execute(
                UPDATE_RECORD, {"r_account": record.account, "r_key": record.key, **values}
            )
            if done.rowcount == 0:
                connection.execute(
                    INSERT_RECORD, {"account": record.account, "key": record.key, **values}
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
        with translated("opening a unit of work"):  # in-memory: waits for the connection
            connection = self._engine.connect()
        try:
            with translated("beginning a transaction"):
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
        with translated("loading a wallet"):
            # PostgreSQL: the row lock that serialises the writers of this account.
            # SQLite ignores FOR UPDATE: BEGIN IMMEDIATE already made us the only writer.
            row = connection.execute(SELECT_WALLET, {"account": account}).one_or_none()
            if row is None:
                return None
            hold_rows = connection.execute(SELECT_HOLDS, {"account": account}).all()
        wallet = wallet_from_rows(row, hold_rows)
        self._versions[account] = wallet.version
        self._hold_ids[account] = frozenset(wallet.holds)
        return wallet

    def add_wallet(self, wallet: Wallet) -> None:
        wallet.check_invariants()
        with translated("adding a wallet"):  # an existing account: unique violation
            self.connection.execute(
                INSERT_WALLET,
                {"account": wallet.account, "version": wallet.version, **wallet_values(wallet)},
            )
        self._versions[wallet.account] = wallet.version
        self._hold_ids[wallet.account] = frozenset()
        self._write_holds_and_entries(wallet)

    def save_wallet(self, wallet: Wallet) -> None:
        wallet.check_invariants()
        account = wallet.account
        expected = self._versions.get(account, wallet.version)
        with translated("saving a wallet"):
            done = self.connection.execute(
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
                f"the wallet of {account!r} changed since it was loaded (version {expected})"
            )
        self._versions[account] = expected + 1
        self._write_holds_and_entries(wallet)

    def _write_holds_and_entries(self, wallet: Wallet) -> None:
        account, connection = wallet.account, self.connection
        with translated("saving holds and ledger entries"):
            stored = self._hold_ids.get(account)
            if stored is None:  # saved without being loaded here: ask the database
                stored = frozenset(
                    connection.execute(SELECT_HOLD_IDS, {"account": account}).scalars()
                )
            gone = sorted(stored - wallet.holds.keys())
            new = [hold for hold_id, hold in wallet.holds.items() if hold_id not in stored]
            if gone:
                connection.execute(DELETE_HOLDS, {"account": account, "hold_ids": gone})
            if new:
                connection.execute(INSERT_HOLDS, [hold_values(account, h) for h in new])
            self._hold_ids[account] = frozenset(wallet.holds)
            # R19: the new entries are appended; the ledger's key (account, seq) refuses
            # a second writer of the same seq.
            entries = wallet.entries_saved()
            if entries:
                INSERT_ENTRIES.execute(connection, [entry_values(e) for e in entries])

    def commit(self) -> None:
        transaction = self._transaction
        invariant(
            transaction is not None and transaction.is_active,
            "commit() inside the `with` block, once",
        )
        assert transaction is not None  # narrowed for mypy; checked just above
        with translated("commit"):
            transaction.commit()
