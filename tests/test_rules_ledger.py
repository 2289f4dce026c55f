"""Example-based tests of R19..R21 (ledger, conservation, statements) and the three worked
examples of docs/rules.md, end to end through the facade.

Each test's name starts with the rule it checks; its docstring quotes what it checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from credits_domain import (
    Channel,
    Contact,
    Credits,
    EntryKind,
    InvalidRequest,
    LedgerEntry,
    Operation,
    Outcome,
    Verdict,
)
from rules_support import (
    ACCOUNT,
    JAN_1,
    SECOND,
    World,
    emails,
    make_world,
    mobiles,
    of_kind,
    tiny_plan,
    total,
)

# Short names for the expected-ledger table of the R19 test.
E, M = Channel.EMAIL, Channel.MOBILE
G, C, T, R, F = (
    EntryKind.GRANT,
    EntryKind.CHARGE,
    EntryKind.TOP_UP,
    EntryKind.REFUND,
    EntryKind.FORFEIT,
)


def at(day: int, month: int = 1, hour: int = 0) -> datetime:
    return datetime(2024, month, day, hour, tzinfo=UTC)


def assert_conserved(w: World, account: str = ACCOUNT) -> None:
    """R20 recomputed from the statement alone, per pool."""
    entries = list(w.service.statement(account))
    balance = w.balance(account)
    for pool in Channel:
        grants = total(entries, EntryKind.GRANT, pool) + total(entries, EntryKind.TOP_UP, pool)
        refunds = total(entries, EntryKind.REFUND, pool)
        charges = -total(entries, EntryKind.CHARGE, pool)
        forfeits = -total(entries, EntryKind.FORFEIT, pool)
        expiries = -total(entries, EntryKind.EXPIRE, pool)  # R23
        adjustments = total(entries, EntryKind.ADJUSTMENT, pool)
        assert min(grants, refunds, charges, forfeits, expiries) >= 0
        recomputed = grants + refunds - charges - forfeits - expiries + adjustments
        assert recomputed == balance.of(pool) >= 0
        assert sum(e.amount for e in entries if e.pool is pool) == balance.of(pool)
        available = balance.email_available if pool is Channel.EMAIL else balance.mobile_available
        assert 0 <= available <= balance.of(pool)
        running = 0
        for entry in (e for e in entries if e.pool is pool):
            running += entry.amount
            assert entry.balance_after == running >= 0


# -- R19: the append-only ledger ------------------------------------------------------------


def test_r19_every_balance_change_is_a_ledger_entry() -> None:
    """R19: "Every change of a balance is an append-only ledger entry (grant, charge,
    refund, forfeit, adjustment) with account, pool, signed amount, kind, cause (datum,
    plan, period, idempotency key) and the Clock's time." -- seq numbers them from 0
    without gaps."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.clock.set(at(2))
    w.service.unlock(ACCOUNT, [Contact.email("a@corp.com"), *mobiles(1)], idempotency_key="u1")
    w.clock.set(at(3))
    w.service.export(ACCOUNT, [Contact.email("b@corp.com")], destination="csv")
    w.clock.set(at(4))
    w.service.top_up(ACCOUNT, Credits(email=5), reason="goodwill")
    w.clock.set(at(5))
    w.service.report_bounce(ACCOUNT, Contact.email("a@corp.com"))
    w.clock.set(at(6))
    w.service.change_plan(ACCOUNT, "power")
    w.clock.set(at(2, month=2))
    w.service.cancel(ACCOUNT)
    w.clock.set(at(1, month=3))
    w.service.balance(ACCOUNT)

    entries = w.entries()
    assert [(e.kind, e.pool, e.at) for e in entries] == [
        (G, E, at(1)), (G, M, at(1)),  # subscribe
        (C, E, at(2)), (C, M, at(2)),  # unlock
        (C, E, at(3)),  # export
        (T, E, at(4)),  # top-up
        (R, E, at(5)),  # bounce
        (G, E, at(6)), (G, M, at(6)),  # upgrade
        (G, E, at(1, 2)), (G, M, at(1, 2)),  # renewal
        (F, E, at(1, 3)), (F, M, at(1, 3)),  # lapse
    ]  # fmt: skip
    assert [e.seq for e in entries] == list(range(len(entries)))
    assert {e.account for e in entries} == {ACCOUNT}
    for entry in entries:
        positive = entry.kind in (EntryKind.GRANT, EntryKind.TOP_UP, EntryKind.REFUND)
        assert (entry.amount > 0) == positive

    unlock_email = entries[2].cause
    assert (unlock_email.operation, unlock_email.datum, unlock_email.plan) == (
        Operation.UNLOCK,
        "email:a@corp.com",
        "boost",
    )
    assert (unlock_email.period, unlock_email.idempotency_key) == (0, "u1")
    assert entries[3].cause.datum == "mobile:+15550000000"
    assert (entries[4].cause.operation, entries[4].cause.destination) == (Operation.EXPORT, "csv")
    assert entries[4].cause.idempotency_key is None
    assert entries[5].cause.note == "goodwill"
    assert (entries[6].cause.operation, entries[6].cause.datum) == (
        Operation.BOUNCE,
        "email:a@corp.com",
    )
    assert (entries[7].cause.operation, entries[7].cause.plan) == (Operation.UPGRADE, "power")
    assert (entries[9].cause.operation, entries[9].cause.period) == (Operation.RENEWAL, 1)
    assert {(e.cause.operation, e.cause.plan) for e in entries[11:]} == {(Operation.LAPSE, "power")}


def test_r19_entries_are_never_changed_or_deleted() -> None:
    """R19: "Entries are never changed or deleted." -- later activity only appends, and an
    entry is an immutable value."""
    w = make_world(script={"bad@corp.com": Verdict.INVALID})
    w.service.subscribe(ACCOUNT, tiny_plan(email=5, mobile=1, cap=Credits(email=2, mobile=1)))
    w.service.unlock(ACCOUNT, [*emails(2), Contact.email("bad@corp.com")])
    snapshot = w.entries()
    w.service.report_bounce(ACCOUNT, emails(1)[0])
    w.advance(timedelta(days=70))
    w.service.unlock(ACCOUNT, emails(2, prefix="later"))
    later = w.entries()
    assert later[: len(snapshot)] == snapshot
    assert len(later) > len(snapshot)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        later[0].amount = 10**6  # type: ignore[misc]


# -- R20: conservation ----------------------------------------------------------------------


def test_r20_conservation_recomputed_from_the_statement() -> None:
    """R20: "balance = grants + refunds - charges - forfeits >= 0, and available =
    balance - open holds >= 0", per account and pool, checked after every step of a
    history with charges, failures, refunds, top-ups, cap forfeits, upgrade and lapse."""
    capped = tiny_plan(email=40, mobile=6, name="capped", cap=Credits(email=25, mobile=2))
    bigger = tiny_plan(email=80, mobile=9, name="bigger", cap=Credits(email=50, mobile=4))
    w = make_world(script={"bad@corp.com": Verdict.INVALID})
    w.service.subscribe(ACCOUNT, capped)
    assert_conserved(w)
    steps: list[Callable[[], object]] = [
        lambda: w.service.unlock(ACCOUNT, [*emails(10), Contact.email("bad@corp.com")]),
        lambda: w.service.enrich(ACCOUNT, mobiles(3)),
        lambda: w.service.report_bounce(ACCOUNT, emails(1)[0]),
        lambda: w.service.top_up(ACCOUNT, Credits(email=7), reason="promotion"),
        lambda: w.advance(timedelta(days=31)),  # renewal with cap forfeits
        lambda: w.service.change_plan(ACCOUNT, bigger),
        lambda: w.service.export(ACCOUNT, emails(60, prefix="x"), destination="csv"),
        lambda: w.advance(timedelta(days=45)),
        lambda: w.service.cancel(ACCOUNT),
        lambda: w.advance(timedelta(days=31)),  # lapse
    ]
    for step in steps:
        step()
        assert_conserved(w)
    kinds = {e.kind for e in w.entries()}
    assert kinds >= {EntryKind.GRANT, EntryKind.CHARGE, EntryKind.REFUND, EntryKind.FORFEIT}
    assert (w.balance().email, w.balance().mobile) == (0, 0)


def test_r20_available_is_balance_minus_open_holds() -> None:
    """R20: "available = balance - open holds >= 0" while a request is being verified."""
    w = make_world()
    w.service.subscribe(ACCOUNT, tiny_plan(email=3, mobile=1))
    during: list[tuple[int, int, int, int]] = []

    def look(batch: Sequence[Contact]) -> None:
        b = w.balance()
        during.append((b.email, b.email_available, b.mobile, b.mobile_available))

    w.hook = look
    w.service.unlock(ACCOUNT, [*emails(5), *mobiles(2)])  # holds all 3 + 1 it can pay
    assert during == [(3, 0, 1, 0)]
    assert_conserved(w)


# -- R21: statements and past balances ------------------------------------------------------


def _three_months(w: World) -> None:
    w.service.subscribe(ACCOUNT, "boost")
    for month in (1, 2, 3):
        w.clock.set(at(10, month))
        w.service.unlock(ACCOUNT, emails(month, prefix=f"m{month}-"))
        w.clock.set(at(20, month))
        w.service.unlock(ACCOUNT, mobiles(1, first=month))


def test_r21_statement_of_one_period_with_running_balances() -> None:
    """R21: "An account's statement (entries of a period, with running balance)" -- only
    the period's entries, in order, starting from the balance carried in."""
    w = make_world()
    _three_months(w)
    feb = w.service.period(ACCOUNT, 1)
    assert (feb.start, feb.end) == (at(1, 2), at(1, 3))
    statement = list(w.service.statement(ACCOUNT, feb))
    assert all(feb.start <= e.at < feb.end for e in statement)
    assert [(e.kind, e.pool, e.amount, e.balance_after) for e in statement] == [
        (EntryKind.GRANT, Channel.EMAIL, 12_000, 23_999),
        (EntryKind.GRANT, Channel.MOBILE, 800, 1_599),
        (EntryKind.CHARGE, Channel.EMAIL, -1, 23_998),
        (EntryKind.CHARGE, Channel.EMAIL, -1, 23_997),
        (EntryKind.CHARGE, Channel.MOBILE, -1, 1_598),
    ]
    carried_in = w.service.balance_at(ACCOUNT, feb.start - SECOND)
    assert carried_in == Credits(email=11_999, mobile=799)
    assert w.service.balance_at(ACCOUNT, feb.end - SECOND) == Credits(email=23_997, mobile=1_598)
    periods = [list(w.service.statement(ACCOUNT, w.service.period(ACCOUNT, i))) for i in range(3)]
    assert [e for p in periods for e in p] == w.entries()


def test_r21_balance_at_a_past_instant() -> None:
    """R21: "its balance at any past instant can be read back" -- zero before the first
    subscription, inclusive of entries at the very instant, equal to balance() now."""
    w = make_world()
    _three_months(w)
    assert w.service.balance_at(ACCOUNT, JAN_1 - SECOND) == Credits(email=0, mobile=0)
    assert w.service.balance_at(ACCOUNT, JAN_1) == Credits(email=12_000, mobile=800)
    assert w.service.balance_at(ACCOUNT, at(10) - SECOND) == Credits(email=12_000, mobile=800)
    assert w.service.balance_at(ACCOUNT, at(10)) == Credits(email=11_999, mobile=800)
    assert w.service.balance_at(ACCOUNT, at(15, 2)) == Credits(email=23_997, mobile=1_599)
    now = w.balance()
    assert w.service.balance_at(ACCOUNT, w.now()) == Credits(email=now.email, mobile=now.mobile)


def test_r21_a_long_ledger_reads_back_whole_and_in_order() -> None:
    """R21: the whole statement of an account with more entries than one storage page
    comes back complete, in seq order, with no entry twice."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.service.unlock(ACCOUNT, emails(1_100))
    entries = w.entries()
    assert [e.seq for e in entries] == list(range(1_102))
    assert entries[-1].balance_after == 12_000 - 1_100
    assert len(list(w.service.statement(ACCOUNT, w.service.period(ACCOUNT, 0)))) == 1_102


def test_r21_the_statement_after_a_lapse_shows_why_the_balance_is_zero() -> None:
    """R21 with R6: the lapsed account's statement ends with the forfeits that took its
    balance to zero, and balance_at before the lapse still shows what it had."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    ends = w.service.cancel(ACCOUNT)
    w.clock.set(ends + timedelta(days=3))
    last: list[LedgerEntry] = w.entries()[-2:]
    assert [(e.kind, e.balance_after) for e in last] == [(EntryKind.FORFEIT, 0)] * 2
    assert w.service.balance_at(ACCOUNT, ends - SECOND) == Credits(email=12_000, mobile=800)
    assert w.service.balance_at(ACCOUNT, ends) == Credits(email=0, mobile=0)


# -- The worked examples of docs/rules.md --------------------------------------------------------


def test_worked_example_boost() -> None:
    """Worked example: "Boost plan: 12,000 email and 800 mobile credits a month. Unlock
    200 valid business emails: 200 email credits used. Unlock 50 mobile numbers: 50
    mobile credits used. Try to unlock 10 contacts of which 2 come back invalid: 8
    credits used. Unlock one of those 200 emails again: nothing used."""
    w = make_world(script={"wrong1@corp.com": Verdict.INVALID, "wrong2@corp.com": Verdict.INVALID})
    w.service.subscribe(ACCOUNT, "boost")
    assert (w.balance().email, w.balance().mobile) == (12_000, 800)

    two_hundred = emails(200)
    assert w.service.unlock(ACCOUNT, two_hundred).charged_credits == Credits(email=200)
    assert w.service.unlock(ACCOUNT, mobiles(50)).charged_credits == Credits(mobile=50)
    assert (w.balance().email, w.balance().mobile) == (11_800, 750)

    ten = [
        *emails(8, prefix="fresh"),
        Contact.email("wrong1@corp.com"),
        Contact.email("wrong2@corp.com"),
    ]
    tried = w.service.unlock(ACCOUNT, ten)
    assert tried.charged(Channel.EMAIL) == 8
    assert tried.count(Outcome.NOT_VERIFIED) == 2
    assert w.balance().email == 11_792

    again = w.service.unlock(ACCOUNT, two_hundred[17:18])
    assert again.charged_credits == Credits()
    assert again.items[0].outcome is Outcome.ALREADY_OWNED
    assert (w.balance().email, w.balance().mobile) == (11_792, 750)


def test_worked_example_invalid_and_already_owned() -> None:
    """Worked example: "Unlock 10 contacts, of which 2 are invalid and 1 is already owned:
    7 credits used."""
    w = make_world(script={"wrong1@corp.com": Verdict.INVALID, "wrong2@corp.com": Verdict.INVALID})
    w.service.subscribe(ACCOUNT, "boost")
    owned = Contact.email("owned@corp.com")
    w.service.unlock(ACCOUNT, [owned])
    before = w.balance().email
    ten = [
        *emails(7),
        Contact.email("wrong1@corp.com"),
        owned,
        Contact.email("wrong2@corp.com"),
    ]
    result = w.service.unlock(ACCOUNT, ten)
    assert result.charged(Channel.EMAIL) == 7
    assert (result.count(Outcome.NOT_VERIFIED), result.count(Outcome.ALREADY_OWNED)) == (2, 1)
    assert w.balance().email == before - 7


def test_worked_example_rollover() -> None:
    """Worked example: "Rollover: 12,000 granted, 7,500 used, so 4,500 carry over; with
    the next 12,000 the new period starts at 16,500."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    assert w.service.unlock(ACCOUNT, emails(7_500)).charged(Channel.EMAIL) == 7_500
    assert w.balance().email == 4_500
    w.clock.set(w.service.period(ACCOUNT).end)  # period 1 begins
    next_period = w.service.period(ACCOUNT, 1)
    assert w.balance().email == 16_500
    grants = of_kind(list(w.service.statement(ACCOUNT, next_period)), EntryKind.GRANT)
    assert [(e.pool, e.amount, e.balance_after) for e in grants] == [
        (Channel.EMAIL, 12_000, 16_500),
        (Channel.MOBILE, 800, 1_600),
    ]


def test_r21_statement_resumes_after_a_cursor() -> None:
    """R21: a paged reader resumes a statement after the last seq it read."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.service.unlock(ACCOUNT, [Contact.email(f"c{i}@corp.com") for i in range(5)])
    whole = list(w.service.statement(ACCOUNT))
    assert list(w.service.statement(ACCOUNT, after_seq=3)) == whole[4:]
    with pytest.raises(InvalidRequest):
        w.service.statement(ACCOUNT, after_seq=-2)
