"""Example-based tests of R9..R15: what is charged, verification, no double charge, order.

Each test's name starts with the rule it checks; its docstring quotes what it checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from adapters.phones import parse_phone
from credits_domain import (
    Channel,
    ChargePolicy,
    ChargeResult,
    CheckResult,
    Contact,
    Credits,
    EntryKind,
    InvalidRequest,
    LineType,
    MalformedContact,
    Operation,
    Outcome,
    UnknownAccount,
    Verdict,
    email_verdict,
    mobile_verdict,
)
from rules_support import (
    ACCOUNT,
    CHARGING,
    emails,
    fifteen_per_mobile,
    make_service,
    make_world,
    mobiles,
    of_kind,
    tiny_plan,
)

NOT_VALID = [Verdict.INVALID, Verdict.CATCH_ALL, Verdict.UNKNOWN, Verdict.DISPOSABLE]

# -- R9: the three charging events ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "operation"),
    [("unlock", Operation.UNLOCK), ("export", Operation.EXPORT), ("enrich", Operation.ENRICH)],
)
def test_r9_unlock_export_and_enrich_each_deduct(name: str, operation: Operation) -> None:
    """R9: "Credits are deducted for exactly three events: unlocking ...; exporting ...;
    enrichment that finds new data" -- each charges a new verified datum and says so in
    the entry's cause."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    result = CHARGING[name](w.service, [*emails(2), *mobiles(1)])
    assert result.operation is operation
    assert (result.charged(Channel.EMAIL), result.charged(Channel.MOBILE)) == (2, 1)
    charges = of_kind(w.entries(), EntryKind.CHARGE)
    assert len(charges) == 3
    assert {e.cause.operation for e in charges} == {operation}


def test_r9_nothing_else_deducts() -> None:
    """R9: "Nothing else deducts credits." -- reading, renewing, changing plan, pausing,
    resuming and granting never write a CHARGE or any negative entry."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.service.balance(ACCOUNT)
    list(w.service.statement(ACCOUNT))
    w.service.subscription(ACCOUNT)
    w.service.balance_at(ACCOUNT, w.now())
    w.service.top_up(ACCOUNT, Credits(email=10), reason="goodwill")
    w.service.change_plan(ACCOUNT, "power")
    w.service.change_plan(ACCOUNT, "ignite")
    w.service.pause(ACCOUNT)
    w.service.resume(ACCOUNT)
    w.advance(timedelta(days=62))
    w.service.renew_due()
    entries = w.entries()
    assert len(entries) > 2
    assert all(e.amount > 0 for e in entries)
    assert not of_kind(entries, EntryKind.CHARGE)


# -- R10: only VALID is billed --------------------------------------------------------------


@pytest.mark.parametrize("verdict", NOT_VALID)
def test_r10_a_non_valid_verdict_is_free_and_not_handed_out(verdict: Verdict) -> None:
    """R10: "A datum is charged only if its verification verdict is VALID" -- any other
    verdict is free, "not handed out as verified", and not owned: once it verifies VALID
    later, it is charged then."""
    w = make_world(script={"x@corp.com": verdict})
    w.service.subscribe(ACCOUNT, "boost")
    x = Contact.email("x@corp.com")
    item = w.service.unlock(ACCOUNT, [x]).items[0]
    assert (item.outcome, item.verdict, item.credits, item.pool) == (
        Outcome.NOT_VERIFIED,
        verdict,
        0,
        None,
    )
    assert not item.revealed
    b = w.balance()
    assert (b.email, b.email_available) == (12_000, 12_000)
    assert not of_kind(w.entries(), EntryKind.CHARGE)

    w.verifier.set("x@corp.com", Verdict.VALID)
    assert w.service.unlock(ACCOUNT, [x]).items[0].outcome is Outcome.CHARGED


@pytest.mark.parametrize("error", [RuntimeError("provider down"), TimeoutError("5 s passed")])
def test_r10_a_verifier_error_or_timeout_is_free(error: Exception) -> None:
    """R10: "a verifier error or a timeout: no charge" -- the data come back UNKNOWN and
    the hold is released."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")

    def fail(batch: Sequence[Contact]) -> None:
        raise error

    w.hook = fail
    result = w.service.unlock(ACCOUNT, [*emails(2), *mobiles(1)])
    assert [(i.outcome, i.verdict) for i in result.items] == [
        (Outcome.NOT_VERIFIED, Verdict.UNKNOWN)
    ] * 3
    b = w.balance()
    assert (b.email, b.mobile, b.email_available, b.mobile_available) == (12_000, 800) * 2


class FixedAnswer:
    """A broken Verifier: gives the same answer whatever it is asked."""

    def __init__(self, answer: list[Any]) -> None:
        self.answer = answer

    def verify(self, contacts: Sequence[Contact]) -> Sequence[Verdict]:
        return list(self.answer)


@pytest.mark.parametrize(
    "answer",
    [
        [Verdict.VALID],  # too short
        [Verdict.VALID] * 3,  # too long
        ["valid", "valid"],  # not Verdicts
        [Verdict.VALID, None],
    ],
)
def test_r10_a_malformed_verifier_answer_is_free(answer: list[Any]) -> None:
    """R10: a verifier that answers with the wrong number of verdicts, or not with
    verdicts, is a verifier error: every datum is UNKNOWN and nothing is charged."""
    service = make_service(FixedAnswer(answer))
    service.subscribe(ACCOUNT, "boost")
    result = service.unlock(ACCOUNT, emails(2))
    assert [(i.outcome, i.verdict) for i in result.items] == [
        (Outcome.NOT_VERIFIED, Verdict.UNKNOWN)
    ] * 2
    assert service.balance(ACCOUNT).email_available == 12_000


def test_r10_catch_all_is_billed_only_when_the_policy_says_so() -> None:
    """R10: "CATCH_ALL billing may be switched on by an explicit policy setting; off by
    default." -- and the switch bills nothing else that is not VALID."""
    script = {
        "any@catchall.com": Verdict.CATCH_ALL,
        "bad@corp.com": Verdict.INVALID,
        "who@corp.com": Verdict.UNKNOWN,
        "tmp@mailinator.com": Verdict.DISPOSABLE,
    }
    request = [Contact.email(raw) for raw in script]
    assert ChargePolicy().bill_catch_all is False

    default = make_world(script=script)
    default.service.subscribe(ACCOUNT, "boost")
    assert default.service.unlock(ACCOUNT, request).charged(Channel.EMAIL) == 0

    billing = make_world(script=script, policy=ChargePolicy(bill_catch_all=True))
    billing.service.subscribe(ACCOUNT, "boost")
    result = billing.service.unlock(ACCOUNT, request)
    assert [i.outcome for i in result.items] == [
        Outcome.CHARGED,
        Outcome.NOT_VERIFIED,
        Outcome.NOT_VERIFIED,
        Outcome.NOT_VERIFIED,
    ]
    assert result.items[0].verdict is Verdict.CATCH_ALL
    assert billing.balance().email == 11_999


# -- R11: triple email verification, real-time mobile verification ------------------------

P, F, U = CheckResult.PASS, CheckResult.FAIL, CheckResult.UNKNOWN


@pytest.mark.parametrize(
    ("checks", "catch_all", "disposable", "expected"),
    [
        ([P, P, P], False, False, Verdict.VALID),
        ([F, P, P], False, False, Verdict.INVALID),
        ([P, P, F], False, False, Verdict.INVALID),
        ([P, P], False, False, Verdict.UNKNOWN),  # a check missing: never VALID
        ([], False, False, Verdict.UNKNOWN),
        ([P, U, P], False, False, Verdict.UNKNOWN),
        ([P, P, P], True, False, Verdict.CATCH_ALL),
        ([P, F, P], True, False, Verdict.INVALID),  # a failed check beats catch-all
        ([P, P, P], False, True, Verdict.DISPOSABLE),
    ],
)
def test_r11_email_verdict_needs_three_passing_checks(
    checks: list[CheckResult], catch_all: bool, disposable: bool, expected: Verdict
) -> None:
    """R11: "three independent checks must all pass ..., and a catch-all domain is
    detected and reported as CATCH_ALL"."""
    assert email_verdict(checks, catch_all=catch_all, disposable=disposable) is expected


@pytest.mark.parametrize(
    ("line", "reachable", "expected"),
    [
        (LineType.MOBILE, True, Verdict.VALID),
        (LineType.MOBILE, False, Verdict.INVALID),
        (LineType.MOBILE, None, Verdict.UNKNOWN),
        (LineType.LANDLINE, True, Verdict.INVALID),
        (LineType.LANDLINE, None, Verdict.INVALID),
        (LineType.INVALID, None, Verdict.INVALID),
        (LineType.VOIP, True, Verdict.UNKNOWN),
        (LineType.UNKNOWN, True, Verdict.UNKNOWN),
    ],
)
def test_r11_mobile_verdict_only_a_reachable_mobile_is_valid(
    line: LineType, reachable: bool | None, expected: Verdict
) -> None:
    """R11: "a landline, an invalid or an unreachable number is not VALID"."""
    assert mobile_verdict(line, reachable=reachable) is expected


class TripleCheckVerifier:
    """A Verifier composed as R11 describes, from a table of raw check results."""

    def __init__(
        self,
        email_checks: dict[Contact, tuple[list[CheckResult], bool]],
        lines: dict[Contact, tuple[LineType, bool | None]],
    ) -> None:
        self.email_checks = email_checks
        self.lines = lines

    def verify(self, contacts: Sequence[Contact]) -> Sequence[Verdict]:
        verdicts = []
        for c in contacts:
            if c.channel is Channel.EMAIL:
                checks, catch_all = self.email_checks[c]
                verdicts.append(email_verdict(checks, catch_all=catch_all))
            else:
                line, reachable = self.lines[c]
                verdicts.append(mobile_verdict(line, reachable=reachable))
        return verdicts


def test_r11_composed_verdicts_drive_charging() -> None:
    """R11 with R10: only the email that passes all three checks and the reachable mobile
    are charged; the catch-all, the two-of-three and the landline are free."""
    good, catch_all, partial = (Contact.email(f"{n}@corp.com") for n in ("good", "ca", "two"))
    mobile, landline = mobiles(2)
    verifier = TripleCheckVerifier(
        {good: ([P, P, P], False), catch_all: ([P, P, P], True), partial: ([P, P, F], False)},
        {mobile: (LineType.MOBILE, True), landline: (LineType.LANDLINE, True)},
    )
    service = make_service(verifier)
    service.subscribe(ACCOUNT, "boost")
    result = service.unlock(ACCOUNT, [good, catch_all, partial, mobile, landline])
    assert [(i.outcome, i.verdict) for i in result.items] == [
        (Outcome.CHARGED, Verdict.VALID),
        (Outcome.NOT_VERIFIED, Verdict.CATCH_ALL),
        (Outcome.NOT_VERIFIED, Verdict.INVALID),
        (Outcome.CHARGED, Verdict.VALID),
        (Outcome.NOT_VERIFIED, Verdict.INVALID),
    ]
    assert result.charged_credits == Credits(email=1, mobile=1)


# -- R12: no double charge ------------------------------------------------------------------


def test_r12_email_canonical_form_is_trimmed_and_lower_cased() -> None:
    """R12: "email: trimmed, lower-cased" -- spellings of one address are one datum."""
    forms = ["Ann.Lee@Corp.COM", "  ann.lee@corp.com\t", "ANN.LEE@CORP.COM\n"]
    contacts = {Contact.email(raw) for raw in forms}
    assert len(contacts) == 1
    assert contacts.pop().value == "ann.lee@corp.com"


def test_r12_mobile_canonical_form_is_e164() -> None:
    """R12: "phone: E.164" -- the core takes E.164 as it is (whitespace around it
    trimmed); every common spelling is one datum once the boundary has parsed it."""
    assert Contact.mobile(" +442079460958\t") == Contact.mobile("+442079460958")
    forms = ["+44 20 7946 0958", "+44 (20) 7946-0958", "+44.20.7946.0958", "+44 (0) 20 7946 0958"]
    contacts = {parse_phone(raw, None) for raw in forms}
    assert contacts == {Contact.mobile("+442079460958")}
    assert Contact.mobile("+442079460958") != Contact.mobile("+442079460959")


@pytest.mark.parametrize(
    "raw", ["+44 (0) 7700 900123", "+44 7700 900123", "+1-555-000-0001", "+44.20.7946.0958"]
)
def test_r12_the_core_refuses_a_mobile_it_would_have_to_guess(raw: str) -> None:
    """R12: "a number written in any common way is one datum" -- so the core never
    guesses: dropping the punctuation of "+44 (0) 7700 900123" made +4407700900123, a
    second datum beside +447700900123. Anything but E.164 is refused, telling the caller
    to parse it at the boundary (adapters.phones, which reads the trunk prefix right)."""
    with pytest.raises(MalformedContact) as refused:
        Contact.mobile(raw)
    assert "adapters.phones.parse_phone" in str(refused.value)
    assert parse_phone("+44 (0) 7700 900123", None) == parse_phone("+44 7700 900123", None)


def test_r12_the_same_datum_twice_in_one_request_is_charged_once() -> None:
    """R12: "The same datum twice in one request is charged once." -- at its first place;
    the repeats are DUPLICATE_IN_REQUEST, and the verifier is asked once."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    request = [
        Contact.email("Ann@Corp.com"),
        Contact.mobile("+15550000001"),
        Contact.email(" ann@corp.com "),
        Contact.mobile(" +15550000001 "),
        Contact.email("ANN@CORP.COM"),
    ]
    result = w.service.unlock(ACCOUNT, request)
    assert [i.outcome for i in result.items] == [
        Outcome.CHARGED,
        Outcome.CHARGED,
        Outcome.DUPLICATE_IN_REQUEST,
        Outcome.DUPLICATE_IN_REQUEST,
        Outcome.DUPLICATE_IN_REQUEST,
    ]
    assert result.charged_credits == Credits(email=1, mobile=1)
    assert [len(batch) for batch in w.verifier.calls] == [2]


@pytest.mark.parametrize("first", CHARGING)
@pytest.mark.parametrize("second", CHARGING)
def test_r12_data_already_owned_are_free_across_unlock_export_enrich(
    first: str, second: str
) -> None:
    """R12: "an account pays at most once, ever, for the same datum ... Unlocking,
    exporting or enriching data the account already owns is free." -- also when the
    datum is spelled differently."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    CHARGING[first](w.service, [Contact.email("Bo@Corp.com"), Contact.mobile("+15550000001")])
    calls = len(w.verifier.calls)
    again = [Contact.email(" bo@corp.com"), parse_phone("+1 (555) 000-0001", None)]
    result = CHARGING[second](w.service, again)
    assert [i.outcome for i in result.items] == [Outcome.ALREADY_OWNED] * 2
    assert all(i.revealed for i in result.items)
    assert result.charged_credits == Credits()
    assert len(w.verifier.calls) == calls  # owned data need no verification
    assert (w.balance().email, w.balance().mobile) == (11_999, 799)


def test_r12_ownership_belongs_to_one_account() -> None:
    """R12: "an account pays at most once" -- another account buying the same datum pays."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.service.subscribe("other", "boost")
    datum = emails(1)
    assert w.service.unlock(ACCOUNT, datum).charged(Channel.EMAIL) == 1
    assert w.service.unlock("other", datum).charged(Channel.EMAIL) == 1


def test_r12_a_concurrent_request_for_the_same_datum_charges_once() -> None:
    """R12 with R16: while one request verifies a datum, another request of the same
    account buys it; the first then finds it owned and charges nothing for it."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    datum = Contact.email("race@corp.com")
    inner: list[ChargeResult] = []

    def buy_meanwhile(batch: Sequence[Contact]) -> None:
        if w.hook is buy_meanwhile:
            w.hook = None  # the nested request's verifier call must not nest again
            inner.append(w.service.unlock(ACCOUNT, [datum]))

    w.hook = buy_meanwhile
    outer = w.service.unlock(ACCOUNT, [datum, *emails(1)])
    assert inner[0].items[0].outcome is Outcome.CHARGED
    assert [i.outcome for i in outer.items] == [Outcome.ALREADY_OWNED, Outcome.CHARGED]
    b = w.balance()
    assert (b.email, b.email_available) == (11_998, 11_998)
    assert len(of_kind(w.entries(), EntryKind.CHARGE)) == 2


# -- R13: export ----------------------------------------------------------------------------


def test_r13_export_charges_only_new_verified_data() -> None:
    """R13: "Export charges only data the account does not own yet, verified as in R10."
    -- and the entry names the destination."""
    w = make_world(script={"bad@corp.com": Verdict.INVALID})
    w.service.subscribe(ACCOUNT, "boost")
    owned, new = Contact.email("owned@corp.com"), Contact.email("new@corp.com")
    w.service.unlock(ACCOUNT, [owned])
    result = w.service.export(
        ACCOUNT, [owned, new, Contact.email("bad@corp.com")], destination="hubspot"
    )
    assert [i.outcome for i in result.items] == [
        Outcome.ALREADY_OWNED,
        Outcome.CHARGED,
        Outcome.NOT_VERIFIED,
    ]
    assert result.charged(Channel.EMAIL) == 1
    charge = of_kind(w.entries(), EntryKind.CHARGE)[-1]
    assert (charge.cause.operation, charge.cause.destination, charge.cause.datum) == (
        Operation.EXPORT,
        "hubspot",
        "email:new@corp.com",
    )


def test_r13_exporting_the_same_leads_twice_charges_once() -> None:
    """R13: a second export of the same leads (to another CRM, too) is free."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    leads = [*emails(3), *mobiles(2)]
    assert w.service.export(ACCOUNT, leads, destination="csv").charged_credits == Credits(
        email=3, mobile=2
    )
    assert w.service.export(ACCOUNT, leads, destination="salesforce").charged_credits == Credits()


# -- R14: enrichment ------------------------------------------------------------------------


def test_r14_enrich_charges_only_new_found_valid_data() -> None:
    """R14: "Enrichment charges only for newly found data that the account does not own
    and that verifies VALID"."""
    w = make_world(script={"gone@corp.com": Verdict.INVALID})
    w.service.subscribe(ACCOUNT, "boost")
    known = Contact.email("known@corp.com")
    w.service.unlock(ACCOUNT, [known])
    new_mobile = Contact.mobile("+15550001234")
    result = w.service.enrich(ACCOUNT, [known, new_mobile, Contact.email("gone@corp.com")])
    assert [i.outcome for i in result.items] == [
        Outcome.ALREADY_OWNED,
        Outcome.CHARGED,
        Outcome.NOT_VERIFIED,
    ]
    assert result.charged_credits == Credits(mobile=1)


def test_r14_enrichment_that_finds_nothing_or_known_data_is_free() -> None:
    """R14: "finding nothing, or known data, is free" -- no entry, no verification."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    known = emails(2)
    w.service.unlock(ACCOUNT, known)
    before, calls = w.entries(), len(w.verifier.calls)
    nothing = w.service.enrich(ACCOUNT, [])
    assert (nothing.items, nothing.charged_credits) == ((), Credits())
    assert w.service.enrich(ACCOUNT, iter(known)).charged_credits == Credits()
    assert (w.entries(), len(w.verifier.calls)) == (before, calls)


# -- R15: no overdraft, in-order settlement -------------------------------------------------


def test_r15_items_beyond_the_balance_are_insufficient_credits() -> None:
    """R15: "those beyond the balance come back as INSUFFICIENT_CREDITS: not charged, not
    revealed, not owned" -- and are not even verified."""
    w = make_world()
    w.service.subscribe(ACCOUNT, tiny_plan(email=2))
    a, b, c = emails(3)
    result = w.service.unlock(ACCOUNT, [a, b, c])
    assert [i.outcome for i in result.items] == [
        Outcome.CHARGED,
        Outcome.CHARGED,
        Outcome.INSUFFICIENT_CREDITS,
    ]
    assert (result.items[2].credits, result.items[2].revealed) == (0, False)
    assert w.verifier.calls == [(a, b)]
    assert (w.balance().email, w.balance().email_available) == (0, 0)
    w.service.top_up(ACCOUNT, Credits(email=1), reason="goodwill")
    assert w.service.unlock(ACCOUNT, [c]).items[0].outcome is Outcome.CHARGED  # was not owned


def test_r15_request_order_decides_who_gets_the_last_credit() -> None:
    """R15: "Items of a request are settled in request order"."""
    w = make_world()
    w.service.subscribe(ACCOUNT, tiny_plan(email=1))
    a, b = emails(2)
    result = w.service.unlock(ACCOUNT, [b, a])
    assert [(i.contact, i.outcome) for i in result.items] == [
        (b, Outcome.CHARGED),
        (a, Outcome.INSUFFICIENT_CREDITS),
    ]


def test_r15_credits_held_for_data_that_fail_verification_serve_later_data() -> None:
    """R15: "credits held for data that then fail verification serve the later data of
    the same request" -- balance 3, [bad, a, b, c] with bad INVALID: a, b, c charged."""
    w = make_world(script={"bad@corp.com": Verdict.INVALID})
    w.service.subscribe(ACCOUNT, tiny_plan(email=3))
    bad = Contact.email("bad@corp.com")
    a, b, c = emails(3)
    result = w.service.unlock(ACCOUNT, [bad, a, b, c])
    assert [i.outcome for i in result.items] == [
        Outcome.NOT_VERIFIED,
        Outcome.CHARGED,
        Outcome.CHARGED,
        Outcome.CHARGED,
    ]
    assert w.verifier.calls == [(bad, a, b), (c,)]
    assert (w.balance().email, w.balance().email_available) == (0, 0)


def test_r15_several_failures_in_the_middle_free_credits_for_the_tail() -> None:
    """R15: balance 2, [a, bad1, bad2, b, c]: a and b charged, c refused for lack of
    credits once everything before it is settled."""
    script = {"bad1@corp.com": Verdict.INVALID, "bad2@corp.com": Verdict.UNKNOWN}
    w = make_world(script=script)
    w.service.subscribe(ACCOUNT, tiny_plan(email=2))
    a, b, c = emails(3)
    bad1, bad2 = Contact.email("bad1@corp.com"), Contact.email("bad2@corp.com")
    result = w.service.unlock(ACCOUNT, [a, bad1, bad2, b, c])
    assert [i.outcome for i in result.items] == [
        Outcome.CHARGED,
        Outcome.NOT_VERIFIED,
        Outcome.NOT_VERIFIED,
        Outcome.CHARGED,
        Outcome.INSUFFICIENT_CREDITS,
    ]
    assert w.balance().email == 0


def test_r15_an_expensive_mobile_that_does_not_fit_leaves_room_for_a_cheap_email() -> None:
    """R15 with R2: "A datum is refused for lack of credits only if no credit is left for
    it" -- a 15-credit mobile does not fit in 10 EMAIL credits, the 1-credit email after
    it does."""
    w = make_world()
    w.service.subscribe(ACCOUNT, fifteen_per_mobile(10))
    phone, mail = Contact.mobile("+15550009999"), Contact.email("fits@corp.com")
    result = w.service.unlock(ACCOUNT, [phone, mail])
    assert [i.outcome for i in result.items] == [Outcome.INSUFFICIENT_CREDITS, Outcome.CHARGED]
    assert w.verifier.calls == [(mail,)]
    assert (w.balance().email, w.balance().email_available) == (9, 9)


def test_r15_an_email_waits_for_the_expensive_mobile_before_it() -> None:
    """R15: with 15 EMAIL credits, [mobile at 15, email at 1]: if the mobile verifies the
    email is refused; if it fails, its 15 held credits serve the email."""
    good, bad = Contact.mobile("+15550000001"), Contact.mobile("+15550000002")
    mail = Contact.email("after@corp.com")

    w = make_world(script={"+15550000002": Verdict.INVALID})
    w.service.subscribe(ACCOUNT, fifteen_per_mobile(15))
    result = w.service.unlock(ACCOUNT, [good, mail])
    assert [i.outcome for i in result.items] == [Outcome.CHARGED, Outcome.INSUFFICIENT_CREDITS]
    assert w.balance().email == 0

    w.service.subscribe("other", fifteen_per_mobile(15))
    result = w.service.unlock("other", [bad, mail])
    assert [i.outcome for i in result.items] == [Outcome.NOT_VERIFIED, Outcome.CHARGED]
    assert w.balance("other").email == 14


def test_r15_an_empty_pool_refuses_only_its_own_channel() -> None:
    """R15 with R1: an empty EMAIL pool refuses emails; mobiles of the same request are
    charged from the MOBILE pool; nothing is verified that could not be paid."""
    w = make_world()
    w.service.subscribe(ACCOUNT, tiny_plan(email=0, mobile=1))
    mail, phone = emails(1)[0], mobiles(1)[0]
    result = w.service.unlock(ACCOUNT, [mail, phone])
    assert [i.outcome for i in result.items] == [Outcome.INSUFFICIENT_CREDITS, Outcome.CHARGED]
    assert w.verifier.calls == [(phone,)]


def test_r15_a_pool_never_goes_below_zero() -> None:
    """R15: "a pool never goes below zero" -- whatever is asked, balances and every
    running balance stay >= 0."""
    w = make_world()
    w.service.subscribe(ACCOUNT, tiny_plan(email=5, mobile=2))
    for round_no in range(3):
        w.service.unlock(ACCOUNT, [*emails(4, prefix=f"r{round_no}-"), *mobiles(2, 10 * round_no)])
    b = w.balance()
    assert (b.email, b.mobile) == (0, 0)
    assert all(e.balance_after >= 0 for e in w.entries())
    assert len(of_kind(w.entries(), EntryKind.CHARGE)) == 7


def test_r12_the_data_an_account_owns_read_in_pages() -> None:
    """R12: what an account paid for can be listed, a page at a time, refunded data too
    (R18: it stays owned); another account's data never appear."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.service.subscribe("globex", "boost")
    w.service.unlock(ACCOUNT, [*emails(3), Contact.mobile("+15550000001")])
    w.service.unlock("globex", [Contact.email("theirs@corp.com")])
    w.service.report_bounce(ACCOUNT, emails(3)[1])
    first = w.service.owned(ACCOUNT, limit=2)
    rest = w.service.owned(ACCOUNT, after=first[-1].contact, limit=10)
    owned = [*first, *rest]
    assert [str(r.contact) for r in owned] == [
        *sorted(str(c) for c in emails(3)),
        "mobile:+15550000001",
    ]
    assert [r.refunded_at is not None for r in owned] == [False, True, False, False]
    assert {r.account for r in owned} == {ACCOUNT}
    with pytest.raises(InvalidRequest, match="limit"):
        w.service.owned(ACCOUNT, limit=10_001)
    with pytest.raises(UnknownAccount):
        w.service.owned("ghost", limit=1)
