"""CreditService: the use cases, run against the ports (the application layer).

Charging follows reserve, verify, settle (R16):
1. reserve, in one unit of work: renew the wallet up to now, replay or refuse by
   idempotency key (R17), look up which data the account already owns (R12), and hold
   as many credits as the new data could cost, up to what is available (R15);
2. verify, with no unit of work open, in rounds: only the data that the hold can pay for
   are verified; credits freed by data that fail serve the data after them (R15);
3. settle, in one unit of work: check nobody bought the same data meanwhile, turn the
   hold into one charge per billable datum (R10) and record ownership and the result.
The hold is placed for a short lease (ChargePolicy.lease_s), which the service renews
while it verifies: through a Heartbeat during each verifier call where one is wired, and
between verifier calls in any case; never beyond the hold's creation plus hold_ttl_s.
A crash between the phases leaves only a hold, whose lease lapses within lease_s (R16),
and an unfinished idempotency record, which a retry with the same key then takes over.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

import attrs

from credits_domain.charging import (
    Candidates,
    ChargeRequest,
    ChargeResult,
    Settlement,
    charge_result,
    datum_key,
    settle,
)
from credits_domain.contact import Channel, Contact
from credits_domain.dedup import Ownership
from credits_domain.errors import (
    AlreadyRefunded,
    AlreadySubscribed,
    BatchTooLarge,
    ConcurrencyConflict,
    CreditsError,
    GrantExpiryNotAhead,
    HoldExpired,
    IdempotencyKeyReused,
    InvalidRequest,
    NoActiveSubscription,
    NotAnEmail,
    NotCharged,
    PeriodOutOfRange,
    RefundWindowClosed,
    RequestInFlight,
    UnknownAccount,
    invariant,
)
from credits_domain.events import Event
from credits_domain.guarantee import Guarantee, member_usage, tally
from credits_domain.ledger import Cause, EntryKind, LedgerEntry, Operation
from credits_domain.limits import (
    MAX_ACCOUNTS_PAGE,
    MAX_EVENTS_PAGE,
    MAX_LOW_THRESHOLD,
    STATEMENT_PAGE_SIZE,
    check_account,
    check_destination,
    check_idempotency_key,
    check_reason,
)
from credits_domain.periods import Period, require_utc
from credits_domain.plans import PLANS, Credits, Plan, resolve_plan
from credits_domain.policy import ChargePolicy
from credits_domain.ports import (
    BoughtMeanwhile,
    ChargePath,
    Clock,
    FastReservation,
    Heartbeat,
    IdempotencyRecord,
    Repository,
    Settled,
    UnitOfWork,
    Verifier,
)
from credits_domain.verdict import Verdict
from credits_domain.wallet import PlanChange, Status, Wallet

T = TypeVar("T")

MAX_EVENT_SEQ = 2**63 - 1  # R24: the largest event seq storage keeps (signed 64-bit)


@attrs.frozen(kw_only=True)
class Balance:
    """An account's pools: `email`/`mobile` are balances, `*_available` subtract open holds."""

    email: int
    mobile: int
    email_available: int
    mobile_available: int

    def of(self, pool: Channel) -> int:
        return self.email if pool is Channel.EMAIL else self.mobile


@attrs.frozen(kw_only=True)
class Subscription:
    """A read-only view of an account's subscription."""

    account: str
    plan: Plan
    status: Status
    period: Period
    ends_at: datetime | None
    pending_plan: Plan | None


@attrs.frozen(kw_only=True)
class TopUp:
    """What a top-up granted (R8): one TOP_UP ledger entry per pool topped up, email
    first. `replayed` is True when an idempotent repeat answered the first top-up."""

    account: str
    entries: tuple[LedgerEntry, ...]
    idempotency_key: str | None = None
    replayed: bool = False


def _top_up_fingerprint(credits: Credits, reason: str, expires_at: datetime | None) -> str:
    """R17's digest of a top-up's payload; its prefix keeps it apart from any charge's.
    An expiring grant's instant (R23) is part of it; a plain top-up's digest is as before."""
    payload = f"top_up\x1f{credits.email}\x1f{credits.mobile}\x1f{reason}\x1e"
    if expires_at is not None:
        payload += f"expires_at\x1f{expires_at.isoformat()}\x1e"
    return hashlib.sha256(payload.encode()).hexdigest()


@attrs.frozen(kw_only=True)
class _Reservation:
    """What reserve decided: the hold, and the new data it is for, priced (R2, R16)."""

    hold_id: str | None
    candidates: Candidates
    capacity: Credits
    owned: frozenset[str]  # the keys (datum_key) of the request's data owned already
    reserved_at: datetime  # when the hold was placed: it lives until + hold_ttl_s at most
    limit: Credits | None = None  # R22: the member's allowance left at the reserve


@attrs.frozen(kw_only=True)
class _Verified:
    """What verification ended with: every datum decided, from these verdicts (one per
    candidate, None if never verified) and the keys of the data known to be owned."""

    settlement: Settlement
    verdicts: tuple[Verdict | None, ...]
    owned: frozenset[str]


class _Lease:
    """A request's hold, renewed while the request is verified (R16): each renewal moves
    its expiry on to now + lease_s, never beyond its creation + hold_ttl_s."""

    __slots__ = ("_account", "_hold_id", "_renewed_at", "_reserved_at", "_service")

    def __init__(
        self, service: CreditService, account: str, hold_id: str, reserved_at: datetime
    ) -> None:
        # Made for every request that holds credits: nothing computed until it renews.
        self._service, self._account, self._hold_id = service, account, hold_id
        self._reserved_at = reserved_at
        # Read and written by one beat at a time: a Heartbeat runs `renew` on a thread of
        # its own, but only inside its block, which waits for a beat under way to end.
        self._renewed_at = reserved_at

    @property
    def interval_s(self) -> float:
        """How often to renew: three times per lease, so one lost renewal costs nothing."""
        return self._service.policy.lease_s / 3

    def renew(self) -> bool:
        """Renew now; False once there is no point beating on: the hold is gone or lapsed
        (a retry may have taken the request over), or it has reached its longest life.
        Never raises: a storage failure is tried again at the next beat."""
        policy = self._service.policy
        latest = self._reserved_at + timedelta(seconds=policy.hold_ttl_s)
        now = self._service._now()
        expires_at = min(now + timedelta(seconds=policy.lease_s), latest)
        if expires_at <= now:
            return False
        try:
            live = self._service._repository.renew_hold(
                self._account, self._hold_id, now=now, expires_at=expires_at
            )
        except CreditsError:  # storage down, a lock wait lost: the next beat retries
            return True
        if live:
            self._renewed_at = now
        return live and expires_at < latest

    def renew_if_due(self) -> None:
        """Renew if a third of the lease has passed since the last renewal (between
        verifier calls: one clock read when it is not due)."""
        due = timedelta(seconds=self._service.policy.lease_s / 3)
        if self._service._now() - self._renewed_at >= due:
            self.renew()


@attrs.frozen
class _NewlyOwned:
    """The keys of data a concurrent request bought while this one was verified (R12)."""

    keys: frozenset[str]


# A Verdict cannot be subclassed (an enum with members), so `type(v) is Verdict` is
# `isinstance(v, Verdict)`, and a batch's answer is checked with one C-level pass.
_VERDICT_TYPE = frozenset({Verdict})
_CONTACT_TYPE = frozenset({Contact})


class CreditService:
    """The facade applications code against. Every method is one use case."""

    def __init__(
        self,
        *,
        repository: Repository,
        verifier: Verifier,
        clock: Clock,
        policy: ChargePolicy | None = None,
        plans: Mapping[str, Plan] = PLANS,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self._repository = repository
        self._verifier = verifier
        self._clock = clock
        # Renews a request's lease during a verifier call; without one, the lease is
        # renewed between verifier calls only (a single call must fit in lease_s).
        self._heartbeat = heartbeat
        self._policy = policy if policy is not None else ChargePolicy()
        self._plans = plans
        # Set-based charging, where the repository offers it (see ports.ChargePath).
        self._fast: ChargePath | None = repository if isinstance(repository, ChargePath) else None

    @property
    def policy(self) -> ChargePolicy:
        return self._policy

    @property
    def heartbeat(self) -> Heartbeat | None:
        """What renews a request's lease during a verifier call (None: between calls only)."""
        return self._heartbeat

    # -- plumbing ------------------------------------------------------------------------

    def _now(self) -> datetime:
        return require_utc(self._clock.now(), "Clock.now()")

    def _transact(self, work: Callable[[UnitOfWork], T]) -> T:
        """Run `work` in one unit of work; retry it if it lost a race (bounded).

        `work` reads the clock only after it has loaded (and so locked) the wallet, so
        that an account's ledger entries are in time order as well as in seq order.
        """

        def once() -> T:
            with self._repository.unit_of_work() as uow:
                result = work(uow)
                uow.commit()
                return result

        return self._retrying(once)

    def _retrying(self, call: Callable[[], T]) -> T:
        """`call` again if it lost a race with another writer (a bounded number of times)."""
        attempts = self._policy.max_conflict_retries + 1
        for attempt in range(attempts):
            try:
                return call()
            except ConcurrencyConflict:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _load(self, uow: UnitOfWork, account: str) -> tuple[Wallet, datetime]:
        """The locked wallet, with every passed period boundary and expired hold applied,
        and the instant it was loaded at."""
        wallet = uow.load_wallet(account)
        if wallet is None:
            raise UnknownAccount(account)
        now = self._now()
        wallet.catch_up(now)
        wallet.release_expired_holds(now)
        return wallet, now

    def _change(self, account: str, change: Callable[[Wallet, datetime], T]) -> T:
        account = check_account(account)

        def work(uow: UnitOfWork) -> T:
            wallet, now = self._load(uow, account)
            result = change(wallet, now)
            wallet.check_invariants()
            uow.save_wallet(wallet)
            return result

        return self._transact(work)

    # -- subscriptions (R3..R7) ----------------------------------------------------------

    def subscribe(self, account: str, plan: str | Plan) -> Subscription:
        """Start a subscription and grant the first allowance (R3). A lapsed account starts
        afresh from the new allowance; its forfeited credits never come back (R6)."""
        account = check_account(account)
        chosen = resolve_plan(plan, self._plans)

        def work(uow: UnitOfWork) -> Subscription:
            wallet = uow.load_wallet(account)
            now = self._now()
            if wallet is None:
                wallet = Wallet.open(account, chosen, now)
                uow.add_wallet(wallet)
            else:
                wallet.catch_up(now)
                if wallet.status is not Status.LAPSED:
                    raise AlreadySubscribed(account)
                wallet.restart(chosen, now)
                uow.save_wallet(wallet)
            return self._view(wallet)

        return self._transact(work)

    def change_plan(self, account: str, plan: str | Plan) -> PlanChange:
        """R7: an upgrade acts at once with a pro-rated grant; a downgrade at renewal."""
        chosen = resolve_plan(plan, self._plans)
        return self._change(account, lambda wallet, now: wallet.change_plan(chosen, now))

    def cancel(self, account: str) -> datetime:
        """R6: end the subscription at the end of the current period; returns that instant."""
        return self._change(account, lambda wallet, now: wallet.cancel())

    def pause(self, account: str) -> None:
        """R6: at once; credits are kept, nothing is granted, charges are refused."""
        self._change(account, lambda wallet, now: wallet.pause())

    def resume(self, account: str) -> None:
        self._change(account, lambda wallet, now: wallet.resume())

    def top_up(
        self,
        account: str,
        credits: Credits,
        *,
        reason: str,
        idempotency_key: str | None = None,
        expires_at: datetime | None = None,
    ) -> TopUp:
        """R8: a top-up, promotion or goodwill grant, as ledger entries like any other.

        With `expires_at` (an instant after now) it is an expiring grant (R23): spent
        before plan credits, the soonest-expiring first, and what is left of it at that
        instant leaves the pool as an EXPIRE entry. Its TOP_UP entries carry the instant.

        Under an idempotency key (R17, as for charging), a repeat with the same credits
        and reason grants nothing more and answers the first top-up's entries, read back
        from the ledger; the same key with another payload raises IdempotencyKeyReused.
        """
        account = check_account(account)
        if not isinstance(credits, Credits) or not (credits.email or credits.mobile):
            got = (
                f"email {credits.email} and mobile {credits.mobile}"
                if isinstance(credits, Credits)
                else repr(credits)
            )
            raise InvalidRequest(
                f"a top-up needs credits in at least one pool (email or mobile), got {got}"
            )
        reason = check_reason(reason)
        key = check_idempotency_key(idempotency_key)
        if expires_at is not None:
            expires_at = require_utc(expires_at, "expires_at")
        digest = _top_up_fingerprint(credits, reason, expires_at) if key is not None else ""
        pools = [pool for pool in Channel if credits.of(pool)]

        def work(uow: UnitOfWork) -> list[LedgerEntry] | int:
            wallet, now = self._load(uow, account)
            if key is not None:
                record = uow.idempotency.get(account, key)
                if record is not None:
                    if record.fingerprint != digest or record.entry_seq is None:
                        raise IdempotencyKeyReused(account, key)  # or a charge's key
                    uow.save_wallet(wallet)  # touching the account applies what time did
                    return record.entry_seq
            if wallet.status is Status.LAPSED:
                raise NoActiveSubscription(account)
            if expires_at is not None and expires_at <= now:
                raise GrantExpiryNotAhead(expires_at, now)
            cause = Cause(
                operation=Operation.GRANT,
                plan=wallet.plan.name,
                note=reason,
                idempotency_key=key,
            )
            entries = [
                wallet.top_up(pool, credits.of(pool), now, cause, expires_at=expires_at)
                for pool in pools
            ]
            if key is not None:
                uow.idempotency.put(
                    IdempotencyRecord(
                        account=account,
                        key=key,
                        fingerprint=digest,
                        hold_id=None,
                        created_at=now,
                        entry_seq=entries[0].seq,
                    )
                )
            wallet.check_invariants()
            uow.save_wallet(wallet)
            return entries

        done = self._transact(work)
        if isinstance(done, list):
            return TopUp(account=account, entries=tuple(done), idempotency_key=key)
        # Read after the unit of work: an in-memory SQLite database has one connection.
        # The entries were committed with the record and never change (R19), so the
        # answer is the first one, whatever happened to the account since.
        entries = tuple(self._repository.entries(account, after_seq=done - 1, limit=len(pools)))
        invariant(
            [e.pool for e in entries] == pools
            and all(e.kind is EntryKind.TOP_UP and e.cause.idempotency_key == key for e in entries),
            "a top-up's record points at its own entries",
        )
        return TopUp(account=account, entries=entries, idempotency_key=key, replayed=True)

    def renew_due(self, *, batch_size: int = 500, max_batches: int = 10_000) -> int:
        """Renew every account whose period boundary has passed (for a scheduler).

        Safe to run twice or concurrently: renewing is catching a wallet up to now, and a
        wallet already caught up has nothing to apply. Returns how many accounts it renewed.
        """
        if batch_size < 1 or max_batches < 1:
            raise InvalidRequest("batch_size and max_batches must be >= 1")
        renewed = 0
        seen: set[str] = set()
        for _ in range(max_batches):
            due = [
                a for a in self._repository.due_accounts(self._now(), batch_size) if a not in seen
            ]
            if not due:
                break
            for account in due:
                seen.add(account)
                self._change(account, lambda wallet, now: None)
                renewed += 1
        return renewed

    # -- reading (R20, R21) --------------------------------------------------------------

    def _read(self, account: str, read: Callable[[Wallet], T]) -> T:
        account = check_account(account)

        def work(uow: UnitOfWork) -> T:
            wallet = uow.load_wallet(account)
            if wallet is None:
                raise UnknownAccount(account)
            now = self._now()
            seq, due_at = wallet.next_seq, wallet.next_boundary_at
            # A boundary may write no entry (a paused account, a lapse at zero), nor may a
            # grant's expiry whose remainder a hold keeps (R23): either still changed the
            # wallet, which the renewal job must not find due again.
            boundaries = wallet.catch_up(now)
            released = wallet.release_expired_holds(now)
            if (
                boundaries
                or released
                or wallet.next_seq != seq
                or wallet.next_boundary_at != due_at  # R23: an expiry kept for a hold
                or wallet.pending_entries
                or wallet.pending_events  # R24: period.renewed of a paused account
            ):
                uow.save_wallet(wallet)  # touching an account applies what time has done
            return read(wallet)

        return self._transact(work)

    def balance(self, account: str) -> Balance:
        """The pools now, O(1) in the ledger's size; a lapsed account reads zero (R6)."""

        def read(wallet: Wallet) -> Balance:
            return Balance(
                email=wallet.balance(Channel.EMAIL),
                mobile=wallet.balance(Channel.MOBILE),
                email_available=wallet.available(Channel.EMAIL),
                mobile_available=wallet.available(Channel.MOBILE),
            )

        return self._read(account, read)

    def subscription(self, account: str) -> Subscription:
        return self._read(account, self._view)

    def period(self, account: str, index: int | None = None) -> Period:
        """Billing period `index` of the current subscription (default: the current one).

        Periods 0 to the current one exist; any other index raises PeriodOutOfRange,
        whose message says which exist (a period not begun has no statement yet)."""
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
            raise InvalidRequest(f"a period is a whole number (0 is the first), got {index!r}")

        def read(wallet: Wallet) -> Period:
            if index is None:
                return wallet.period()
            if not 0 <= index <= wallet.period_index:
                raise PeriodOutOfRange(wallet.account, index, wallet.period_index)
            return Period.of(wallet.anchor, index)

        return self._read(account, read)

    def accounts(self, *, after: str | None = None, limit: int = 100) -> list[str]:
        """Up to `limit` (1 to MAX_ACCOUNTS_PAGE) account ids in order of id, after the id
        `after` (a cursor: the last id of the page before). Every account that ever
        subscribed is listed, lapsed ones included."""
        if after is not None:
            after = check_account(after)
        if (
            not isinstance(limit, int)
            or isinstance(limit, bool)
            or not 1 <= limit <= MAX_ACCOUNTS_PAGE
        ):
            raise InvalidRequest(
                f"a page of accounts holds 1 to {MAX_ACCOUNTS_PAGE:,} accounts, got {limit!r}"
            )
        return list(self._repository.accounts(after=after, limit=limit))

    def balance_at(self, account: str, at: datetime) -> Credits:
        """R21: both pools' balances at a past instant, from the ledger."""
        at = require_utc(at, "at")
        self._read(account, lambda wallet: None)
        found = {pool: self._repository.last_entry(account, pool, at) for pool in Channel}
        return Credits.from_pools(
            {pool: entry.balance_after for pool, entry in found.items() if entry is not None}
        )

    def statement(
        self, account: str, period: Period | None = None, *, after_seq: int = -1
    ) -> Iterator[LedgerEntry]:
        """R21: the ledger in order (one period's entries, or all), with running balances.

        Entries are read page by page, so a long ledger is never loaded whole;
        `after_seq` resumes after the entry of that seq (a cursor for paged readers).
        """
        if not isinstance(after_seq, int) or isinstance(after_seq, bool) or after_seq < -1:
            raise InvalidRequest(f"after_seq must be a whole number >= -1, got {after_seq!r}")
        self._read(account, lambda wallet: None)
        since = period.start if period is not None else None
        until = period.end if period is not None else None
        return self._stream(account, since, until, after_seq)

    def _stream(
        self, account: str, since: datetime | None, until: datetime | None, after_seq: int
    ) -> Iterator[LedgerEntry]:
        while True:
            page = self._repository.entries(
                account, after_seq=after_seq, since=since, until=until, limit=STATEMENT_PAGE_SIZE
            )
            yield from page
            if len(page) < STATEMENT_PAGE_SIZE:
                return
            invariant(page[-1].seq > after_seq, "statement pages must advance")
            after_seq = page[-1].seq

    def owned(
        self, account: str, *, after: Contact | None = None, limit: int = 100
    ) -> Sequence[Ownership]:
        """R12: the data the account paid for (refunded ones too, R18), by (channel,
        value), `limit` at most, after the datum `after` (a cursor: the last one read)."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= 10_000:
            raise InvalidRequest(f"limit must be a whole number from 0 to 10000, got {limit!r}")
        self._read(account, lambda wallet: None)
        return self._repository.owned(account, after=after, limit=limit)

    @staticmethod
    def _view(wallet: Wallet) -> Subscription:
        return Subscription(
            account=wallet.account,
            plan=wallet.plan,
            status=wallet.status,
            period=wallet.period(),
            ends_at=wallet.ends_at,
            pending_plan=wallet.pending_plan,
        )

    # -- team members (R22) ----------------------------------------------------------------

    def add_member(self, account: str, member: str) -> bool:
        """R22: make `member` (an id, as an account id) a member of the team `account`;
        False if they were one already."""
        member = check_account(member)
        return self._change(account, lambda wallet, now: wallet.add_member(member))

    def set_member_allowance(self, account: str, member: str, credits: Credits | None) -> None:
        """R22: the member's allowance per pool and period (None: they draw on the team
        pool freely). It acts at once, on what they used this period already."""
        member = check_account(member)
        if credits is not None and not isinstance(credits, Credits):
            raise InvalidRequest(f"an allowance is Credits or None, got {credits!r}")
        self._change(account, lambda wallet, now: wallet.set_member_allowance(member, credits))

    def member_usage(self, account: str, member: str, period: Period | None = None) -> Credits:
        """R22: what the member was charged in a period (default: the current one), less
        the bounce refunds of those charges, from the ledger."""
        account, member = check_account(account), check_account(member)
        if period is not None and not isinstance(period, Period):
            raise InvalidRequest(f"period must be a Period (service.period(...)), got {period!r}")

        def read(wallet: Wallet) -> Period:
            wallet.require_member(member)
            return wallet.period()

        current = self._read(account, read)
        chosen = current if period is None else period
        until = chosen.end + timedelta(seconds=self._policy.refund_window_s, microseconds=1)
        return member_usage(member, chosen, self._stream(account, chosen.start, until, -1))

    # -- events (R24) ----------------------------------------------------------------------

    def set_low_balance_threshold(self, account: str, pool: Channel, credits: int | None) -> None:
        """R24: `credits.low` fires when `pool`'s balance falls to `credits` or below
        (None: back to the default, 10% of the plan's monthly allowance, rounded up). It
        acts from the next balance change; setting it fires nothing by itself."""
        if not isinstance(pool, Channel):
            raise InvalidRequest(f"pool must be a Channel (email or mobile), got {pool!r}")
        if credits is not None and (
            type(credits) is not int or not 0 <= credits <= MAX_LOW_THRESHOLD
        ):
            raise InvalidRequest(
                f"a low-balance threshold is a whole number of credits from 0 to "
                f"{MAX_LOW_THRESHOLD}, or None for the plan's default; got {credits!r}"
            )
        self._change(account, lambda wallet, now: wallet.set_low_threshold(pool, credits))

    def low_balance_thresholds(self, account: str) -> Credits:
        """R24: each pool's low-balance threshold now (the one set, else the default)."""
        return self._read(
            account,
            lambda wallet: Credits.from_pools(
                {pool: wallet.low_threshold(pool) for pool in Channel}
            ),
        )

    def events(
        self, account: str, *, after_seq: int | None = None, limit: int = 100
    ) -> list[Event]:
        """R24: the account's events with seq > `after_seq` (None: from the first), oldest
        first, at most `limit` (1..MAX_EVENTS_PAGE); fewer than `limit` means none more
        for now. Reading applies what time has done first (a renewal due, a grant
        expired), so its events are among them."""
        account = check_account(account)
        if after_seq is not None and (
            type(after_seq) is not int or not 0 <= after_seq <= MAX_EVENT_SEQ
        ):
            raise InvalidRequest(
                f"after_seq must be a whole number from 0 to {MAX_EVENT_SEQ}, or None; "
                f"got {after_seq!r}"
            )
        if type(limit) is not int or not 1 <= limit <= MAX_EVENTS_PAGE:
            raise InvalidRequest(
                f"limit must be a whole number from 1 to {MAX_EVENTS_PAGE}, got {limit!r}"
            )
        self._read(account, lambda wallet: None)  # UnknownAccount, and time applied
        return list(self._repository.events(account, after_seq=after_seq or 0, limit=limit))

    # -- the deliverability guarantee (R25) ------------------------------------------------

    def guarantee(self, account: str, period: Period | None = None) -> Guarantee:
        """R25 for a billing period of the account (default: the current one), from the
        ledger: the period's entries and those of the refund window after it."""
        account = check_account(account)
        if period is not None and not isinstance(period, Period):
            raise InvalidRequest(f"period must be a Period (service.period(...)), got {period!r}")
        current = self._read(account, lambda wallet: wallet.period())
        chosen = current if period is None else period
        # Bounces are reported within the window after their charge (R18), inclusive.
        until = chosen.end + timedelta(seconds=self._policy.refund_window_s, microseconds=1)
        return tally(account, chosen, self._stream(account, chosen.start, until, -1))

    # -- refunds (R18) -------------------------------------------------------------------

    def report_bounce(self, account: str, contact: Contact) -> LedgerEntry:
        """R18: refund a charged email that hard-bounced, once, within the refund window."""
        account = check_account(account)
        if not isinstance(contact, Contact):
            raise InvalidRequest(f"contact must be a Contact, got {contact!r}")
        if contact.channel is not Channel.EMAIL:
            raise NotAnEmail(f"{contact} is not an email; only emails bounce")
        window = timedelta(seconds=self._policy.refund_window_s)

        def work(uow: UnitOfWork) -> LedgerEntry:
            wallet, now = self._load(uow, account)
            if wallet.status is Status.LAPSED:
                raise NoActiveSubscription(account)
            record = uow.dedup.owned(account, [contact]).get(contact)
            if record is None:
                raise NotCharged(f"{contact} was never charged to account {account!r}")
            if record.refunded_at is not None:
                raise AlreadyRefunded(f"{contact} was refunded at {record.refunded_at}")
            if now - record.charged_at > window:
                raise RefundWindowClosed(
                    f"{contact} was charged at {record.charged_at}; bounces are refunded "
                    f"within {window.days} days of the charge"
                )
            cause = Cause(
                operation=Operation.BOUNCE,
                datum=str(contact),
                plan=wallet.plan.name,
                member=record.member,
            )
            entry = wallet.refund(record.pool, record.credits, now, cause, grant_id=record.grant)
            if record.member is not None and record.member in wallet.members:
                # R22: the member's usage in the period of the charge goes down.
                wallet.count_usage(record.member, record.pool, -record.credits, record.charged_at)
            wallet.count_bounce(record.charged_at, now)  # R25, for guarantee.breached (R24)
            uow.dedup.mark_refunded(account, contact, now)
            wallet.check_invariants()
            uow.save_wallet(wallet)
            return entry

        return self._transact(work)

    # -- charging (R9..R17) --------------------------------------------------------------

    def unlock(
        self,
        account: str,
        contacts: Iterable[Contact],
        *,
        idempotency_key: str | None = None,
        member: str | None = None,
    ) -> ChargeResult:
        """R9: reveal contacts; pay once per new, verified datum (R10, R12, R15); for a
        team member, within their allowance (R22)."""
        return self._charge(account, Operation.UNLOCK, contacts, None, idempotency_key, member)

    def export(
        self,
        account: str,
        contacts: Iterable[Contact],
        *,
        destination: str,
        idempotency_key: str | None = None,
        member: str | None = None,
    ) -> ChargeResult:
        """R13: export to a file or CRM; charges only data not owned yet, verified."""
        destination = check_destination(destination)
        return self._charge(
            account, Operation.EXPORT, contacts, destination, idempotency_key, member
        )

    def enrich(
        self,
        account: str,
        found: Iterable[Contact],
        *,
        idempotency_key: str | None = None,
        member: str | None = None,
    ) -> ChargeResult:
        """R14: charge only newly found data the account does not own that verify VALID."""
        return self._charge(account, Operation.ENRICH, found, None, idempotency_key, member)

    def _check_contacts(self, contacts: Iterable[Contact]) -> list[Contact]:
        if isinstance(contacts, (str, bytes, Contact)):
            raise InvalidRequest("contacts must be an iterable of Contact, not a single value")
        # One more than the limit tells a batch too large, without reading an endless one.
        checked = list(itertools.islice(contacts, self._policy.max_batch + 1))
        if not set(map(type, checked)) <= _CONTACT_TYPE:  # one C-level pass, then the culprit
            for contact in checked:
                if not isinstance(contact, Contact):
                    raise InvalidRequest(
                        f"contacts must be Contact values (Contact.email(...)), got {contact!r}"
                    )
        if len(checked) > self._policy.max_batch:
            raise BatchTooLarge(
                f"at most {self._policy.max_batch} contacts per request; split the batch"
            )
        return checked

    def _charge(
        self,
        account: str,
        operation: Operation,
        contacts: Iterable[Contact],
        destination: str | None,
        key: object,
        member: str | None = None,
    ) -> ChargeResult:
        request = ChargeRequest.of(  # arguments are checked in this order
            account=check_account(account),
            operation=operation,
            idempotency_key=check_idempotency_key(key),
            contacts=self._check_contacts(contacts),
            destination=destination,
            member=None if member is None else check_account(member),  # same rules (R22)
        )
        reserved = self._reserve_fast(request) or self._transact(
            functools.partial(self._reserve, request=request)
        )
        if isinstance(reserved, ChargeResult):
            return reserved
        candidates = reserved.candidates
        owned = set(reserved.owned)
        verdicts: list[Verdict | None] = [None] * len(candidates)
        lease = (
            None
            if reserved.hold_id is None
            else _Lease(self, request.account, reserved.hold_id, reserved.reserved_at)
        )
        calls = 0  # verifier calls so far: the lease is renewed between them
        # Each pass verifies at least one more datum or learns that one more is owned.
        for _ in range(2 * len(candidates) + 2):
            settlement = settle(
                candidates, verdicts, owned, reserved.capacity, self._policy, reserved.limit
            )
            if not settlement.complete:
                if lease is not None and calls:
                    lease.renew_if_due()
                calls += 1
                with self._renewing(lease):
                    self._verify_into(verdicts, candidates, settlement.to_verify)
                continue
            verified = _Verified(
                settlement=settlement, verdicts=tuple(verdicts), owned=frozenset(owned)
            )
            settled = self._settle_fast(request, reserved, verified) or self._transact(
                functools.partial(
                    self._settle, request=request, reserved=reserved, verified=verified
                )
            )
            if isinstance(settled, ChargeResult):
                return settled
            invariant(not settled.keys <= owned, "settle must learn something new")
            owned |= settled.keys
        raise AssertionError("invariant broken: settlement did not converge")

    def _renewing(self, lease: _Lease | None) -> contextlib.AbstractContextManager[None]:
        """The Heartbeat renewing `lease` during a verifier call, where both exist."""
        if lease is None or self._heartbeat is None:
            return contextlib.nullcontext()
        return self._heartbeat.beating(lease.interval_s, lease.renew)

    def _reserve(self, uow: UnitOfWork, *, request: ChargeRequest) -> _Reservation | ChargeResult:
        """Replay or refuse by idempotency key (R17), then hold what the new data could cost,
        up to what is available (R15, R16)."""
        account, key = request.account, request.idempotency_key
        wallet, now = self._load(uow, account)
        replay = self._replay_or_take_over(uow, wallet, request, now)
        if replay is not None:
            uow.save_wallet(wallet)
            return replay
        wallet.require_chargeable()
        owned = frozenset(map(datum_key, uow.dedup.owned(account, request.unique)))
        candidates = Candidates.among(request, owned=owned, prices=wallet.plan.prices)
        limit = self._member_limit(wallet, request.member, candidates.cost)
        room = limit if limit is not None else candidates.cost
        capacity = Credits.from_pools(
            {
                pool: min(candidates.cost.of(pool), wallet.available(pool), room.of(pool))
                for pool in Channel
            }
        )
        hold_id = None
        if capacity.email or capacity.mobile:
            hold = wallet.place_hold(capacity, now, self._policy.lease_s, member=request.member)
            hold_id = hold.hold_id
        if key is not None:
            uow.idempotency.put(
                IdempotencyRecord(
                    account=account,
                    key=key,
                    fingerprint=request.fingerprint,
                    hold_id=hold_id,
                    created_at=now,
                )
            )
        wallet.check_invariants()
        uow.save_wallet(wallet)
        return _Reservation(
            hold_id=hold_id,
            candidates=candidates,
            capacity=capacity,
            owned=owned,
            reserved_at=now,
            limit=limit,
        )

    @staticmethod
    def _member_limit(wallet: Wallet, member: str | None, cost: Credits) -> Credits | None:
        """R22: what the member may still take per pool this period (a pool without an
        allowance: all the request costs); None for a request of no member, or a member
        without an allowance."""
        if member is None:
            return None
        rooms = {pool: wallet.member_room(member, pool) for pool in Channel}
        if all(room is None for room in rooms.values()):
            return None
        return Credits.from_pools(
            {pool: cost.of(pool) if room is None else room for pool, room in rooms.items()}
        )

    def _reserve_fast(self, request: ChargeRequest) -> _Reservation | None:
        """Reserve in one call where the repository can (ports.ChargePath); None: the
        request needs the units-of-work path (a renewal due, a key seen before, ...). A
        team member's request always does: their allowance is the Wallet's (R22)."""
        if self._fast is None or request.member is not None:
            return None
        fast = self._fast

        def call() -> tuple[FastReservation | None, datetime]:
            now = self._now()
            expires_at = now + timedelta(seconds=self._policy.lease_s)
            return fast.reserve_fast(request, now=now, expires_at=expires_at), now

        answer, reserved_at = self._retrying(call)
        if answer is None:
            return None
        owned = frozenset(map(datum_key, answer.owned))
        return _Reservation(
            hold_id=answer.hold_id,
            candidates=Candidates.among(request, owned=owned, prices=answer.prices),
            capacity=answer.capacity,
            owned=owned,
            reserved_at=reserved_at,
        )

    def _settle_fast(
        self, request: ChargeRequest, reserved: _Reservation, verified: _Verified
    ) -> ChargeResult | _NewlyOwned | None:
        """Settle in one call where the repository can; None: the units-of-work path."""
        if self._fast is None or request.member is not None:  # R22, as at the reserve
            return None
        fast = self._fast
        chosen = verified.settlement.charged(reserved.candidates)
        result = charge_result(
            request, reserved.candidates, verified.settlement, verified.verdicts, verified.owned
        )

        def call() -> Settled | BoughtMeanwhile | None:
            return fast.settle_fast(
                request, now=self._now(), hold_id=reserved.hold_id, charged=chosen, result=result
            )

        answer = self._retrying(call)
        if isinstance(answer, Settled):
            return result
        if isinstance(answer, BoughtMeanwhile):
            return _NewlyOwned(frozenset(map(datum_key, answer.contacts)))
        return None

    def _verify_into(
        self, verdicts: list[Verdict | None], candidates: Candidates, asked: Sequence[int]
    ) -> None:
        """Verify the candidates at the indexes `asked`, and write down their verdicts."""
        if len(asked) == len(candidates):
            verdicts[:] = self._verify(candidates.contacts)
            return
        contacts = candidates.contacts
        answer = self._verify(tuple([contacts[index] for index in asked]))
        for index, verdict in zip(asked, answer, strict=True):
            verdicts[index] = verdict

    def _verify(self, contacts: tuple[Contact, ...]) -> list[Verdict]:
        """Ask the verifier; any failure or malformed answer is UNKNOWN: no charge (R10)."""
        try:
            answer = list(self._verifier.verify(contacts))
        except Exception:  # the verifier is outside our control; never charge on failure
            return [Verdict.UNKNOWN] * len(contacts)
        if len(answer) != len(contacts) or not set(map(type, answer)) <= _VERDICT_TYPE:
            return [Verdict.UNKNOWN] * len(contacts)
        return answer

    def _settle(
        self,
        uow: UnitOfWork,
        *,
        request: ChargeRequest,
        reserved: _Reservation,
        verified: _Verified,
    ) -> ChargeResult | _NewlyOwned:
        """Charge what the settlement chose, unless a concurrent request bought some of it
        meanwhile (R12): then those are free, and the caller settles again."""
        wallet, now = self._load(uow, request.account)
        replay = self._replay_unless_ours(uow, wallet, request, reserved.hold_id)
        if replay is not None:
            return replay
        chosen = verified.settlement.charged(reserved.candidates)
        bought_meanwhile = uow.dedup.owned(request.account, chosen.contacts)
        if bought_meanwhile:
            return _NewlyOwned(frozenset(map(datum_key, bought_meanwhile)))
        if reserved.hold_id is not None:
            wallet.release_hold(reserved.hold_id)
        if request.member is not None:
            wallet.require_member(request.member)
        uow.dedup.add(self._charge_each(wallet, request, chosen, now))
        wallet.expire_grants(now)  # R23: what the hold kept of an expired grant, unspent
        result = charge_result(
            request, reserved.candidates, verified.settlement, verified.verdicts, verified.owned
        )
        if request.idempotency_key is not None:
            uow.idempotency.put(
                IdempotencyRecord(
                    account=request.account,
                    key=request.idempotency_key,
                    fingerprint=request.fingerprint,
                    hold_id=None,
                    created_at=now,
                    result=result,
                )
            )
        wallet.check_invariants()
        uow.save_wallet(wallet)
        return result

    @staticmethod
    def _replay_or_take_over(
        uow: UnitOfWork, wallet: Wallet, request: ChargeRequest, now: datetime
    ) -> ChargeResult | None:
        """At reserve: the stored result of a finished repeat (R17); refuse another payload
        under the key, or a repeat of a request still in flight (its lease live: `wallet`
        has released the lapsed holds), saying when its lease lapses."""
        account, key = request.account, request.idempotency_key
        if key is None:
            return None
        record = uow.idempotency.get(account, key)
        if record is None:
            return None
        if record.fingerprint != request.fingerprint or record.entry_seq is not None:
            raise IdempotencyKeyReused(account, key)  # another payload, or a top-up's key
        if record.result is not None:
            return attrs.evolve(record.result, replayed=True)
        hold = None if record.hold_id is None else wallet.holds.get(record.hold_id)
        if hold is not None:
            left_s = math.ceil((hold.expires_at - now).total_seconds())
            raise RequestInFlight(account, key, retry_after_s=max(1, left_s))
        return None  # the first attempt died and its lease lapsed: this one takes over

    @staticmethod
    def _replay_unless_ours(
        uow: UnitOfWork, wallet: Wallet, request: ChargeRequest, hold_id: str | None
    ) -> ChargeResult | None:
        """At settle: the stored result if a repeat of the request finished first (R17);
        HoldExpired if the hold is gone or a retry took the request over (R16)."""
        account, key = request.account, request.idempotency_key
        if key is not None:
            record = uow.idempotency.get(account, key)
            if record is not None and record.result is not None:
                return attrs.evolve(record.result, replayed=True)
            if record is None or record.hold_id != hold_id:
                raise HoldExpired(
                    f"request {key!r} of account {account!r} was taken over "
                    "by a retry after its hold expired; nothing was charged"
                )
        if hold_id is not None and hold_id not in wallet.holds:
            raise HoldExpired(
                f"the hold of this request of account {account!r} expired before it settled "
                "(R16); nothing was charged; retry the request"
            )
        return None

    @staticmethod
    def _charge_each(
        wallet: Wallet, request: ChargeRequest, chosen: Candidates, now: datetime
    ) -> list[Ownership]:
        """One CHARGE entry per datum (R19), and the ownership each buys (R12)."""
        plan, period = wallet.plan.name, wallet.period_index
        entries = wallet.charge_many(
            [
                (
                    c.price.pool,
                    c.price.credits,
                    Cause(
                        operation=request.operation,
                        datum=str(c.contact),
                        plan=plan,
                        period=period,
                        idempotency_key=request.idempotency_key,
                        destination=request.destination,
                        member=request.member,
                    ),
                )
                for c in chosen
            ],
            now,
        )
        if request.member is not None:  # R22: the member's usage this period
            for c in chosen:
                wallet.count_usage(request.member, c.price.pool, c.price.credits, now)
        return [
            Ownership(
                account=request.account,
                contact=c.contact,
                pool=c.price.pool,
                credits=c.price.credits,
                charged_at=now,
                entry_seq=entry.seq,
                grant=entry.cause.grant,
                member=request.member,
            )
            for c, entry in zip(chosen, entries, strict=True)
        ]
