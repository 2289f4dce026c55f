"""Hypothesis property test of R23 (with R18, R20): random top-ups with and without
expiry, unlocks, bounces and time passing on one account; the ledger alone is replayed
by an independent reference that knows each grant's remainder, and checks that every
charge drew on the soonest-expiring grant with credits left (or on plan credits only
when no live grant had any), that every expiry took exactly the remainder at the
grant's instant, and that the pools conserve (R20).

The steps are sequential, so no hold is open at an expiry; holds at an expiry are
covered by tests/test_rules_grants.py. A separate module from test_properties.py, so as
not to touch the state machine and model that are being rewritten elsewhere.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import attrs
from hypothesis import given
from hypothesis import strategies as st

from adapters.clock import ManualClock
from adapters.memory import InMemoryRepository
from adapters.verifier import ScriptedVerifier
from credits_domain import (
    Channel,
    Contact,
    Credits,
    CreditService,
    EntryKind,
    LedgerEntry,
    Plan,
    RefundRefused,
)

START = datetime(2025, 1, 31, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

Step = tuple[str, int, int]
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), st.integers(1, 6), st.integers(1, 24 * 45)),  # hours
        st.tuples(st.just("top_up"), st.integers(1, 6), st.just(0)),
        st.tuples(st.just("unlock"), st.integers(0, 8), st.just(0)),
        st.tuples(st.just("bounce"), st.integers(0, 40), st.just(0)),
        st.tuples(st.just("wait"), st.integers(1, 24 * 20), st.just(0)),
    ),
    max_size=30,
)


@attrs.define
class _Grant:
    expires_at: datetime
    remaining: int
    live: bool = True


def _replay(entries: list[LedgerEntry]) -> dict[int, _Grant]:
    """Check R23's spending order and expiries against the ledger; the grants' state."""
    grants: dict[int, _Grant] = {}
    balance = dict.fromkeys(Channel, 0)
    for entry in entries:
        balance[entry.pool] += entry.amount
        assert entry.balance_after == balance[entry.pool] >= 0  # R19, R20
        cause = entry.cause
        if entry.kind is EntryKind.TOP_UP and cause.expires_at is not None:
            assert cause.grant == entry.seq and cause.expires_at > entry.at
            grants[entry.seq] = _Grant(cause.expires_at, entry.amount)
        live = sorted(
            (g.expires_at, seq)
            for seq, g in grants.items()
            if g.live and g.remaining and entry.pool is Channel.EMAIL
        )
        if entry.kind is EntryKind.CHARGE:
            if cause.grant is None:
                assert not live, f"charge {entry.seq} took plan credits before a grant"
            else:
                assert live and live[0][1] == cause.grant, f"charge {entry.seq}: not soonest"
                grants[cause.grant].remaining += entry.amount
        elif entry.kind is EntryKind.REFUND and cause.grant is not None:
            grant = grants[cause.grant]
            assert grant.live and grant.expires_at > entry.at
            grant.remaining += entry.amount
        elif entry.kind is EntryKind.EXPIRE:
            assert cause.grant is not None
            grant = grants[cause.grant]
            assert (entry.at, -entry.amount, grant.live) == (
                grant.expires_at,
                grant.remaining,
                True,
            )
            grant.remaining, grant.live = 0, False
        for seq, grant in grants.items():  # a grant past its instant has nothing left
            if grant.live and grant.expires_at <= entry.at and grant.remaining == 0:
                grant.live = False
            assert not (grant.live and grant.expires_at < entry.at), f"grant {seq} outlived"
    return grants


@given(steps=STEPS, monthly=st.integers(0, 12))
def test_r23_charges_draw_on_the_soonest_grant_and_expiries_take_the_rest(
    steps: list[Step], monthly: int
) -> None:
    clock = ManualClock(START)
    service = CreditService(
        repository=InMemoryRepository(), verifier=ScriptedVerifier(), clock=clock
    )
    service.subscribe("acct", Plan(name="p", monthly=Credits(email=monthly)))
    charged: list[Contact] = []
    for number, (op, a, b) in enumerate(steps):
        if op == "grant":
            at = clock.now() + b * HOUR
            service.top_up("acct", Credits(email=a), reason="promo", expires_at=at)
        elif op == "top_up":
            service.top_up("acct", Credits(email=a), reason="goodwill")
        elif op == "unlock":
            batch = [Contact.email(f"s{number}-{i}@corp.com") for i in range(a)]
            result = service.unlock("acct", batch)
            charged += [item.contact for item in result.items if item.credits]
        elif op == "bounce" and charged:
            with contextlib.suppress(RefundRefused):  # refunded already, or too late (R18)
                service.report_bounce("acct", charged[a % len(charged)])
        elif op == "wait":
            clock.advance(a * HOUR)
    clock.advance(50 * 24 * HOUR)  # every grant's instant passes
    balance = service.balance("acct")
    grants = _replay(list(service.statement("acct")))
    assert all(not g.live or g.remaining == 0 for g in grants.values())
    entries = list(service.statement("acct"))
    assert sum(e.amount for e in entries if e.pool is Channel.EMAIL) == balance.email  # R20
