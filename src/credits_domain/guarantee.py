"""R25, the deliverability guarantee, and R22's usage of a team member, both read from
the ledger. R25: per account and billing period, the emails charged
in the period, the bounces reported (R18) for those emails, and whether the bounce rate
breaches the promise ("under 1% bounces").

Derived from the ledger alone, with no storage of its own: a period's email CHARGE
entries name their data (`Cause.datum`, "email:..."), and each bounce is a REFUND entry
of operation BOUNCE naming the same datum. An account pays for a datum at most once
(R12), so a refund's datum names exactly one charge: a bounce counts for the period
whose charges include its datum. A bounce is reported within the refund window of its
charge (R18), so the entries from the period's start to its end plus that window hold
every charge and bounce of the period.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from credits_domain.contact import Channel
from credits_domain.ledger import EntryKind, LedgerEntry, Operation
from credits_domain.periods import Period
from credits_domain.plans import Credits

GUARANTEE_MIN_EMAILS = 100
"""A period with fewer emails charged never breaches: too few to judge a rate by."""
GUARANTEE_MAX_BOUNCE_PERCENT = 1
"""The promise: a period breaches when more than this percentage of its emails bounce."""

_EMAIL_DATUM = Channel.EMAIL.value + ":"


@attrs.frozen(kw_only=True)
class Guarantee:
    """R25 for one account and period. `emails_charged` counts the email charges made in
    the period (a later refund does not reduce it); `bounces` counts the bounce refunds of
    those emails, whenever reported (within R18's window)."""

    account: str
    period: Period
    emails_charged: int = attrs.field(validator=attrs.validators.ge(0))
    bounces: int = attrs.field(validator=attrs.validators.ge(0))

    def __attrs_post_init__(self) -> None:
        if self.bounces > self.emails_charged:
            raise AssertionError("invariant broken: more bounces than emails charged (R25)")

    @property
    def bounce_rate(self) -> float:
        """Bounces per email charged, 0.0 when none was charged."""
        return self.bounces / self.emails_charged if self.emails_charged else 0.0

    @property
    def breached(self) -> bool:
        """More than 1% bounced, with at least 100 emails charged (exact, in integers)."""
        return breaches(self.emails_charged, self.bounces)


def breaches(emails_charged: int, bounces: int) -> bool:
    """R25: does a period with these counts breach the guarantee?"""
    return (
        emails_charged >= GUARANTEE_MIN_EMAILS
        and bounces * 100 > emails_charged * GUARANTEE_MAX_BOUNCE_PERCENT
    )


def tally(account: str, period: Period, entries: Iterable[LedgerEntry]) -> Guarantee:
    """R25 from the account's entries in time order, from the period's start to its end
    plus the refund window (later entries are ignored, earlier ones must not be given)."""
    charged: set[str] = set()
    bounces = 0
    for entry in entries:
        datum = entry.cause.datum
        if datum is None or not datum.startswith(_EMAIL_DATUM):
            continue
        if entry.kind is EntryKind.CHARGE and entry.at < period.end:
            if entry.at < period.start:
                raise AssertionError("invariant broken: an entry before the period (R25)")
            charged.add(datum)
        elif (
            entry.kind is EntryKind.REFUND
            and entry.cause.operation is Operation.BOUNCE
            and datum in charged
        ):
            bounces += 1
    return Guarantee(account=account, period=period, emails_charged=len(charged), bounces=bounces)


def member_usage(member: str, period: Period, entries: Iterable[LedgerEntry]) -> Credits:
    """R22: what `member` was charged per pool in `period`, less the bounce refunds (R18)
    of those charges, from the same entries as `tally` (the period and the refund window
    after it). A datum is charged once per account (R12), so a refund names its charge."""
    charged: set[str] = set()
    used = dict.fromkeys(Channel, 0)
    for entry in entries:
        cause = entry.cause
        if cause.member != member or cause.datum is None:
            continue
        if entry.kind is EntryKind.CHARGE and entry.at < period.end:
            charged.add(cause.datum)
            used[entry.pool] -= entry.amount
        elif entry.kind is EntryKind.REFUND and cause.datum in charged:
            used[entry.pool] -= entry.amount
    return Credits.from_pools(used)
