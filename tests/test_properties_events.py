"""Hypothesis property test of R24 (with R18, R23, R25): random unlocks (some data
invalid, so that holds end free), bulk unlocks, top-ups with and without expiry, bounces,
a threshold set and time passing, on one account; an independent replay of the ledger
alone predicts every event: the crossings of the running balance of its threshold and
of zero on CHARGE and EXPIRE entries, each expiry, each bounce refund, the first breach
of each period's guarantee, and one renewal per period boundary; the account's events
must be exactly those, in that order, numbered 1, 2, 3, ... without gaps.

In memory, whose one-call charging path is on: the property also checks that the path
never charges a change without its event.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from adapters.clock import ManualClock
from adapters.memory import InMemoryRepository
from credits_domain import (
    Channel,
    Contact,
    Credits,
    CreditService,
    EntryKind,
    Event,
    EventType,
    LedgerEntry,
    Operation,
    Plan,
    RefundRefused,
    Verdict,
)
from credits_domain.guarantee import breaches

START = datetime(2025, 1, 31, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

Step = tuple[str, int, int]
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("unlock"), st.integers(0, 8), st.integers(0, 3)),  # (n, invalid)
        st.tuples(st.just("bulk"), st.integers(90, 130), st.just(0)),
        st.tuples(st.just("grant"), st.integers(1, 6), st.integers(1, 24 * 45)),  # hours
        st.tuples(st.just("top_up"), st.integers(1, 30), st.just(0)),
        st.tuples(st.just("bounce"), st.integers(0, 400), st.integers(1, 3)),  # (at, count)
        st.tuples(st.just("wait"), st.integers(1, 24 * 20), st.just(0)),
    ),
    max_size=25,
)


class _BadIsInvalid:
    """A verifier: an address starting with "bad" is invalid, any other valid."""

    def verify(self, contacts: Sequence[Contact]) -> list[Verdict]:
        return [Verdict.INVALID if c.value.startswith("bad") else Verdict.VALID for c in contacts]


Expected = tuple[EventType, datetime, dict[str, object]]


def _replay(entries: list[LedgerEntry], threshold: int) -> list[Expected]:
    """Every event but period.renewed that the ledger implies, in order (R24)."""
    expected: list[Expected] = []
    balance = 0
    emails: dict[int, int] = {}  # R25 per period index
    bounces: dict[int, int] = {}
    breached: set[int] = set()
    period_of: dict[str, int] = {}  # an email datum's period of charge (R12: one charge)

    def judge(period: int, at: datetime) -> None:
        if period not in breached and breaches(emails.get(period, 0), bounces.get(period, 0)):
            breached.add(period)
            expected.append(
                (
                    EventType.GUARANTEE_BREACHED,
                    at,
                    {
                        "period": period,
                        "emails_charged": emails[period],
                        "bounces": bounces[period],
                    },
                )
            )

    for entry in entries:
        assert entry.pool is Channel.EMAIL
        before, balance = balance, balance + entry.amount
        cause = entry.cause
        if entry.kind is EntryKind.EXPIRE:
            expected.append(
                (
                    EventType.GRANT_EXPIRED,
                    entry.at,
                    {"grant": cause.grant, "credits": -entry.amount, "entry_seq": entry.seq},
                )
            )
        if entry.kind in (EntryKind.CHARGE, EntryKind.EXPIRE):
            data: dict[str, object] = {
                "balance": balance,
                "threshold": threshold,
                "entry_seq": entry.seq,
            }
            if before > threshold >= balance:
                expected.append((EventType.CREDITS_LOW, entry.at, data))
            if before > 0 == balance:
                expected.append((EventType.CREDITS_DEPLETED, entry.at, data))
        if entry.kind is EntryKind.CHARGE:
            assert cause.datum is not None and cause.period is not None
            period_of[cause.datum] = cause.period
            emails[cause.period] = emails.get(cause.period, 0) + 1
            judge(cause.period, entry.at)
        if entry.kind is EntryKind.REFUND and cause.operation is Operation.BOUNCE:
            assert cause.datum is not None
            expected.append(
                (
                    EventType.CHARGE_REFUNDED,
                    entry.at,
                    {"datum": cause.datum, "entry_seq": entry.seq},
                )
            )
            period = period_of[cause.datum]
            bounces[period] = bounces.get(period, 0) + 1
            judge(period, entry.at)
    return expected


def _seen(event: Event, keys: dict[str, object]) -> Expected:
    return (event.type, event.at, {key: event.data[key] for key in keys})


@given(
    steps=STEPS,
    monthly=st.integers(0, 300),
    threshold=st.none() | st.integers(0, 40),
)
def test_r24_the_events_are_what_a_replay_of_the_ledger_predicts(
    steps: list[Step], monthly: int, threshold: int | None
) -> None:
    clock = ManualClock(START)
    service = CreditService(repository=InMemoryRepository(), verifier=_BadIsInvalid(), clock=clock)
    service.subscribe("acct", Plan(name="p", monthly=Credits(email=monthly)))
    if threshold is not None:
        service.set_low_balance_threshold("acct", Channel.EMAIL, threshold)
    charged: list[Contact] = []
    for number, (op, a, b) in enumerate(steps):
        if op in ("unlock", "bulk"):
            batch = [Contact.email(f"bad{number}-{i}@corp.com") for i in range(b)]
            batch += [Contact.email(f"s{number}-{i}@corp.com") for i in range(a)]
            result = service.unlock("acct", batch)
            charged += [item.contact for item in result.items if item.credits]
        elif op == "grant":
            at = clock.now() + b * HOUR
            service.top_up("acct", Credits(email=a), reason="promo", expires_at=at)
        elif op == "top_up":
            service.top_up("acct", Credits(email=a), reason="goodwill")
        elif op == "bounce" and charged:
            for offset in range(b):
                with contextlib.suppress(RefundRefused):  # refunded already, or too late
                    service.report_bounce("acct", charged[(a + offset) % len(charged)])
        elif op == "wait":
            clock.advance(a * HOUR)
    events = service.events("acct", limit=1000)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    renewed = [e for e in events if e.type is EventType.PERIOD_RENEWED]
    periods = service.period("acct").index
    assert [e.data["period"] for e in renewed] == list(range(1, periods + 1))
    chosen = -(-monthly // 10) if threshold is None else threshold
    expected = _replay(list(service.statement("acct")), chosen)
    others = [e for e in events if e.type is not EventType.PERIOD_RENEWED]
    assert [_seen(e, data) for e, (_, _, data) in zip(others, expected, strict=False)] == expected
    assert len(others) == len(expected)
