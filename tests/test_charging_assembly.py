"""The pure parts of the charging pipeline (charging.py): the request, the settlement's
choice and the assembly of the ChargeResult, without a service, storage or verifier."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from credits_domain import (
    Channel,
    ChargePolicy,
    Contact,
    Credits,
    ItemResult,
    Operation,
    Outcome,
    Plan,
    Price,
    Verdict,
)
from credits_domain.charging import (
    Candidate,
    ChargeRequest,
    Settlement,
    charge_result,
    fingerprint,
    settle,
)
from credits_domain.testing import strategies as cst
from credits_domain.testing.model import Purchase, ReferenceModel

START = datetime(2025, 3, 1, tzinfo=UTC)
UNIVERSE = cst.contact_universe(9)
EMAIL_PRICE = Price(pool=Channel.EMAIL)
MOBILE_PRICE = Price(pool=Channel.MOBILE)

ANN, BOB, CAT, DAN, EVE = (
    Contact.email(f"{n}@corp.com") for n in ("ann", "bob", "cat", "dan", "eve")
)
PHONE = Contact.mobile("+442079460958")


def request_of(
    contacts: Sequence[Contact],
    *,
    operation: Operation = Operation.UNLOCK,
    key: str | None = None,
    destination: str | None = None,
) -> ChargeRequest:
    return ChargeRequest.of(
        account="acme",
        operation=operation,
        contacts=contacts,
        destination=destination,
        idempotency_key=key,
    )


def candidates_of(contacts: Iterable[Contact], price: Price = EMAIL_PRICE) -> tuple[Candidate, ...]:
    return tuple(Candidate(contact=c, price=price) for c in contacts)


def item(
    contact: Contact, outcome: Outcome, verdict: Verdict | None = None, price: Price | None = None
) -> ItemResult:
    return ItemResult(
        contact=contact,
        outcome=outcome,
        verdict=verdict,
        pool=price.pool if price else None,
        credits=price.credits if price else 0,
    )


# -- the request ----------------------------------------------------------------------------


def test_a_request_keeps_its_contacts_and_knows_the_first_occurrences() -> None:
    """R12: repeats stay in the request (they get an item each); the first one pays."""
    request = request_of([BOB, ANN, BOB, PHONE, ANN])
    assert request.contacts == (BOB, ANN, BOB, PHONE, ANN)
    assert request.unique == (BOB, ANN, PHONE)


def test_a_request_is_fingerprinted_only_under_an_idempotency_key() -> None:
    """R17: the digest covers operation, destination and data; it is only needed for a key."""
    keyed = request_of([ANN, BOB], operation=Operation.EXPORT, key="k", destination="csv")
    assert keyed.fingerprint == fingerprint(Operation.EXPORT, [ANN, BOB], "csv")
    assert keyed.fingerprint != fingerprint(Operation.EXPORT, [BOB, ANN], "csv")
    assert keyed.fingerprint != fingerprint(Operation.EXPORT, [ANN, BOB], "hubspot")
    assert keyed.fingerprint != fingerprint(Operation.UNLOCK, [ANN, BOB], "csv")
    assert request_of([ANN, BOB]).fingerprint == ""


# -- the assembly of the result ---------------------------------------------------------------


def test_every_outcome_in_request_order() -> None:
    """One item per contact, in order: CHARGED with its verdict and price, ALREADY_OWNED
    and DUPLICATE_IN_REQUEST free and without a verdict (R12), NOT_VERIFIED with its
    verdict (R10), INSUFFICIENT_CREDITS with a verdict only if it was verified (R15)."""
    request = request_of([ANN, BOB, ANN, CAT, DAN, EVE, BOB, CAT], key="order-1")
    candidates = candidates_of([ANN, CAT, DAN, EVE])
    settlement = Settlement(
        decided={
            ANN: Outcome.CHARGED,
            CAT: Outcome.NOT_VERIFIED,
            DAN: Outcome.INSUFFICIENT_CREDITS,
            EVE: Outcome.INSUFFICIENT_CREDITS,
        },
        to_verify=(),
    )
    verdicts = {ANN: Verdict.VALID, CAT: Verdict.CATCH_ALL, EVE: Verdict.VALID}
    result = charge_result(request, candidates, settlement, verdicts, owned={BOB})
    assert result.items == (
        item(ANN, Outcome.CHARGED, Verdict.VALID, EMAIL_PRICE),
        item(BOB, Outcome.ALREADY_OWNED),
        item(ANN, Outcome.DUPLICATE_IN_REQUEST),
        item(CAT, Outcome.NOT_VERIFIED, Verdict.CATCH_ALL),
        item(DAN, Outcome.INSUFFICIENT_CREDITS),
        item(EVE, Outcome.INSUFFICIENT_CREDITS, Verdict.VALID),
        item(BOB, Outcome.DUPLICATE_IN_REQUEST),
        item(CAT, Outcome.DUPLICATE_IN_REQUEST),
    )
    assert (result.operation, result.idempotency_key, result.replayed) == (
        Operation.UNLOCK,
        "order-1",
        False,
    )
    assert result.charged_credits == Credits(email=1)
    assert [i.revealed for i in result.items] == [True, True] + [False] * 6


def test_a_charged_item_says_which_pool_paid_and_how_much() -> None:
    """R2: a plan may price a mobile number at 15 EMAIL credits; the item says so."""
    cross = Price(pool=Channel.EMAIL, credits=15)
    request = request_of([PHONE, ANN], operation=Operation.ENRICH)
    candidates = (Candidate(contact=PHONE, price=cross), Candidate(contact=ANN, price=EMAIL_PRICE))
    settlement = Settlement(decided=dict.fromkeys((PHONE, ANN), Outcome.CHARGED), to_verify=())
    verdicts = dict.fromkeys((PHONE, ANN), Verdict.VALID)
    result = charge_result(request, candidates, settlement, verdicts, owned=frozenset())
    assert result.items == (
        item(PHONE, Outcome.CHARGED, Verdict.VALID, cross),
        item(ANN, Outcome.CHARGED, Verdict.VALID, EMAIL_PRICE),
    )
    assert result.charged_credits == Credits(email=16)
    assert result.operation is Operation.ENRICH
    assert result.idempotency_key is None


def test_data_learned_owned_after_the_settlement_are_free() -> None:
    """R12: a datum a concurrent request bought meanwhile is ALREADY_OWNED, whatever it was
    decided before; only data decided CHARGED are charged."""
    request = request_of([ANN, BOB])
    settlement = Settlement(
        decided={ANN: Outcome.ALREADY_OWNED, BOB: Outcome.NOT_VERIFIED}, to_verify=()
    )
    verdicts = {ANN: Verdict.VALID, BOB: Verdict.UNKNOWN}
    result = charge_result(request, candidates_of([ANN, BOB]), settlement, verdicts, owned={ANN})
    assert result.items == (
        item(ANN, Outcome.ALREADY_OWNED),
        item(BOB, Outcome.NOT_VERIFIED, Verdict.UNKNOWN),
    )
    assert result.charged_credits == Credits()


def test_a_result_needs_every_datum_decided() -> None:
    """A settlement still waiting for verdicts cannot answer the request: a bug, not an error."""
    request = request_of([ANN])
    waiting = Settlement(decided={}, to_verify=(ANN,))
    with pytest.raises(AssertionError, match="invariant broken"):
        charge_result(request, candidates_of([ANN]), waiting, {}, owned=())


def test_the_settlement_chooses_the_candidates_decided_charged_in_request_order() -> None:
    settlement = Settlement(
        decided={
            CAT: Outcome.CHARGED,
            ANN: Outcome.NOT_VERIFIED,
            BOB: Outcome.CHARGED,
            DAN: Outcome.ALREADY_OWNED,
        },
        to_verify=(),
    )
    candidates = candidates_of([CAT, ANN, BOB, DAN])
    assert settlement.charged(candidates) == [candidates[0], candidates[2]]


# -- settle and assemble, against the reference model -----------------------------------------


def run_to_completion(
    candidates: Sequence[Candidate],
    verdict_of: Mapping[Contact, Verdict],
    owned: frozenset[Contact],
    capacity: Credits,
    policy: ChargePolicy,
) -> tuple[Settlement, dict[Contact, Verdict]]:
    """The service's verify loop without a verifier: answer what each round asks."""
    verdicts: dict[Contact, Verdict] = {}
    for _ in range(len(candidates) + 1):
        settlement = settle(candidates, verdicts, owned, capacity, policy)
        if settlement.complete:
            return settlement, verdicts
        verdicts.update({c: verdict_of[c] for c in settlement.to_verify})
    raise AssertionError("settle did not finish within one round per candidate")


@example(  # the credit held for a datum that fails serves the next one (R15)
    plan=Plan(name="one", monthly=Credits(email=1)),
    request=[UNIVERSE[0], UNIVERSE[1]],
    script={c: Verdict.INVALID if c == UNIVERSE[0] else Verdict.VALID for c in UNIVERSE},
    owned=frozenset(),
    bill_catch_all=False,
)
@example(  # verified early, then beyond what is left: INSUFFICIENT_CREDITS (R15)
    plan=Plan(
        name="dear-mobiles",
        monthly=Credits(email=2),
        prices={Channel.EMAIL: EMAIL_PRICE, Channel.MOBILE: Price(pool=Channel.EMAIL, credits=2)},
    ),
    request=[UNIVERSE[0], UNIVERSE[6], UNIVERSE[1]],
    script={c: Verdict.VALID if c == UNIVERSE[6] else Verdict.INVALID for c in UNIVERSE},
    owned=frozenset(),
    bill_catch_all=False,
)
@given(
    plan=cst.plans(max_allowance=3),
    request=cst.requests(UNIVERSE, max_size=12),
    script=st.fixed_dictionaries({c: cst.verdicts() for c in UNIVERSE}),
    owned=st.frozensets(st.sampled_from(UNIVERSE), max_size=4),
    bill_catch_all=st.booleans(),
)
def test_settle_and_assembly_answer_what_the_reference_model_answers(
    plan: Plan,
    request: list[Contact],
    script: dict[Contact, Verdict],
    owned: frozenset[Contact],
    bill_catch_all: bool,
) -> None:
    """R10, R12, R15: with the whole balance held, the pure pipeline's outcomes are the
    naive model's, each item carries the verdict it was decided on, and the credits
    charged are what the model took from the balance."""
    model = ReferenceModel(bill_catch_all=bill_catch_all)
    model.subscribe("acme", plan, START)
    model.accounts["acme"].owned = {c: Purchase(pool=c.channel, credits=1, at=START) for c in owned}
    expected = model.charge("acme", request, script.__getitem__, START)

    charge_request = request_of(request)
    candidates = tuple(
        Candidate(contact=c, price=plan.price_of(c.channel))
        for c in charge_request.unique
        if c not in owned
    )
    policy = ChargePolicy(bill_catch_all=bill_catch_all)
    settlement, verdicts = run_to_completion(candidates, script, owned, plan.monthly, policy)
    result = charge_result(charge_request, candidates, settlement, verdicts, owned)

    assert [i.contact for i in result.items] == request
    assert [i.outcome for i in result.items] == expected
    for it in result.items:
        if it.outcome in (Outcome.CHARGED, Outcome.NOT_VERIFIED):
            assert it.verdict is script[it.contact]
        elif it.outcome is not Outcome.INSUFFICIENT_CREDITS:
            assert it.verdict is None
        price = plan.price_of(it.contact.channel)
        paid = (price.pool, price.credits) if it.outcome is Outcome.CHARGED else (None, 0)
        assert (it.pool, it.credits) == paid
    left = model.balance("acme")
    for pool in Channel:
        assert result.charged(pool) == plan.monthly.of(pool) - left[pool]
