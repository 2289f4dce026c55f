"""Example-based tests of R16..R18: holds around verification, idempotency, bounce refunds.

Each test's name starts with the rule it checks; its docstring quotes what it checks.
The ScriptedVerifier's hook (`World.hook`) runs inside the verifier call, so a test can
look at the account, or act on it, while a request is being verified.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import attrs
import pytest

from credits_domain import (
    AlreadyRefunded,
    Balance,
    Channel,
    ChargePolicy,
    ChargeResult,
    Contact,
    CreditsError,
    EntryKind,
    HoldExpired,
    IdempotencyKeyReused,
    NoActiveSubscription,
    NotAnEmail,
    NotCharged,
    Operation,
    Outcome,
    RefundRefused,
    RefundWindowClosed,
    RequestInFlight,
    Verdict,
)
from rules_support import (
    ACCOUNT,
    CHARGING,
    SECOND,
    World,
    emails,
    make_world,
    mobiles,
    of_kind,
    tiny_plan,
)

TTL_S = 60
LEASE_S = 20


class Crash(BaseException):
    """The process dies mid-verification. Not an Exception: nothing may swallow it."""


def crash(batch: Sequence[Contact]) -> None:
    raise Crash


def short_ttl_world() -> World:
    return make_world(policy=ChargePolicy(hold_ttl_s=TTL_S, lease_s=LEASE_S))


# -- R16: reserve, verify, settle -----------------------------------------------------------


def test_r16_a_hold_exists_while_the_verifier_runs_and_no_unit_of_work_is_open() -> None:
    """R16: "a credit is held before the verifier is called" and "No storage transaction
    stays open while a verifier is called." -- seen from inside the verifier call: the
    held credits are not available, and another thread can take the repository's lock
    at once (a unit of work left open would make it wait)."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    lock_free: list[bool] = []
    seen: list[Balance] = []

    def look(batch: Sequence[Contact]) -> None:
        def probe() -> None:
            free = w.repository.lock.acquire(blocking=False)
            if free:
                w.repository.lock.release()
                seen.append(w.service.balance(ACCOUNT))
            lock_free.append(free)

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        thread.join(timeout=10)
        seen.append(w.service.balance(ACCOUNT))  # and from the verifier's own thread

    w.hook = look
    result = w.service.unlock(ACCOUNT, [*emails(3), *mobiles(1)])
    assert lock_free == [True]
    during = Balance(email=12_000, mobile=800, email_available=11_997, mobile_available=799)
    assert seen == [during, during]
    assert result.charged_credits.email == 3
    b = w.balance()
    assert (b.email, b.email_available, b.mobile, b.mobile_available) == (11_997, 11_997, 799, 799)


def test_r16_valid_turns_the_hold_into_a_charge_and_anything_else_releases_it() -> None:
    """R16: "VALID turns the hold into a charge, any other outcome releases it" -- holds
    are not balance changes, so they write no ledger entry of their own."""
    w = make_world(script={"bad@corp.com": Verdict.INVALID, "who@corp.com": Verdict.UNKNOWN})
    w.service.subscribe(ACCOUNT, "boost")
    during: list[Balance] = []
    w.hook = lambda batch: during.append(w.service.balance(ACCOUNT))
    request = [Contact.email("bad@corp.com"), *emails(2), Contact.email("who@corp.com")]
    w.service.unlock(ACCOUNT, request)
    assert during[0].email_available == 12_000 - 4
    b = w.balance()
    assert (b.email, b.email_available) == (11_998, 11_998)
    assert [e.kind for e in w.entries()] == [EntryKind.GRANT] * 2 + [EntryKind.CHARGE] * 2


def test_r16_concurrent_requests_cannot_spend_held_credits_twice() -> None:
    """R16: the hold exists "so that concurrent requests cannot spend it twice" -- a
    request made while another verifies finds the credits held; once the first settles,
    the credit its failed datum held is free again."""
    w = make_world(script={"bad@corp.com": Verdict.INVALID})
    w.service.subscribe(ACCOUNT, tiny_plan(email=2))
    late = Contact.email("late@corp.com")
    inner: list[ChargeResult] = []

    def compete(batch: Sequence[Contact]) -> None:
        if w.hook is compete:
            w.hook = None
            inner.append(w.service.unlock(ACCOUNT, [late]))

    w.hook = compete
    outer = w.service.unlock(ACCOUNT, [*emails(1), Contact.email("bad@corp.com")])
    assert inner[0].items[0].outcome is Outcome.INSUFFICIENT_CREDITS
    assert [i.outcome for i in outer.items] == [Outcome.CHARGED, Outcome.NOT_VERIFIED]
    assert w.balance().email_available == 1
    assert w.service.unlock(ACCOUNT, [late]).items[0].outcome is Outcome.CHARGED


def test_r16_an_unsettled_hold_expires_when_its_lease_lapses() -> None:
    """R16: "a hold that is never settled expires and is released" -- once the policy's
    lease_s passes unrenewed, not before; the crashed request charged nothing and owns
    nothing."""
    w = short_ttl_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.hook = crash
    request = [*emails(3), *mobiles(1)]
    with pytest.raises(Crash):
        w.service.unlock(ACCOUNT, request)
    b = w.balance()
    assert (b.email, b.email_available, b.mobile_available) == (12_000, 11_997, 799)
    w.advance(timedelta(seconds=LEASE_S) - SECOND)
    assert w.balance().email_available == 11_997
    w.advance(SECOND)
    b = w.balance()
    assert (b.email, b.email_available, b.mobile, b.mobile_available) == (12_000, 12_000, 800, 800)
    assert not of_kind(w.entries(), EntryKind.CHARGE)
    w.hook = None
    assert w.service.unlock(ACCOUNT, request).charged_credits.email == 3


def test_r16_by_default_an_unsettled_hold_is_released_after_thirty_seconds() -> None:
    """R16: under the default policy the credits of a request that died mid-verification
    stay held for its 30-second lease, and are free again at exactly 30 seconds (a live
    request renews its lease, up to 15 minutes: ARCHITECTURE.md, decision 13)."""
    w = make_world()
    assert (w.service.policy.lease_s, w.service.policy.hold_ttl_s) == (30, 15 * 60)
    w.service.subscribe(ACCOUNT, "boost")
    w.hook = crash
    with pytest.raises(Crash):
        w.service.unlock(ACCOUNT, emails(2))
    w.advance(timedelta(seconds=30) - SECOND)
    assert w.balance().email_available == 11_998
    w.advance(SECOND)
    assert w.balance().email_available == 12_000


@pytest.mark.parametrize(("took_s", "expired"), [(LEASE_S - 1, False), (LEASE_S + 1, True)])
def test_r16_hold_expired_when_the_clock_jumps_past_the_lease_during_verification(
    took_s: int, expired: bool
) -> None:
    """R16: a verifier call that outlives the lease, with no heartbeat to renew it, cannot
    settle: HoldExpired, nothing charged, credits available again; one that finishes in
    time is charged."""
    w = short_ttl_world()
    w.service.subscribe(ACCOUNT, "boost")

    def slow(batch: Sequence[Contact]) -> None:
        w.advance(timedelta(seconds=took_s))

    w.hook = slow
    request = emails(2)
    if not expired:
        assert w.service.unlock(ACCOUNT, request).charged_credits.email == 2
        return
    with pytest.raises(HoldExpired) as caught:
        w.service.unlock(ACCOUNT, request)
    assert isinstance(caught.value, CreditsError)
    b = w.balance()
    assert (b.email, b.email_available) == (12_000, 12_000)
    assert not of_kind(w.entries(), EntryKind.CHARGE)
    w.hook = None
    assert w.service.unlock(ACCOUNT, request).charged_credits.email == 2  # not owned


def test_r16_a_request_still_verifying_when_the_subscription_lapses_charges_nothing() -> None:
    """R16 with R6: credits can be spent until the end of the last paid period; a request
    whose verification ends after the lapse finds its hold gone and charges nothing."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    ends = w.service.cancel(ACCOUNT)
    w.clock.set(ends - SECOND)
    w.hook = lambda batch: w.clock.set(ends)
    with pytest.raises(HoldExpired):
        w.service.unlock(ACCOUNT, emails(2))
    assert (w.balance().email, w.balance().email_available) == (0, 0)
    assert not of_kind(w.entries(), EntryKind.CHARGE)


# -- R17: idempotency -----------------------------------------------------------------------


def test_r17_same_key_and_payload_returns_the_first_result_and_charges_nothing() -> None:
    """R17: "A repeat with the same key and payload ... returns the first result and
    charges nothing more" -- flagged replayed=True, without asking the verifier, also
    when the data are spelled differently (same canonical payload) and a month later."""
    w = make_world(script={"bad@corp.com": Verdict.INVALID})
    w.service.subscribe(ACCOUNT, "boost")
    first = w.service.unlock(
        ACCOUNT,
        [Contact.email("Ann@Corp.com"), Contact.email("bad@corp.com"), *mobiles(1)],
        idempotency_key="req-1",
    )
    entries, calls = w.entries(), len(w.verifier.calls)
    assert (first.replayed, first.idempotency_key) == (False, "req-1")

    w.advance(timedelta(days=40))
    again = w.service.unlock(
        ACCOUNT,
        [Contact.email(" ann@corp.com"), Contact.email("BAD@corp.com"), *mobiles(1)],
        idempotency_key="req-1",
    )
    assert again.replayed is True
    assert attrs.evolve(again, replayed=False) == first
    assert len(w.verifier.calls) == calls
    assert of_kind(w.entries(), EntryKind.CHARGE) == of_kind(entries, EntryKind.CHARGE)
    assert (w.balance().email, w.balance().mobile) == (2 * 12_000 - 1, 2 * 800 - 1)


def test_r17_a_replay_is_answered_even_while_paused() -> None:
    """R17 (decision): a retry of a request that already completed gets its stored result
    even if the account was paused since; it charges nothing, so R6 does not refuse it."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    first = w.service.export(ACCOUNT, emails(2), destination="csv", idempotency_key="e-1")
    w.service.pause(ACCOUNT)
    again = w.service.export(ACCOUNT, emails(2), destination="csv", idempotency_key="e-1")
    assert again.replayed
    assert again.items == first.items


REUSES: dict[str, Callable[[World, list[Contact]], ChargeResult]] = {
    "other data": lambda w, c: w.service.export(
        ACCOUNT, c[:1], destination="csv", idempotency_key="k"
    ),
    "other order": lambda w, c: w.service.export(
        ACCOUNT, c[::-1], destination="csv", idempotency_key="k"
    ),
    "more data": lambda w, c: w.service.export(
        ACCOUNT, [*c, *mobiles(1)], destination="csv", idempotency_key="k"
    ),
    "other destination": lambda w, c: w.service.export(
        ACCOUNT, c, destination="hubspot", idempotency_key="k"
    ),
    "unlock": lambda w, c: w.service.unlock(ACCOUNT, c, idempotency_key="k"),
    "enrich": lambda w, c: w.service.enrich(ACCOUNT, c, idempotency_key="k"),
}


@pytest.mark.parametrize("reuse", REUSES)
def test_r17_same_key_with_another_payload_is_refused(reuse: str) -> None:
    """R17: "the same key with another payload is refused with a clear error" -- the
    payload is the operation and its data (and the export's destination)."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    data = emails(2)
    w.service.export(ACCOUNT, data, destination="csv", idempotency_key="k")
    before = w.entries()
    with pytest.raises(IdempotencyKeyReused) as caught:
        REUSES[reuse](w, data)
    assert (caught.value.account, caught.value.key) == (ACCOUNT, "k")
    assert "k" in str(caught.value)
    assert w.entries() == before


def test_r17_keys_are_scoped_per_account() -> None:
    """R17: "an idempotency key, scoped to its account" -- two accounts may use the same
    key for different requests; each is charged and each replays its own result."""
    w = make_world()
    w.service.subscribe("a1", "boost")
    w.service.subscribe("a2", "boost")
    r1 = w.service.unlock("a1", emails(1, prefix="one"), idempotency_key="same")
    r2 = w.service.unlock("a2", emails(2, prefix="two"), idempotency_key="same")
    assert (r1.replayed, r2.replayed) == (False, False)
    assert (w.balance("a1").email, w.balance("a2").email) == (11_999, 11_998)
    assert w.service.unlock("a2", emails(2, prefix="two"), idempotency_key="same").replayed
    with pytest.raises(IdempotencyKeyReused):
        w.service.unlock("a1", emails(2, prefix="two"), idempotency_key="same")


def test_r17_request_in_flight_while_the_first_is_still_verifying() -> None:
    """R17 with R16: a repeat that arrives while the first request is being verified is
    told RequestInFlight (not charged twice, not answered with a half result); another
    payload under that key is still IdempotencyKeyReused; afterwards the repeat replays."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    data = emails(3)
    refused: list[CreditsError] = []

    def repeat(batch: Sequence[Contact]) -> None:
        if w.hook is repeat:
            w.hook = None
            for payload in (data, data[:1]):
                try:
                    w.service.unlock(ACCOUNT, payload, idempotency_key="k")
                except CreditsError as error:
                    refused.append(error)

    w.hook = repeat
    first = w.service.unlock(ACCOUNT, data, idempotency_key="k")
    assert [type(e) for e in refused] == [RequestInFlight, IdempotencyKeyReused]
    assert first.charged(Channel.EMAIL) == 3
    assert w.service.unlock(ACCOUNT, data, idempotency_key="k").replayed
    assert w.balance().email == 11_997


def test_r17_a_retry_takes_over_after_the_first_attempt_crashed() -> None:
    """R17 with R16: after a crash the key is in flight until the lease lapses; then a
    retry with the same key runs the request once, and later repeats replay it."""
    w = short_ttl_world()
    w.service.subscribe(ACCOUNT, "boost")
    data = emails(2)
    w.hook = crash
    with pytest.raises(Crash):
        w.service.unlock(ACCOUNT, data, idempotency_key="k")
    w.hook = None
    with pytest.raises(RequestInFlight) as refused:
        w.service.unlock(ACCOUNT, data, idempotency_key="k")
    assert refused.value.retry_after_s == LEASE_S
    w.advance(timedelta(seconds=LEASE_S))
    retry = w.service.unlock(ACCOUNT, data, idempotency_key="k")
    assert (retry.replayed, retry.charged(Channel.EMAIL)) == (False, 2)
    assert w.service.unlock(ACCOUNT, data, idempotency_key="k").replayed
    assert w.balance().email == 11_998
    assert len(of_kind(w.entries(), EntryKind.CHARGE)) == 2


def test_r17_without_a_key_nothing_is_replayed() -> None:
    """R17: the key is optional; without one, a repeat is a new request (R12 still makes
    owned data free)."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    data = emails(2)
    w.service.unlock(ACCOUNT, data)
    again = w.service.unlock(ACCOUNT, data)
    assert not again.replayed
    assert [i.outcome for i in again.items] == [Outcome.ALREADY_OWNED] * 2


# -- R18: bounce refunds --------------------------------------------------------------------


def _bought(w: World, raw: str = "ann@corp.com") -> Contact:
    contact = Contact.email(raw)
    assert w.service.unlock(ACCOUNT, [contact]).items[0].outcome is Outcome.CHARGED
    return contact


def test_r18_a_bounce_is_refunded_once() -> None:
    """R18: "a charged email that hard-bounces, reported within 30 days of its charge, is
    refunded once (ledger entry)"."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    _bought(w)
    w.advance(timedelta(days=3))
    entry = w.service.report_bounce(ACCOUNT, Contact.email(" Ann@Corp.com "))
    assert (entry.kind, entry.pool, entry.amount, entry.at) == (
        EntryKind.REFUND,
        Channel.EMAIL,
        1,
        w.now(),
    )
    assert (entry.cause.operation, entry.cause.datum) == (Operation.BOUNCE, "email:ann@corp.com")
    assert w.entries()[-1] == entry
    assert w.balance().email == 12_000
    with pytest.raises(AlreadyRefunded):
        w.service.report_bounce(ACCOUNT, Contact.email("ann@corp.com"))
    assert w.entries()[-1] == entry


@pytest.mark.parametrize(
    ("after", "refunded"),
    [
        (timedelta(days=30), True),
        (timedelta(days=30, seconds=1), False),
        (timedelta(days=45), False),
    ],
)
def test_r18_bounces_are_refunded_within_30_days(after: timedelta, refunded: bool) -> None:
    """R18: "reported within 30 days of its charge" -- day 30 itself counts; a second
    later the window is closed and nothing is written."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.advance(timedelta(days=5))
    contact = _bought(w)
    w.advance(after)
    before = w.balance().email
    if refunded:
        assert w.service.report_bounce(ACCOUNT, contact).amount == 1
        assert w.balance().email == before + 1
        return
    with pytest.raises(RefundWindowClosed):
        w.service.report_bounce(ACCOUNT, contact)
    assert w.balance().email == before


def test_r18_a_refund_across_a_renewal_lands_in_the_current_balance() -> None:
    """R18: the window counts from the charge, not the period: bought Jan 20, bounced
    Feb 10 (21 days), refunded into the February balance."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.clock.set(datetime(2024, 1, 20, tzinfo=w.now().tzinfo))
    contact = _bought(w)
    w.clock.set(datetime(2024, 2, 10, tzinfo=w.now().tzinfo))
    w.service.report_bounce(ACCOUNT, contact)
    assert w.balance().email == 24_000


def test_r18_a_refunded_datum_is_never_charged_again() -> None:
    """R18: "A refunded datum is never charged again." -- not by unlock, export or
    enrich."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    contact = _bought(w)
    w.service.report_bounce(ACCOUNT, contact)
    for name, charging in CHARGING.items():
        result = charging(w.service, [contact])
        assert result.charged_credits.email == 0, name
    assert w.balance().email == 12_000
    assert len(of_kind(w.entries(), EntryKind.CHARGE)) == 1


def test_r18_only_charged_emails_can_be_refunded() -> None:
    """R18: NotCharged for an email never charged (unknown, failed verification, or bought
    by another account); NotAnEmail for a mobile; all are RefundRefused, and none writes
    an entry."""
    w = make_world(script={"bad@corp.com": Verdict.INVALID})
    w.service.subscribe(ACCOUNT, "boost")
    w.service.subscribe("other", "boost")
    w.service.unlock(ACCOUNT, [Contact.email("bad@corp.com"), *mobiles(1)])
    w.service.unlock("other", [Contact.email("theirs@corp.com")])
    before = w.entries()
    refusals: list[tuple[Contact, type[RefundRefused]]] = [
        (Contact.email("never@corp.com"), NotCharged),
        (Contact.email("bad@corp.com"), NotCharged),
        (Contact.email("theirs@corp.com"), NotCharged),
        (mobiles(1)[0], NotAnEmail),
    ]
    for contact, error in refusals:
        with pytest.raises(error) as caught:
            w.service.report_bounce(ACCOUNT, contact)
        assert isinstance(caught.value, RefundRefused)
        assert isinstance(caught.value, CreditsError)
    assert w.entries() == before


def test_r18_a_lapsed_account_gets_no_refund() -> None:
    """R18 with R6 (decision): after the lapse the account's balance reads zero and its
    credits never come back, so a late bounce is refused, not refunded."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    contact = _bought(w)
    w.clock.set(w.service.cancel(ACCOUNT))
    with pytest.raises(NoActiveSubscription):
        w.service.report_bounce(ACCOUNT, contact)
    assert w.balance().email == 0
