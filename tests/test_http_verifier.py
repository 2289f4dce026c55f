"""HttpVerifier against a real verification server on 127.0.0.1 (R10, R11, R16).

The server (tests/verification_server.py) is a real HTTP/1.1 server in a thread,
told per test how to answer. Time is injected where waiting would only slow the tests
down: back-off sleeps are recorded instead of slept, and the circuit breaker reads a
monotonic clock the test moves. Real timeouts are real (a few hundred milliseconds).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.clock import ManualClock
from adapters.memory import InMemoryRepository
from adapters.phones import parse_phone
from adapters.verifier import (
    CircuitBreaker,
    CircuitState,
    Dialect,
    HttpVerifier,
    MalformedAnswer,
    RetryPolicy,
    Timeouts,
)
from adapters.verifier.http import (
    read_answer,
    read_result,
    retry_after_s,
    vendor_result_evidence,
    vendor_status_evidence,
)
from credits_domain import (
    Channel,
    CheckResult,
    Contact,
    CreditService,
    EntryKind,
    InvalidRequest,
    MalformedContact,
    Outcome,
    Verdict,
    Verifier,
)
from verification_server import (
    ANSWER,
    GARBAGE,
    HANG,
    WRONG_LENGTH,
    Reply,
    VerificationServer,
    refused_url,
    status,
)

START = datetime(2024, 1, 1, tzinfo=UTC)
# Short enough to keep the file fast, long enough for a loaded machine's loopback.
FAST = Timeouts(connect_s=2.0, read_s=0.4, write_s=2.0, pool_s=2.0)


class RecordedSleep:
    """Stands in for time.sleep: records each back-off delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class SteppedMonotonic:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def state_of(breaker: CircuitBreaker) -> CircuitState:
    # A call, not the property, so that mypy does not narrow it across state changes.
    return breaker.state


@pytest.fixture
def server() -> Iterator[VerificationServer]:
    with VerificationServer() as running:
        yield running


def make_verifier(url: str, **overrides: Any) -> HttpVerifier:
    options: dict[str, Any] = {
        "timeouts": FAST,
        "retry": RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.1),
        "sleep": RecordedSleep(),
        "rng": random.Random(1),
    }
    options.update(overrides)
    return HttpVerifier(url, **options)


def emails(*locals_: str) -> list[Contact]:
    return [Contact.email(f"{local}@corp.example") for local in locals_]


# -- answers: triple verification composed in the core (R11) ------------------------------


def test_verdicts_follow_the_three_checks_and_the_flags(server: VerificationServer) -> None:
    contacts = emails("ann", "invalid1", "catchall1", "disposable1", "unknown1", "nosecond1")
    with make_verifier(server.url) as verifier:
        assert isinstance(verifier, Verifier)
        verdicts = verifier.verify(contacts)
    assert list(verdicts) == [
        Verdict.VALID,
        Verdict.INVALID,
        Verdict.CATCH_ALL,
        Verdict.DISPOSABLE,
        Verdict.UNKNOWN,  # one check unknown: never VALID
        Verdict.UNKNOWN,  # one check missing: never VALID
    ]
    assert server.requests == 1
    assert server.bodies == [{"items": [{"channel": "email", "value": c.value} for c in contacts]}]


def test_mobile_real_time_check(server: VerificationServer) -> None:
    numbers = ["+447700900001", "+447700900002", "+447700900003", "+447700900004"]
    server.answers = {
        numbers[0]: {"line_type": "mobile", "reachable": True},
        numbers[1]: {"line_type": "landline", "reachable": True},
        numbers[2]: {"line_type": "mobile", "reachable": False},
        numbers[3]: {"line_type": "voip", "reachable": None},
    }
    with make_verifier(server.url) as verifier:
        verdicts = verifier.verify([Contact.mobile(n) for n in numbers])
    assert list(verdicts) == [Verdict.VALID, Verdict.INVALID, Verdict.INVALID, Verdict.UNKNOWN]


def test_an_empty_batch_sends_nothing(server: VerificationServer) -> None:
    with make_verifier(server.url) as verifier:
        assert list(verifier.verify([])) == []
    assert server.requests == 0


def test_a_definite_invalid_is_final_never_retried(server: VerificationServer) -> None:
    sleep = RecordedSleep()
    with make_verifier(server.url, sleep=sleep) as verifier:
        assert list(verifier.verify(emails("invalid2"))) == [Verdict.INVALID]
    assert server.requests == 1
    assert sleep.delays == []


# -- malformed answers are UNKNOWN (R10) ---------------------------------------------------


@pytest.mark.parametrize("reply", [GARBAGE, WRONG_LENGTH, status(500), status(400)])
def test_broken_answers_are_unknown_and_not_retried(
    server: VerificationServer, reply: Reply
) -> None:
    server.default = reply
    with make_verifier(server.url) as verifier:
        verdicts = verifier.verify(emails("ann", "bob"))
    assert list(verdicts) == [Verdict.UNKNOWN, Verdict.UNKNOWN]
    assert server.requests == 1


def test_a_result_for_another_value_is_unknown(server: VerificationServer) -> None:
    ann, bob, cy = emails("ann", "bob", "cy")
    server.answers = {
        ann.value: {"value": "mallory@corp.example", "checks": {}, "catch_all": False},
        # An error wins over anything else the result says.
        cy.value: {
            "error": "smtp server said 421",
            "checks": {"syntax": "pass", "mailbox": "pass", "second_provider": "pass"},
            "catch_all": False,
            "disposable": False,
        },
    }
    with make_verifier(server.url) as verifier:
        verdicts = verifier.verify([ann, bob, cy])
    assert list(verdicts) == [Verdict.UNKNOWN, Verdict.VALID, Verdict.UNKNOWN]


@pytest.mark.parametrize(
    "result",
    [
        {"checks": {"syntax": "pass", "mailbox": "pass", "second_provider": "pass"}},
        {
            "checks": {"syntax": "pass", "mailbox": "pass", "second_provider": "pass"},
            "catch_all": "no",
            "disposable": False,
        },
        {"checks": ["pass", "pass", "pass"], "catch_all": False, "disposable": False},
        {
            "checks": {"syntax": "pass", "mailbox": "PASSED", "second_provider": "pass"},
            "catch_all": False,
            "disposable": False,
        },
        "valid",
    ],
)
def test_malformed_email_results_are_unknown(result: Any) -> None:
    contact = Contact.email("ann@corp.example")
    if isinstance(result, dict):
        result = {"value": contact.value, **result}
    assert read_result(contact, result, Dialect.NATIVE) is Verdict.UNKNOWN


def test_a_well_formed_result_is_valid() -> None:
    # The counterpart of the test above: the same shape, complete, is VALID.
    contact = Contact.email("ann@corp.example")
    result = {
        "value": "  Ann@Corp.Example ",
        "checks": {"syntax": "pass", "mailbox": "pass", "second_provider": "pass"},
        "catch_all": False,
        "disposable": False,
    }
    assert read_result(contact, result, Dialect.NATIVE) is Verdict.VALID


@pytest.mark.parametrize("body", [b"", b"[]", b'{"results": {}}', b"\xff\xfe", b"null"])
def test_malformed_envelopes_raise_for_the_client_to_turn_into_unknown(body: bytes) -> None:
    with pytest.raises(MalformedAnswer):
        read_answer(emails("ann"), body, Dialect.NATIVE)


def test_an_oversized_answer_is_unknown(server: VerificationServer) -> None:
    (ann,) = emails("ann")
    server.answers = {
        ann.value: {
            "checks": {"syntax": "pass", "mailbox": "pass", "second_provider": "pass"},
            "catch_all": False,
            "disposable": False,
            "padding": "x" * 200_000,
        }
    }
    with make_verifier(server.url) as verifier:
        assert list(verifier.verify([ann])) == [Verdict.UNKNOWN]


# -- timeouts and failures never charge (R10, R16) -----------------------------------------


def charge_through_service(verifier: HttpVerifier) -> tuple[CreditService, InMemoryRepository]:
    repository = InMemoryRepository()
    service = CreditService(repository=repository, verifier=verifier, clock=ManualClock(START))
    service.subscribe("acme", "boost")
    return service, repository


@pytest.mark.parametrize(
    "reply",
    [HANG, Reply(delay_s=1.0), status(500), status(503), GARBAGE, WRONG_LENGTH],
    ids=["no-answer", "slow", "500", "503", "garbage", "wrong-length"],
)
def test_failures_never_charge_and_release_the_hold(
    server: VerificationServer, reply: Reply
) -> None:
    server.default = reply
    with make_verifier(server.url) as verifier:
        service, repository = charge_through_service(verifier)
        contacts = [*emails("ann", "bob"), parse_phone("07700 900123", "GB")]
        result = service.unlock("acme", contacts)
    assert [item.outcome for item in result.items] == [Outcome.NOT_VERIFIED] * 3
    assert [item.verdict for item in result.items] == [Verdict.UNKNOWN] * 3
    assert not any(item.revealed for item in result.items)
    balance = service.balance("acme")
    assert (balance.email, balance.mobile) == (12_000, 800)
    assert (balance.email_available, balance.mobile_available) == (12_000, 800)
    assert repository.wallets["acme"].holds == {}
    kinds = {entry.kind for entry in service.statement("acme")}
    assert kinds == {EntryKind.GRANT}
    assert server.requests >= 1


def test_connection_refused_never_charges() -> None:
    with refused_url() as url, make_verifier(url) as verifier:
        service, repository = charge_through_service(verifier)
        result = service.unlock("acme", emails("ann"))
    assert result.items[0].outcome is Outcome.NOT_VERIFIED
    assert service.balance("acme").email_available == 12_000
    assert repository.wallets["acme"].holds == {}


def test_the_same_path_charges_when_the_service_answers(server: VerificationServer) -> None:
    # The counterpart of the failure tests: with answers, VALID data is charged.
    with make_verifier(server.url) as verifier:
        service, repository = charge_through_service(verifier)
        contacts = [*emails("ann", "invalid3", "catchall3"), parse_phone("07700 900123", "GB")]
        result = service.unlock("acme", contacts)
    assert [item.outcome for item in result.items] == [
        Outcome.CHARGED,
        Outcome.NOT_VERIFIED,
        Outcome.NOT_VERIFIED,
        Outcome.CHARGED,
    ]
    assert [item.verdict for item in result.items] == [
        Verdict.VALID,
        Verdict.INVALID,
        Verdict.CATCH_ALL,
        Verdict.VALID,
    ]
    balance = service.balance("acme")
    assert (balance.email, balance.mobile) == (11_999, 799)
    assert repository.wallets["acme"].holds == {}


# -- retries: transient only, bounded, with backoff and jitter -----------------------------


@pytest.mark.parametrize("code", [429, 502, 503, 504])
def test_transient_statuses_are_retried_up_to_the_bound(
    server: VerificationServer, code: int
) -> None:
    server.default = status(code)
    sleep = RecordedSleep()
    retry = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.1)
    with make_verifier(server.url, retry=retry, sleep=sleep) as verifier:
        assert list(verifier.verify(emails("ann"))) == [Verdict.UNKNOWN]
    assert server.requests == 4
    assert len(sleep.delays) == 3


def test_a_transient_failure_then_an_answer(server: VerificationServer) -> None:
    server.script(status(503), status(502))
    with make_verifier(server.url) as verifier:
        assert list(verifier.verify(emails("ann", "invalid4"))) == [Verdict.VALID, Verdict.INVALID]
    assert server.requests == 3


def test_connection_errors_are_retried_up_to_the_bound() -> None:
    sleep = RecordedSleep()
    with refused_url() as url, make_verifier(url, sleep=sleep) as verifier:
        assert list(verifier.verify(emails("ann"))) == [Verdict.UNKNOWN]
    assert len(sleep.delays) == 2  # three attempts, two waits between them


def test_a_read_timeout_is_not_retried_by_default(server: VerificationServer) -> None:
    server.default = HANG
    with make_verifier(server.url) as verifier:
        assert list(verifier.verify(emails("ann"))) == [Verdict.UNKNOWN]
    assert server.requests == 1


def test_read_timeouts_are_retried_when_the_policy_says_so(server: VerificationServer) -> None:
    server.script(HANG)
    retry = RetryPolicy(max_attempts=3, base_delay_s=0.01, retry_read_timeouts=True)
    with make_verifier(server.url, retry=retry) as verifier:
        assert list(verifier.verify(emails("ann"))) == [Verdict.VALID]
    assert server.requests == 2


def test_backoff_is_exponential_with_full_jitter_from_the_injected_rng(
    server: VerificationServer,
) -> None:
    server.default = status(503)
    sleep = RecordedSleep()
    retry = RetryPolicy(max_attempts=5, base_delay_s=0.1, max_delay_s=0.3)
    with make_verifier(server.url, retry=retry, sleep=sleep, rng=random.Random(7)) as verifier:
        verifier.verify(emails("ann"))
    ceilings = [0.1, 0.2, 0.3, 0.3]  # base * 2**k, capped at max_delay_s
    expected_rng = random.Random(7)
    assert sleep.delays == [expected_rng.uniform(0.0, c) for c in ceilings]
    assert all(0.0 <= d <= c for d, c in zip(sleep.delays, ceilings, strict=True))


def test_retry_after_is_honoured(server: VerificationServer) -> None:
    server.script(status(429, retry_after="2"), status(503, retry_after="0"))
    sleep = RecordedSleep()
    with make_verifier(server.url, sleep=sleep) as verifier:
        assert list(verifier.verify(emails("ann"))) == [Verdict.VALID]
    assert sleep.delays == [2.0, 0.0]
    assert server.requests == 3


def test_a_retry_after_beyond_the_cap_gives_up_instead_of_calling_early(
    server: VerificationServer,
) -> None:
    server.default = status(503, retry_after="3600")
    sleep = RecordedSleep()
    retry = RetryPolicy(max_attempts=3, max_retry_after_s=10.0)
    with make_verifier(server.url, retry=retry, sleep=sleep) as verifier:
        assert list(verifier.verify(emails("ann"))) == [Verdict.UNKNOWN]
    assert server.requests == 1
    assert sleep.delays == []


def test_retry_after_header_forms() -> None:
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)
    assert retry_after_s("120", now) == 120.0
    assert retry_after_s(" 1.5 ", now) == 1.5
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now) == 30.0
    assert retry_after_s("Wed, 21 Oct 2015 07:00:00 GMT", now) == 0.0  # in the past
    assert retry_after_s(None, now) is None
    assert retry_after_s("-3", now) is None
    assert retry_after_s("soon", now) is None
    assert retry_after_s("nan", now) is None


# -- the circuit breaker -------------------------------------------------------------------


def test_the_breaker_opens_fails_fast_and_closes_after_the_reset_time(
    server: VerificationServer,
) -> None:
    server.default = status(500)
    clock = SteppedMonotonic()
    breaker = CircuitBreaker(failure_threshold=2, reset_after_s=5.0, monotonic=clock)
    with make_verifier(server.url, breaker=breaker) as verifier:
        verifier.verify(emails("ann"))
        assert state_of(breaker) is CircuitState.CLOSED
        verifier.verify(emails("ann"))
        assert state_of(breaker) is CircuitState.OPEN
        assert server.requests == 2

        for _ in range(3):  # open: nothing reaches the service
            assert list(verifier.verify(emails("ann", "bob"))) == [Verdict.UNKNOWN] * 2
        clock.advance(4.9)
        assert list(verifier.verify(emails("ann"))) == [Verdict.UNKNOWN]
        assert server.requests == 2

        server.default = ANSWER
        clock.advance(0.1)  # reset time reached: one probe goes through, and succeeds
        assert list(verifier.verify(emails("ann"))) == [Verdict.VALID]
        assert state_of(breaker) is CircuitState.CLOSED
        assert server.requests == 3
        assert list(verifier.verify(emails("bob"))) == [Verdict.VALID]
        assert server.requests == 4


def test_a_failed_probe_opens_the_breaker_again(server: VerificationServer) -> None:
    server.default = status(500)
    clock = SteppedMonotonic()
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=5.0, monotonic=clock)
    with make_verifier(server.url, breaker=breaker) as verifier:
        verifier.verify(emails("ann"))
        assert state_of(breaker) is CircuitState.OPEN
        clock.advance(5.0)
        verifier.verify(emails("ann"))  # the probe, which fails
        assert server.requests == 2
        assert state_of(breaker) is CircuitState.OPEN
        clock.advance(4.0)
        verifier.verify(emails("ann"))
        assert server.requests == 2  # a new full reset time starts at the failed probe


def test_retries_stop_when_the_breaker_opens(server: VerificationServer) -> None:
    server.default = status(503)
    breaker = CircuitBreaker(failure_threshold=2, reset_after_s=60.0)
    retry = RetryPolicy(max_attempts=5, base_delay_s=0.01)
    with make_verifier(server.url, breaker=breaker, retry=retry) as verifier:
        assert list(verifier.verify(emails("ann"))) == [Verdict.UNKNOWN]
    assert server.requests == 2


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = SteppedMonotonic()
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=1.0, monotonic=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert state_of(breaker) is CircuitState.CLOSED
    assert breaker.allow()
    breaker.record_success()  # a success resets the count of consecutive failures
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert state_of(breaker) is CircuitState.OPEN
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()
    assert state_of(breaker) is CircuitState.HALF_OPEN
    assert not breaker.allow()  # the probe is in flight: everyone else fails fast
    breaker.record_success()
    assert state_of(breaker) is CircuitState.CLOSED
    assert breaker.allow()


# -- concurrency ---------------------------------------------------------------------------


def test_a_batch_is_split_into_chunks_sent_concurrently_up_to_the_bound(
    server: VerificationServer,
) -> None:
    server.default = Reply(delay_s=0.15)
    prefixes = ["ann", "invalid", "catchall", "bob"] * 3
    contacts = emails(*(f"{p}{i}" for i, p in enumerate(prefixes)))
    with make_verifier(server.url, max_in_flight=4, chunk_size=1) as verifier:
        verdicts = verifier.verify(contacts)
    expected = {"ann": Verdict.VALID, "bob": Verdict.VALID}
    expected |= {"invalid": Verdict.INVALID, "catchall": Verdict.CATCH_ALL}
    assert list(verdicts) == [expected[p] for p in prefixes]  # request order kept
    assert server.requests == 12
    assert server.max_in_flight == 4


def test_chunks_have_at_most_chunk_size_items(server: VerificationServer) -> None:
    contacts = emails(*(f"user{i}" for i in range(25)))
    with make_verifier(server.url, chunk_size=10) as verifier:
        assert list(verifier.verify(contacts)) == [Verdict.VALID] * 25
    sizes = sorted(len(body["items"]) for body in server.bodies)
    assert sizes == [5, 10, 10]
    sent = sorted(item["value"] for body in server.bodies for item in body["items"])
    assert sent == sorted(c.value for c in contacts)


def test_the_bound_holds_across_threads_calling_verify(server: VerificationServer) -> None:
    # Six callers, two slots: the others wait for a slot, which is not a failure (a pool
    # timeout far shorter than the wait proves they do not wait in the connection pool).
    server.default = Reply(delay_s=0.15)
    timeouts = Timeouts(connect_s=2.0, read_s=2.0, write_s=2.0, pool_s=0.05)
    with make_verifier(server.url, max_in_flight=2, timeouts=timeouts) as verifier:
        results: list[list[Verdict]] = []
        lock = threading.Lock()

        def call(i: int) -> None:
            verdicts = list(verifier.verify(emails(f"caller{i}")))
            with lock:
                results.append(verdicts)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert results == [[Verdict.VALID]] * 6
    assert server.requests == 6
    assert server.max_in_flight == 2


# -- vendor dialects -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "verdict"),
    [
        ({"status": "valid"}, Verdict.VALID),
        ({"status": "invalid", "sub_status": "mailbox_not_found"}, Verdict.INVALID),
        ({"status": "catch-all"}, Verdict.CATCH_ALL),
        ({"status": "unknown", "sub_status": "timeout_exceeded"}, Verdict.UNKNOWN),
        ({"status": "spamtrap"}, Verdict.INVALID),
        ({"status": "abuse"}, Verdict.INVALID),
        ({"status": "do_not_mail", "sub_status": "role_based"}, Verdict.INVALID),
        ({"status": "do_not_mail", "sub_status": "disposable"}, Verdict.DISPOSABLE),
        ({"status": "Valid"}, Verdict.VALID),
        ({"status": "something_new"}, Verdict.UNKNOWN),
    ],
)
def test_vendor_status_family(result: dict[str, Any], verdict: Verdict) -> None:
    assert vendor_status_evidence(result).verdict() is verdict


@pytest.mark.parametrize(
    ("result", "verdict"),
    [
        ({"result": "deliverable", "accept_all": False, "disposable": False}, Verdict.VALID),
        ({"result": "deliverable", "accept_all": True}, Verdict.CATCH_ALL),
        ({"result": "deliverable", "disposable": True}, Verdict.DISPOSABLE),
        ({"result": "undeliverable", "accept_all": True}, Verdict.INVALID),
        ({"result": "risky", "accept_all": True}, Verdict.CATCH_ALL),
        ({"result": "risky", "disposable": True}, Verdict.DISPOSABLE),
        ({"result": "risky", "reason": "low_quality"}, Verdict.UNKNOWN),
        ({"result": "unknown", "reason": "timeout"}, Verdict.UNKNOWN),
        ({"state": "deliverable"}, Verdict.VALID),
    ],
)
def test_vendor_result_family(result: dict[str, Any], verdict: Verdict) -> None:
    assert vendor_result_evidence(result).verdict() is verdict


def test_vendor_checks_are_composed_in_the_core() -> None:
    # A vendor's positive answer is read as three passing checks, nothing more.
    assert vendor_status_evidence({"status": "valid"}).checks == (CheckResult.PASS,) * 3
    assert vendor_result_evidence({"result": "risky"}).checks[1] is CheckResult.UNKNOWN


@pytest.mark.parametrize(
    ("dialect", "answers"),
    [
        (
            Dialect.VENDOR_STATUS,
            [{"status": "valid"}, {"status": "invalid"}, {"status": "catch-all"}],
        ),
        (
            Dialect.VENDOR_RESULT,
            [
                {"result": "deliverable", "accept_all": False},
                {"result": "undeliverable"},
                {"result": "risky", "accept_all": True},
            ],
        ),
    ],
)
def test_vendor_dialects_over_http(
    server: VerificationServer, dialect: Dialect, answers: list[dict[str, Any]]
) -> None:
    contacts = [*emails("ann", "bob", "cy"), Contact.mobile("+14155552671")]
    echo = "address" if dialect is Dialect.VENDOR_STATUS else "email"
    server.answers = {
        c.value: {echo: c.value.upper(), **a} for c, a in zip(contacts, answers, strict=False)
    }
    with make_verifier(server.url, dialect=dialect) as verifier:
        verdicts = verifier.verify(contacts)
    assert list(verdicts) == [Verdict.VALID, Verdict.INVALID, Verdict.CATCH_ALL, Verdict.VALID]


def test_a_vendor_result_for_another_address_is_unknown() -> None:
    (ann,) = emails("ann")
    result = {"address": "bob@corp.example", "status": "valid"}
    assert read_result(ann, result, Dialect.VENDOR_STATUS) is Verdict.UNKNOWN
    assert read_result(ann, {"status": "valid"}, Dialect.VENDOR_STATUS) is Verdict.VALID


# -- construction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"max_in_flight": 0}, {"chunk_size": 0}, {"chunk_size": True}],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        HttpVerifier("http://127.0.0.1:9", **kwargs)


def test_bad_urls_and_policies_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        HttpVerifier("ftp://127.0.0.1/")
    with pytest.raises(InvalidRequest):
        RetryPolicy(max_attempts=0)
    with pytest.raises(InvalidRequest):
        Timeouts(read_s=0)
    with pytest.raises(InvalidRequest):
        CircuitBreaker(failure_threshold=0)


# -- phone numbers at the boundary ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("020 7946 0958", "GB", "+442079460958"),
        ("07700 900123", "GB", "+447700900123"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("415.555.2671", "us", "+14155552671"),
        ("+49 30 123456", "US", "+4930123456"),  # international form ignores the region
        ("0049 30 123456", "FR", "+4930123456"),  # so does an international prefix
        ("  +1 415 555 2671  ", "GB", "+14155552671"),
    ],
)
def test_parse_phone_gives_e164(raw: str, region: str, e164: str) -> None:
    contact = parse_phone(raw, region)
    assert contact == Contact(Channel.MOBILE, e164)


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "hello", "12", "+999 1234567", "+44 20 7946 0958 ext. 123", "1" * 80],
)
def test_parse_phone_refuses_garbage(raw: str) -> None:
    with pytest.raises(MalformedContact):
        parse_phone(raw, "GB")


def test_parse_phone_refuses_an_unknown_region() -> None:
    with pytest.raises(InvalidRequest):
        parse_phone("020 7946 0958", "XX")
