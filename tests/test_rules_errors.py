"""Typed errors for bad input: every refusal is a specific CreditsError, raised before
anything is verified, held or charged.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.clock import ManualClock
from adapters.memory import InMemoryRepository
from adapters.verifier import ScriptedVerifier
from credits_domain import (
    AlreadySubscribed,
    BatchTooLarge,
    Channel,
    ChargePolicy,
    Contact,
    Credits,
    CreditsError,
    CreditService,
    InvalidPlan,
    InvalidRequest,
    MalformedContact,
    Plan,
    UnknownAccount,
    UnknownPlan,
)
from rules_support import ACCOUNT, emails, make_world


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "no-at-sign",
        "@corp.com",
        "ann@",
        "ann@corp",
        "ann@@corp.com",
        "ann lee@corp.com",
        "ann@corp.com, bob@corp.com",
        "ann@-corp.com",
        "x" * 65 + "@corp.com",
        123,
        None,
    ],
)
def test_errors_a_malformed_email_is_malformed_contact_and_value_error(raw: Any) -> None:
    """R12 needs one canonical form: what cannot be one address is refused, naming it."""
    with pytest.raises(MalformedContact) as caught:
        Contact.email(raw)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, CreditsError)
    assert (caught.value.channel, caught.value.raw) == ("email", raw)
    assert repr(raw) in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "5550000001",  # national form: parsed by an adapter, not the core
        "0044 20 7946 0958",
        "+0123456789",  # a country code never starts with 0
        "+123456",  # 6 digits
        "+1234567890123456",  # 16 digits
        "+1 555 CALL NOW",
        "+1 555 000 0001",  # E.164 exactly: other spellings are parsed at the boundary
        "+44 (0) 7700 900123",
        "tel:+15550000001",
        "+1555000000l",
        "++15550000001",
        15550000001,
    ],
)
def test_errors_a_malformed_mobile_is_malformed_contact_and_value_error(raw: Any) -> None:
    """R12: "phone: E.164" -- anything else is refused, naming the bad value."""
    with pytest.raises(MalformedContact) as caught:
        Contact.mobile(raw)
    assert isinstance(caught.value, ValueError)
    assert (caught.value.channel, caught.value.raw) == ("mobile", raw)
    assert repr(raw) in str(caught.value)


def test_errors_the_plain_constructor_accepts_only_canonical_values() -> None:
    """R12: a Contact is always canonical: `Contact(channel, value)` refuses a value that
    is not already in canonical form, or of the other channel."""
    assert Contact(Channel.EMAIL, "ann@corp.com") == Contact.email("Ann@Corp.com")
    assert Contact.of(Channel.MOBILE, " +15550000001") == Contact.mobile("+15550000001")
    for channel, value in [
        (Channel.EMAIL, "Ann@corp.com"),
        (Channel.EMAIL, " ann@corp.com"),
        (Channel.EMAIL, "+15550000001"),
        (Channel.MOBILE, "+1 555 000 0001"),
        (Channel.MOBILE, "ann@corp.com"),
    ]:
        with pytest.raises(MalformedContact):
            Contact(channel, value)


class NaiveClock:
    """A broken Clock that forgets the time zone."""

    def now(self) -> datetime:
        return datetime(2024, 1, 1)  # naive on purpose


def test_errors_naive_datetimes_are_refused() -> None:
    """All instants are timezone-aware UTC: a naive start, instant or clock reading is an
    InvalidRequest (a ValueError), and a naive clock cannot create an account."""
    with pytest.raises(InvalidRequest) as caught:
        ManualClock(datetime(2024, 1, 1))
    assert isinstance(caught.value, ValueError)
    clock = ManualClock(datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(InvalidRequest):
        clock.set(datetime(2024, 2, 1))
    with pytest.raises(ValueError, match="never goes back"):
        clock.advance(timedelta(seconds=-1))

    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    with pytest.raises(InvalidRequest):
        w.service.balance_at(ACCOUNT, datetime(2024, 1, 2))

    broken = CreditService(
        repository=InMemoryRepository(), verifier=ScriptedVerifier(), clock=NaiveClock()
    )
    with pytest.raises(InvalidRequest):
        broken.subscribe(ACCOUNT, "boost")
    with pytest.raises(UnknownAccount):
        w.service.balance("never-created")


def test_errors_an_unknown_plan_is_refused_with_the_known_names() -> None:
    """R3: a plan name not in the catalogue is UnknownPlan (a LookupError) that lists the
    known plans; nothing is created. A plan that is neither a name nor a Plan is
    InvalidPlan."""
    w = make_world()
    with pytest.raises(UnknownPlan) as caught:
        w.service.subscribe(ACCOUNT, "gold")
    assert isinstance(caught.value, LookupError)
    assert caught.value.name == "gold"
    assert all(name in str(caught.value) for name in ("ignite", "boost", "power"))
    with pytest.raises(UnknownAccount):
        w.service.balance(ACCOUNT)
    w.service.subscribe(ACCOUNT, "boost")
    with pytest.raises(UnknownPlan):
        w.service.change_plan(ACCOUNT, "Boost")
    with pytest.raises(InvalidPlan):
        w.service.change_plan(ACCOUNT, 42)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "  ", " boost", "boost "])
def test_errors_a_plan_needs_a_trimmed_name(name: str) -> None:
    """A Plan is data that checks itself: an empty or untrimmed name is InvalidPlan."""
    with pytest.raises(InvalidPlan):
        Plan(name=name, monthly=Credits(email=1))


def test_errors_an_unknown_account_is_refused_by_every_use_case() -> None:
    """An account that never subscribed is UnknownAccount (a LookupError) naming it."""
    w = make_world()
    calls: list[Callable[[], object]] = [
        lambda: w.service.balance("ghost"),
        lambda: w.service.unlock("ghost", emails(1)),
        lambda: w.service.export("ghost", emails(1), destination="csv"),
        lambda: w.service.enrich("ghost", emails(1)),
        lambda: list(w.service.statement("ghost")),
        lambda: w.service.balance_at("ghost", w.now()),
        lambda: w.service.change_plan("ghost", "boost"),
        lambda: w.service.cancel("ghost"),
        lambda: w.service.pause("ghost"),
        lambda: w.service.resume("ghost"),
        lambda: w.service.report_bounce("ghost", emails(1)[0]),
        lambda: w.service.top_up("ghost", Credits(email=1), reason="goodwill"),
    ]
    for call in calls:
        with pytest.raises(UnknownAccount) as caught:
            call()
        assert isinstance(caught.value, LookupError)
        assert caught.value.account == "ghost"
    assert w.verifier.calls == []


@pytest.mark.parametrize("account", ["", " acme", "acme ", "x" * 201, None, 7])
def test_errors_an_account_id_is_a_trimmed_nonempty_string(account: Any) -> None:
    """An account id that is empty, untrimmed, too long or not a string is InvalidRequest."""
    w = make_world()
    with pytest.raises(InvalidRequest):
        w.service.subscribe(account, "boost")
    with pytest.raises(InvalidRequest):
        w.service.balance(account)


def test_errors_subscribing_an_active_account_twice_is_refused() -> None:
    """R7: switching plans is change_plan(); subscribe() on a running subscription is
    AlreadySubscribed, and grants nothing."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    with pytest.raises(AlreadySubscribed):
        w.service.subscribe(ACCOUNT, "power")
    assert w.balance().email == 12_000


@pytest.mark.parametrize("destination", ["", "   ", None, 5, "x" * 101])
def test_errors_an_export_needs_a_destination(destination: Any) -> None:
    """R13: an export goes to a named file format or CRM; an empty or missing destination
    is InvalidRequest, before anything is verified or charged."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    with pytest.raises(InvalidRequest):
        w.service.export(ACCOUNT, emails(1), destination=destination)
    assert w.verifier.calls == []
    assert w.balance().email_available == 12_000


def test_errors_an_oversized_batch_is_batch_too_large() -> None:
    """Every batch is bounded: more contacts than policy.max_batch is BatchTooLarge (an
    InvalidRequest), nothing verified or charged; exactly max_batch is fine."""
    w = make_world(policy=ChargePolicy(max_batch=3))
    w.service.subscribe(ACCOUNT, "boost")
    calls: list[Callable[[], object]] = [
        lambda: w.service.unlock(ACCOUNT, emails(4)),
        lambda: w.service.export(ACCOUNT, emails(4), destination="csv"),
        lambda: w.service.enrich(ACCOUNT, emails(4)),
    ]
    for call in calls:
        with pytest.raises(BatchTooLarge) as caught:
            call()
        assert isinstance(caught.value, InvalidRequest)
        assert "3" in str(caught.value)
    assert w.verifier.calls == []
    assert w.service.unlock(ACCOUNT, emails(3)).charged(Channel.EMAIL) == 3


@pytest.mark.timeout(30)
def test_errors_an_endless_iterable_is_batch_too_large_not_a_hang() -> None:
    """Every loop is bounded: an endless generator of contacts is refused once it passes
    the batch limit, instead of being read forever."""
    w = make_world(policy=ChargePolicy(max_batch=100))
    w.service.subscribe(ACCOUNT, "boost")

    def endless() -> Iterator[Contact]:
        for i in itertools.count():
            yield Contact.email(f"lead{i}@corp.com")

    with pytest.raises(BatchTooLarge):
        w.service.unlock(ACCOUNT, endless())
    assert w.verifier.calls == []


@pytest.mark.parametrize(
    "contacts",
    [
        ["ann@corp.com"],
        "ann@corp.com",
        Contact.email("ann@corp.com"),
        [Contact.email("ann@corp.com"), None],
        [Contact.email("ann@corp.com"), ("email", "bob@corp.com")],
        b"ann@corp.com",
    ],
)
def test_errors_items_that_are_not_contacts_are_refused(contacts: Any) -> None:
    """The charging calls take an iterable of Contact values; a raw string, a single
    Contact, or any non-Contact item is InvalidRequest, and even the valid items before
    it are neither verified nor charged."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    with pytest.raises(InvalidRequest):
        w.service.unlock(ACCOUNT, contacts)
    assert w.verifier.calls == []
    assert w.balance().email_available == 12_000


@pytest.mark.parametrize("key", ["", "k" * 256, 12, b"key"])
def test_errors_a_bad_idempotency_key_is_refused(key: Any) -> None:
    """R17: a key is a non-empty string of at most 255 characters."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    with pytest.raises(InvalidRequest):
        w.service.unlock(ACCOUNT, emails(1), idempotency_key=key)
    assert w.verifier.calls == []


def test_errors_a_bounce_report_needs_a_contact() -> None:
    """R18: report_bounce() takes a Contact; a raw string is InvalidRequest."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    with pytest.raises(InvalidRequest):
        w.service.report_bounce(ACCOUNT, "ann@corp.com")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "settings",
    [
        {"hold_ttl_s": 0},
        {"refund_window_s": -1},
        {"max_batch": 0},
        {"max_batch": 1.5},
        {"lease_s": 0},
        {"hold_ttl_s": 60, "lease_s": 61},
    ],
)
def test_errors_a_policy_refuses_impossible_limits(settings: dict[str, Any]) -> None:
    """R16/R18: TTLs, leases, windows and batch limits are whole numbers >= 1; a lease
    never outlasts a hold's longest life."""
    with pytest.raises(InvalidRequest):
        ChargePolicy(**settings)


def test_control_characters_are_refused_before_they_reach_storage() -> None:
    """A NUL in an account id, key, destination or email (PostgreSQL text cannot hold it) is
    a typed InvalidRequest / MalformedContact, not a driver error."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    with pytest.raises(InvalidRequest):
        w.service.subscribe("ac\x00me", "boost")
    with pytest.raises(InvalidRequest):
        w.service.unlock(ACCOUNT, emails(1), idempotency_key="k\x00")
    with pytest.raises(InvalidRequest):
        w.service.export(ACCOUNT, emails(1), destination="csv\x00")
    with pytest.raises(MalformedContact):
        Contact.email("a\x00b@corp.com")


def test_r1_amounts_beyond_a_trillion_are_refused() -> None:
    """R1: credits are whole numbers; one amount is bounded so balances fit storage."""
    with pytest.raises(InvalidPlan):
        Credits(email=10**12 + 1)
    with pytest.raises(InvalidPlan):
        Credits(mobile=2**63)
