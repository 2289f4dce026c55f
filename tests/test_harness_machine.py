"""The state machine's overlapping requests, crashes and raw spellings, step by step.

Each test drives the harness's machine (`credits_domain.testing.make_state_machine`) on the
in-memory adapter through one scenario, by its own methods: every answer is checked
against the reference model inside them, and the test then says what that answer is, so
a model that predicted something else fails here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import attrs
import pytest

from adapters.memory import InMemoryRepository
from credits_domain import (
    Channel,
    ChargeResult,
    Credits,
    EntryKind,
    EventType,
    HoldExpired,
    Outcome,
    RequestInFlight,
    Verdict,
)
from credits_domain.testing.machine import (
    BULK_ACCOUNT,
    MACHINE_PLANS,
    TICK,
    CreditsStateMachine,
    Request,
)
from credits_domain.testing.model import RawContact, datum_of

TINY, LARGE = MACHINE_PLANS[0], MACHINE_PLANS[-1]


def email(text: str) -> RawContact:
    return RawContact(Channel.EMAIL, text)


def unlock(account: str, *texts: str, key: str | None = None) -> Request:
    return Request(account=account, operation="unlock", contacts=tuple(map(email, texts)), key=key)


def outcomes(answer: object) -> list[Outcome]:
    assert isinstance(answer, ChargeResult), answer
    return [item.outcome for item in answer.items]


@pytest.fixture
def machine() -> Iterator[CreditsStateMachine]:
    state = CreditsStateMachine(InMemoryRepository)
    yield state
    state.statements_balances_and_model_agree()
    state.teardown()


def test_whoever_settles_first_pays_and_the_other_gets_the_datum_free(
    machine: CreditsStateMachine,
) -> None:
    machine.subscribe("acme", LARGE)
    first, second = machine.overlapping(
        unlock("acme", "a@corp.com", "b@corp.com"), unlock("acme", "B@corp.com")
    )
    assert outcomes(second) == [Outcome.CHARGED]
    assert outcomes(first) == [Outcome.CHARGED, Outcome.ALREADY_OWNED]


def test_credits_held_by_a_request_being_verified_limit_another(
    machine: CreditsStateMachine,
) -> None:
    machine.subscribe("acme", TINY)  # 3 email credits, all held by the first request
    first, second = machine.overlapping(
        unlock("acme", "a@corp.com", "b@corp.com", "c@corp.com"), unlock("acme", "d@corp.com")
    )
    assert outcomes(second) == [Outcome.INSUFFICIENT_CREDITS]
    assert outcomes(first) == [Outcome.CHARGED] * 3


def test_another_account_overlaps_without_a_trace(machine: CreditsStateMachine) -> None:
    machine.subscribe("acme", TINY)
    machine.subscribe("acme:eu", TINY)
    first, second = machine.overlapping(
        unlock("acme", "a@corp.com", key="k1"), unlock("acme:eu", "a@corp.com", key="k1")
    )
    assert outcomes(first) == outcomes(second) == [Outcome.CHARGED]


def test_an_abandoned_request_is_in_flight_until_its_hold_lapses_then_taken_over(
    machine: CreditsStateMachine,
) -> None:
    machine.subscribe("acme", TINY)
    request = unlock("acme", "a@corp.com", key="k1")
    reserved = machine.crashing(request)
    assert reserved is not None and reserved.hold is not None
    machine.statements_balances_and_model_agree()  # 1 credit held: available 2
    assert machine.service.balance("acme").email_available == 2
    assert isinstance(machine.one(request), RequestInFlight)
    machine.clock.at = reserved.hold.expires_at - TICK
    assert isinstance(machine.one(request), RequestInFlight)
    machine.clock.at = reserved.hold.expires_at
    assert outcomes(machine.one(request)) == [Outcome.CHARGED]
    replay = machine.one(request)
    assert isinstance(replay, ChargeResult) and replay.replayed
    charges = [e for e in machine.service.statement("acme") if e.kind is EntryKind.CHARGE]
    assert len(charges) == 1


def test_a_verifier_slower_than_the_hold_charges_nothing(machine: CreditsStateMachine) -> None:
    machine.subscribe("acme", TINY)
    first, second = machine.overlapping(
        unlock("acme", "a@corp.com"), unlock("acme", "b@corp.com"), slow=timedelta(0)
    )
    assert isinstance(first, HoldExpired)
    assert outcomes(second) == [Outcome.CHARGED]


def test_a_retry_that_took_over_answers_for_the_slow_first_attempt(
    machine: CreditsStateMachine,
) -> None:
    machine.subscribe("acme", TINY)
    request = unlock("acme", "a@corp.com", key="k1")
    first, retry = machine.overlapping(request, request, slow=TICK)
    assert outcomes(retry) == [Outcome.CHARGED]
    assert isinstance(retry, ChargeResult) and not retry.replayed
    assert isinstance(first, ChargeResult) and first.replayed
    assert first.items == retry.items


def test_the_model_canonicalises_raw_spellings_on_its_own(
    machine: CreditsStateMachine,
) -> None:
    assert datum_of(email(" Person0@Corp.COM\t")) == "email:person0@corp.com"
    machine.subscribe("acme", TINY)
    answer = machine.one(unlock("acme", " PERSON0@corp.com ", "person0@CORP.com", key="K1"))
    assert outcomes(answer) == [Outcome.CHARGED, Outcome.DUPLICATE_IN_REQUEST]
    again = machine.one(unlock("acme", "person0@corp.com", "\tPerson0@corp.com", key="K1"))
    assert isinstance(again, ChargeResult) and again.replayed


def test_a_bounce_reported_twice_refunds_once(machine: CreditsStateMachine) -> None:
    machine.subscribe("acme", TINY)
    machine.one(unlock("acme", "a@corp.com"))
    machine._bounce("acme", email("a@corp.com"))
    machine._bounce("acme", email(" A@corp.com"))  # refused: AlreadyRefunded, on both sides
    refunds = [e for e in machine.service.statement("acme") if e.kind is EntryKind.REFUND]
    assert len(refunds) == 1


def test_a_member_past_their_allowance_is_refused_while_the_pool_pays_for_others(
    machine: CreditsStateMachine,
) -> None:
    machine.subscribe("acme", TINY)  # 3 email credits
    machine.team(Credits(email=1, mobile=0), more=True)  # ann: 1 email; bob: no allowance
    ann = attrs.evolve(unlock("acme", "a@corp.com", "b@corp.com"), member="ann")
    assert outcomes(machine.one(ann)) == [Outcome.CHARGED, Outcome.MEMBER_ALLOWANCE_EXCEEDED]
    bob = attrs.evolve(unlock("acme", "c@corp.com", "d@corp.com", "e@corp.com"), member="bob")
    assert outcomes(machine.one(bob)) == [
        Outcome.CHARGED,
        Outcome.CHARGED,
        Outcome.INSUFFICIENT_CREDITS,
    ]
    # Past both the allowance and the pool: the allowance.
    again = attrs.evolve(unlock("acme", "f@corp.com"), member="ann")
    assert outcomes(machine.one(again)) == [Outcome.MEMBER_ALLOWANCE_EXCEEDED]
    assert machine.service.member_usage("acme", "ann").email == 1


def test_a_grant_held_by_a_request_at_its_expiry_is_spent_if_charged(
    machine: CreditsStateMachine,
) -> None:
    machine.subscribe("acme", TINY)
    first, second = unlock("acme", "a@corp.com"), unlock("acme:eu", "b@corp.com")
    machine.expiry_inside_a_request(first, second, Credits(email=2, mobile=0), -TICK)
    entries = list(machine.service.statement("acme"))
    kinds = [(e.kind, e.amount, e.cause.grant) for e in entries[2:]]
    top_up = entries[2].seq
    # The charge drew on the grant (spent before the expiry); its other credit expired.
    assert kinds == [
        (EntryKind.TOP_UP, 2, top_up),
        (EntryKind.EXPIRE, -1, top_up),
        (EntryKind.CHARGE, -1, top_up),
    ]


def test_a_hundred_emails_with_two_bounces_breach_the_guarantee(
    machine: CreditsStateMachine,
) -> None:
    machine.subscribe("acme", TINY)
    machine.many_emails(size=100, bounced=2)
    guarantee = machine.service.guarantee(BULK_ACCOUNT)
    assert (guarantee.emails_charged, guarantee.bounces, guarantee.breached) == (100, 2, True)


def test_the_second_bounce_of_a_hundred_emails_is_refunded_then_breaches(
    machine: CreditsStateMachine,
) -> None:
    machine.subscribe("acme", TINY)
    machine.many_emails(size=100, bounced=3)
    # R24: 120 credits, 100 spent: never low. The first breach only, after the bounce
    # that makes it; the third bounce: a refund only.
    events = machine.model.events(BULK_ACCOUNT)
    assert [e.type for e in events] == [
        EventType.CHARGE_REFUNDED,
        EventType.CHARGE_REFUNDED,
        EventType.GUARANTEE_BREACHED,
        EventType.CHARGE_REFUNDED,
    ]
    assert dict(events[2].data) == {"period": 0, "emails_charged": 100, "bounces": 2}


def test_one_batch_fires_low_then_depleted_and_a_hold_ending_free_fires_nothing(
    machine: CreditsStateMachine,
) -> None:
    machine.subscribe("acme", TINY)  # 3 email credits: the default threshold is 1
    machine.verifier.script["email:bad@corp.com"] = Verdict.INVALID
    assert outcomes(machine.one(unlock("acme", "bad@corp.com"))) == [Outcome.NOT_VERIFIED]
    assert machine.model.events("acme") == []  # held, then released: no alarm
    machine.one(unlock("acme", "a@corp.com", "b@corp.com", "c@corp.com"))
    events = machine.model.events("acme")
    assert [(e.seq, e.type, e.data["balance"], e.data["entry_seq"]) for e in events] == [
        (1, EventType.CREDITS_LOW, 1, 3),
        (2, EventType.CREDITS_DEPLETED, 0, 4),
    ]
    machine.read_events_in_pages("acme", limit=1, after_seq=0)


def test_a_downgrade_at_renewal_fires_plan_changed_then_period_renewed(
    machine: CreditsStateMachine,
) -> None:
    machine.subscribe("acme", LARGE)
    machine.set_threshold("acme", Channel.EMAIL, 5)
    machine.change_plan("acme", TINY)  # scheduled for the renewal (R7)
    machine.set_threshold("acme", Channel.EMAIL, None)  # back to the default: 10% of 3
    machine.renew_when_due("acme", timedelta(0))
    machine.statements_balances_and_model_agree()  # the model advanced, the outbox compared
    events = machine.model.events("acme")
    assert [(e.type, e.at) for e in events] == [
        (EventType.PLAN_CHANGED, events[0].at),
        (EventType.PERIOD_RENEWED, events[0].at),
    ]
    assert (events[0].data["from"], events[0].data["to"]) == (LARGE.name, TINY.name)
    assert machine.model.thresholds("acme")[Channel.EMAIL] == 1
