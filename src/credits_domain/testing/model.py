"""An independent, deliberately naive model of the rules, the oracle of the state machine.

It shares no code with the Wallet or the service beyond the value types: no holds, no
phases, no storage, its own month arithmetic. What it computes is what docs/rules.md says a
single-threaded system must answer; the system under test must answer the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta

import attrs

from credits_domain.charging import Outcome
from credits_domain.contact import Channel, Contact
from credits_domain.errors import (
    AlreadyRefunded,
    AlreadySubscribed,
    NoActiveSubscription,
    NotAnEmail,
    NotCharged,
    RefundWindowClosed,
    SubscriptionPaused,
    UnknownAccount,
)
from credits_domain.plans import Plan
from credits_domain.verdict import Verdict

REFUND_WINDOW = timedelta(days=30)


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


@attrs.define
class ModelAccount:
    plan: Plan
    anchor: datetime
    status: str = "active"  # active | paused | lapsed
    index: int = 0
    ends_at: datetime | None = None
    pending: Plan | None = None
    balance: dict[Channel, int] = attrs.field(factory=lambda: dict.fromkeys(Channel, 0))
    owned: dict[Contact, Purchase] = attrs.field(factory=dict)

    def grant_allowance(self) -> None:
        for pool in Channel:
            self.balance[pool] += self.plan.monthly.of(pool)


class ReferenceModel:
    def __init__(self, *, bill_catch_all: bool = False) -> None:
        self.accounts: dict[str, ModelAccount] = {}
        self.bill_catch_all = bill_catch_all

    def _get(self, account: str) -> ModelAccount:
        if account not in self.accounts:
            raise UnknownAccount(account)
        return self.accounts[account]

    def advance(self, now: datetime) -> None:
        """Apply every period boundary up to `now`, to every account (R4..R7)."""
        for acct in self.accounts.values():
            while acct.status != "lapsed" and nth_month(acct.anchor, acct.index + 1) <= now:
                boundary = nth_month(acct.anchor, acct.index + 1)
                if acct.ends_at is not None and boundary >= acct.ends_at:
                    acct.status, acct.ends_at, acct.pending = "lapsed", None, None
                    acct.balance = dict.fromkeys(Channel, 0)
                    continue
                acct.index += 1
                if acct.pending is not None:
                    acct.plan, acct.pending = acct.pending, None
                if acct.status == "active":
                    cap = acct.plan.rollover_cap
                    if cap is not None:
                        for pool in Channel:
                            acct.balance[pool] = min(acct.balance[pool], cap.of(pool))
                    acct.grant_allowance()

    def subscribe(self, account: str, plan: Plan, now: datetime) -> None:
        acct = self.accounts.get(account)
        if acct is not None and acct.status != "lapsed":
            raise AlreadySubscribed(account)
        owned = acct.owned if acct is not None else {}
        fresh = ModelAccount(plan=plan, anchor=now, owned=owned)
        fresh.grant_allowance()
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
        for pool in Channel:
            acct.balance[pool] += (
                (plan.monthly.of(pool) - acct.plan.monthly.of(pool)) * left_s // length_s
            )
        acct.plan, acct.pending = plan, None

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

    def charge(
        self,
        account: str,
        contacts: Sequence[Contact],
        verdict_of: Callable[[Contact], Verdict],
        now: datetime,
    ) -> list[Outcome]:
        """R10, R12, R15: settle in order against the balance, first occurrence pays."""
        acct = self._require_active(account)
        outcomes: list[Outcome] = []
        seen: set[Contact] = set()
        for contact in contacts:
            if contact in seen:
                outcomes.append(Outcome.DUPLICATE_IN_REQUEST)
                continue
            seen.add(contact)
            if contact in acct.owned:
                outcomes.append(Outcome.ALREADY_OWNED)
                continue
            price = acct.plan.price_of(contact.channel)
            verdict = verdict_of(contact)
            billable = verdict is Verdict.VALID or (
                self.bill_catch_all and verdict is Verdict.CATCH_ALL
            )
            if price.credits > acct.balance[price.pool]:
                outcomes.append(Outcome.INSUFFICIENT_CREDITS)
            elif billable:
                acct.balance[price.pool] -= price.credits
                acct.owned[contact] = Purchase(pool=price.pool, credits=price.credits, at=now)
                outcomes.append(Outcome.CHARGED)
            else:
                outcomes.append(Outcome.NOT_VERIFIED)
        return outcomes

    def bounce(self, account: str, contact: Contact, now: datetime) -> None:
        """R18: one refund per charged email, within 30 days."""
        if contact.channel is not Channel.EMAIL:
            raise NotAnEmail(str(contact))
        acct = self._get(account)
        if acct.status == "lapsed":
            raise NoActiveSubscription(account)
        purchase = acct.owned.get(contact)
        if purchase is None:
            raise NotCharged(str(contact))
        if purchase.refunded:
            raise AlreadyRefunded(str(contact))
        if now - purchase.at > REFUND_WINDOW:
            raise RefundWindowClosed(str(contact))
        purchase.refunded = True
        acct.balance[purchase.pool] += purchase.credits

    def balance(self, account: str) -> dict[Channel, int]:
        return dict(self._get(account).balance)
