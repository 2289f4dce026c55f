"""The append-only ledger (R19): every change of a balance is one entry."""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from credits_domain.contact import Channel


class EntryKind(enum.Enum):
    """What moved the balance. Grants and refunds are positive, charges and forfeits negative."""

    __hash__ = object.__hash__  # singletons compared by identity

    GRANT = "grant"  # a period's allowance (R3), an upgrade's pro-rated difference (R7)
    TOP_UP = "top_up"  # other grants: top-up, promotion, goodwill (R8)
    CHARGE = "charge"  # one verified datum unlocked, exported or enriched (R9)
    REFUND = "refund"  # a bounced email (R18)
    FORFEIT = "forfeit"  # above a rollover cap (R5) or at lapse (R6)
    EXPIRE = "expire"  # an expiring grant's unspent remainder, at its expiry (R23)
    ADJUSTMENT = "adjustment"  # an operator's correction, either sign


POSITIVE_KINDS = frozenset({EntryKind.GRANT, EntryKind.TOP_UP, EntryKind.REFUND})
NEGATIVE_KINDS = frozenset({EntryKind.CHARGE, EntryKind.FORFEIT, EntryKind.EXPIRE})


class Operation(enum.Enum):
    """The use case that caused an entry."""

    __hash__ = object.__hash__  # singletons compared by identity

    SUBSCRIBE = "subscribe"
    RENEWAL = "renewal"
    UPGRADE = "upgrade"
    LAPSE = "lapse"
    UNLOCK = "unlock"
    EXPORT = "export"
    ENRICH = "enrich"
    BOUNCE = "bounce"
    GRANT = "grant"
    EXPIRY = "expiry"  # an expiring grant reached its instant (R23)


@attrs.frozen(kw_only=True)
class Cause:
    """Why an entry exists (R19): the datum, plan, period and idempotency key involved."""

    operation: Operation
    datum: str | None = None  # canonical "channel:value" of the datum charged or refunded
    plan: str | None = None
    period: int | None = None
    idempotency_key: str | None = None
    destination: str | None = None  # export target ("csv", "hubspot")
    note: str | None = None
    # R23: the expiring grant involved, named by the seq of its TOP_UP entry: on that
    # entry itself, on its EXPIRE entry, on a charge it paid (the first grant drawn on)
    # and on a refund that went back to it.
    grant: int | None = None
    expires_at: datetime | None = None  # R23: on an expiring grant's TOP_UP entry
    member: str | None = None  # R22: the team member who charged (or whose charge refunded)


@attrs.frozen(kw_only=True)
class LedgerEntry:
    """One immutable ledger line. `seq` orders an account's entries, from 0, without gaps."""

    account: str
    seq: int
    kind: EntryKind
    pool: Channel
    amount: int
    at: datetime
    balance_after: int
    cause: Cause

    def __attrs_post_init__(self) -> None:
        # A sign mismatch is a bug in the Wallet, not a caller's mistake.
        if self.kind in POSITIVE_KINDS and self.amount <= 0:
            raise AssertionError(f"invariant broken: {self.kind.value} must be positive")
        if self.kind in NEGATIVE_KINDS and self.amount >= 0:
            raise AssertionError(f"invariant broken: {self.kind.value} must be negative")
        if self.balance_after < 0:
            raise AssertionError("invariant broken: a pool went below zero (R15, R20)")
