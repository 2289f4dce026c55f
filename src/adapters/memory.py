"""In memory: the Repository port and the API key store.

`InMemoryRepository` is a real implementation of the port, not a mock: a unit of work
takes the repository's lock for its whole life (so concurrent threads serialise, as rows
locked by SELECT ... FOR UPDATE would), stages every change, and applies them all at
commit, or none.
"""

from __future__ import annotations

import bisect
import secrets
import threading
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self

import attrs

from credits_domain import (
    Channel,
    Clock,
    ConcurrencyConflict,
    Contact,
    IdempotencyRecord,
    LedgerEntry,
    Ownership,
    UnknownApiKey,
    Wallet,
)
from credits_domain.keys import (
    KEY_ENTROPY_BYTES,
    ApiKeyRecord,
    IssuedKey,
    key_id_of,
    new_key,
    verify,
)


def _copy(wallet: Wallet) -> Wallet:
    return attrs.evolve(
        wallet, balances=dict(wallet.balances), holds=dict(wallet.holds), pending_entries=[]
    )


class _Dedup:
    def __init__(self, uow: InMemoryUnitOfWork) -> None:
        self._uow = uow

    def owned(self, account: str, contacts: Collection[Contact]) -> Mapping[Contact, Ownership]:
        staged = self._uow.staged_owned.get(account, {})
        stored = self._uow.repository.owned_by.get(account, {})
        found: dict[Contact, Ownership] = {}
        for contact in contacts:
            record = staged.get(contact) or stored.get(contact)
            if record is not None:
                found[contact] = record
        return found

    def add(self, records: Sequence[Ownership]) -> None:
        for record in records:
            staged = self._uow.staged_owned.setdefault(record.account, {})
            stored = self._uow.repository.owned_by.get(record.account, {})
            if record.contact in staged or record.contact in stored:
                raise ConcurrencyConflict(f"{record.contact} is already owned by {record.account}")
            staged[record.contact] = record

    def mark_refunded(self, account: str, contact: Contact, at: datetime) -> None:
        record = self.owned(account, [contact])[contact]
        self._uow.staged_owned.setdefault(account, {})[contact] = attrs.evolve(
            record, refunded_at=at
        )


class _Idempotency:
    def __init__(self, uow: InMemoryUnitOfWork) -> None:
        self._uow = uow

    def get(self, account: str, key: str) -> IdempotencyRecord | None:
        ident = (account, key)
        return self._uow.staged_keys.get(ident) or self._uow.repository.keys.get(ident)

    def put(self, record: IdempotencyRecord) -> None:
        self._uow.staged_keys[(record.account, record.key)] = record


class InMemoryUnitOfWork:
    def __init__(self, repository: InMemoryRepository) -> None:
        self.repository = repository
        self.dedup = _Dedup(self)
        self.idempotency = _Idempotency(self)
        self.staged_wallets: dict[str, Wallet] = {}
        self.staged_new: set[str] = set()
        self.staged_entries: list[LedgerEntry] = []
        self.staged_owned: dict[str, dict[Contact, Ownership]] = {}
        self.staged_keys: dict[tuple[str, str], IdempotencyRecord] = {}

    def __enter__(self) -> Self:
        self.repository.lock.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.repository.lock.release()

    def load_wallet(self, account: str) -> Wallet | None:
        stored = self.repository.wallets.get(account)
        return None if stored is None else _copy(stored)

    def add_wallet(self, wallet: Wallet) -> None:
        if wallet.account in self.repository.wallets or wallet.account in self.staged_new:
            raise ConcurrencyConflict(f"account {wallet.account!r} exists already")
        self.staged_new.add(wallet.account)
        self.save_wallet(wallet)

    def save_wallet(self, wallet: Wallet) -> None:
        wallet.check_invariants()
        self.staged_entries.extend(wallet.entries_saved())
        self.staged_wallets[wallet.account] = _copy(wallet)

    def commit(self) -> None:
        repo = self.repository
        for entry in self.staged_entries:
            ledger = repo.ledgers.setdefault(entry.account, [])
            if entry.seq != len(ledger):  # seq numbers an account's entries without gaps
                raise ConcurrencyConflict(f"ledger of {entry.account!r} moved on")
            ledger.append(entry)
        for account, wallet in self.staged_wallets.items():
            wallet.version += 1
            repo.wallets[account] = wallet
        for account, records in self.staged_owned.items():
            repo.owned_by.setdefault(account, {}).update(records)
        repo.keys.update(self.staged_keys)
        self.staged_wallets, self.staged_entries = {}, []
        self.staged_owned, self.staged_keys, self.staged_new = {}, {}, set()


class InMemoryRepository:
    """The Repository port in memory; safe to share between threads."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.wallets: dict[str, Wallet] = {}
        self.ledgers: dict[str, list[LedgerEntry]] = {}
        self.owned_by: dict[str, dict[Contact, Ownership]] = {}
        self.keys: dict[tuple[str, str], IdempotencyRecord] = {}

    def unit_of_work(self) -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(self)

    def entries(
        self,
        account: str,
        *,
        after_seq: int = -1,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> Sequence[LedgerEntry]:
        with self.lock:
            ledger = self.ledgers.get(account, [])
            start = after_seq + 1  # seq is the entry's index in its account's ledger
            if since is not None:
                start = max(start, bisect.bisect_left(ledger, since, key=lambda e: e.at))
            page: list[LedgerEntry] = []
            for entry in ledger[start:]:
                if len(page) >= limit or (until is not None and entry.at >= until):
                    break
                page.append(entry)
            return page

    def last_entry(self, account: str, pool: Channel, at: datetime) -> LedgerEntry | None:
        with self.lock:
            ledger = self.ledgers.get(account, [])
            end = bisect.bisect_right(ledger, at, key=lambda e: e.at)
            for entry in reversed(ledger[:end]):
                if entry.pool is pool:
                    return entry
            return None

    def due_accounts(self, now: datetime, limit: int) -> Sequence[str]:
        with self.lock:
            due = [
                account
                for account, wallet in self.wallets.items()
                if (boundary := wallet.next_boundary_at) is not None and boundary <= now
            ]
            return sorted(due)[:limit]


class InMemoryApiKeyStore:
    """The ApiKeyStore port in memory; safe to share between threads."""

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, ApiKeyRecord] = {}

    def create(self, account: str) -> IssuedKey:
        issued, record = new_key(
            account, self._clock.now(), entropy=secrets.token_bytes(KEY_ENTROPY_BYTES)
        )
        with self._lock:
            self._records[record.key_id] = record
        return issued

    def authenticate(self, token: str) -> str | None:
        key_id = key_id_of(token)
        if key_id is None:
            return None
        with self._lock:
            record = self._records.get(key_id)
        return verify(token, record)

    def revoke(self, key_id: str) -> bool:
        with self._lock:
            record = self._records.get(key_id)
            if record is None:
                raise UnknownApiKey(key_id)
            if record.revoked_at is not None:
                return False
            self._records[key_id] = attrs.evolve(record, revoked_at=self._clock.now())
            return True
