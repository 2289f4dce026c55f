"""In memory: the Repository port and the API key store.

`InMemoryRepository` is a real implementation of the port, not a mock: a unit of work
takes the repository's lock for its whole life (so concurrent threads serialise, as rows
locked by SELECT ... FOR UPDATE would), stages every change, and applies them all at
commit, or none. It behaves as the SQL adapter does on every call, error paths included
(the contract suite, `credits_domain.testing.contract`, runs on both): the same
arguments are refused with the same errors, a stale wallet is a `ConcurrencyConflict`,
and a unit of work is unusable once one of its calls raised.
"""

from __future__ import annotations

import bisect
import contextlib
import secrets
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import attrs

from credits_domain import (
    AlreadyRefunded,
    ApiKeyInfo,
    Channel,
    Clock,
    ConcurrencyConflict,
    Contact,
    CreditsError,
    IdempotencyRecord,
    InvalidRequest,
    LedgerEntry,
    NotCharged,
    Ownership,
    UnknownApiKey,
    Wallet,
)
from credits_domain.errors import invariant
from credits_domain.keys import (
    KEY_ENTROPY_BYTES,
    ApiKeyRecord,
    IssuedKey,
    check_key_id,
    key_id_of,
    new_key,
    verify,
)
from credits_domain.limits import check_account, check_idempotency_key
from credits_domain.periods import require_utc

MAX_INT64 = 2**63 - 1  # what SQL storage holds: the same bound on seqs and limits here


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _instant(at: datetime) -> datetime:
    """What SQL storage does to an instant it stores: refuse a naive one, keep UTC."""
    if type(at) is datetime and at.tzinfo is UTC:
        return at  # the service's instants are UTC already: no copy per datum
    return require_utc(at, "a stored instant")


def _check_key(key: object) -> str:
    checked = check_idempotency_key(key)
    if checked is None:
        raise InvalidRequest("an idempotency record needs a key, got None")
    return checked


def _stored(wallet: Wallet) -> Wallet:
    """A private copy of the wallet, with its instants as storage keeps them."""
    holds = {
        hold_id: attrs.evolve(
            hold, created_at=_instant(hold.created_at), expires_at=_instant(hold.expires_at)
        )
        for hold_id, hold in wallet.holds.items()
    }
    return attrs.evolve(
        wallet,
        anchor=_instant(wallet.anchor),
        ends_at=None if wallet.ends_at is None else _instant(wallet.ends_at),
        balances=dict(wallet.balances),
        holds=holds,
        pending_entries=[],
    )


def _copy(wallet: Wallet) -> Wallet:
    return attrs.evolve(
        wallet, balances=dict(wallet.balances), holds=dict(wallet.holds), pending_entries=[]
    )


class _Dedup:
    def __init__(self, uow: InMemoryUnitOfWork) -> None:
        self._uow = uow

    def _find(self, account: str, contacts: Collection[Contact]) -> dict[Contact, Ownership]:
        staged = self._uow.staged_owned.get(account, {})
        stored = self._uow.repository.owned_by.get(account, {})
        found: dict[Contact, Ownership] = {}
        for contact in contacts:
            record = staged.get(contact) or stored.get(contact)
            if record is not None:
                found[contact] = record
        return found

    def owned(self, account: str, contacts: Collection[Contact]) -> Mapping[Contact, Ownership]:
        with self._uow.step():
            return self._find(check_account(account), contacts)

    def add(self, records: Sequence[Ownership]) -> None:
        with self._uow.step():
            checked = []
            accounts: set[str] = set()
            for record in records:
                if record.account not in accounts:
                    accounts.add(check_account(record.account))
                if record.credits <= 0:  # the message is built only for the crash
                    invariant(False, f"an owned datum cost credits: {record}")
                charged_at = _instant(record.charged_at)
                refunded_at = None if record.refunded_at is None else _instant(record.refunded_at)
                if charged_at is not record.charged_at or refunded_at is not record.refunded_at:
                    record = attrs.evolve(record, charged_at=charged_at, refunded_at=refunded_at)
                checked.append(record)
            for record in checked:
                if self._find(record.account, [record.contact]):
                    # As the SQL adapter's primary key: a concurrent buyer won (R12).
                    raise ConcurrencyConflict(
                        f"recording ownership lost a race with another writer: "
                        f"{record.contact} is owned by account {record.account!r} already; retry"
                    )
                self._uow.staged_owned.setdefault(record.account, {})[record.contact] = record

    def mark_refunded(self, account: str, contact: Contact, at: datetime) -> None:
        with self._uow.step():
            account, at = check_account(account), _instant(at)
            record = self._find(account, [contact]).get(contact)
            if record is None:
                raise NotCharged(f"{contact} was never charged to account {account!r}")
            if record.refunded_at is not None:
                raise AlreadyRefunded(f"{contact} was refunded at {record.refunded_at}")
            self._uow.staged_owned.setdefault(account, {})[contact] = attrs.evolve(
                record, refunded_at=at
            )


class _Idempotency:
    def __init__(self, uow: InMemoryUnitOfWork) -> None:
        self._uow = uow

    def get(self, account: str, key: str) -> IdempotencyRecord | None:
        with self._uow.step():
            ident = (check_account(account), _check_key(key))
            return self._uow.staged_keys.get(ident) or self._uow.repository.keys.get(ident)

    def put(self, record: IdempotencyRecord) -> None:
        with self._uow.step():
            ident = (check_account(record.account), _check_key(record.key))
            stored = attrs.evolve(record, created_at=_instant(record.created_at))
            self._uow.staged_keys[ident] = stored


class InMemoryUnitOfWork:
    """One transaction in memory: staged changes, applied at commit or dropped."""

    def __init__(self, repository: InMemoryRepository) -> None:
        self.repository = repository
        self.dedup = _Dedup(self)
        self.idempotency = _Idempotency(self)
        self._state = "new"  # -> "open" -> "committed"; "closed" once left
        self._spoiled = False
        self._versions: dict[str, int] = {}  # per account: the version expected stored
        self.staged_wallets: dict[str, Wallet] = {}
        self.staged_entries: dict[str, list[LedgerEntry]] = {}
        self.staged_owned: dict[str, dict[Contact, Ownership]] = {}
        self.staged_keys: dict[tuple[str, str], IdempotencyRecord] = {}

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """One call of the port: only inside the block, before commit, and never after
        a call that raised (as on PostgreSQL, whose transaction a failure aborts)."""
        invariant(
            self._state == "open",
            "a unit of work is used only inside its `with` block, before commit()",
        )
        invariant(
            not self._spoiled,
            "a unit of work is left once a call failed: its transaction is lost",
        )
        try:
            yield
        except CreditsError:
            self._spoiled = True
            raise

    def __enter__(self) -> Self:
        invariant(self._state == "new", "a unit of work is entered once")
        # Not re-entrant, and bounded, as a database's lock: a unit of work opened while
        # another is open (another thread, or nested in this one) waits, then loses.
        if not self.repository.lock.acquire(timeout=self.repository.lock_wait_s):
            raise ConcurrencyConflict(
                f"opening a unit of work waited {self.repository.lock_wait_s} s for "
                "another unit of work to end; retry"
            )
        self._state = "open"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._state = "closed"
        self.repository.lock.release()

    def load_wallet(self, account: str) -> Wallet | None:
        with self.step():
            account = check_account(account)
            wallet = self.staged_wallets.get(account) or self.repository.wallets.get(account)
            if wallet is None:
                return None
            self._versions[account] = wallet.version
            return _copy(wallet)

    def add_wallet(self, wallet: Wallet) -> None:
        wallet.check_invariants()
        with self.step():
            account = check_account(wallet.account)
            stored = _stored(wallet)
            if account in self.staged_wallets or account in self.repository.wallets:
                # As the SQL adapter's primary key.
                raise ConcurrencyConflict(
                    f"adding a wallet lost a race with another writer: account {account!r} "
                    "exists already; retry"
                )
            self._stage(wallet, stored)

    def save_wallet(self, wallet: Wallet) -> None:
        wallet.check_invariants()
        with self.step():
            account = check_account(wallet.account)
            stored = _stored(wallet)
            expected = self._versions.get(account, wallet.version)
            current = self.staged_wallets.get(account) or self.repository.wallets.get(account)
            if current is None or current.version != expected:
                raise ConcurrencyConflict(
                    f"saving a wallet: the wallet of {account!r} is not stored at version "
                    f"{expected} (another unit of work saved it since it was loaded, or "
                    "it was never added); load it again and retry"
                )
            self._stage(wallet, attrs.evolve(stored, version=expected + 1))

    def _stage(self, wallet: Wallet, stored: Wallet) -> None:
        account = stored.account
        staged = self.staged_entries.setdefault(account, [])
        next_seq = len(self.repository.ledgers.get(account, [])) + len(staged)
        entries = [
            e if (at := _instant(e.at)) is e.at else attrs.evolve(e, at=at)
            for e in wallet.pending_entries
        ]
        for offset, entry in enumerate(entries):
            if entry.seq < next_seq + offset:  # as the SQL ledger's key (account, seq)
                raise ConcurrencyConflict(
                    f"saving a wallet lost a race with another writer: entry {entry.seq} "
                    f"of the ledger of {account!r} exists already; retry"
                )
            invariant(entry.seq == next_seq + offset, "a wallet numbers its entries without gaps")
        wallet.entries_saved()
        staged.extend(entries)
        self.staged_wallets[account] = stored
        self._versions[account] = stored.version

    def commit(self) -> None:
        invariant(self._state == "open", "commit() inside the `with` block, once")
        invariant(not self._spoiled, "a unit of work whose call failed is never committed")
        repo = self.repository
        with repo.data_lock:
            for account, entries in self.staged_entries.items():
                repo.ledgers.setdefault(account, []).extend(entries)
            repo.wallets.update(self.staged_wallets)
            for account, records in self.staged_owned.items():
                repo.owned_by.setdefault(account, {}).update(records)
            repo.keys.update(self.staged_keys)
        self._state = "committed"


class InMemoryRepository:
    """The Repository port in memory; safe to share between threads."""

    def __init__(self, *, lock_wait_s: float = 30.0) -> None:
        if not lock_wait_s > 0:
            raise InvalidRequest(f"lock_wait_s must be > 0, got {lock_wait_s!r}")
        self.lock_wait_s = lock_wait_s
        # Held by a unit of work for its whole life: the writers of every account queue.
        self.lock = threading.Lock()
        # Held for a moment by reads and by commit: reads never wait for a unit of work.
        self.data_lock = threading.Lock()
        self.wallets: dict[str, Wallet] = {}
        self.ledgers: dict[str, list[LedgerEntry]] = {}
        self.owned_by: dict[str, dict[Contact, Ownership]] = {}
        self.keys: dict[tuple[str, str], IdempotencyRecord] = {}

    def unit_of_work(self) -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(self)

    @staticmethod
    def _check_limit(limit: int) -> int:
        if not _whole(limit) or not 0 <= limit <= MAX_INT64:
            raise InvalidRequest(f"limit must be a whole number from 0 to 2**63-1, got {limit!r}")
        return limit

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
        check_account(account)
        since = None if since is None else require_utc(since, "since")
        until = None if until is None else require_utc(until, "until")
        self._check_limit(limit)
        with self.data_lock:
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
        if not isinstance(pool, Channel):
            raise InvalidRequest(f"pool must be a Channel, got {pool!r}")
        check_account(account)
        at = require_utc(at, "at")
        with self.data_lock:
            ledger = self.ledgers.get(account, [])
            end = bisect.bisect_right(ledger, at, key=lambda e: e.at)
            for entry in reversed(ledger[:end]):
                if entry.pool is pool:
                    return entry
            return None

    def due_accounts(self, now: datetime, limit: int) -> Sequence[str]:
        now = require_utc(now, "now")
        self._check_limit(limit)
        with self.data_lock:
            due = [
                (boundary, account)
                for account, wallet in self.wallets.items()
                if (boundary := wallet.next_boundary_at) is not None and boundary <= now
            ]
        # Oldest boundary first, as the SQL adapter reads its index.
        return [account for _, account in sorted(due)[:limit]]

    def accounts(self, *, after: str | None = None, limit: int) -> Sequence[str]:
        after = None if after is None else check_account(after)
        self._check_limit(limit)
        with self.data_lock:
            ids = [a for a in self.wallets if after is None or a > after]
        # heapq would avoid sorting every id; a listing for an operator needs no more.
        return sorted(ids)[:limit]


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

    def list_keys(
        self, *, account: str | None = None, after: str | None = None, limit: int
    ) -> Sequence[ApiKeyInfo]:
        account = None if account is None else check_account(account)
        after = None if after is None else check_key_id(after)
        if not _whole(limit) or not 0 <= limit <= MAX_INT64:
            raise InvalidRequest(f"limit must be a whole number from 0 to 2**63-1, got {limit!r}")
        with self._lock:
            records = [
                r
                for r in self._records.values()
                if (account is None or r.account == account) and (after is None or r.key_id > after)
            ]
        return [
            ApiKeyInfo(
                key_id=r.key_id, account=r.account, created_at=r.created_at, revoked_at=r.revoked_at
            )
            for r in sorted(records, key=lambda r: r.key_id)[:limit]
        ]
