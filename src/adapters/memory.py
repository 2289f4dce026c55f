"""In memory: the Repository port and the API key store.

`InMemoryRepository` is a real implementation of the port, not a mock: a unit of work
takes the repository's lock for its whole life (so concurrent threads serialise, as rows
locked by SELECT ... FOR UPDATE would), stages every change, and applies them all at
commit, or none. It behaves as the SQL adapter does on every call, error paths included
(the contract suite, `credits_domain.testing.contract`, runs on both): the same
arguments are refused with the same errors, a stale wallet is a `ConcurrencyConflict`,
and a unit of work is unusable once one of its calls raised.

It also charges set-based (`ports.ChargePath`): `reserve_fast` and `settle_fast` each
take the same lock for one call and work on whole columns, and answer None, as the SQL
adapter does, whenever the request needs the units-of-work path. A batch settled that
way is stored as columns: its ledger entries and ownership records are built when read
(`_Charges`), so a datum costs a dict entry, not objects.
"""

from __future__ import annotations

import bisect
import contextlib
import secrets
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Self, overload

import attrs

from credits_domain import (
    AlreadyRefunded,
    ApiKeyInfo,
    BoughtMeanwhile,
    Cause,
    Channel,
    Clock,
    ConcurrencyConflict,
    Contact,
    Credits,
    CreditsError,
    EntryKind,
    FastReservation,
    Hold,
    IdempotencyRecord,
    InvalidRequest,
    LedgerEntry,
    NotCharged,
    Operation,
    Ownership,
    Price,
    Settled,
    Status,
    UnknownApiKey,
    Wallet,
)
from credits_domain.charging import Candidates, ChargeRequest, ChargeResult, datum_key
from credits_domain.errors import invariant
from credits_domain.events import Event
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
from credits_domain.wallet import Tally

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


def _check_entry_seq(record: IdempotencyRecord) -> None:
    """As the SQL schema's check: a top-up's record points at a seq, and holds nothing else."""
    seq = record.entry_seq
    if seq is None:
        return
    if not _whole(seq) or not 0 <= seq <= MAX_INT64:
        raise InvalidRequest(f"entry_seq must be a whole number from 0 to 2**63-1, got {seq!r}")
    if record.hold_id is not None or record.result is not None:
        raise InvalidRequest("a top-up's idempotency record has no hold and no charge result")


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
        grants={
            grant_id: attrs.evolve(grant, expires_at=_instant(grant.expires_at))
            for grant_id, grant in wallet.grants.items()
        },
        members=dict(wallet.members),
        low_thresholds=dict(wallet.low_thresholds),
        tallies=dict(wallet.tallies),
        pending_entries=[],
        pending_events=[],
    )


def _copy(wallet: Wallet) -> Wallet:
    return attrs.evolve(
        wallet,
        balances=dict(wallet.balances),
        holds=dict(wallet.holds),
        grants=dict(wallet.grants),
        members=dict(wallet.members),
        low_thresholds=dict(wallet.low_thresholds),
        tallies=dict(wallet.tallies),
        pending_entries=[],
        pending_events=[],
    )


class _Charges:
    """The CHARGE entries of one batch settled in one call (R19: one entry per datum), as
    columns: the charged contacts in order, priced by channel, one instant, one cause but
    the datum. An entry, its running balance and the ownership it bought are built when
    read; the running balances once, at the first read of an entry."""

    __slots__ = (
        "_after",
        "account",
        "at",
        "before",
        "contacts",
        "cost",
        "destination",
        "first_seq",
        "idempotency_key",
        "operation",
        "period",
        "plan",
        "prices",
    )

    def __init__(
        self,
        *,
        request: ChargeRequest,
        charged: Candidates,
        first_seq: int,
        at: datetime,
        wallet: Wallet,
    ) -> None:
        self.account = request.account
        self.first_seq = first_seq
        self.at = at
        self.contacts = charged.contacts
        self.prices = charged.prices
        self.cost = charged.cost
        self.before = dict(wallet.balances)  # each pool's balance before the first charge
        self.operation: Operation = request.operation
        self.plan = wallet.plan.name
        self.period = wallet.period_index
        self.idempotency_key = request.idempotency_key
        self.destination = request.destination
        self._after: list[int] | None = None

    def __len__(self) -> int:
        return len(self.contacts)

    def price(self, offset: int) -> Price:
        return self.prices[self.contacts[offset].channel]

    def charges(self, pool: Channel) -> bool:
        return self.cost.of(pool) > 0

    def entry(self, offset: int) -> LedgerEntry:
        contact, price = self.contacts[offset], self.price(offset)
        return LedgerEntry(
            account=self.account,
            seq=self.first_seq + offset,
            kind=EntryKind.CHARGE,
            pool=price.pool,
            amount=-price.credits,
            at=self.at,
            balance_after=self._balances_after()[offset],
            cause=Cause(
                operation=self.operation,
                datum=str(contact),
                plan=self.plan,
                period=self.period,
                idempotency_key=self.idempotency_key,
                destination=self.destination,
            ),
        )

    def ownership(self, offset: int) -> Ownership:
        price = self.price(offset)
        return Ownership(
            account=self.account,
            contact=self.contacts[offset],
            pool=price.pool,
            credits=price.credits,
            charged_at=self.at,
            entry_seq=self.first_seq + offset,
        )

    def _balances_after(self) -> list[int]:
        after = self._after
        if after is None:
            running, after = dict(self.before), []
            for contact in self.contacts:
                price = self.prices[contact.channel]
                running[price.pool] -= price.credits
                after.append(running[price.pool])
            self._after = after
        return after


class _Ledger(Sequence[LedgerEntry]):
    """One account's ledger; an entry's seq is its index. Entries saved by a unit of work
    are kept as they are; a batch settled in one call is kept as one `_Charges`."""

    def __init__(self) -> None:
        self._starts: list[int] = []  # the seq of each part's first entry
        self._parts: list[list[LedgerEntry] | _Charges] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def extend(self, entries: Sequence[LedgerEntry]) -> None:
        if not entries:
            return
        last = self._parts[-1] if self._parts else None
        if isinstance(last, list):
            last.extend(entries)
        else:
            self._starts.append(self._size)
            self._parts.append(list(entries))
        self._size += len(entries)

    def add_charges(self, charges: _Charges) -> None:
        invariant(charges.first_seq == self._size, "a ledger is numbered without gaps (R19)")
        if len(charges):
            self._starts.append(self._size)
            self._parts.append(charges)
            self._size += len(charges)

    def _part(self, seq: int) -> tuple[list[LedgerEntry] | _Charges, int]:
        invariant(0 <= seq < self._size, "a seq within the ledger")
        index = bisect.bisect_right(self._starts, seq) - 1
        return self._parts[index], seq - self._starts[index]

    @overload
    def __getitem__(self, seq: int) -> LedgerEntry: ...

    @overload
    def __getitem__(self, seq: slice) -> list[LedgerEntry]: ...

    def __getitem__(self, seq: int | slice) -> LedgerEntry | list[LedgerEntry]:
        if isinstance(seq, slice):
            return [self[index] for index in range(*seq.indices(self._size))]
        if seq < 0:
            seq += self._size
        if not 0 <= seq < self._size:
            raise IndexError(f"no entry {seq} in a ledger of {self._size}")
        part, offset = self._part(seq)
        return part[offset] if isinstance(part, list) else part.entry(offset)

    def __iter__(self) -> Iterator[LedgerEntry]:
        return self.iter_from(0)

    def iter_from(self, seq: int) -> Iterator[LedgerEntry]:
        """The entries from `seq` on, in order."""
        if seq >= self._size:
            return
        index = bisect.bisect_right(self._starts, seq) - 1
        offset = seq - self._starts[index]
        for part in self._parts[index:]:
            if isinstance(part, list):
                yield from part[offset:]
            else:
                for at in range(offset, len(part)):
                    yield part.entry(at)
            offset = 0

    def at(self, seq: int) -> datetime:
        part, offset = self._part(seq)
        return part[offset].at if isinstance(part, list) else part.at

    def first_at_or_after(self, instant: datetime) -> int:
        """The seq of the first entry at or after `instant` (entries are in time order)."""
        return bisect.bisect_left(range(self._size), instant, key=self.at)

    def first_after(self, instant: datetime) -> int:
        return bisect.bisect_right(range(self._size), instant, key=self.at)

    def last_of(self, pool: Channel, end: int) -> LedgerEntry | None:
        """The last entry of `pool` before seq `end`."""
        index = bisect.bisect_right(self._starts, end - 1) - 1
        for at in range(index, -1, -1):
            part, start = self._parts[at], self._starts[at]
            stop = min(end - start, len(part))
            if isinstance(part, list):
                for offset in range(stop - 1, -1, -1):
                    if part[offset].pool is pool:
                        return part[offset]
            elif part.charges(pool):  # a batch that charged no credit of `pool` is skipped
                for offset in range(stop - 1, -1, -1):
                    if part.price(offset).pool is pool:
                        return part.entry(offset)
        return None

    def ownership(self, seq: int) -> Ownership:
        part, offset = self._part(seq)
        if isinstance(part, list):  # as errors.invariant, which mypy cannot narrow through
            raise AssertionError("invariant broken: an ownership kept as a seq is a batch's")
        return part.ownership(offset)


class _Owned(Mapping[Contact, Ownership]):
    """What one account owns (R12), by datum key: an Ownership a unit of work recorded, or
    the seq of the CHARGE entry of a batch settled in one call, whose record is built from
    that batch when read."""

    def __init__(self, ledger: _Ledger) -> None:
        self._ledger = ledger
        self.by_key: dict[str, Ownership | int] = {}

    def record(self, key: str) -> Ownership | None:
        found = self.by_key.get(key)
        if found is None or isinstance(found, Ownership):
            return found
        return self._ledger.ownership(found)

    def __getitem__(self, contact: Contact) -> Ownership:
        found = self.record(datum_key(contact))
        if found is None:
            raise KeyError(contact)
        return found

    def __iter__(self) -> Iterator[Contact]:
        for found in self.by_key.values():
            yield (
                found.contact
                if isinstance(found, Ownership)
                else self._ledger.ownership(found).contact
            )

    def __len__(self) -> int:
        return len(self.by_key)


class _Dedup:
    def __init__(self, uow: InMemoryUnitOfWork) -> None:
        self._uow = uow

    def _find(self, account: str, contacts: Collection[Contact]) -> dict[Contact, Ownership]:
        staged = self._uow.staged_owned.get(account, {})
        stored = self._uow.repository.owned_by.get(account)
        found: dict[Contact, Ownership] = {}
        for contact in contacts:
            key = datum_key(contact)
            record = staged.get(key) or (None if stored is None else stored.record(key))
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
                staged = self._uow.staged_owned.setdefault(record.account, {})
                staged[datum_key(record.contact)] = record

    def mark_refunded(self, account: str, contact: Contact, at: datetime) -> None:
        with self._uow.step():
            account, at = check_account(account), _instant(at)
            record = self._find(account, [contact]).get(contact)
            if record is None:
                raise NotCharged(f"{contact} was never charged to account {account!r}")
            if record.refunded_at is not None:
                raise AlreadyRefunded(f"{contact} was refunded at {record.refunded_at}")
            self._uow.staged_owned.setdefault(account, {})[datum_key(contact)] = attrs.evolve(
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
            _check_entry_seq(record)
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
        self.staged_events: dict[str, list[Event]] = {}  # R24: the outbox, by account
        self.staged_owned: dict[str, dict[str, Ownership]] = {}  # by account, then datum key
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
        self.repository.acquire("opening a unit of work")
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
            # As SQL, which never rewrites a stored hold: a renewal (renew_hold) stays.
            renewed = {
                hold_id: kept
                for hold_id, hold in stored.holds.items()
                if (kept := current.holds.get(hold_id)) is not None
                and kept.expires_at > hold.expires_at
            }
            holds = {**stored.holds, **renewed} if renewed else stored.holds
            self._stage(wallet, attrs.evolve(stored, holds=holds, version=expected + 1))

    def _stage(self, wallet: Wallet, stored: Wallet) -> None:
        account = stored.account
        staged = self.staged_entries.setdefault(account, [])
        next_seq = len(self.repository.ledgers.get(account, ())) + len(staged)
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
        # R24: the wallet's new events, written with it (the outbox), numbered without gaps.
        outbox = self.staged_events.setdefault(account, [])
        next_event = len(self.repository.events_by.get(account, ())) + len(outbox) + 1
        events = [
            e if (at := _instant(e.at)) is e.at else attrs.evolve(e, at=at)
            for e in wallet.events_saved()
        ]
        for offset, event in enumerate(events):
            if event.seq < next_event + offset:  # as the SQL events' key (account, seq)
                raise ConcurrencyConflict(
                    f"saving a wallet lost a race with another writer: event {event.seq} "
                    f"of account {account!r} exists already; retry"
                )
            invariant(event.seq == next_event + offset, "a wallet numbers its events without gaps")
        outbox.extend(events)
        self.staged_wallets[account] = stored
        self._versions[account] = stored.version

    def commit(self) -> None:
        invariant(self._state == "open", "commit() inside the `with` block, once")
        invariant(not self._spoiled, "a unit of work whose call failed is never committed")
        repo = self.repository
        with repo.data_lock:
            for account, entries in self.staged_entries.items():
                repo.ledger_of(account).extend(entries)
            for account, events in self.staged_events.items():
                repo.events_by.setdefault(account, []).extend(events)
            repo.wallets.update(self.staged_wallets)
            for account, records in self.staged_owned.items():
                repo.owned_of(account).by_key.update(records)
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
        self.ledgers: dict[str, _Ledger] = {}
        self.owned_by: dict[str, _Owned] = {}
        self.keys: dict[tuple[str, str], IdempotencyRecord] = {}
        self.events_by: dict[str, list[Event]] = {}  # R24: each account's events, by seq

    def unit_of_work(self) -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(self)

    def acquire(self, what: str) -> None:
        """Take the lock of units of work, waiting at most `lock_wait_s`."""
        if not self.lock.acquire(timeout=self.lock_wait_s):
            raise ConcurrencyConflict(
                f"{what} waited {self.lock_wait_s} s for another unit of work to end; retry"
            )

    def ledger_of(self, account: str) -> _Ledger:
        ledger = self.ledgers.get(account)
        if ledger is None:
            ledger = self.ledgers[account] = _Ledger()
        return ledger

    def owned_of(self, account: str) -> _Owned:
        owned = self.owned_by.get(account)
        if owned is None:
            owned = self.owned_by[account] = _Owned(self.ledger_of(account))
        return owned

    def renew_hold(
        self, account: str, hold_id: str, *, now: datetime, expires_at: datetime
    ) -> bool:
        """Repository.renew_hold: the stored wallet's hold, at the same version (a unit
        of work holds `lock` from its load to its commit, so none is under way)."""
        account = check_account(account)
        if not isinstance(hold_id, str):
            raise InvalidRequest(f"a hold id is a string, got {hold_id!r}")
        now, expires_at = _instant(now), _instant(expires_at)
        self.acquire("renewing a hold")
        try:
            wallet = self.wallets.get(account)
            hold = None if wallet is None else wallet.holds.get(hold_id)
            if wallet is None or hold is None or hold.expires_at <= now:
                return False
            if hold.expires_at < expires_at:
                renewed = attrs.evolve(hold, expires_at=expires_at)
                with self.data_lock:
                    self.wallets[account] = attrs.evolve(
                        wallet, holds={**wallet.holds, hold_id: renewed}
                    )
            return True
        finally:
            self.lock.release()

    # -- set-based charging (ports.ChargePath) ---------------------------------------------

    def reserve_fast(
        self, request: ChargeRequest, *, now: datetime, expires_at: datetime
    ) -> FastReservation | None:
        """ports.ChargePath: the units-of-work path's reserve, for a request that needs
        no renewal, no release of an expired hold and no look at an idempotency record."""
        now, expires_at = _instant(now), _instant(expires_at)
        account, key = request.account, request.idempotency_key
        self.acquire("reserving credits")
        try:
            wallet = self.wallets.get(account)
            if wallet is None or not _chargeable_as_is(wallet, now):
                return None
            if any(hold.expires_at <= now for hold in wallet.holds.values()):
                return None
            if key is not None and (account, key) in self.keys:
                return None
            owned = self._owned_among(account, request.unique_keys)
            prices = wallet.plan.prices
            need = Candidates.among(request, owned=owned, prices=prices).cost
            capacity = Credits.from_pools(
                {pool: min(need.of(pool), wallet.available(pool)) for pool in Channel}
            )
            hold_id, stored = None, wallet
            if capacity.email or capacity.mobile:
                hold_id = f"{account}#{wallet.next_hold_no}"  # as Wallet.place_hold numbers
                hold = Hold(
                    hold_id=hold_id, credits=capacity, created_at=now, expires_at=expires_at
                )
                stored = attrs.evolve(
                    wallet,
                    balances=dict(wallet.balances),
                    holds={**wallet.holds, hold_id: hold},
                    next_hold_no=wallet.next_hold_no + 1,
                    version=wallet.version + 1,
                    pending_entries=[],
                )
                stored.check_invariants()
            with self.data_lock:
                self.wallets[account] = stored
                if key is not None:
                    self.keys[(account, key)] = IdempotencyRecord(
                        account=account,
                        key=key,
                        fingerprint=request.fingerprint,
                        hold_id=hold_id,
                        created_at=now,
                    )
            return FastReservation(
                hold_id=hold_id,
                capacity=capacity,
                owned=frozenset(
                    contact
                    for contact, known in zip(request.unique, request.unique_keys, strict=True)
                    if known in owned
                )
                if owned
                else frozenset(),
                prices=prices,
            )
        finally:
            self.lock.release()

    def settle_fast(
        self,
        request: ChargeRequest,
        *,
        now: datetime,
        hold_id: str | None,
        charged: Candidates,
        result: ChargeResult,
    ) -> Settled | BoughtMeanwhile | None:
        """ports.ChargePath: the units-of-work path's settle, for a request whose hold and
        idempotency record are still its own, on a wallet that needs no renewal."""
        now = _instant(now)
        account, key = request.account, request.idempotency_key
        self.acquire("settling a charge")
        try:
            wallet = self.wallets.get(account)
            if wallet is None or not _chargeable_as_is(wallet, now):
                return None
            held = Credits()
            if hold_id is not None:
                hold = wallet.holds.get(hold_id)
                if hold is None or hold.expires_at <= now:
                    return None  # the units-of-work path says HoldExpired (R16)
                held = hold.credits
            if key is not None:
                record = self.keys.get((account, key))
                if record is None or record.result is not None or record.hold_id != hold_id:
                    return None  # replayed or taken over meanwhile (R17)
            bought = self._owned_among(account, charged.keys)
            if bought:  # bought by a concurrent request: free for this one (R12)
                return BoughtMeanwhile(
                    contacts=frozenset(
                        contact
                        for contact, known in zip(charged.contacts, charged.keys, strict=True)
                        if known in bought
                    )
                )
            cost = charged.cost
            emails = sum(1 for contact in charged.contacts if contact.channel is Channel.EMAIL)
            if not wallet.fires_nothing(cost, emails):
                return None  # R24: the charge may fire an event; the Wallet writes it
            invariant(
                cost.email <= held.email and cost.mobile <= held.mobile,
                "a charge within its hold (R15, R16)",
            )
            ledger, owned = self.ledger_of(account), self.owned_of(account)
            first_seq = wallet.next_seq
            invariant(len(ledger) == first_seq, "a wallet numbers its ledger's entries")
            last_at = ledger.at(first_seq - 1) if first_seq else now
            at = now if last_at <= now else last_at  # never before the last entry (R19)
            charges = _Charges(
                request=request, charged=charged, first_seq=first_seq, at=at, wallet=wallet
            )
            holds = dict(wallet.holds)
            if hold_id is not None:
                del holds[hold_id]
            tallies = dict(wallet.tallies)
            if emails:  # R25: the period's emails charged, as the Wallet counts them
                found = tallies.get(wallet.period_index, Tally())
                tallies[wallet.period_index] = attrs.evolve(found, emails=found.emails + emails)
            stored = attrs.evolve(
                wallet,
                balances={pool: wallet.balances[pool] - cost.of(pool) for pool in Channel},
                tallies=tallies,
                holds=holds,
                next_seq=first_seq + len(charged),
                version=wallet.version + 1,
                pending_entries=[],
            )
            stored.check_invariants()
            with self.data_lock:
                ledger.add_charges(charges)
                owned.by_key.update(
                    zip(charged.keys, range(first_seq, first_seq + len(charged)), strict=True)
                )
                self.wallets[account] = stored
                if key is not None:
                    self.keys[(account, key)] = IdempotencyRecord(
                        account=account,
                        key=key,
                        fingerprint=request.fingerprint,
                        hold_id=None,
                        created_at=now,
                        result=result,
                    )
            return Settled()
        finally:
            self.lock.release()

    def _owned_among(self, account: str, keys: Sequence[str]) -> frozenset[str]:
        """The keys among `keys` of data the account owns: one C-level pass."""
        owned = self.owned_by.get(account)
        if owned is None or not owned.by_key:
            return frozenset()
        return frozenset(owned.by_key.keys() & keys)

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
            ledger = self.ledgers.get(account)
            if ledger is None or limit == 0:
                return []
            start = after_seq + 1  # seq is the entry's index in its account's ledger
            if since is not None:
                start = max(start, ledger.first_at_or_after(since))
            page: list[LedgerEntry] = []
            for entry in ledger.iter_from(start):
                if until is not None and entry.at >= until:
                    break
                page.append(entry)
                if len(page) >= limit:
                    break
            return page

    def events(self, account: str, *, after_seq: int = 0, limit: int) -> Sequence[Event]:
        """Repository.events: the account's events after `after_seq`, oldest first."""
        if not _whole(after_seq) or not 0 <= after_seq <= MAX_INT64:
            raise InvalidRequest(
                f"after_seq must be a whole number from 0 to 2**63-1, got {after_seq!r}"
            )
        check_account(account)
        self._check_limit(limit)
        with self.data_lock:
            log = self.events_by.get(account, [])
            return log[after_seq : after_seq + limit]  # seq n is at index n - 1

    def last_entry(self, account: str, pool: Channel, at: datetime) -> LedgerEntry | None:
        if not isinstance(pool, Channel):
            raise InvalidRequest(f"pool must be a Channel, got {pool!r}")
        check_account(account)
        at = require_utc(at, "at")
        with self.data_lock:
            ledger = self.ledgers.get(account)
            if ledger is None:
                return None
            return ledger.last_of(pool, ledger.first_after(at))

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

    def owned(
        self, account: str, *, after: Contact | None = None, limit: int
    ) -> Sequence[Ownership]:
        if after is not None and not isinstance(after, Contact):
            raise InvalidRequest(f"after must be a Contact or None, got {after!r}")
        check_account(account)
        self._check_limit(limit)
        with self.data_lock:
            records = list(self.owned_by.get(account, {}).values())
        # Sorted per call: memory holds test-sized accounts; SQL reads its key's index.
        order = sorted(records, key=lambda r: (r.contact.channel.value, r.contact.value))
        if after is not None:
            cursor = (after.channel.value, after.value)
            order = [r for r in order if (r.contact.channel.value, r.contact.value) > cursor]
        return order[:limit]

    def accounts(self, *, after: str | None = None, limit: int) -> Sequence[str]:
        after = None if after is None else check_account(after)
        self._check_limit(limit)
        with self.data_lock:
            ids = [a for a in self.wallets if after is None or a > after]
        # heapq would avoid sorting every id; a listing for an operator needs no more.
        return sorted(ids)[:limit]


def _chargeable_as_is(wallet: Wallet, now: datetime) -> bool:
    """Can the set-based path charge this wallet without the aggregate's help: is it
    active (R6), with no renewal due (R3..R7), and no expiring grant to draw on (R23)?"""
    return wallet.status is Status.ACTIVE and wallet.period().end > now and not wallet.grants


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
