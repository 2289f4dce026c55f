"""R23 expiring grants, through the facade, on every storage: memory, SQLite, PostgreSQL.

A grant is spent before plan credits, the soonest-expiring first; at its instant what is
left of it leaves the pool as an EXPIRE entry, applied whenever the account is touched
and by renew_due; the rollover cap (R5) counts plan credits only; a lapse (R6) forfeits
grants with the rest; held credits expire with their grant only if the hold ends free; a
bounce refund (R18) goes back to its grant unless that has expired.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import attrs
import pytest

from adapters.clock import ManualClock
from adapters.verifier import ScriptedVerifier
from credits_domain import (
    Channel,
    Contact,
    Credits,
    CreditService,
    EntryKind,
    GrantExpiryNotAhead,
    IdempotencyKeyReused,
    LedgerEntry,
    Operation,
    Verdict,
)
from rules_support import JAN_1, STORAGES, emails, storage, tiny_plan

ACCOUNT = "acme"
DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)
# Shorter than the lease (30 s), so that a request that waits it out keeps its hold.
WITHIN_LEASE = timedelta(seconds=10)
PLANS = {"tiny": tiny_plan(10, 2), "capped": tiny_plan(10, 0, name="capped", cap=Credits(email=4))}


@attrs.define
class Grants:
    """A service on one storage, its clock, and a hook run while the verifier works."""

    service: CreditService
    clock: ManualClock
    hook: Callable[[], object] | None = None

    def entries(self) -> list[LedgerEntry]:
        return list(self.service.statement(ACCOUNT))

    def grant(self, email: int, days: float, *, mobile: int = 0, reason: str = "promo") -> int:
        """An expiring grant `days` from now; returns its id (its TOP_UP entry's seq)."""
        top_up = self.service.top_up(
            ACCOUNT,
            Credits(email=email, mobile=mobile),
            reason=reason,
            expires_at=self.clock.now() + days * DAY,
        )
        return top_up.entries[0].seq


@pytest.fixture(params=STORAGES)
def grants(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Grants]:
    clock = ManualClock(JAN_1)
    holder: list[Grants] = []

    def before_answer(batch: Sequence[Contact]) -> None:
        if holder[0].hook is not None:
            holder[0].hook()

    verifier = ScriptedVerifier(
        {"bad@corp.com": Verdict.INVALID}, default=Verdict.VALID, before_answer=before_answer
    )
    with storage(request, tmp_path) as repository:
        service = CreditService(repository=repository, verifier=verifier, clock=clock, plans=PLANS)
        holder.append(Grants(service=service, clock=clock))
        yield holder[0]


def kinds(entries: Sequence[LedgerEntry]) -> list[tuple[EntryKind, int, int | None]]:
    return [(e.kind, e.amount, e.cause.grant) for e in entries]


def test_r23_a_grant_is_spent_before_plan_credits_the_soonest_expiring_first(
    grants: Grants,
) -> None:
    grants.service.subscribe(ACCOUNT, "tiny")
    late = grants.grant(2, days=20)
    soon = grants.grant(2, days=5)
    grants.service.unlock(ACCOUNT, emails(5))
    charges = [e for e in grants.entries() if e.kind is EntryKind.CHARGE]
    assert [e.cause.grant for e in charges] == [soon, soon, late, late, None]
    assert grants.service.balance(ACCOUNT).email == 14 - 5


def test_r23_the_unspent_remainder_expires_at_its_instant(grants: Grants) -> None:
    grants.service.subscribe(ACCOUNT, "tiny")
    promo = grants.grant(5, days=7, mobile=1)
    grants.service.unlock(ACCOUNT, emails(3))
    grants.clock.advance(8 * DAY)
    assert grants.service.balance(ACCOUNT).email == 10  # the plan's credits, untouched
    assert grants.service.balance(ACCOUNT).mobile == 2
    expired = [e for e in grants.entries() if e.kind is EntryKind.EXPIRE]
    assert [(e.pool, e.amount, e.balance_after) for e in expired] == [
        (Channel.EMAIL, -2, 10),
        (Channel.MOBILE, -1, 2),
    ]
    assert all(e.at == JAN_1 + 7 * DAY for e in expired)
    assert [e.cause.grant for e in expired] == [promo, promo + 1]  # a grant per pool
    assert all(e.cause.operation is Operation.EXPIRY for e in expired)
    top_ups = [e for e in grants.entries() if e.kind is EntryKind.TOP_UP]
    assert {e.cause.expires_at for e in top_ups} == {JAN_1 + 7 * DAY}  # the statement says


def test_r23_renew_due_applies_an_expiry_of_an_untouched_account(grants: Grants) -> None:
    grants.service.subscribe(ACCOUNT, "tiny")
    promo = grants.grant(3, days=3)
    grants.clock.advance(2 * DAY)
    assert grants.service.renew_due() == 0
    grants.clock.advance(DAY)  # exactly at the instant
    assert grants.service.renew_due() == 1
    assert grants.service.renew_due() == 0
    assert kinds(grants.entries())[-1] == (EntryKind.EXPIRE, -3, promo)


def test_r23_a_grant_expires_after_now(grants: Grants) -> None:
    grants.service.subscribe(ACCOUNT, "tiny")
    with pytest.raises(GrantExpiryNotAhead, match="after now"):
        grants.grant(3, days=0)
    assert [e.kind for e in grants.entries()] == [EntryKind.GRANT, EntryKind.GRANT]


def test_r23_the_rollover_cap_counts_plan_credits_only(grants: Grants) -> None:
    grants.service.subscribe(ACCOUNT, "capped")
    promo = grants.grant(6, days=40)  # outlives the first renewal
    grants.service.unlock(ACCOUNT, emails(1))  # from the grant
    grants.clock.advance(31 * DAY)
    # Plan credits: 10, capped at 4 (6 forfeited), then 10 granted; the grant's 5 stay.
    assert grants.service.balance(ACCOUNT).email == 4 + 10 + 5
    forfeit = [e for e in grants.entries() if e.kind is EntryKind.FORFEIT]
    assert [e.amount for e in forfeit] == [-6]
    grants.clock.advance(10 * DAY)
    assert grants.service.balance(ACCOUNT).email == 14
    assert kinds(grants.entries())[-1] == (EntryKind.EXPIRE, -5, promo)


def test_r23_a_lapsed_account_forfeits_its_grants_with_the_rest(grants: Grants) -> None:
    grants.service.subscribe(ACCOUNT, "tiny")
    grants.grant(5, days=60)
    grants.service.cancel(ACCOUNT)
    grants.clock.advance(32 * DAY)
    assert grants.service.balance(ACCOUNT).email == 0
    last = grants.entries()[-2:]
    assert [(e.kind, e.amount) for e in last] == [(EntryKind.FORFEIT, -15), (EntryKind.FORFEIT, -2)]
    grants.service.subscribe(ACCOUNT, "tiny")
    grants.clock.advance(40 * DAY)  # the old grant's instant passes: nothing left to expire
    assert not [e for e in grants.entries() if e.kind is EntryKind.EXPIRE]


def test_r20_conservation_counts_expiries(grants: Grants) -> None:
    grants.service.subscribe(ACCOUNT, "tiny")
    grants.grant(4, days=2)
    grants.grant(3, days=50)
    grants.service.unlock(ACCOUNT, emails(2))
    grants.clock.advance(45 * DAY)
    grants.service.unlock(ACCOUNT, emails(3, prefix="more"))
    grants.clock.advance(10 * DAY)
    entries = grants.entries()
    assert {EntryKind.EXPIRE, EntryKind.CHARGE, EntryKind.GRANT} <= {e.kind for e in entries}
    balance = grants.service.balance(ACCOUNT)
    for pool in Channel:
        ins = sum(e.amount for e in entries if e.pool is pool and e.amount > 0)
        outs = sum(-e.amount for e in entries if e.pool is pool and e.amount < 0)
        assert balance.of(pool) == ins - outs >= 0


def test_r23_a_held_credit_charged_after_the_expiry_was_spent_before_it(grants: Grants) -> None:
    grants.service.subscribe(ACCOUNT, "tiny")
    promo = grants.grant(3, days=WITHIN_LEASE / DAY)
    grants.hook = lambda: grants.clock.advance(WITHIN_LEASE)  # the grant expires mid-request
    grants.service.unlock(ACCOUNT, emails(2))
    grants.hook = None
    assert grants.service.balance(ACCOUNT).email == 10  # 2 charged from it, 1 expired
    tail = kinds(grants.entries())[-3:]
    assert tail == [
        (EntryKind.EXPIRE, -1, promo),
        (EntryKind.CHARGE, -1, promo),
        (EntryKind.CHARGE, -1, promo),
    ]


def test_r23_a_held_credit_whose_hold_ends_free_expires_then(grants: Grants) -> None:
    grants.service.subscribe(ACCOUNT, "tiny")
    grants.grant(3, days=WITHIN_LEASE / DAY)
    grants.hook = lambda: grants.clock.advance(WITHIN_LEASE)
    result = grants.service.unlock(ACCOUNT, [Contact.email("bad@corp.com"), *emails(1)])
    grants.hook = None
    assert result.charged(Channel.EMAIL) == 1
    assert grants.service.balance(ACCOUNT).email == 10
    expired = [e for e in grants.entries() if e.kind is EntryKind.EXPIRE]
    # One unheld credit at the instant; the credit held for the invalid datum when its
    # hold ended free, at settle.
    assert [(e.amount, e.at) for e in expired] == [
        (-1, JAN_1 + WITHIN_LEASE),
        (-1, JAN_1 + WITHIN_LEASE),
    ]
    assert sum(e.amount for e in expired) == -1 - 1


def test_r23_a_bounce_refund_goes_back_to_its_grant_unless_it_expired(grants: Grants) -> None:
    grants.service.subscribe(ACCOUNT, "tiny")
    promo = grants.grant(2, days=10)
    first, second = emails(2)
    grants.service.unlock(ACCOUNT, [first, second])
    refund = grants.service.report_bounce(ACCOUNT, first)
    assert refund.cause.grant == promo
    grants.service.unlock(ACCOUNT, emails(1, prefix="next"))  # the refunded credit again
    charges = [e for e in grants.entries() if e.kind is EntryKind.CHARGE]
    assert charges[-1].cause.grant == promo
    grants.clock.advance(11 * DAY)  # the grant expires (spent whole: nothing to expire)
    late = grants.service.report_bounce(ACCOUNT, second)
    assert late.cause.grant is None  # to plan credits
    assert grants.service.balance(ACCOUNT).email == 10 + 1
    assert not [e for e in grants.entries() if e.kind is EntryKind.EXPIRE]


def test_r23_a_top_up_key_replays_its_grant_and_refuses_another_instant(grants: Grants) -> None:
    grants.service.subscribe(ACCOUNT, "tiny")
    at = grants.clock.now() + 3 * DAY
    first = grants.service.top_up(
        ACCOUNT, Credits(email=2), reason="promo", idempotency_key="k", expires_at=at
    )
    again = grants.service.top_up(
        ACCOUNT, Credits(email=2), reason="promo", idempotency_key="k", expires_at=at
    )
    assert again.replayed and again.entries == first.entries
    with pytest.raises(IdempotencyKeyReused):
        grants.service.top_up(
            ACCOUNT, Credits(email=2), reason="promo", idempotency_key="k", expires_at=at + DAY
        )
    with pytest.raises(IdempotencyKeyReused):
        grants.service.top_up(ACCOUNT, Credits(email=2), reason="promo", idempotency_key="k")


def test_r23_a_read_that_keeps_an_expired_grant_for_a_hold_saves_it_so_it_is_not_due(
    grants: Grants,
) -> None:
    # A grant held whole by a request in flight reaches its instant: a read applies the
    # expiry (the remainder is kept for the hold; no entry is written). The renewal job
    # must then find nothing due, as after a boundary that writes no entry.
    grants.service.subscribe(ACCOUNT, "tiny")
    grants.grant(1, days=WITHIN_LEASE / DAY)
    renewed: list[int] = []

    def meanwhile() -> None:
        grants.clock.advance(WITHIN_LEASE)
        assert grants.service.balance(ACCOUNT).email == 11  # the held credit stays
        renewed.append(grants.service.renew_due())

    grants.hook = meanwhile
    result = grants.service.unlock(ACCOUNT, [Contact.email("bad@corp.com")])
    grants.hook = None
    assert result.charged(Channel.EMAIL) == 0
    assert renewed == [0]
    # The hold ended free at settle: the kept credit expires then.
    assert [e.kind for e in grants.entries()][-1] is EntryKind.EXPIRE
    assert grants.service.balance(ACCOUNT).email == 10
