"""The pure parts of the charging pipeline (charging.py): the request, the settlement's
choice and the assembly of the ChargeResult, without a service, storage or verifier.
A batch travels as columns; the results built from them must read exactly as results
built from items."""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import attrs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from credits_domain import (
    Channel,
    ChargePolicy,
    ChargeResult,
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
    Candidates,
    ChargeRequest,
    Settlement,
    _walk,
    charge_result,
    datum_key,
    fingerprint,
    settle,
)
from credits_domain.testing import strategies as cst
from credits_domain.testing.model import Purchase, ReferenceModel, datum_of

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


def candidates_of(
    contacts: Iterable[Contact], prices: Mapping[Channel, Price] | None = None
) -> Candidates:
    chosen = tuple(contacts)
    return Candidates.of(
        contacts=chosen,
        keys=tuple(map(datum_key, chosen)),
        prices=prices or {Channel.EMAIL: EMAIL_PRICE, Channel.MOBILE: MOBILE_PRICE},
    )


def keys(*contacts: Contact) -> frozenset[str]:
    return frozenset(map(datum_key, contacts))


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
    """R12: repeats stay in the request (they get an item each); the first one pays. Each
    contact's key rides beside it."""
    request = request_of([BOB, ANN, BOB, PHONE, ANN])
    assert request.contacts == (BOB, ANN, BOB, PHONE, ANN)
    assert request.keys == tuple(c.value for c in request.contacts)
    assert request.unique == (BOB, ANN, PHONE)
    assert request.unique_keys == ("bob@corp.com", "ann@corp.com", "+442079460958")
    plain = request_of([BOB, ANN])
    assert (plain.unique, plain.unique_keys) == ((BOB, ANN), ("bob@corp.com", "ann@corp.com"))


@given(email=cst.emails(), mobile=cst.mobiles())
def test_a_datum_key_names_one_datum_whatever_its_channel(email: Contact, mobile: Contact) -> None:
    """R12: keys are canonical values, and an email's never equals a mobile's (an email
    always has an '@', E.164 never), so equal keys are equal contacts."""
    assert datum_key(email) == email.value and datum_key(mobile) == mobile.value
    assert "@" in datum_key(email) and "@" not in datum_key(mobile)
    assert datum_key(Contact.email(email.value.upper())) == datum_key(email)


def test_candidates_are_priced_columns_that_read_as_candidates() -> None:
    """R2: each candidate costs its channel's price, in the pool the price names; the
    columns add up per pool, and read as a sequence of Candidate."""
    cross = Price(pool=Channel.EMAIL, credits=15)
    prices = {Channel.EMAIL: EMAIL_PRICE, Channel.MOBILE: cross}
    candidates = candidates_of([ANN, PHONE, BOB], prices)
    assert candidates.cost == Credits(email=17)
    assert list(candidates) == [
        Candidate(contact=ANN, price=EMAIL_PRICE),
        Candidate(contact=PHONE, price=cross),
        Candidate(contact=BOB, price=EMAIL_PRICE),
    ]
    assert (len(candidates), candidates[1].contact, candidates[-1].contact) == (3, PHONE, BOB)
    assert candidates_of([PHONE]).cost == Credits(mobile=1)
    assert candidates_of([]).cost == Credits()


def test_the_candidates_of_a_request_are_its_new_data_in_order() -> None:
    """R12: a request's candidates are its first occurrences that are not owned."""
    request = request_of([BOB, ANN, BOB, PHONE, CAT, ANN])
    prices = {Channel.EMAIL: EMAIL_PRICE, Channel.MOBILE: MOBILE_PRICE}
    every = Candidates.among(request, owned=frozenset(), prices=prices)
    assert every.contacts == (BOB, ANN, PHONE, CAT)
    assert every.cost == Credits(email=3, mobile=1)
    new = Candidates.among(request, owned=keys(ANN, PHONE, DAN), prices=prices)
    assert (new.contacts, new.keys) == ((BOB, CAT), ("bob@corp.com", "cat@corp.com"))
    assert new.cost == Credits(email=2)


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
        outcomes=(
            Outcome.CHARGED,
            Outcome.NOT_VERIFIED,
            Outcome.INSUFFICIENT_CREDITS,
            Outcome.INSUFFICIENT_CREDITS,
        ),
        to_verify=(),
    )
    verdicts = (Verdict.VALID, Verdict.CATCH_ALL, None, Verdict.VALID)
    result = charge_result(request, candidates, settlement, verdicts, owned=keys(BOB))
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
    candidates = candidates_of([PHONE, ANN], {Channel.EMAIL: EMAIL_PRICE, Channel.MOBILE: cross})
    settlement = Settlement(outcomes=(Outcome.CHARGED, Outcome.CHARGED), to_verify=())
    verdicts = (Verdict.VALID, Verdict.VALID)
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
    settlement = Settlement(outcomes=(Outcome.ALREADY_OWNED, Outcome.NOT_VERIFIED), to_verify=())
    verdicts = (Verdict.VALID, Verdict.UNKNOWN)
    result = charge_result(
        request, candidates_of([ANN, BOB]), settlement, verdicts, owned=keys(ANN)
    )
    assert result.items == (
        item(ANN, Outcome.ALREADY_OWNED),
        item(BOB, Outcome.NOT_VERIFIED, Verdict.UNKNOWN),
    )
    assert result.charged_credits == Credits()


def test_a_result_needs_every_datum_decided() -> None:
    """A settlement still waiting for verdicts cannot answer the request: a bug, not an error."""
    request = request_of([ANN])
    waiting = Settlement(outcomes=(None,), to_verify=(0,))
    with pytest.raises(AssertionError, match="invariant broken"):
        charge_result(request, candidates_of([ANN]), waiting, (None,), owned=frozenset())


def test_the_settlement_chooses_the_candidates_decided_charged_in_request_order() -> None:
    settlement = Settlement(
        outcomes=(
            Outcome.CHARGED,
            Outcome.NOT_VERIFIED,
            Outcome.CHARGED,
            Outcome.ALREADY_OWNED,
        ),
        to_verify=(),
    )
    candidates = candidates_of([CAT, ANN, PHONE, DAN])
    chosen = settlement.charged(candidates)
    assert list(chosen) == [candidates[0], candidates[2]]
    assert (chosen.contacts, chosen.keys) == ((CAT, PHONE), ("cat@corp.com", "+442079460958"))
    assert chosen.cost == Credits(email=1, mobile=1)
    every = Settlement(outcomes=(Outcome.CHARGED,) * 2, to_verify=())
    assert every.charged(candidates_of([ANN, BOB])) == candidates_of([ANN, BOB])


# -- the result, as columns or as items ----------------------------------------------------


def test_a_result_of_columns_reads_as_the_same_result_of_items() -> None:
    """A result `charge_result` builds from columns has the items, counts, totals,
    equality, hash, repr and pickling of the same result built from items, and keeps them
    through `attrs.evolve` (how a replay is answered, R17)."""
    request = request_of([ANN, BOB, ANN, PHONE], key="k")
    cross = Price(pool=Channel.EMAIL, credits=15)
    candidates = candidates_of(
        [ANN, BOB, PHONE], {Channel.EMAIL: EMAIL_PRICE, Channel.MOBILE: cross}
    )
    settlement = Settlement(
        outcomes=(Outcome.CHARGED, Outcome.NOT_VERIFIED, Outcome.CHARGED), to_verify=()
    )
    verdicts = (Verdict.VALID, Verdict.INVALID, Verdict.VALID)
    columns = charge_result(request, candidates, settlement, verdicts, owned=frozenset())
    items = ChargeResult(
        operation=Operation.UNLOCK,
        idempotency_key="k",
        items=[
            item(ANN, Outcome.CHARGED, Verdict.VALID, EMAIL_PRICE),
            item(BOB, Outcome.NOT_VERIFIED, Verdict.INVALID),
            item(ANN, Outcome.DUPLICATE_IN_REQUEST),
            item(PHONE, Outcome.CHARGED, Verdict.VALID, cross),
        ],
    )
    for result in (columns, items):  # counts and totals, before any item is built
        assert result.count(Outcome.CHARGED) == 2
        assert result.count(Outcome.DUPLICATE_IN_REQUEST) == 1
        assert result.count(Outcome.ALREADY_OWNED) == 0
        assert result.charged_credits == Credits(email=16)
    assert columns == items and items == columns
    assert pickle.loads(pickle.dumps(columns)) == items
    assert hash(columns) == hash(items)
    assert repr(columns) == repr(items)
    assert columns.items == items.items
    assert isinstance(columns.items, tuple) and columns.items is columns.items
    replay = attrs.evolve(columns, replayed=True)
    assert replay.replayed and replay != columns
    assert replay.items == items.items and replay.charged_credits == Credits(email=16)
    assert attrs.evolve(replay, replayed=False) == items
    other = attrs.evolve(items, items=items.items[:-1])
    assert other != columns and other.charged_credits == Credits(email=1)


# -- settle and assemble, against the reference model -----------------------------------------


def run_to_completion(
    candidates: Candidates,
    verdict_of: Mapping[Contact, Verdict],
    owned: frozenset[str],
    capacity: Credits,
    policy: ChargePolicy,
) -> tuple[Settlement, list[Verdict | None]]:
    """The service's verify loop without a verifier: answer what each round asks. Each
    round is also checked against the walk one step per candidate that `settle` takes a
    shortcut from when everything fits."""
    verdicts: list[Verdict | None] = [None] * len(candidates)
    for _ in range(len(candidates) + 1):
        settlement = settle(candidates, verdicts, owned, capacity, policy)
        assert settlement == _walk(candidates, verdicts, owned, capacity, policy)
        if settlement.complete:
            return settlement, verdicts
        for index in settlement.to_verify:
            verdicts[index] = verdict_of[candidates.contacts[index]]
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
@example(  # everything fits and verifies: the shortcut of settle (R10, R15)
    plan=Plan(name="roomy", monthly=Credits(email=20, mobile=20)),
    request=[UNIVERSE[0], UNIVERSE[6], UNIVERSE[0], UNIVERSE[1]],
    script=dict.fromkeys(UNIVERSE, Verdict.VALID),
    owned=frozenset({UNIVERSE[1]}),
    bill_catch_all=False,
)
@example(  # catch-all billed by policy, everything fits (R10)
    plan=Plan(name="roomy", monthly=Credits(email=20, mobile=20)),
    request=[UNIVERSE[0], UNIVERSE[6], UNIVERSE[2]],
    script={c: Verdict.CATCH_ALL if c == UNIVERSE[6] else Verdict.VALID for c in UNIVERSE},
    owned=frozenset(),
    bill_catch_all=True,
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
    model.accounts["acme"].owned = {
        datum_of(c): Purchase(pool=c.channel, credits=1, at=START) for c in owned
    }
    expected = model.charge("acme", request, script.__getitem__, START)

    charge_request = request_of(request)
    owned_keys = frozenset(map(datum_key, owned))
    candidates = Candidates.among(charge_request, owned=owned_keys, prices=plan.prices)
    policy = ChargePolicy(bill_catch_all=bill_catch_all)
    settlement, verdicts = run_to_completion(candidates, script, owned_keys, plan.monthly, policy)
    result = charge_result(charge_request, candidates, settlement, verdicts, owned_keys)
    assert result == ChargeResult(operation=Operation.UNLOCK, items=result.items), (
        "the columns read as their items"
    )

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


@given(
    plan=cst.plans(max_allowance=6),
    request=cst.requests(UNIVERSE, max_size=12),
    answers=st.lists(st.none() | cst.verdicts(), min_size=12, max_size=12),
    owned=st.frozensets(st.sampled_from(UNIVERSE), max_size=4),
    capacity=st.builds(Credits, email=st.integers(0, 12), mobile=st.integers(0, 12)),
    bill_catch_all=st.booleans(),
)
def test_settle_decides_as_the_walk_one_step_per_candidate(
    plan: Plan,
    request: list[Contact],
    answers: list[Verdict | None],
    owned: frozenset[Contact],
    capacity: Credits,
    bill_catch_all: bool,
) -> None:
    """R10, R12, R15: whatever the verdicts so far, the data learned owned meanwhile and
    the hold, `settle` (which takes a C-level shortcut when everything fits) decides as
    the plain walk does."""
    candidates = Candidates.among(request_of(request), owned=frozenset(), prices=plan.prices)
    verdicts = answers[: len(candidates)]
    policy = ChargePolicy(bill_catch_all=bill_catch_all)
    owned_keys = keys(*owned)
    assert settle(candidates, verdicts, owned_keys, capacity, policy) == _walk(
        candidates, verdicts, owned_keys, capacity, policy
    )
    for uniform in ([None] * len(candidates), [Verdict.VALID] * len(candidates)):
        assert settle(candidates, uniform, owned_keys, capacity, policy) == _walk(
            candidates, uniform, owned_keys, capacity, policy
        )
