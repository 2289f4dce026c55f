"""An independent, deliberately naive model of the rules, the oracle of the state machine.

It shares no code with the Wallet or the service beyond the value types: no phases kept
in storage, its own month arithmetic, its own canonical form of a datum (R12: it reads a
contact's text as the caller typed it, `RawContact`, and never asks `Contact` to
canonicalise it). What it computes is what docs/rules.md says the system must answer,
including for requests that overlap (`reserve`, then other requests, then `settle`) and
for requests abandoned between the two (their hold lives until it lapses, R16).

Everything is kept per account: balances, holds, data owned, idempotency keys (R17) and
the ledger, entry by entry (R19, R21), so that a statement can be compared line by line.
Beyond the seed it keeps, on its own: expiring grants (R23: spent first, the soonest
expiring first; an `expire` entry at the instant, written when the account is next
touched; kept while a hold may still charge them), team members and their allowances
(R22: usage per period counted from the model's ledger), the guarantee's tally (R25) and
the events each step must leave in the outbox (R24): `ModelAccount.events`, numbered 1,
2, 3, ... per account. Each pool's balance is checked against its threshold (the one set,
else 10% of the plan's allowance, rounded up, moved by a plan change) on charge and
expiry entries only, entry by entry; boundaries, upgrades, expiries, bounce refunds and
each period's first breach of the guarantee (judged after every email charged and every
bounce) add theirs in the order docs/rules.md R24 gives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import TypeVar

import attrs

from credits_domain.charging import Outcome
from credits_domain.contact import Channel, Contact
from credits_domain.errors import (
    AlreadyRefunded,
    AlreadySubscribed,
    GrantExpiryNotAhead,
    HoldExpired,
    IdempotencyKeyReused,
    NoActiveSubscription,
    NotAnEmail,
    NotCharged,
    RefundWindowClosed,
    RequestInFlight,
    SubscriptionPaused,
    UnknownAccount,
    UnknownMember,
)
from credits_domain.events import EventType
from credits_domain.ledger import EntryKind
from credits_domain.plans import Credits, Plan
from credits_domain.policy import ChargePolicy
from credits_domain.verdict import Verdict

REFUND_WINDOW = timedelta(days=30)
# An abandoned request's hold lives as long as its lease, which nobody renews (R16, R17).
DEFAULT_HOLD_LIFETIME_S = ChargePolicy().lease_s
MAX_BOUNDARIES_PER_ADVANCE = 1200  # a century of monthly periods: a runaway loop beyond
_PHONE_NOISE = " -.()\t"
GUARANTEE_MIN_EMAILS = 100  # R25, written again: at least 100 emails, more than 1% bounced


@attrs.frozen
class RawContact:
    """A datum as a caller typed it: its channel and its text, not canonicalised."""

    channel: Channel = attrs.field(validator=attrs.validators.instance_of(Channel))
    text: str = attrs.field(validator=attrs.validators.instance_of(str))


def datum_of(contact: Contact | RawContact) -> str:
    """The model's own canonical form of a datum, as "channel:value" (the ledger's cause).

    R12: an email is trimmed and lower-cased; a mobile number loses the spaces, dashes,
    dots and parentheses people put in it. Written here again, not borrowed from
    `Contact`, so that a canonicalisation bug of the system cannot hide in the oracle.
    """
    if isinstance(contact, Contact):
        channel, text = contact.channel, contact.value
    else:
        channel, text = contact.channel, contact.text
    if channel is Channel.EMAIL:
        value = text.strip().lower()
    else:
        value = "".join(ch for ch in text.strip() if ch not in _PHONE_NOISE)
    return f"{channel.value}:{value}"


def channel_of(datum: str) -> Channel:
    return Channel(datum.split(":", 1)[0])


def nth_month(anchor: datetime, n: int) -> datetime:
    """R4, computed another way than the core: the month's last day via the next month's 1st."""
    years, month0 = divmod(anchor.month - 1 + n, 12)
    year, month = anchor.year + years, month0 + 1
    first_of_next = date(year + (month == 12), month % 12 + 1, 1)
    last_day = (first_of_next - timedelta(days=1)).day
    return anchor.replace(year=year, month=month, day=min(anchor.day, last_day))


@attrs.define
class Purchase:
    pool: Channel
    credits: int
    at: datetime
    refunded: bool = False
    grant: int | None = None  # R23: the first grant the charge drew on
    member: str | None = None  # R22


@attrs.define
class ModelGrant:
    """An expiring grant (R23): `grant_id` is its TOP_UP entry's seq. `kept` once its
    instant passed while holds might still charge its remainder."""

    grant_id: int
    pool: Channel
    credits: int
    remaining: int
    expires_at: datetime
    kept: bool = False


@attrs.frozen(kw_only=True)
class ModelEntry:
    """One ledger line as the model writes it (R19): what a statement entry must say."""

    kind: EntryKind
    pool: Channel
    amount: int
    at: datetime
    balance_after: int
    datum: str | None = None
    grant: int | None = None  # R23: the grant a top-up made, a charge drew on, ...
    member: str | None = None  # R22: the member a charge (and its refund) was for


@attrs.frozen(kw_only=True)
class ModelEvent:
    """One event as the model predicts it (R24): its seq, type, instant and the data
    fields that matter (the system's data may carry more)."""

    seq: int
    type: EventType
    at: datetime
    data: Mapping[str, object]


def low_default(plan: Plan, pool: Channel) -> int:
    """R24: a pool's default low-balance threshold, 10% of the plan's monthly allowance
    rounded up, written again (a tenth, up to the next whole credit)."""
    monthly = plan.monthly.of(pool)
    return monthly // 10 + (monthly % 10 != 0)


@attrs.define(eq=False)
class ModelHold:
    """Credits held by a request between its reserve and its settle (R16)."""

    credits: dict[Channel, int]
    expires_at: datetime
    member: str | None = None


# (operation, the data in canonical form, in order, the member or None)
Fingerprint = tuple[str, tuple[str, ...], str | None]


@attrs.define(eq=False)
class KeyRecord:
    """An idempotency key of one account (R17): in flight until `outcomes` is set."""

    fingerprint: Fingerprint
    owner: ModelReservation
    outcomes: list[Outcome] | None = None


@attrs.frozen
class Replay:
    """The answer to a repeat of a finished request (R17): the first answer's outcomes."""

    outcomes: list[Outcome]


@attrs.define(eq=False)
class ModelReservation:
    """A request reserved and not settled yet: what it holds and what it may charge."""

    account: str
    data: list[str]  # the request's data, canonical, in order, repeats included
    owned_at_reserve: frozenset[str]
    candidates: list[str]  # first occurrences not owned at reserve, in order
    capacity: dict[Channel, int]
    hold: ModelHold | None
    key: str | None
    prices: list[tuple[Channel, int]]  # each candidate's (pool, credits), aligned
    member: str | None = None
    limit: dict[Channel, int] | None = None  # R22: the member's room at the reserve

    @property
    def verifies(self) -> bool:
        """Whether the system must call the verifier: some candidate fits the hold."""
        return any(self.capacity[pool] >= credits for pool, credits in self.prices)


@attrs.define
class ModelAccount:
    plan: Plan
    anchor: datetime
    status: str = "active"  # active | paused | lapsed
    index: int = 0
    ends_at: datetime | None = None
    pending: Plan | None = None
    balance: dict[Channel, int] = attrs.field(factory=lambda: dict.fromkeys(Channel, 0))
    owned: dict[str, Purchase] = attrs.field(factory=dict)  # by `datum_of`
    holds: list[ModelHold] = attrs.field(factory=list)
    keys: dict[str, KeyRecord] = attrs.field(factory=dict)
    ledger: list[ModelEntry] = attrs.field(factory=list)
    grants: list[ModelGrant] = attrs.field(factory=list)  # R23, in the order made
    members: dict[str, Credits | None] = attrs.field(factory=dict)  # R22: allowances
    events: list[ModelEvent] = attrs.field(factory=list)  # R24, kept across a lapse
    thresholds: dict[Channel, int] = attrs.field(factory=dict)  # R24: set ones only
    # R25 per period index of this subscription: emails charged, bounces, breached.
    emails: dict[int, int] = attrs.field(factory=dict)
    bounces: dict[int, int] = attrs.field(factory=dict)
    breached: set[int] = attrs.field(factory=set)

    def emit(self, kind: EventType, at: datetime, **data: object) -> None:
        self.events.append(ModelEvent(seq=len(self.events) + 1, type=kind, at=at, data=data))

    def threshold(self, pool: Channel) -> int:
        found = self.thresholds.get(pool)
        return low_default(self.plan, pool) if found is None else found

    def period_of(self, at: datetime) -> int | None:
        """The index of this subscription's period holding `at` (None: before it)."""
        if at < self.anchor:
            return None
        index = 0
        while nth_month(self.anchor, index + 1) <= at:
            index += 1
            assert index <= MAX_BOUNDARIES_PER_ADVANCE, "a period search past a century"
        return index

    def judge(self, index: int, at: datetime) -> None:
        """R25 for period `index`, after an email charged or a bounce: guarantee.breached
        the first time it breaches."""
        emails, bounces = self.emails.get(index, 0), self.bounces.get(index, 0)
        if index not in self.breached and emails >= GUARANTEE_MIN_EMAILS and bounces * 100 > emails:
            self.breached.add(index)
            self.emit(
                EventType.GUARANTEE_BREACHED,
                at,
                period=index,
                emails_charged=emails,
                bounces=bounces,
            )

    def append(
        self,
        kind: EntryKind,
        pool: Channel,
        amount: int,
        at: datetime,
        datum: str | None = None,
        *,
        grant: int | None = None,
        member: str | None = None,
    ) -> None:
        before = self.balance[pool]
        self.balance[pool] += amount
        seq = len(self.ledger)
        self.ledger.append(
            ModelEntry(
                kind=kind,
                pool=pool,
                amount=amount,
                at=at,
                balance_after=self.balance[pool],
                datum=datum,
                grant=grant,
                member=member,
            )
        )
        if kind in (EntryKind.CHARGE, EntryKind.EXPIRE):  # R24: never holds or boundaries
            after, threshold = self.balance[pool], self.threshold(pool)
            fields = {"pool": pool.value, "balance": after, "threshold": threshold}
            if before > threshold >= after:
                self.emit(EventType.CREDITS_LOW, at, entry_seq=seq, **fields)
            if before > 0 == after:
                self.emit(EventType.CREDITS_DEPLETED, at, entry_seq=seq, **fields)
        if kind is EntryKind.CHARGE and datum is not None and channel_of(datum) is Channel.EMAIL:
            self.emails[self.index] = self.emails.get(self.index, 0) + 1
            self.judge(self.index, at)

    def period_start(self) -> datetime:
        return nth_month(self.anchor, self.index)

    def spending_order(self, pool: Channel) -> list[ModelGrant]:
        """R23: the pool's grants, the soonest-expiring first, then the oldest."""
        return sorted(
            (g for g in self.grants if g.pool is pool), key=lambda g: (g.expires_at, g.grant_id)
        )

    def expire(self, now: datetime) -> None:
        """R23: each grant whose instant has passed by `now` loses what is left of it, at
        its instant (or now, for a remainder kept for holds that have ended since), in
        time order. Holds draw on grants first: what they may charge is kept meanwhile."""
        kept: dict[int, int] = {}
        for pool in Channel:
            before = 0  # what the grants ahead of this one in spending order hold
            for grant in self.spending_order(pool):
                kept[grant.grant_id] = max(0, min(grant.remaining, self.held(pool) - before))
                before += grant.remaining
        due = sorted(
            (g for g in self.grants if g.expires_at <= now),
            key=lambda g: (now if g.kept else g.expires_at, g.grant_id),
        )
        for grant in due:
            keep = kept[grant.grant_id]
            if grant.remaining > keep:
                at = now if grant.kept else grant.expires_at
                self.emit(
                    EventType.GRANT_EXPIRED,
                    at,
                    grant=grant.grant_id,
                    pool=grant.pool.value,
                    credits=grant.remaining - keep,
                    expires_at=grant.expires_at.isoformat(),
                    entry_seq=len(self.ledger),
                )
                self.append(
                    EntryKind.EXPIRE, grant.pool, keep - grant.remaining, at, grant=grant.grant_id
                )
            grant.remaining, grant.kept = keep, True
        self.grants = [g for g in self.grants if g.remaining or g.expires_at > now]

    def draw(self, pool: Channel, credits: int) -> int | None:
        """Spend from the grants first (R23); the first grant drawn on, if any."""
        first = None
        for grant in self.spending_order(pool):
            take = min(grant.remaining, credits)
            if take:
                credits -= take
                grant.remaining -= take
                first = grant.grant_id if first is None else first
        return first

    def granted(self, pool: Channel) -> int:
        return sum(g.remaining for g in self.grants if g.pool is pool)

    def usage(self, member: str, start: datetime, end: datetime) -> dict[Channel, int]:
        """R22 from the model's own ledger: the member's charges in [start, end), less
        the refunds of those charges."""
        used = dict.fromkeys(Channel, 0)
        charged: set[str | None] = set()
        for entry in self.ledger:
            if entry.member != member:
                continue
            if entry.kind is EntryKind.CHARGE and start <= entry.at < end:
                charged.add(entry.datum)
                used[entry.pool] -= entry.amount
            elif entry.kind is EntryKind.REFUND and entry.datum in charged:
                used[entry.pool] -= entry.amount
        return used

    def room(self, member: str) -> dict[Channel, int] | None:
        """R22: what the member may still take this period, net of their holds."""
        allowance = self.members[member]
        if allowance is None:
            return None
        start = self.period_start()
        used = self.usage(member, start, nth_month(self.anchor, self.index + 1))
        return {
            pool: max(
                0,
                allowance.of(pool)
                - used[pool]
                - sum(h.credits[pool] for h in self.holds if h.member == member),
            )
            for pool in Channel
        }

    def grant_allowance(self, at: datetime) -> None:
        for pool in Channel:
            if self.plan.monthly.of(pool):
                self.append(EntryKind.GRANT, pool, self.plan.monthly.of(pool), at)

    def held(self, pool: Channel) -> int:
        return sum(hold.credits[pool] for hold in self.holds)

    def available(self, pool: Channel) -> int:
        return self.balance[pool] - self.held(pool)

    def next_boundary(self) -> datetime | None:
        return None if self.status == "lapsed" else nth_month(self.anchor, self.index + 1)


T = TypeVar("T", Contact, RawContact)


class ReferenceModel:
    def __init__(
        self, *, bill_catch_all: bool = False, hold_lifetime_s: int = DEFAULT_HOLD_LIFETIME_S
    ) -> None:
        self.accounts: dict[str, ModelAccount] = {}
        self.bill_catch_all = bill_catch_all
        self.hold_lifetime_s = hold_lifetime_s

    def _get(self, account: str) -> ModelAccount:
        if account not in self.accounts:
            raise UnknownAccount(account)
        return self.accounts[account]

    def advance(self, now: datetime) -> None:
        """Apply every period boundary up to `now`, to every account (R4..R7), then release
        the holds whose lifetime has lapsed by `now` (R16).

        The system applies both when an account is next touched, boundaries first: a hold
        that lapsed before a boundary crossed in the same jump still counts at that
        renewal's rollover cap. The state machine touches every account after every step.
        """
        for acct in self.accounts.values():
            for _ in range(MAX_BOUNDARIES_PER_ADVANCE + 1):
                boundary = acct.next_boundary()
                if boundary is None or boundary > now:
                    break
                acct.expire(boundary)
                if acct.ends_at is not None and boundary >= acct.ends_at:
                    acct.holds.clear()
                    acct.grants.clear()  # R23: forfeited with the rest
                    for pool in Channel:
                        if acct.balance[pool]:
                            acct.append(EntryKind.FORFEIT, pool, -acct.balance[pool], boundary)
                    acct.status, acct.ends_at, acct.pending = "lapsed", None, None
                    ended = EventType.SUBSCRIPTION_LAPSED
                    acct.emit(ended, boundary, plan=acct.plan.name, period=acct.index)
                    continue
                acct.index += 1
                if acct.pending is not None:
                    old, acct.plan, acct.pending = acct.plan, acct.pending, None
                    acct.emit(
                        EventType.PLAN_CHANGED,
                        boundary,
                        **{"from": old.name, "to": acct.plan.name, "period": acct.index},
                    )
                if acct.status == "active":
                    cap = acct.plan.rollover_cap
                    if cap is not None:
                        for pool in Channel:
                            # Held credits are kept above the cap until they settle;
                            # grants are outside the cap, and holds draw on them first.
                            granted = acct.granted(pool)
                            plan_held = max(0, acct.held(pool) - granted)
                            excess = acct.balance[pool] - granted - max(cap.of(pool), plan_held)
                            if excess > 0:
                                acct.append(EntryKind.FORFEIT, pool, -excess, boundary)
                    acct.grant_allowance(boundary)
                acct.emit(
                    EventType.PERIOD_RENEWED,
                    boundary,
                    period=acct.index,
                    start=boundary.isoformat(),
                    end=nth_month(acct.anchor, acct.index + 1).isoformat(),
                    plan=acct.plan.name,
                    status=acct.status,
                    balance={pool.value: acct.balance[pool] for pool in Channel},
                )
            else:
                raise AssertionError(f"more than {MAX_BOUNDARIES_PER_ADVANCE} periods at once")
            acct.expire(now)
            lapsed = [hold for hold in acct.holds if hold.expires_at <= now]
            acct.holds = [hold for hold in acct.holds if hold.expires_at > now]
            if lapsed:
                acct.expire(now)

    def due(self, now: datetime) -> list[str]:
        """The accounts a renewal run at `now` must renew: a boundary, or a grant's expiry
        not applied yet (R23), at or before `now`."""
        return [
            account
            for account, acct in self.accounts.items()
            if (boundary := acct.next_boundary()) is not None
            and (boundary <= now or any(not g.kept and g.expires_at <= now for g in acct.grants))
        ]

    def subscribe(self, account: str, plan: Plan, now: datetime) -> None:
        acct = self.accounts.get(account)
        if acct is not None and acct.status != "lapsed":
            raise AlreadySubscribed(account)
        fresh = ModelAccount(plan=plan, anchor=now)
        if acct is not None:  # R12, R17, R19: data, keys and ledger outlive a lapse
            fresh.owned, fresh.keys, fresh.ledger = acct.owned, acct.keys, acct.ledger
            fresh.members = acct.members  # R22: the team outlives a lapse too
            fresh.events, fresh.thresholds = acct.events, acct.thresholds  # R24 too
        fresh.grant_allowance(now)
        self.accounts[account] = fresh

    def change_plan(self, account: str, plan: Plan, now: datetime) -> None:
        acct = self._require_active(account)
        if plan == acct.plan:
            acct.pending = None
            return
        if any(plan.monthly.of(p) < acct.plan.monthly.of(p) for p in Channel):
            acct.pending = plan
            return
        start, end = nth_month(acct.anchor, acct.index), nth_month(acct.anchor, acct.index + 1)
        left_s = int((end - now).total_seconds())
        length_s = int((end - start).total_seconds())
        old = acct.plan
        acct.plan, acct.pending = plan, None
        acct.emit(
            EventType.PLAN_CHANGED, now, **{"from": old.name, "to": plan.name, "period": acct.index}
        )
        for pool in Channel:
            extra = (plan.monthly.of(pool) - old.monthly.of(pool)) * left_s // length_s
            if extra > 0:
                acct.append(EntryKind.GRANT, pool, extra, now)

    def cancel(self, account: str) -> None:
        acct = self._get(account)
        if acct.status == "lapsed":
            raise NoActiveSubscription(account)
        if acct.ends_at is None:
            acct.ends_at = nth_month(acct.anchor, acct.index + 1)

    def pause(self, account: str) -> None:
        acct = self._get(account)
        if acct.status == "lapsed":
            raise NoActiveSubscription(account)
        acct.status = "paused"

    def resume(self, account: str) -> None:
        acct = self._get(account)
        if acct.status == "lapsed":
            raise NoActiveSubscription(account)
        acct.status = "active"

    def _require_active(self, account: str) -> ModelAccount:
        acct = self._get(account)
        if acct.status == "lapsed":
            raise NoActiveSubscription(account)
        if acct.status == "paused":
            raise SubscriptionPaused(account)
        return acct

    # -- charging: reserve, settle (R10, R12, R15..R17) ----------------------------------

    def reserve(
        self,
        account: str,
        operation: str,
        contacts: Sequence[Contact | RawContact],
        now: datetime,
        *,
        key: str | None = None,
        member: str | None = None,
    ) -> ModelReservation | Replay:
        """The first phase of a request: R17's answer for a key seen before, or the credits
        held for its new data, `min(cost, available, the member's room)` per pool (R15,
        R16, R22)."""
        acct = self._get(account)
        data = [datum_of(contact) for contact in contacts]
        fingerprint = (operation, tuple(data), member)
        record = acct.keys.get(key) if key is not None else None
        if record is not None:
            if record.fingerprint != fingerprint:
                raise IdempotencyKeyReused(account, str(key))
            if record.outcomes is not None:
                return Replay(list(record.outcomes))
            if record.owner.hold is not None and record.owner.hold in acct.holds:
                raise RequestInFlight(account, str(key))
            # The first attempt was abandoned and holds nothing now: this one takes over.
        acct = self._require_active(account)
        if member is not None and member not in acct.members:
            raise UnknownMember(account, member)
        candidates = [d for d in dict.fromkeys(data) if d not in acct.owned]
        prices = [self._price(acct.plan, d) for d in candidates]
        limit = None if member is None else acct.room(member)
        capacity = {
            pool: min(
                sum(c for p, c in prices if p is pool),
                acct.available(pool),
                acct.available(pool) if limit is None else limit[pool],
            )
            for pool in Channel
        }
        hold = None
        if any(capacity.values()):
            hold = ModelHold(
                credits=capacity,
                expires_at=now + timedelta(seconds=self.hold_lifetime_s),
                member=member,
            )
            acct.holds.append(hold)
        reservation = ModelReservation(
            account=account,
            data=data,
            owned_at_reserve=frozenset(acct.owned),
            candidates=candidates,
            capacity=capacity,
            hold=hold,
            key=key,
            prices=prices,
            member=member,
            limit=limit,
        )
        if key is not None:
            acct.keys[key] = KeyRecord(fingerprint=fingerprint, owner=reservation)
        return reservation

    @staticmethod
    def _price(plan: Plan, datum: str) -> tuple[Channel, int]:
        price = plan.price_of(channel_of(datum))
        return price.pool, price.credits

    def settle(
        self,
        reservation: ModelReservation,
        verdict_of: Callable[[str], Verdict],
        now: datetime,
    ) -> list[Outcome] | Replay:
        """The second phase: walk the candidates in order against the hold (R15); data that
        another request bought since the reserve are free (R12), and their credits serve
        the data after them. Charges, releases the hold, answers the request's key."""
        acct = self.accounts[reservation.account]
        key = reservation.key
        if key is not None:
            record = acct.keys[key]
            if record.owner is not reservation:  # a retry took the request over
                if record.outcomes is not None:
                    return Replay(list(record.outcomes))
                raise HoldExpired(reservation.account)
        if reservation.hold is not None and reservation.hold not in acct.holds:
            raise HoldExpired(reservation.account)
        learned: set[str] = set()  # bought meanwhile, learned when about to charge them
        for _ in range(len(reservation.candidates) + 1):
            decided = self._walk(reservation, learned, verdict_of)
            meanwhile = {d for d, o in decided.items() if o is Outcome.CHARGED and d in acct.owned}
            if not meanwhile:
                break
            learned |= meanwhile
        if reservation.hold is not None:
            acct.holds.remove(reservation.hold)
        member = reservation.member
        for datum, price in zip(reservation.candidates, reservation.prices, strict=True):
            if decided[datum] is Outcome.CHARGED:
                pool, credits = price
                grant = acct.draw(pool, credits)
                acct.append(
                    EntryKind.CHARGE, pool, -credits, now, datum, grant=grant, member=member
                )
                acct.owned[datum] = Purchase(
                    pool=pool, credits=credits, at=now, grant=grant, member=member
                )
        acct.expire(now)  # R23: what the hold kept of an expired grant, unspent
        outcomes: list[Outcome] = []
        seen: set[str] = set()
        for datum in reservation.data:
            if datum in seen:
                outcomes.append(Outcome.DUPLICATE_IN_REQUEST)
            elif datum in reservation.owned_at_reserve:
                outcomes.append(Outcome.ALREADY_OWNED)
            else:
                outcomes.append(decided[datum])
            seen.add(datum)
        if key is not None:
            acct.keys[key].outcomes = outcomes
        return outcomes

    def _walk(
        self,
        reservation: ModelReservation,
        learned: set[str],
        verdict_of: Callable[[str], Verdict],
    ) -> dict[str, Outcome]:
        left = dict(reservation.capacity)
        allowed = reservation.limit
        allowed = None if allowed is None else dict(allowed)
        decided: dict[str, Outcome] = {}
        for datum, (pool, credits) in zip(reservation.candidates, reservation.prices, strict=True):
            if datum in learned:
                decided[datum] = Outcome.ALREADY_OWNED
            elif credits > left[pool]:
                # R22: past both the member's allowance and the pool: the allowance.
                beyond = allowed is not None and credits > allowed[pool]
                decided[datum] = (
                    Outcome.MEMBER_ALLOWANCE_EXCEEDED if beyond else Outcome.INSUFFICIENT_CREDITS
                )
            elif self._billable(verdict_of(datum)):
                left[pool] -= credits
                if allowed is not None:
                    allowed[pool] -= credits
                decided[datum] = Outcome.CHARGED
            else:
                decided[datum] = Outcome.NOT_VERIFIED
        return decided

    def _billable(self, verdict: Verdict) -> bool:
        return verdict is Verdict.VALID or (self.bill_catch_all and verdict is Verdict.CATCH_ALL)

    def charge(
        self,
        account: str,
        contacts: Sequence[T],
        verdict_of: Callable[[T], Verdict],
        now: datetime,
    ) -> list[Outcome]:
        """R10, R12, R15: a request without a key, reserved and settled at once."""
        first: Mapping[str, T] = {datum_of(c): c for c in reversed(contacts)}
        reservation = self.reserve(account, "unlock", contacts, now)
        assert isinstance(reservation, ModelReservation)
        outcomes = self.settle(reservation, lambda datum: verdict_of(first[datum]), now)
        assert not isinstance(outcomes, Replay)
        return outcomes

    def bounce(self, account: str, contact: Contact | RawContact, now: datetime) -> None:
        """R18: one refund per charged email, within 30 days."""
        datum = datum_of(contact)
        if channel_of(datum) is not Channel.EMAIL:
            raise NotAnEmail(datum)
        acct = self._get(account)
        if acct.status == "lapsed":
            raise NoActiveSubscription(account)
        purchase = acct.owned.get(datum)
        if purchase is None:
            raise NotCharged(datum)
        if purchase.refunded:
            raise AlreadyRefunded(datum)
        if now - purchase.at > REFUND_WINDOW:
            raise RefundWindowClosed(datum)
        purchase.refunded = True
        # R23: back to the grant that paid, unless it has expired, up to what was spent.
        back_to = None
        for grant in acct.grants:
            if grant.grant_id == purchase.grant and not grant.kept and grant.expires_at > now:
                back = min(purchase.credits, grant.credits - grant.remaining)
                if back:
                    grant.remaining += back
                    back_to = grant.grant_id
        acct.append(
            EntryKind.REFUND,
            purchase.pool,
            purchase.credits,
            now,
            datum,
            grant=back_to,
            member=purchase.member,
        )
        acct.emit(
            EventType.CHARGE_REFUNDED,
            now,
            datum=datum,
            pool=purchase.pool.value,
            credits=purchase.credits,
            reason="bounce",
            member=purchase.member,
            entry_seq=len(acct.ledger) - 1,
        )
        index = acct.period_of(purchase.at)  # R25: the period of the charge, if this one's
        if index is not None:
            acct.bounces[index] = acct.bounces.get(index, 0) + 1
            acct.judge(index, now)

    # -- expiring grants (R23), members (R22), the guarantee (R25) ------------------------

    def top_up(
        self, account: str, credits: Credits, now: datetime, *, expires_at: datetime | None
    ) -> None:
        acct = self._get(account)
        if acct.status == "lapsed":
            raise NoActiveSubscription(account)
        if expires_at is not None and expires_at <= now:
            raise GrantExpiryNotAhead(expires_at, now)
        for pool in Channel:
            if credits.of(pool):
                grant_id = len(acct.ledger) if expires_at is not None else None
                acct.append(EntryKind.TOP_UP, pool, credits.of(pool), now, grant=grant_id)
                if grant_id is not None and expires_at is not None:
                    acct.grants.append(
                        ModelGrant(
                            grant_id=grant_id,
                            pool=pool,
                            credits=credits.of(pool),
                            remaining=credits.of(pool),
                            expires_at=expires_at,
                        )
                    )

    def add_member(self, account: str, member: str) -> bool:
        acct = self._get(account)
        if member in acct.members:
            return False
        acct.members[member] = None
        return True

    def set_member_allowance(self, account: str, member: str, credits: Credits | None) -> None:
        acct = self._get(account)
        if member not in acct.members:
            raise UnknownMember(account, member)
        acct.members[member] = credits

    def member_usage(self, account: str, member: str) -> dict[Channel, int]:
        """R22: the member's usage in the account's current period."""
        acct = self._get(account)
        if member not in acct.members:
            raise UnknownMember(account, member)
        return acct.usage(member, acct.period_start(), nth_month(acct.anchor, acct.index + 1))

    def guarantee(self, account: str, index: int) -> tuple[int, int, bool]:
        """R25 for period `index`: emails charged in it, their bounces, breached or not."""
        acct = self._get(account)
        start, end = nth_month(acct.anchor, index), nth_month(acct.anchor, index + 1)
        charged = {
            e.datum
            for e in acct.ledger
            if e.kind is EntryKind.CHARGE
            and start <= e.at < end
            and e.datum is not None
            and channel_of(e.datum) is Channel.EMAIL
        }
        bounces = sum(1 for e in acct.ledger if e.kind is EntryKind.REFUND and e.datum in charged)
        return (
            len(charged),
            bounces,
            len(charged) >= GUARANTEE_MIN_EMAILS and bounces * 100 > len(charged),
        )

    def set_low_threshold(self, account: str, pool: Channel, credits: int | None) -> None:
        """R24: a pool's threshold, or None for the plan's default; fires nothing."""
        acct = self._get(account)
        if credits is None:
            acct.thresholds.pop(pool, None)
        else:
            acct.thresholds[pool] = credits

    def thresholds(self, account: str) -> dict[Channel, int]:
        acct = self._get(account)
        return {pool: acct.threshold(pool) for pool in Channel}

    def events(self, account: str) -> list[ModelEvent]:
        return list(self._get(account).events)

    def balance(self, account: str) -> dict[Channel, int]:
        return dict(self._get(account).balance)

    def available(self, account: str) -> dict[Channel, int]:
        acct = self._get(account)
        return {pool: acct.available(pool) for pool in Channel}

    def balance_at(self, account: str, at: datetime) -> dict[Channel, int]:
        """R21: each pool's balance after its last entry at or before `at`."""
        past = dict.fromkeys(Channel, 0)
        for entry in self._get(account).ledger:
            if entry.at <= at:
                past[entry.pool] = entry.balance_after
        return past
