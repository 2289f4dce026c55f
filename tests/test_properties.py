"""Hypothesis property tests of the central rules (R5, R10, R12, R15, R20)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given
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
    MalformedContact,
    Outcome,
    Plan,
    Price,
    Verdict,
)
from credits_domain.testing import strategies as cst
from credits_domain.testing.model import ReferenceModel

START = datetime(2025, 1, 31, 8, 0, tzinfo=UTC)
UNIVERSE = cst.contact_universe(12)


def _service(verifier: ScriptedVerifier | None = None) -> tuple[CreditService, ManualClock]:
    clock = ManualClock(START)
    service = CreditService(
        repository=InMemoryRepository(), verifier=verifier or ScriptedVerifier(), clock=clock
    )
    return service, clock


def _ledger_totals(service: CreditService, account: str) -> dict[Channel, int]:
    totals = dict.fromkeys(Channel, 0)
    for entry in service.statement(account):
        totals[entry.pool] += entry.amount
    return totals


@given(
    monthly=st.builds(Credits, email=st.integers(0, 500), mobile=st.integers(0, 50)),
    spend=st.lists(st.integers(0, 40), min_size=1, max_size=24),
)
def test_r5_rollover_is_unlimited_over_many_periods(monthly: Credits, spend: list[int]) -> None:
    """R5: every period's unused credits carry over, without any cap. The expectation is
    counted from the inputs alone: every datum is new and VALID, so a period's request
    costs what it asks for, up to what is left (R15)."""
    service, clock = _service()
    service.subscribe("acct", Plan(name="p", monthly=monthly))
    left = monthly.email
    for period, n in enumerate(spend):
        batch = [Contact.email(f"p{period}-{i}@corp.com") for i in range(n)]
        service.unlock("acct", batch)
        left -= min(n, left)
        # Jan 31 anchor: each period is 28..31 days; jumping to the next boundary renews once.
        clock.set(service.period("acct").end)
        left += monthly.email
    balance = service.balance("acct")
    assert balance.email == left
    assert balance.mobile == (len(spend) + 1) * monthly.mobile


@given(
    verdicts=st.lists(cst.verdicts(), min_size=1, max_size=12),
    bill_catch_all=st.booleans(),
)
def test_r10_only_billable_verdicts_are_charged(
    verdicts: list[Verdict], bill_catch_all: bool
) -> None:
    """R10: every non-VALID verdict is free (CATCH_ALL only billable when switched on)."""
    from credits_domain import ChargePolicy

    contacts = [Contact.email(f"v{i}@corp.com") for i in range(len(verdicts))]
    verifier = ScriptedVerifier({c.value: v for c, v in zip(contacts, verdicts, strict=True)})
    clock = ManualClock(START)
    service = CreditService(
        repository=InMemoryRepository(),
        verifier=verifier,
        clock=clock,
        policy=ChargePolicy(bill_catch_all=bill_catch_all),
    )
    service.subscribe("acct", "boost")
    result = service.unlock("acct", contacts)
    billable = {Verdict.VALID} | ({Verdict.CATCH_ALL} if bill_catch_all else set())
    expected = sum(1 for v in verdicts if v in billable)
    assert result.charged(Channel.EMAIL) == expected
    for item, verdict in zip(result.items, verdicts, strict=True):
        assert item.verdict is verdict
        assert (item.outcome is Outcome.CHARGED) == (verdict in billable)
        assert item.revealed == (verdict in billable)
    assert service.balance("acct").email == 12_000 - expected


@given(steps=cst.scenarios(UNIVERSE, max_steps=25), plan=cst.plans(max_allowance=6))
def test_r12_r15_r20_no_double_charge_no_overdraft_conservation(
    steps: list[cst.Step], plan: Plan
) -> None:
    """R12: a datum is charged at most once per account, whatever the mix of unlock, export
    and enrich over time; R15: no pool below zero; R20: balance = sum of the ledger, and
    both are what the independent reference model computes from the same steps."""
    verifier = ScriptedVerifier({UNIVERSE[0].value: Verdict.INVALID})
    service, clock = _service(verifier)
    service.subscribe("acct", plan)
    model = ReferenceModel()
    model.subscribe("acct", plan, START)
    for step in steps:
        if step.kind == "advance_days":
            clock.advance(timedelta(days=step.days))
            continue
        model.advance(clock.now())
        expected = model.charge("acct", step.contacts, verifier.verdict_of, clock.now())
        if step.kind == "export":
            result = service.export("acct", step.contacts, destination="csv")
        elif step.kind == "enrich":
            result = service.enrich("acct", step.contacts)
        else:
            result = service.unlock("acct", step.contacts)
        assert [i.contact for i in result.items] == list(step.contacts)
        assert [i.outcome for i in result.items] == expected
        balance = service.balance("acct")
        assert balance.email >= 0
        assert balance.mobile >= 0
        assert balance.email_available >= 0
        assert balance.mobile_available >= 0
    entries = list(service.statement("acct"))
    charges = Counter(e.cause.datum for e in entries if e.kind is EntryKind.CHARGE)
    assert all(n == 1 for n in charges.values()), charges
    assert str(UNIVERSE[0]) not in charges  # INVALID is never charged (R10)
    totals = _ledger_totals(service, "acct")
    balance = service.balance("acct")
    assert (balance.email, balance.mobile) == (totals[Channel.EMAIL], totals[Channel.MOBILE])
    model.advance(clock.now())
    assert {pool: balance.of(pool) for pool in Channel} == model.balance("acct")
    for entry in entries:
        assert entry.balance_after >= 0


@example(  # verified early, then beyond the balance: INSUFFICIENT, not NOT_VERIFIED
    allowance=2,
    mobile_price=2,
    request=[UNIVERSE[4], UNIVERSE[8], UNIVERSE[0]],
    failing={UNIVERSE[0], UNIVERSE[4]},
)
@given(
    allowance=st.integers(0, 8),
    mobile_price=st.integers(1, 5),
    request=cst.requests(UNIVERSE, max_size=12),
    failing=st.sets(st.sampled_from(UNIVERSE), max_size=4),
)
def test_r15_in_order_settlement_never_overdraws(
    allowance: int, mobile_price: int, request: list[Contact], failing: set[Contact]
) -> None:
    """R15: items settle in order; one is refused for lack of credits exactly when its price
    exceeds what is left after the items before it, failed ones serving later ones."""
    plan = Plan(
        name="tight",
        monthly=Credits(email=allowance),
        prices={
            Channel.EMAIL: Price(pool=Channel.EMAIL),
            Channel.MOBILE: Price(pool=Channel.EMAIL, credits=mobile_price),
        },
    )
    verifier = ScriptedVerifier({c.value: Verdict.INVALID for c in failing})
    service, _ = _service(verifier)
    service.subscribe("acct", plan)
    result = service.unlock("acct", request)
    left = allowance
    seen: set[Contact] = set()
    for item in result.items:
        contact = item.contact
        if contact in seen:
            assert item.outcome is Outcome.DUPLICATE_IN_REQUEST
            continue
        seen.add(contact)
        cost = plan.price_of(contact.channel).credits
        if cost > left:
            assert item.outcome is Outcome.INSUFFICIENT_CREDITS
            assert not item.revealed
        elif contact in failing:
            assert item.outcome is Outcome.NOT_VERIFIED
        else:
            assert item.outcome is Outcome.CHARGED
            left -= cost
    assert service.balance("acct").email == left >= 0


@given(raw=cst.raw_emails())
def test_r12_email_canonical_form_is_trimmed_lower_case(raw: str) -> None:
    """R12: the same address however typed is the same datum."""
    contact = Contact.email(raw)
    assert contact.value == raw.strip().lower()
    assert Contact.email(contact.value) == contact
    assert hash(Contact.email(raw.upper())) == hash(contact)


@given(raw=cst.raw_mobiles())
def test_r12_mobile_canonical_form_is_e164(raw: str) -> None:
    """R12: E.164 is kept as it is, whitespace around it trimmed: '+' and 7..15 digits."""
    contact = Contact.mobile(raw)
    assert contact.value == raw.strip()
    assert 8 <= len(contact.value) <= 16


@given(
    raw=cst.raw_mobiles(),
    at=st.integers(2, 7),  # inside even the shortest number (8 characters)
    noise=st.sampled_from([" ", "-", ".", "(", ")", "(0)", " (0) "]),
)
def test_r12_the_core_refuses_a_mobile_with_anything_inside_it(
    raw: str, at: int, noise: str
) -> None:
    """R12: the core never guesses: a separator or trunk prefix inside the number is
    refused (the boundary parses such spellings, adapters.phones)."""
    number = raw.strip()
    dressed = number[:at] + noise + number[at:]
    with pytest.raises(MalformedContact):
        Contact.mobile(dressed)
