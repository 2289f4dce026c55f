"""The Wallet aggregate: one account's subscription, pools, holds and new ledger entries.

A Wallet changes only through its methods, and each method keeps the invariants:
- R1/R15/R20: no pool below zero, and no pool's available credits (balance - open
  holds) below zero;
- R19: every balance change appends exactly one ledger entry, numbered without gaps;
- R6: a lapsed wallet holds nothing;
- R23: a pool's expiring grants hold no more than its balance, and a grant that reached
  its expiry keeps a remainder only while open holds may still charge it.
- R24: every change a customer's systems care about appends exactly one event, numbered
  by the account's event `seq` without gaps (1, 2, 3, ...).
Storage adapters persist `pending_entries` and `pending_events` with the wallet and then
call `entries_saved()` and `events_saved()`; they never set fields themselves except
through `restore()`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime, timedelta

import attrs

from credits_domain.contact import Channel
from credits_domain.errors import (
    NoActiveSubscription,
    SubscriptionPaused,
    TooManyGrants,
    TooManyMembers,
    UnknownMember,
    invariant,
)
from credits_domain.events import Event, EventType
from credits_domain.guarantee import GUARANTEE_MIN_EMAILS, breaches
from credits_domain.ledger import Cause, EntryKind, LedgerEntry, Operation
from credits_domain.periods import Period
from credits_domain.plans import Credits, Plan

# An account untouched for a century still renews in one call; more than that is a bug.
MAX_RENEWALS_PER_CATCH_UP = 1_200
# R23: the expiring grants an account may hold at once (spent ones count until they expire).
MAX_OPEN_GRANTS = 100
# R22: team members of one account.
MAX_MEMBERS = 1_000
# R24: the default low-balance threshold is this percentage of the plan's monthly
# allowance for the pool, rounded up (so a pool with any allowance has a threshold >= 1).
DEFAULT_LOW_PERCENT = 10
# R24: a balance event fires on the entries that spend credits or take them away during
# a period; boundaries (rollover forfeits, a lapse) report themselves as period.renewed
# and subscription.lapsed instead.
BALANCE_EVENT_KINDS = frozenset({EntryKind.CHARGE, EntryKind.EXPIRE})
# R24/R25: the periods whose guarantee counts a wallet keeps (the current one and the
# ones before it): a bounce of a charge older than that is refunded but not counted
# towards guarantee.breached (R18's default window is 30 days: two periods at most).
MAX_TALLY_PERIODS = 13
_EMAIL_DATUM = Channel.EMAIL.value + ":"


@attrs.frozen(kw_only=True)
class Tally:
    """R25 counts of one period, kept so that guarantee.breached (R24) is decided in the
    unit of work of the charge or bounce that breaches: emails charged in the period,
    bounces of those emails, and whether the period has breached already."""

    emails: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    bounces: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    breached: bool = False


def default_low_threshold(plan: Plan, pool: Channel) -> int:
    """R24: 10% of the plan's monthly allowance for `pool`, rounded up."""
    return -(-plan.monthly.of(pool) * DEFAULT_LOW_PERCENT // 100)


class Status(enum.Enum):
    ACTIVE = "active"
    PAUSED = "paused"  # R6: keeps its credits, grants nothing, refuses charges
    LAPSED = "lapsed"  # R6: credits forfeited; subscribe() starts afresh


class PlanChange(enum.Enum):
    UNCHANGED = "unchanged"
    UPGRADED = "upgraded"  # R7: at once, pro-rated difference granted
    DOWNGRADE_SCHEDULED = "downgrade_scheduled"  # R7: at the next renewal


@attrs.frozen(kw_only=True)
class Hold:
    """Credits reserved for one request between reserve and settle (R16)."""

    hold_id: str
    credits: Credits
    created_at: datetime
    expires_at: datetime
    member: str | None = None  # R22: the team member whose request it is, if any


def _whole(value: int) -> None:
    invariant(isinstance(value, int) and not isinstance(value, bool), "a whole number")


@attrs.frozen(kw_only=True)
class Grant:
    """An expiring grant (R23): credits of one pool, spent before plan credits, the
    soonest-expiring first; at `expires_at` what is left of them leaves the pool.

    `grant_id` is the seq of its TOP_UP entry. `remaining` is what is unspent; `expired`
    is True once its instant passed while open holds might still charge what is left (a
    held credit that is charged was spent before the expiry; one released expires then).
    """

    grant_id: int = attrs.field(validator=attrs.validators.ge(0))
    pool: Channel = attrs.field(validator=attrs.validators.instance_of(Channel))
    credits: int = attrs.field(validator=attrs.validators.gt(0))
    remaining: int = attrs.field(validator=attrs.validators.ge(0))
    expires_at: datetime = attrs.field(validator=attrs.validators.instance_of(datetime))
    expired: bool = False

    def __attrs_post_init__(self) -> None:
        invariant(self.remaining <= self.credits, "a grant's remainder within its credits")

    @property
    def order(self) -> tuple[datetime, int]:
        """Spending order: the soonest-expiring first, then the oldest (R23)."""
        return (self.expires_at, self.grant_id)


@attrs.frozen(kw_only=True)
class Member:
    """A team member of the account (R22): their per-period allowance per pool (None:
    they draw on the team pool freely), and what they used in the period that began at
    `period_start` (an older period's usage counts as none: allowances reset)."""

    allowance: Credits | None = None
    period_start: datetime | None = None
    used: Credits = attrs.field(factory=Credits)

    def used_in(self, period_start: datetime) -> Credits:
        return self.used if self.period_start == period_start else Credits()


@attrs.define(kw_only=True)
class Wallet:
    account: str
    plan: Plan
    status: Status
    anchor: datetime
    period_index: int
    ends_at: datetime | None
    pending_plan: Plan | None
    balances: dict[Channel, int]
    holds: dict[str, Hold]
    next_seq: int
    next_hold_no: int
    version: int = 0
    grants: dict[int, Grant] = attrs.field(factory=dict)  # R23, by grant_id
    members: dict[str, Member] = attrs.field(factory=dict)  # R22, by member id
    # R24: thresholds set with set_low_threshold (a pool missing: the plan's default).
    low_thresholds: dict[Channel, int] = attrs.field(factory=dict)
    next_event_seq: int = 1  # R24: the seq of the account's next event
    tallies: dict[int, Tally] = attrs.field(factory=dict)  # R25 counts by period index
    pending_entries: list[LedgerEntry] = attrs.field(factory=list)
    pending_events: list[Event] = attrs.field(factory=list)

    # -- construction -------------------------------------------------------------------

    @classmethod
    def open(cls, account: str, plan: Plan, at: datetime) -> Wallet:
        """A new account's first subscription, with its first allowance granted (R3)."""
        wallet = cls(
            account=account,
            plan=plan,
            status=Status.LAPSED,
            anchor=at,
            period_index=0,
            ends_at=None,
            pending_plan=None,
            balances={Channel.EMAIL: 0, Channel.MOBILE: 0},
            holds={},
            next_seq=0,
            next_hold_no=0,
        )
        wallet.restart(plan, at)
        return wallet

    @classmethod
    def restore(
        cls,
        *,
        account: str,
        plan: Plan,
        status: Status,
        anchor: datetime,
        period_index: int,
        ends_at: datetime | None,
        pending_plan: Plan | None,
        balances: Mapping[Channel, int],
        holds: Mapping[str, Hold],
        next_seq: int,
        next_hold_no: int,
        version: int,
        grants: Mapping[int, Grant] | None = None,
        members: Mapping[str, Member] | None = None,
        low_thresholds: Mapping[Channel, int] | None = None,
        next_event_seq: int = 1,
        tallies: Mapping[int, Tally] | None = None,
    ) -> Wallet:
        """Rebuild a stored wallet (for adapters); checks the invariants it was saved with."""
        wallet = cls(
            account=account,
            plan=plan,
            status=status,
            anchor=anchor,
            period_index=period_index,
            ends_at=ends_at,
            pending_plan=pending_plan,
            balances=dict(balances),
            holds=dict(holds),
            next_seq=next_seq,
            next_hold_no=next_hold_no,
            version=version,
            grants=dict(grants or {}),
            members=dict(members or {}),
            low_thresholds=dict(low_thresholds or {}),
            next_event_seq=next_event_seq,
            tallies=dict(tallies or {}),
        )
        wallet.check_invariants()
        return wallet

    def restart(self, plan: Plan, at: datetime) -> None:
        """Subscribe a lapsed account again: a new anchor and the new allowance (R6)."""
        invariant(self.status is Status.LAPSED, "only a lapsed wallet restarts")
        invariant(not any(self.balances.values()), "a lapsed wallet holds no credits (R6)")
        self.plan = plan
        self.status = Status.ACTIVE
        self.anchor = at
        self.period_index = 0
        self.ends_at = None
        self.pending_plan = None
        self.tallies.clear()  # R25: counts of the old subscription's periods (a new anchor)
        self._grant_allowance(at, Operation.SUBSCRIBE)

    # -- reading ------------------------------------------------------------------------

    def period(self) -> Period:
        return Period.of(self.anchor, self.period_index)

    @property
    def next_boundary_at(self) -> datetime | None:
        """When this wallet next needs renewing or a grant expiring (R23); None once lapsed."""
        if self.status is Status.LAPSED:
            return None
        end = self.period().end
        for grant in self.grants.values():
            if not grant.expired and grant.expires_at < end:
                end = grant.expires_at
        return end

    def granted(self, pool: Channel) -> int:
        """Credits of `pool` still in expiring grants (R23); the rest are plan credits."""
        return sum(g.remaining for g in self.grants.values() if g.pool is pool)

    def _grants_of(self, pool: Channel) -> list[Grant]:
        """`pool`'s grants in spending order (R23)."""
        return sorted((g for g in self.grants.values() if g.pool is pool), key=lambda g: g.order)

    def balance(self, pool: Channel) -> int:
        return self.balances[pool]

    def held(self, pool: Channel) -> int:
        return sum(hold.credits.of(pool) for hold in self.holds.values())

    def available(self, pool: Channel) -> int:
        return self.balances[pool] - self.held(pool)

    def check_invariants(self) -> None:
        for pool in Channel:
            invariant(self.balances[pool] >= 0, f"{pool.value} pool below zero (R15)")
            invariant(self.available(pool) >= 0, f"{pool.value} holds exceed balance (R20)")
            invariant(self.granted(pool) <= self.balances[pool], f"{pool.value} grants (R23)")
            # An expired grant's remainder waits only for holds that may still charge it.
            expired = sum(g.remaining for g in self.grants.values() if g.expired and g.pool is pool)
            invariant(expired <= self.held(pool), "an expired grant kept beyond holds (R23)")
        invariant(len(self.grants) <= MAX_OPEN_GRANTS, "too many open grants (R23)")
        invariant(self.next_event_seq >= 1, "event seqs start at 1 (R24)")
        invariant(len(self.tallies) <= MAX_TALLY_PERIODS, "guarantee counts kept (R25)")
        invariant(all(v >= 0 for v in self.low_thresholds.values()), "a low threshold >= 0 (R24)")
        if self.status is Status.LAPSED:
            invariant(not self.holds, "a lapsed wallet has no holds (R6)")
            invariant(not any(self.balances.values()), "a lapsed wallet holds no credits (R6)")
            invariant(not self.grants, "a lapsed wallet has no grants (R6, R23)")

    def require_chargeable(self) -> None:
        if self.status is Status.LAPSED:
            raise NoActiveSubscription(self.account)
        if self.status is Status.PAUSED:
            raise SubscriptionPaused(self.account)

    # -- time: renewals, rollover, lapse (R4, R5, R6) ------------------------------------

    def catch_up(self, now: datetime) -> int:
        """Apply every period boundary that has passed by `now`; returns how many."""
        applied = 0
        while self.status is not Status.LAPSED and self.period().end <= now:
            invariant(applied < MAX_RENEWALS_PER_CATCH_UP, "runaway renewal loop")
            boundary = self.period().end
            self.expire_grants(boundary)  # R23: expiries before (or at) it come first
            if self.ends_at is not None and boundary >= self.ends_at:
                self._lapse(boundary)
            else:
                self.period_index += 1
                self._forget_old_tallies()
                if self.pending_plan is not None:  # R7: a downgrade waits for the renewal
                    old, self.plan, self.pending_plan = self.plan, self.pending_plan, None
                    self._plan_changed(old, boundary)
                if self.status is Status.ACTIVE:  # R6: a paused subscription grants nothing
                    self._apply_rollover_cap(boundary)
                    self._grant_allowance(boundary, Operation.RENEWAL)
                period = self.period()
                self.emit(
                    EventType.PERIOD_RENEWED,
                    boundary,
                    {
                        "period": self.period_index,
                        "start": _iso(period.start),
                        "end": _iso(period.end),
                        "plan": self.plan.name,
                        "status": self.status.value,
                        "balance": self._balances_json(),
                    },
                )
            applied += 1
        self.expire_grants(now)
        return applied

    # -- expiring grants (R23) -------------------------------------------------------------

    def expire_grants(self, now: datetime) -> int:
        """R23: every grant whose instant has passed by `now` loses its unspent remainder,
        as one EXPIRE entry at its instant, in order of expiry. Open holds draw on a pool's
        grants first, in spending order: a remainder they may still charge waits (the
        grant is marked expired) and expires when the holds end; a grant spent whole is
        forgotten. Returns how many entries it appended."""
        if not self.grants:
            return 0
        kept: dict[int, int] = {}
        for pool in Channel:
            held = self.held(pool)
            for grant in self._grants_of(pool):
                kept[grant.grant_id] = min(grant.remaining, held)
                held -= kept[grant.grant_id]
        due = sorted(
            (g for g in self.grants.values() if g.expires_at <= now),
            key=lambda g: (now if g.expired else g.expires_at, g.grant_id),  # in time order
        )
        appended = 0
        for grant in due:
            keep = kept[grant.grant_id]
            if gone := grant.remaining - keep:
                cause = Cause(
                    operation=Operation.EXPIRY,
                    plan=self.plan.name,
                    period=self.period_index,
                    grant=grant.grant_id,
                )
                # Released by a hold's end after its instant: it leaves the pool now.
                at = now if grant.expired else grant.expires_at
                self.emit(  # R24: the expiry first, then what it did to the balance
                    EventType.GRANT_EXPIRED,
                    at,
                    {
                        "grant": grant.grant_id,
                        "pool": grant.pool.value,
                        "credits": gone,
                        "expires_at": _iso(grant.expires_at),
                        "entry_seq": self.next_seq,
                    },
                )
                self._append(EntryKind.EXPIRE, grant.pool, -gone, at, cause)
                appended += 1
            if keep:
                self.grants[grant.grant_id] = attrs.evolve(grant, remaining=keep, expired=True)
            else:
                del self.grants[grant.grant_id]
        return appended

    def _draw(self, pool: Channel, credits: int) -> int | None:
        """Spend `credits` of `pool` from its grants first, the soonest-expiring first
        (R23); returns the first grant drawn on, None if plan credits paid it all."""
        first = None
        for grant in self._grants_of(pool):
            if not credits:
                break
            take = min(grant.remaining, credits)
            if take:
                credits -= take
                first = grant.grant_id if first is None else first
                self.grants[grant.grant_id] = attrs.evolve(grant, remaining=grant.remaining - take)
        return first

    def _grant_allowance(self, at: datetime, operation: Operation) -> None:
        for pool in Channel:
            amount = self.plan.monthly.of(pool)
            if amount:
                cause = Cause(operation=operation, plan=self.plan.name, period=self.period_index)
                self._append(EntryKind.GRANT, pool, amount, at, cause)

    def _apply_rollover_cap(self, at: datetime) -> None:
        """R5: credits above the plan's cap are forfeited at renewal, before the grant.

        Credits held by a request in flight are kept until it settles, even above the cap,
        so that a renewal can never make a pool's available credits negative.
        """
        cap = self.plan.rollover_cap
        if cap is None:
            return
        for pool in Channel:
            # R23: grants neither count towards the cap nor are forfeited by it; holds
            # draw on grants first, so only the rest of them hold plan credits.
            granted = self.granted(pool)
            plan_held = max(0, self.held(pool) - granted)
            keep = max(cap.of(pool), plan_held)
            excess = self.balances[pool] - granted - keep
            if excess > 0:
                cause = Cause(
                    operation=Operation.RENEWAL,
                    plan=self.plan.name,
                    period=self.period_index,
                    note="above rollover cap",
                )
                self._append(EntryKind.FORFEIT, pool, -excess, at, cause)

    def _lapse(self, at: datetime) -> None:
        """R6: at the end of the last paid period both pools are forfeited."""
        self.holds.clear()
        self.grants.clear()  # R23: a lapsed account forfeits its grants with the rest
        for pool in Channel:
            if self.balances[pool]:
                cause = Cause(
                    operation=Operation.LAPSE, plan=self.plan.name, period=self.period_index
                )
                self._append(EntryKind.FORFEIT, pool, -self.balances[pool], at, cause)
        self.status = Status.LAPSED
        self.ends_at = None
        self.pending_plan = None
        self.emit(
            EventType.SUBSCRIPTION_LAPSED,
            at,
            {"plan": self.plan.name, "period": self.period_index},
        )

    # -- subscription changes (R6, R7) ---------------------------------------------------

    def change_plan(self, plan: Plan, now: datetime) -> PlanChange:
        """R7: an upgrade (no pool's allowance lower, one higher) acts at once with a
        pro-rated grant; any other change waits for the next renewal."""
        self.require_chargeable()
        if plan == self.plan:
            self.pending_plan = None
            return PlanChange.UNCHANGED
        old, new = self.plan.monthly, plan.monthly
        if not all(new.of(pool) >= old.of(pool) for pool in Channel):
            self.pending_plan = plan
            return PlanChange.DOWNGRADE_SCHEDULED
        period = self.period()
        left_s = (period.end - now) // timedelta(seconds=1)
        invariant(0 <= left_s <= period.length_s, "plan change outside the current period")
        previous, self.plan, self.pending_plan = self.plan, plan, None
        self._plan_changed(previous, now)
        for pool in Channel:
            extra = (new.of(pool) - old.of(pool)) * left_s // period.length_s
            if extra > 0:
                cause = Cause(operation=Operation.UPGRADE, plan=plan.name, period=self.period_index)
                self._append(EntryKind.GRANT, pool, extra, now, cause)
        return PlanChange.UPGRADED

    def _plan_changed(self, old: Plan, at: datetime) -> None:
        self.emit(
            EventType.PLAN_CHANGED,
            at,
            {"from": old.name, "to": self.plan.name, "period": self.period_index},
        )

    def cancel(self) -> datetime:
        """R6: the subscription ends at the end of the current period; returns that instant."""
        if self.status is Status.LAPSED:
            raise NoActiveSubscription(self.account)
        if self.ends_at is None:
            self.ends_at = self.period().end
        return self.ends_at

    def pause(self) -> None:
        if self.status is Status.LAPSED:
            raise NoActiveSubscription(self.account)
        self.status = Status.PAUSED

    def resume(self) -> None:
        if self.status is Status.LAPSED:
            raise NoActiveSubscription(self.account)
        self.status = Status.ACTIVE

    # -- holds (R16) ---------------------------------------------------------------------

    def place_hold(
        self, credits: Credits, now: datetime, ttl_s: int, *, member: str | None = None
    ) -> Hold:
        for pool in Channel:
            invariant(credits.of(pool) <= self.available(pool), "hold beyond available (R16)")
            room = self.member_room(member, pool)
            invariant(room is None or credits.of(pool) <= room, "hold beyond allowance (R22)")
        hold = Hold(
            hold_id=f"{self.account}#{self.next_hold_no}",
            credits=credits,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
            member=member,
        )
        self.next_hold_no += 1
        self.holds[hold.hold_id] = hold
        return hold

    def release_hold(self, hold_id: str) -> Hold | None:
        return self.holds.pop(hold_id, None)

    def release_expired_holds(self, now: datetime) -> int:
        expired = [h.hold_id for h in self.holds.values() if h.expires_at <= now]
        for hold_id in expired:
            del self.holds[hold_id]
        if expired:
            self.expire_grants(now)  # R23: what they held of an expired grant expires now
        return len(expired)

    # -- team members (R22) ----------------------------------------------------------------

    def add_member(self, member: str) -> bool:
        """Register a member; False if they were one already (nothing changes)."""
        if member in self.members:
            return False
        if len(self.members) >= MAX_MEMBERS:
            raise TooManyMembers(self.account, MAX_MEMBERS)
        self.members[member] = Member()
        return True

    def require_member(self, member: str) -> Member:
        found = self.members.get(member)
        if found is None:
            raise UnknownMember(self.account, member)
        return found

    def set_member_allowance(self, member: str, allowance: Credits | None) -> None:
        """R22: a per-period allowance per pool; None removes it (the pool, freely)."""
        found = self.require_member(member)
        self.members[member] = attrs.evolve(found, allowance=allowance)

    def member_used(self, member: str) -> Credits:
        """What the member used in the current period (R22)."""
        return self.require_member(member).used_in(self.period().start)

    def member_room(self, member: str | None, pool: Channel) -> int | None:
        """What the member may still take from `pool` this period, net of their open
        holds (R22); None: no limit (no member, or no allowance)."""
        if member is None:
            return None
        found = self.require_member(member)
        if found.allowance is None:
            return None
        held = sum(h.credits.of(pool) for h in self.holds.values() if h.member == member)
        used = found.used_in(self.period().start).of(pool)
        return max(0, found.allowance.of(pool) - used - held)

    def count_usage(self, member: str, pool: Channel, credits: int, at: datetime) -> None:
        """Add (or, negative, take back) the member's usage in the period of `at`."""
        found = self.require_member(member)
        start = self.period().start
        if not start <= at:  # a charge of an earlier period: its usage has reset (R22)
            return
        used = found.used_in(start)
        amount = max(0, used.of(pool) + credits)
        self.members[member] = attrs.evolve(
            found, period_start=start, used=attrs.evolve(used, **{pool.value: amount})
        )

    # -- balance changes (R8, R9, R18, R19) ----------------------------------------------

    def charge(self, pool: Channel, credits: int, at: datetime, cause: Cause) -> LedgerEntry:
        invariant(credits > 0, "a charge is positive")
        invariant(credits <= self.available(pool), "charge beyond available credits (R15)")
        if self.grants:
            cause = attrs.evolve(cause, grant=self._draw(pool, credits))
        return self._append(EntryKind.CHARGE, pool, -credits, at, cause)

    def charge_many(
        self, charges: list[tuple[Channel, int, Cause]], at: datetime
    ) -> list[LedgerEntry]:
        """Many charges at once: the availability check (which sums the holds) runs once
        per pool for the batch's total instead of once per charge."""
        totals = dict.fromkeys(Channel, 0)
        for pool, credits, _ in charges:
            invariant(credits > 0, "a charge is positive")
            totals[pool] += credits
        for pool in Channel:
            invariant(totals[pool] <= self.available(pool), "charge beyond available (R15)")
        if self.grants:  # R23: each charge draws on the grants first, in request order
            charges = [
                (pool, credits, attrs.evolve(cause, grant=self._draw(pool, credits)))
                for pool, credits, cause in charges
            ]
        return [
            self._append(EntryKind.CHARGE, pool, -credits, at, cause)
            for pool, credits, cause in charges
        ]

    def refund(
        self,
        pool: Channel,
        credits: int,
        at: datetime,
        cause: Cause,
        *,
        grant_id: int | None = None,
    ) -> LedgerEntry:
        """R18: credits back; to the grant that paid for them (R23) if it has not
        expired, up to what was spent of it, the rest to plan credits."""
        invariant(credits > 0, "a refund is positive")
        grant = self.grants.get(grant_id) if grant_id is not None else None
        if grant is not None and not grant.expired and grant.expires_at > at:
            back = min(credits, grant.credits - grant.remaining)
            if back:
                self.grants[grant.grant_id] = attrs.evolve(grant, remaining=grant.remaining + back)
                cause = attrs.evolve(cause, grant=grant.grant_id)
        entry = self._append(EntryKind.REFUND, pool, credits, at, cause)
        self.emit(
            EventType.CHARGE_REFUNDED,
            at,
            {
                "datum": cause.datum,
                "pool": pool.value,
                "credits": credits,
                "reason": cause.operation.value,
                "member": cause.member,
                "entry_seq": entry.seq,
            },
        )
        return entry

    def top_up(
        self,
        pool: Channel,
        credits: int,
        at: datetime,
        cause: Cause,
        *,
        expires_at: datetime | None = None,
    ) -> LedgerEntry:
        """R8; with `expires_at` (after `at`), an expiring grant (R23)."""
        invariant(credits > 0, "a top-up is positive")
        if expires_at is None:
            return self._append(EntryKind.TOP_UP, pool, credits, at, cause)
        invariant(expires_at > at, "a grant expires after it is granted (R23)")
        if len(self.grants) >= MAX_OPEN_GRANTS:
            raise TooManyGrants(self.account, MAX_OPEN_GRANTS)
        cause = attrs.evolve(cause, grant=self.next_seq, expires_at=expires_at)
        entry = self._append(EntryKind.TOP_UP, pool, credits, at, cause)
        self.grants[entry.seq] = Grant(
            grant_id=entry.seq, pool=pool, credits=credits, remaining=credits, expires_at=expires_at
        )
        return entry

    def _append(
        self, kind: EntryKind, pool: Channel, amount: int, at: datetime, cause: Cause
    ) -> LedgerEntry:
        after = self.balances[pool] + amount
        entry = LedgerEntry(
            account=self.account,
            seq=self.next_seq,
            kind=kind,
            pool=pool,
            amount=amount,
            at=at,
            balance_after=after,
            cause=cause,
        )
        before = self.balances[pool]
        self.balances[pool] = after
        self.next_seq += 1
        self.pending_entries.append(entry)
        if amount < 0 and kind in BALANCE_EVENT_KINDS:
            self._balance_events(entry, before)
        if kind is EntryKind.CHARGE and cause.datum and cause.datum.startswith(_EMAIL_DATUM):
            self._count(self.period_index, at, emails=1)  # R25
        return entry

    def entries_saved(self) -> list[LedgerEntry]:
        """Hand over the new entries to storage (called by adapters on save)."""
        saved, self.pending_entries = self.pending_entries, []
        return saved

    # -- events (R24) ----------------------------------------------------------------------

    def low_threshold(self, pool: Channel) -> int:
        """R24: the balance at or below which `pool` is low: the one set, else 10% of
        the plan's monthly allowance for the pool, rounded up."""
        found = self.low_thresholds.get(pool)
        return default_low_threshold(self.plan, pool) if found is None else found

    def set_low_threshold(self, pool: Channel, credits: int | None) -> None:
        """R24: the pool's low-balance threshold; None goes back to the plan's default.
        It acts on the next balance change: setting it fires nothing by itself."""
        if credits is None:
            self.low_thresholds.pop(pool, None)
        else:
            invariant(credits >= 0, "a low threshold >= 0 (R24)")
            self.low_thresholds[pool] = credits

    def fires_nothing(self, cost: Credits, emails: int) -> bool:
        """R24: would charging `cost` for `emails` email data leave every pool it
        charges above its threshold, and the period's guarantee unbreached or breached
        before (so that no event can fire)? The one-call paths charge only then, and
        count the emails (`period_emails`). A charge can first breach a period only when
        it takes the period's emails to 100 or more from below (past 100, charges only
        lower the rate), and then it breaches at the 100th email if at all."""
        current = self.tallies.get(self.period_index, Tally())
        counted, after = current.emails, current.emails + emails
        return all(
            not cost.of(pool) or self.balances[pool] - cost.of(pool) > self.low_threshold(pool)
            for pool in Channel
        ) and not (
            # The rate is highest at the 100th email: a breach anywhere in the batch is one there.
            counted < GUARANTEE_MIN_EMAILS <= after
            and breaches(GUARANTEE_MIN_EMAILS, current.bounces)
        )

    @property
    def period_emails(self) -> int:
        """R25: the emails charged in the current period so far."""
        found = self.tallies.get(self.period_index)
        return 0 if found is None else found.emails

    def count_bounce(self, charged_at: datetime, at: datetime) -> None:
        """R25: a bounce of an email charged at `charged_at` counts for that period (if
        it is among the periods kept); guarantee.breached if the period first breaches."""
        low = max(0, self.period_index - MAX_TALLY_PERIODS + 1)
        for index in range(self.period_index, low - 1, -1):
            period = Period.of(self.anchor, index)
            if period.start <= charged_at < period.end:
                self._count(index, at, bounces=1)
                return

    def _count(self, index: int, at: datetime, *, emails: int = 0, bounces: int = 0) -> None:
        found = self.tallies.get(index, Tally())
        tally = attrs.evolve(found, emails=found.emails + emails, bounces=found.bounces + bounces)
        if not tally.breached and breaches(tally.emails, tally.bounces):
            tally = attrs.evolve(tally, breached=True)
            period = Period.of(self.anchor, index)
            self.emit(
                EventType.GUARANTEE_BREACHED,
                at,
                {
                    "period": index,
                    "start": _iso(period.start),
                    "end": _iso(period.end),
                    "emails_charged": tally.emails,
                    "bounces": tally.bounces,
                },
            )
        self.tallies[index] = tally

    def _forget_old_tallies(self) -> None:
        oldest = self.period_index - MAX_TALLY_PERIODS + 1
        for index in [i for i in self.tallies if i < oldest]:
            del self.tallies[index]

    def _balance_events(self, entry: LedgerEntry, before: int) -> None:
        """R24: credits.low when the balance crosses down to its threshold or below,
        credits.depleted when it reaches zero; once per crossing (the balance before the
        entry was above), so rising above again re-arms them."""
        after, threshold = entry.balance_after, self.low_threshold(entry.pool)
        data = {
            "pool": entry.pool.value,
            "balance": after,
            "threshold": threshold,
            "entry_seq": entry.seq,
        }
        if before > threshold >= after:
            self.emit(EventType.CREDITS_LOW, entry.at, data)
        if before > 0 == after:
            self.emit(EventType.CREDITS_DEPLETED, entry.at, data)

    def emit(self, kind: EventType, at: datetime, data: Mapping[str, object]) -> Event:
        """Append the account's next event (R24); storage writes it with the wallet."""
        event = Event(account=self.account, seq=self.next_event_seq, type=kind, at=at, data=data)
        self.next_event_seq += 1
        self.pending_events.append(event)
        return event

    def events_saved(self) -> list[Event]:
        """Hand over the new events to storage (called by adapters on save)."""
        saved, self.pending_events = self.pending_events, []
        return saved

    def _balances_json(self) -> dict[str, int]:
        return {pool.value: self.balances[pool] for pool in Channel}


def _iso(at: datetime) -> str:
    return at.isoformat()
