"""The ports the core defines; adapters implement them (hexagonal architecture).

- `Clock`: the only source of time (all instants timezone-aware UTC).
- `Verifier`: verifies a batch of contacts in one call (R11), so an adapter can verify
  them concurrently. It may raise: the service turns any failure into UNKNOWN (R10).
- `Repository`: storage. Writes happen in a `UnitOfWork`: everything a unit of work
  does (wallet, ledger entries, ownership, idempotency record) commits together or not
  at all. While a unit of work has loaded an account's wallet, no other unit of work
  may change that account (a lock, or an optimistic check that raises
  `ConcurrencyConflict` at save or commit).
- `ApiKeyStore`: the HTTP API's keys.
- `Heartbeat` (optional): runs a function periodically while the service waits for the
  verifier, so that a request's hold (its lease, R16) is renewed during a long call.

What the harness (`credits_domain.testing`) asks of an adapter besides the calls below:
- `make_repository()` (the contract suites) and the state machine's factory build a
  fresh, empty store for every test and example: nothing of one is seen by the next.
- A repository with a `close()` has it called once its test or example ends; a store
  still open keeps no lock another test needs.
- Every key in storage is per account: the ledger, the ownership records and the
  idempotency keys of account `a` are never those of `a:b`, `a/b` or `a%3Ab` (escape
  ids, or keep the account in a column of its own).

Errors, the same from every adapter (the contract suites in `credits_domain.testing`
check them on each):
- A wrong argument raises `InvalidRequest` before storage is touched: an account id or
  idempotency key that `credits_domain.limits` refuses, a naive datetime, a limit or
  seq that is not a whole number in range. An account that never subscribed is not an
  error here: reads answer None or nothing (the service raises `UnknownAccount`).
- A lost race raises `ConcurrencyConflict` (the service retries the unit of work).
- Storage that cannot be reached raises `StorageUnavailable`; anything else it refuses
  or fails at raises `StorageError`. No driver exception (SQLAlchemy, psycopg, sqlite3)
  ever escapes an adapter; the message is one line naming the operation.
- A broken precondition that only a bug can cause (an ownership record of no credits,
  a unit of work used outside its block) is an `AssertionError` (`errors.invariant`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import attrs

from credits_domain.charging import Candidates, ChargeRequest, ChargeResult
from credits_domain.contact import Channel, Contact
from credits_domain.dedup import Ownership
from credits_domain.events import Event
from credits_domain.keys import IssuedKey
from credits_domain.ledger import LedgerEntry
from credits_domain.plans import Credits, Price
from credits_domain.verdict import Verdict
from credits_domain.wallet import Wallet


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware."""
        ...


@runtime_checkable
class Verifier(Protocol):
    def verify(self, contacts: Sequence[Contact]) -> Sequence[Verdict]:
        """One verdict per contact, in the same order."""
        ...


@runtime_checkable
class Heartbeat(Protocol):
    def beating(self, interval_s: float, beat: Callable[[], bool]) -> AbstractContextManager[None]:
        """While the block runs, call `beat` every `interval_s` seconds (the first call one
        interval after entering), until it answers False or the block ends; leaving the
        block stops the beats and waits for one under way. `beat` never raises (the
        service catches what renewing raises); an adapter bounds the beats it runs (how
        many at once, how many in all) and simply skips beats beyond its bounds."""
        ...


@attrs.frozen(kw_only=True)
class IdempotencyRecord:
    """R17: the first request under a key.

    For a charging request, `result` is None while it is in flight. For a top-up (R8),
    which is done in one unit of work and so is never in flight, `entry_seq` is the seq
    of its first ledger entry: its answer is rebuilt from the ledger, whose entries never
    change (R19), rather than stored twice; `hold_id` and `result` are then None.
    """

    account: str
    key: str
    fingerprint: str
    hold_id: str | None
    created_at: datetime
    result: ChargeResult | None = None
    entry_seq: int | None = None


class DedupRegistry(Protocol):
    """Which data each account owns (R12). Asked per request, never loaded whole."""

    def owned(self, account: str, contacts: Collection[Contact]) -> Mapping[Contact, Ownership]:
        """The ownership records among `contacts` (a bounded batch); an account that
        owns nothing, or never subscribed, gets an empty mapping. Inside an open unit of
        work it sees what that unit added and marked as well as what is committed; while
        the unit holds the account's wallet, what it read stays true until it ends (no
        other unit of work records the same datum meanwhile)."""
        ...

    def add(self, records: Sequence[Ownership]) -> None:
        """Record newly charged data (no wallet of the account is needed).

        Raises ConcurrencyConflict if a datum is owned already (stored, added earlier in
        this unit, or twice in `records`); InvalidRequest for a naive instant or an
        invalid account id; AssertionError for a record of no credits (a bug).
        """
        ...

    def mark_refunded(self, account: str, contact: Contact, at: datetime) -> None:
        """Mark an owned datum refunded at `at` (R18); it stays owned.

        Raises NotCharged if the account does not own it (another account's record of the
        same datum is not its own), AlreadyRefunded if it was refunded before (once only),
        InvalidRequest for a naive `at`; after any of them the unit of work is left. The
        mark is committed with the rest of the unit, a wallet saved beside it included,
        and every later unit of work reads it.
        """
        ...


class IdempotencyStore(Protocol):
    def get(self, account: str, key: str) -> IdempotencyRecord | None:
        """The record of (account, key), None if there is none: a key is per account, so
        another account's record under the same key is neither read nor replaced.

        Raises InvalidRequest for an invalid account id or key."""
        ...

    def put(self, record: IdempotencyRecord) -> None:
        """Insert or replace the record of (account, key); its instant reads back in UTC.

        Raises InvalidRequest for an invalid account id or key, a naive `created_at`, or
        an `entry_seq` outside 0..2**63-1 (or given with a hold or a result);
        ConcurrencyConflict if another unit of work inserted the same key first."""
        ...


class UnitOfWork(Protocol):
    """One atomic storage transaction. Leaving the `with` block without `commit()`
    (or by an exception) rolls everything back.

    A unit of work is entered once, used only inside its `with` block and before
    `commit()`, and committed at most once; anything else is a bug (AssertionError).
    Once one of its calls has raised, its transaction is lost (on PostgreSQL the
    database aborts it): the only thing left to do is to leave the block, and any further
    call, `commit()` included, is a bug (AssertionError). Calls raise StorageUnavailable
    or StorageError when the storage fails them.
    """

    @property
    def dedup(self) -> DedupRegistry: ...

    @property
    def idempotency(self) -> IdempotencyStore: ...

    def __enter__(self) -> Self:
        """Begin the transaction. Raises ConcurrencyConflict when another unit of work
        holds what this one needs past the adapter's lock wait (SQLite, memory)."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def load_wallet(self, account: str) -> Wallet | None:
        """The account's wallet as this unit of work sees it (its own saves included),
        locked against other writers until this unit ends; None if it has none.

        Raises ConcurrencyConflict if another unit of work keeps it locked past the
        lock wait; InvalidRequest for an invalid account id."""
        ...

    def add_wallet(self, wallet: Wallet) -> None:
        """Store a new account, with its pending ledger entries.

        Raises ConcurrencyConflict if the account exists (stored, or added in this
        unit); InvalidRequest for a naive instant or an invalid account id."""
        ...

    def save_wallet(self, wallet: Wallet) -> None:
        """Store the wallet's state and append its pending ledger entries (R19).

        The wallet is the one loaded (or added, or saved) in this unit of work, or one
        loaded earlier whose version is still the stored one. Raises ConcurrencyConflict
        if the stored wallet is at another version (saved meanwhile by another unit of
        work), if the account has no stored wallet, or if a ledger entry's seq is taken;
        InvalidRequest for a naive instant."""
        ...

    def commit(self) -> None:
        """Make everything this unit did durable, at once. Raises StorageUnavailable if
        the storage was lost during the commit: whether it committed is then unknown."""
        ...


class Repository(Protocol):
    def unit_of_work(self) -> UnitOfWork: ...

    def entries(
        self,
        account: str,
        *,
        after_seq: int = -1,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> Sequence[LedgerEntry]:
        """Up to `limit` committed entries with seq > after_seq and since <= at < until,
        by seq as a number (not as text: 9 before 10); exactly `limit` of them while more
        remain, so that a reader pages on with the last seq read; none for an account that
        never subscribed.

        Raises InvalidRequest for a limit outside 0..2**63-1, an after_seq outside
        -1..2**63-1 (or either not an int), a naive instant, an invalid account id."""
        ...

    def events(self, account: str, *, after_seq: int = 0, limit: int) -> Sequence[Event]:
        """Up to `limit` committed events of the account (R24) with seq > after_seq, by
        seq; exactly `limit` of them while more remain; none for an account that never
        subscribed. Events are written by save_wallet/add_wallet with the wallet
        (`Wallet.pending_events`), in the same transaction (the outbox).

        Raises InvalidRequest for a limit outside 0..2**63-1, an after_seq outside
        0..2**63-1 (or either not an int), an invalid account id."""
        ...

    def last_entry(self, account: str, pool: Channel, at: datetime) -> LedgerEntry | None:
        """The newest committed entry of `pool` with `at` <= the given instant (R21);
        None if there is none. Raises InvalidRequest for a naive `at`, a pool that is
        not a Channel, an invalid account id."""
        ...

    def renew_hold(
        self, account: str, hold_id: str, *, now: datetime, expires_at: datetime
    ) -> bool:
        """Renew a request's lease (R16): move the expiry of the account's hold `hold_id`
        on to `expires_at` (never back), in a transaction of its own.

        True if the hold is live: stored and expiring after `now`, its expiry now at
        least `expires_at`. False, changing nothing, if it is gone (settled, released,
        taken over by a retry) or lapsed (expiring at or before `now`, released or not
        yet): a renewal never brings back a hold. The wallet row is neither locked nor
        versioned by it, so a renewal never makes a writer of the account conflict (it
        may wait a moment for a writer releasing the very hold). The caller bounds
        `expires_at` by the hold's creation plus ChargePolicy.hold_ttl_s.

        Raises InvalidRequest for an invalid account id, a naive instant or a hold id
        that is not a string."""
        ...

    def due_accounts(self, now: datetime, limit: int) -> Sequence[str]:
        """Up to `limit` accounts whose next period boundary is at or before `now`,
        oldest boundary first (then by account id). Raises InvalidRequest for a naive
        `now` or a limit outside 0..2**63-1."""
        ...

    def owned(
        self, account: str, *, after: Contact | None = None, limit: int
    ) -> Sequence[Ownership]:
        """Up to `limit` committed ownership records of the account (R12; refunded ones
        too, R18), ordered by (channel, value), starting after the datum `after` (the
        last one of the page before; None: from the first). Nothing for an account that
        owns nothing or never subscribed. Read along the ownership key, so a page costs
        the same however much the account owns. The order is the storage's order of the
        key's text: code points in memory, on SQLite and on a PostgreSQL database with
        the C collation; a page always follows the one before it.

        Raises InvalidRequest for a limit outside 0..2**63-1, an `after` that is not a
        Contact, an invalid account id."""
        ...

    def accounts(self, *, after: str | None = None, limit: int) -> Sequence[str]:
        """Up to `limit` committed account ids (every account with a wallet, lapsed ones
        included) greater than `after`, in code-point order of the id (the order of
        Python's `sorted`, whatever the database's collation), so that a reader pages
        through them with the last id of each page as `after`.

        Raises InvalidRequest for an `after` that is not a valid account id, or a limit
        outside 0..2**63-1 (or not an int)."""
        ...


@attrs.frozen(kw_only=True)
class ApiKeyInfo:
    """What an operator may see of an API key: everything but its hash."""

    key_id: str
    account: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@runtime_checkable
class ApiKeyStore(Protocol):
    """Where the API's keys live (the scheme is `credits_domain.keys`). Each call raises
    StorageUnavailable or StorageError when its storage fails it."""

    def create(self, account: str) -> IssuedKey:
        """A new key bound to `account` (which need not have subscribed yet).

        Raises InvalidRequest for an account id that cannot be a URL path segment."""
        ...

    def authenticate(self, token: str) -> str | None:
        """The account of an active key; None for a malformed, unknown or revoked key."""
        ...

    def revoke(self, key_id: str) -> bool:
        """Revoke a key: True if it was active, False if it was revoked already.

        Raises UnknownApiKey if no key has this id (a malformed id included)."""
        ...

    def list_keys(
        self, *, account: str | None = None, after: str | None = None, limit: int
    ) -> Sequence[ApiKeyInfo]:
        """Up to `limit` keys (active and revoked; never their hash) with a key id greater
        than `after`, by key id; only the keys of `account` when it is given (an account
        without keys has none).

        Raises InvalidRequest for an invalid account id, an `after` that is not a key id
        (16 hex digits), or a limit outside 0..2**63-1 (or not an int)."""
        ...


# -- set-based charging (optional) ------------------------------------------------------


@attrs.frozen(kw_only=True)
class FastReservation:
    """What a one-call reserve held: the hold (None when nothing was needed or nothing is
    available), its credits per pool, which of the request's data the account owns, and
    the plan's price of each channel (R2)."""

    hold_id: str | None
    capacity: Credits
    owned: frozenset[Contact]
    prices: Mapping[Channel, Price]


@attrs.frozen(kw_only=True)
class BoughtMeanwhile:
    """A one-call settle changed nothing: these data were bought by a concurrent request
    since the reserve (R12); they are free for this one, which settles again."""

    contacts: frozenset[Contact]


@attrs.frozen(kw_only=True)
class Settled:
    """A one-call settle charged, recorded ownership, released the hold and stored the
    result on the idempotency key, all in one transaction."""


@runtime_checkable
class ChargePath(Protocol):
    """A Repository may also offer charging as one call per phase: set-based, with the
    account's lock held for one statement instead of a conversation. It serves the
    common case and answers None for anything else (no such account, not active, a
    renewal due, an expired hold to release, a key seen before, a hold gone at settle),
    which the service then handles through units of work and the Wallet aggregate. Both
    ways must leave the same rows: a request may reserve one way and settle the other.

    - `reserve_fast`: R12 (owned data), R2 (prices), R15/R16 (hold min(cost, available)
      per pool), R17 (record the key in flight, with the hold).
    - `settle_fast`: check the hold and the key are still the request's; if a datum of
      `charged` is owned by now, BoughtMeanwhile and no change; else one CHARGE entry per
      datum in order (R19), never before the account's last entry, ownership (R12), the
      hold released, `result` stored on the key (R17).

    Both take the batch as columns (`request.unique`/`unique_keys`, `charged.contacts`/
    `keys`/`prices`), so that an adapter can work set-based; `charged` also reads as a
    sequence of `Candidate`. `credits_domain.testing.ChargePathContract` holds an
    adapter to all of this (the in-memory and SQL adapters pass it).
    """

    def reserve_fast(
        self, request: ChargeRequest, *, now: datetime, expires_at: datetime
    ) -> FastReservation | None: ...

    def settle_fast(
        self,
        request: ChargeRequest,
        *,
        now: datetime,
        hold_id: str | None,
        charged: Candidates,
        result: ChargeResult,
    ) -> Settled | BoughtMeanwhile | None: ...
