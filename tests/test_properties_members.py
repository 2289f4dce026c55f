"""Hypothesis property test of R22 (with R15, R18): random allowances, unlocks by two
members and the account itself, bounces and time passing, on one team. An independent
count, from the answers alone, of what each member used in the current period checks
every item: charged only within the allowance, member_allowance_exceeded exactly when
the next datum would pass it, insufficient_credits only within it; and member_usage
equals the count. A separate module, so as not to touch the state machine and model
being rewritten elsewhere.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

from hypothesis import example, given
from hypothesis import strategies as st

from adapters.clock import ManualClock
from adapters.memory import InMemoryRepository
from adapters.verifier import ScriptedVerifier
from credits_domain import (
    Contact,
    Credits,
    CreditService,
    Outcome,
    Plan,
    RefundRefused,
    Verdict,
)

START = datetime(2025, 1, 31, 8, 0, tzinfo=UTC)
MEMBERS = ("alice", "bob", None)
Step = tuple[str, int, int]
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("allow"), st.integers(0, 1), st.integers(-1, 6)),  # -1: none
        st.tuples(st.just("unlock"), st.integers(0, 2), st.integers(0, 7)),
        st.tuples(st.just("bounce"), st.integers(0, 50), st.just(0)),
        st.tuples(st.just("wait"), st.integers(1, 20), st.just(0)),  # days
    ),
    max_size=25,
)


@given(steps=STEPS, monthly=st.integers(0, 15))
# Past the allowance with credits left; past both; a bounce and a renewal between.
@example(steps=[("allow", 0, 2), ("unlock", 0, 5)], monthly=10)
@example(steps=[("allow", 1, 4), ("unlock", 1, 6), ("unlock", 0, 3)], monthly=5)
@example(
    steps=[
        *[("allow", 0, 3), ("unlock", 0, 4), ("bounce", 0, 0), ("unlock", 0, 3)],
        *[("wait", 20, 0), ("wait", 15, 0), ("unlock", 0, 5)],
    ],
    monthly=12,
)
def test_r22_members_stay_within_their_allowances_in_request_order(
    steps: list[Step], monthly: int
) -> None:
    clock = ManualClock(START)
    verifier = ScriptedVerifier(
        {f"bad{i}@corp.com": Verdict.INVALID for i in range(100)}, default=Verdict.VALID
    )
    service = CreditService(repository=InMemoryRepository(), verifier=verifier, clock=clock)
    service.subscribe("team", Plan(name="p", monthly=Credits(email=monthly)))
    for name in ("alice", "bob"):
        service.add_member("team", name)
    allowance: dict[str, int | None] = {"alice": None, "bob": None}
    # What each member used in the current period, counted from the answers (R22).
    used: dict[str, int] = {"alice": 0, "bob": 0}
    period = service.period("team")
    charged: list[tuple[Contact, str | None, datetime]] = []
    for number, (op, a, b) in enumerate(steps):
        if service.period("team") != period:  # a boundary passed: allowances reset
            period = service.period("team")
            used = {"alice": 0, "bob": 0}
        if op == "allow":
            name = ("alice", "bob")[a]
            allowance[name] = None if b < 0 else b
            service.set_member_allowance(
                "team", name, None if b < 0 else Credits(email=b, mobile=0)
            )
        elif op == "unlock":
            member = MEMBERS[a]
            batch = [
                Contact.email(f"bad{number}@corp.com" if i == 1 else f"s{number}-{i}@corp.com")
                for i in range(b)
            ]
            result = service.unlock("team", batch, member=member)
            limit = None if member is None else allowance[member]
            for item in result.items:
                taken = 0 if member is None else used[member]
                if item.outcome is Outcome.CHARGED:
                    assert limit is None or taken + 1 <= limit
                    if member is not None:
                        used[member] += 1
                    charged.append((item.contact, member, clock.now()))
                elif item.outcome is Outcome.MEMBER_ALLOWANCE_EXCEEDED:
                    assert limit is not None and taken + 1 > limit
                elif item.outcome is Outcome.INSUFFICIENT_CREDITS:
                    assert limit is None or taken + 1 <= limit
        elif op == "bounce" and charged:
            contact, member, at = charged[a % len(charged)]
            with contextlib.suppress(RefundRefused):  # refunded already, or too late
                service.report_bounce("team", contact)
                if member is not None and at >= period.start:
                    used[member] -= 1
        elif op == "wait":
            clock.advance(timedelta(days=a))
        if service.period("team") == period:
            for name in ("alice", "bob"):
                assert service.member_usage("team", name) == Credits(email=used[name])
