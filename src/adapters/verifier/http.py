"""HttpVerifier: the Verifier port over HTTP, resilient, with triple verification (R10, R11).

The wire protocol (ours)
------------------------
One endpoint, ``POST {base_url}/v1/verify``, JSON both ways (UTF-8)::

    request:  {"items": [{"channel": "email",  "value": "ann@corp.com"},
                         {"channel": "mobile", "value": "+447700900123"}]}
    response: {"results": [
                 {"value": "ann@corp.com",
                  "checks": {"syntax": "pass", "mailbox": "pass", "second_provider": "pass"},
                  "catch_all": false, "disposable": false},
                 {"value": "+447700900123", "line_type": "mobile", "reachable": true}]}

- Values are sent in canonical form (R12: email trimmed and lower-cased, phone E.164).
- ``results`` has exactly one entry per item, in request order; each echoes ``value``.
- Email: ``checks`` holds the three independent checks of R11, each ``"pass"``,
  ``"fail"`` or ``"unknown"``; ``catch_all`` and ``disposable`` are booleans.
- Mobile: ``line_type`` is ``mobile | landline | voip | invalid | unknown`` and
  ``reachable`` is ``true | false | null`` (the real-time check of R11).
- A service that cannot judge one item answers ``{"value": ..., "error": "why"}`` for it.
- Status 200 carries an answer. 429, 502, 503 and 504 mean "try again" (with an optional
  ``Retry-After``); any other status means the call failed.

Verdicts are composed in the core, by ``credits_domain.email_verdict`` (VALID only when
all three checks pass; catch-all -> CATCH_ALL) and ``credits_domain.mobile_verdict``
(landline, invalid, unreachable -> not VALID). The adapter only reads evidence.

Vendor dialects
---------------
``Dialect.VENDOR_STATUS`` and ``Dialect.VENDOR_RESULT`` read email results written in
the vocabularies of the two well-known vendor families (same request, same
``{"results": [...]}`` envelope, mobiles as above); see ``vendor_status_evidence`` and
``vendor_result_evidence`` for the exact tables. A vendor's positive answer ("valid",
"deliverable") is the outcome of the vendor's own multi-step pipeline (syntax and
domain, SMTP mailbox, its secondary checks), so it is read as three passing checks:
under a vendor dialect, R11's triple check is delegated to the vendor.

Resilience: every failure is UNKNOWN, never an exception (R10)
--------------------------------------------------------------
- Explicit ``httpx.Timeout`` for connect, read, write and pool.
- Bounded retries with exponential backoff and full jitter, for transient failures only:
  connection failures (the request never reached the service), 429/502/503/504 (honouring
  ``Retry-After`` up to a cap; beyond the cap the call gives up rather than call early).
  A read timeout is not retried by default (``RetryPolicy.retry_read_timeouts``): a
  slow service is already overloaded, and verification may run an expensive SMTP probe.
  An answer is final: a definite "invalid" is never retried.
- At most ``max_in_flight`` requests in flight per verifier (over all threads calling
  it); a batch is split into chunks of ``chunk_size`` sent concurrently up to that bound.
- A circuit breaker: after ``failure_threshold`` consecutive failed requests it opens and
  calls fail fast (UNKNOWN, no request) for ``reset_after_s``; then one probe request is
  let through (half-open), and its outcome closes or re-opens the breaker.
- Garbage JSON, a wrong number of results, a result for another value: UNKNOWN for the
  items concerned. The service turns UNKNOWN into "not charged, hold released" (R10, R16).
"""

from __future__ import annotations

import email.utils
import enum
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import attrs
import httpx

from credits_domain import (
    Channel,
    CheckResult,
    Contact,
    InvalidRequest,
    LineType,
    Verdict,
    email_verdict,
    mobile_verdict,
)
from credits_domain.errors import invariant

log = logging.getLogger(__name__)

VERIFY_PATH = "/v1/verify"
EMAIL_CHECKS = ("syntax", "mailbox", "second_provider")  # the three checks of R11
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# An answer is small; a body beyond this is not an answer (and is never read whole).
MAX_RESPONSE_BASE_BYTES = 64 * 1024
MAX_RESPONSE_BYTES_PER_ITEM = 4 * 1024


def _positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidRequest(f"{attribute.name} must be > 0, got {value!r}")
    if not math.isfinite(value):
        raise InvalidRequest(f"{attribute.name} must be finite, got {value!r}")


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"{attribute.name} must be a whole number >= 1, got {value!r}")


# -- settings ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Timeouts:
    """Per-request limits, in seconds, handed to httpx as an explicit `httpx.Timeout`."""

    connect_s: float = attrs.field(default=2.0, validator=_positive)
    read_s: float = attrs.field(default=10.0, validator=_positive)
    write_s: float = attrs.field(default=5.0, validator=_positive)
    pool_s: float = attrs.field(default=5.0, validator=_positive)

    def to_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_s, read=self.read_s, write=self.write_s, pool=self.pool_s
        )


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Bounded retries of transient failures, with exponential backoff and full jitter.

    `max_attempts` counts the first request too. Before retry k (k = 1, 2, ...) the
    client waits uniform(0, min(max_delay_s, base_delay_s * 2**(k-1))) seconds, or what
    the service's Retry-After asks if that is at most `max_retry_after_s` (beyond it, the
    call gives up: calling earlier than asked would only add load).
    """

    max_attempts: int = attrs.field(default=3, validator=_positive_int)
    base_delay_s: float = attrs.field(default=0.2, validator=_positive)
    max_delay_s: float = attrs.field(default=5.0, validator=_positive)
    max_retry_after_s: float = attrs.field(default=10.0, validator=_positive)
    retry_read_timeouts: bool = False

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        """Full jitter for retry number `retry` (1-based)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1))
        return rng.uniform(0.0, ceiling)


class Dialect(enum.Enum):
    """How the email results of a response are worded (requests are always ours)."""

    NATIVE = "native"  # our protocol: three named checks + catch_all + disposable
    VENDOR_STATUS = "vendor_status"  # valid/invalid/catch-all/unknown/spamtrap/abuse/do_not_mail
    VENDOR_RESULT = "vendor_result"  # deliverable/undeliverable/risky/unknown + accept_all


# -- circuit breaker -----------------------------------------------------------------------


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops calling a failing service for a while. Thread-safe.

    CLOSED: requests pass; `failure_threshold` consecutive failures open it.
    OPEN: `allow()` is False (fail fast) until `reset_after_s` have passed on the
    monotonic clock since it opened; then the first `allow()` turns it HALF_OPEN.
    HALF_OPEN: exactly one probe request is allowed; its success closes the breaker,
    its failure opens it again for another `reset_after_s`.
    Every `allow()` that returned True must be followed by one `record_success()` or
    `record_failure()`.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_after_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(failure_threshold, bool) or failure_threshold < 1:
            raise InvalidRequest(f"failure_threshold must be >= 1, got {failure_threshold!r}")
        if not reset_after_s > 0 or not math.isfinite(reset_after_s):
            raise InvalidRequest(f"reset_after_s must be > 0, got {reset_after_s!r}")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._state

    def allow(self) -> bool:
        """May a request be sent now? (A True answer in HALF_OPEN is the probe.)"""
        with self._lock:
            if self._state is CircuitState.CLOSED:
                return True
            if self._state is CircuitState.OPEN:
                if self._monotonic() - self._opened_at < self.reset_after_s:
                    return False
                self._state = CircuitState.HALF_OPEN
                self._probe_in_flight = False
            if self._probe_in_flight:
                return False
            self._probe_in_flight = True
            return True

    def record_success(self) -> None:
        with self._lock:
            self._state = CircuitState.CLOSED
            self._failures = 0
            self._probe_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._state is CircuitState.HALF_OPEN or self._failures >= self.failure_threshold:
                if self._state is not CircuitState.OPEN:
                    log.warning(
                        "verification service: circuit opens after %d consecutive failures",
                        self._failures,
                    )
                self._state = CircuitState.OPEN
                self._opened_at = self._monotonic()
                self._probe_in_flight = False


# -- reading answers -----------------------------------------------------------------------


class MalformedAnswer(ValueError):
    """A response (or one result in it) does not follow the protocol."""


@attrs.frozen(kw_only=True)
class EmailEvidence:
    """What a service said about one email, before the core composes the verdict (R11)."""

    checks: tuple[CheckResult, ...]
    catch_all: bool = False
    disposable: bool = False

    def verdict(self) -> Verdict:
        return email_verdict(self.checks, catch_all=self.catch_all, disposable=self.disposable)


def _flag(result: Mapping[str, Any], name: str, *, required: bool) -> bool:
    value = result.get(name)
    if value is None and not required:
        return False
    if not isinstance(value, bool):
        raise MalformedAnswer(f"{name!r} must be a boolean, got {value!r}")
    return value


_CHECK_WORDS = {c.value: c for c in CheckResult}


def native_email_evidence(result: Mapping[str, Any]) -> EmailEvidence:
    """Our protocol. A missing or unrecognised check counts as UNKNOWN, never as a pass."""
    checks = result.get("checks")
    if not isinstance(checks, Mapping):
        raise MalformedAnswer(f"'checks' must be an object, got {checks!r}")
    found = tuple(
        _CHECK_WORDS.get(word, CheckResult.UNKNOWN)
        if isinstance(word, str)
        else CheckResult.UNKNOWN
        for word in (checks.get(name) for name in EMAIL_CHECKS)
    )
    return EmailEvidence(
        checks=found,
        catch_all=_flag(result, "catch_all", required=True),
        disposable=_flag(result, "disposable", required=True),
    )


_PASS3 = (CheckResult.PASS, CheckResult.PASS, CheckResult.PASS)
_UNKNOWN3 = (CheckResult.UNKNOWN, CheckResult.UNKNOWN, CheckResult.UNKNOWN)
# Syntax and domain checked, the mailbox not confirmed.
_MAILBOX_UNCONFIRMED = (CheckResult.PASS, CheckResult.UNKNOWN, CheckResult.UNKNOWN)
# The vendor refuses the mailbox as a contact: a definite "no", never billable.
_REFUSED = (CheckResult.PASS, CheckResult.FAIL, CheckResult.UNKNOWN)


def vendor_status_evidence(result: Mapping[str, Any]) -> EmailEvidence:
    """The "status" family (`status`, `sub_status`):

    valid -> VALID; invalid -> INVALID; catch-all -> CATCH_ALL; unknown -> UNKNOWN;
    spamtrap, abuse -> INVALID (a trap or a complainer is no contact to sell);
    do_not_mail -> DISPOSABLE when sub_status is "disposable", else INVALID (role-based,
    toxic, suppressed); anything else -> UNKNOWN.
    """
    status = result.get("status")
    sub_status = result.get("sub_status")
    if not isinstance(status, str):
        raise MalformedAnswer(f"'status' must be a string, got {status!r}")
    status = status.strip().lower().replace("_", "-")
    if status == "valid":
        return EmailEvidence(checks=_PASS3)
    if status == "invalid":
        return EmailEvidence(checks=(CheckResult.FAIL, CheckResult.FAIL, CheckResult.UNKNOWN))
    if status in ("catch-all", "catchall"):
        return EmailEvidence(checks=_MAILBOX_UNCONFIRMED, catch_all=True)
    if status in ("spamtrap", "abuse"):
        return EmailEvidence(checks=_REFUSED)
    if status == "do-not-mail":
        if isinstance(sub_status, str) and sub_status.strip().lower() == "disposable":
            return EmailEvidence(checks=_MAILBOX_UNCONFIRMED, disposable=True)
        return EmailEvidence(checks=_REFUSED)
    return EmailEvidence(checks=_UNKNOWN3)


def vendor_result_evidence(result: Mapping[str, Any]) -> EmailEvidence:
    """The "result" family (`result`, or `state`, with `accept_all` and `disposable`):

    deliverable -> VALID, or CATCH_ALL with accept_all, DISPOSABLE with disposable;
    undeliverable -> INVALID; risky -> CATCH_ALL with accept_all, DISPOSABLE with
    disposable, else UNKNOWN; unknown (and anything else) -> UNKNOWN.
    """
    word = result.get("result", result.get("state"))
    if not isinstance(word, str):
        raise MalformedAnswer(f"'result' must be a string, got {word!r}")
    accept_all = _flag(result, "accept_all", required=False)
    disposable = _flag(result, "disposable", required=False)
    word = word.strip().lower()
    if word == "deliverable":
        return EmailEvidence(checks=_PASS3, catch_all=accept_all, disposable=disposable)
    if word == "undeliverable":
        return EmailEvidence(checks=(CheckResult.PASS, CheckResult.FAIL, CheckResult.UNKNOWN))
    if word == "risky":
        return EmailEvidence(
            checks=_MAILBOX_UNCONFIRMED, catch_all=accept_all, disposable=disposable
        )
    return EmailEvidence(checks=_UNKNOWN3, catch_all=accept_all, disposable=disposable)


_EMAIL_READERS: dict[Dialect, Callable[[Mapping[str, Any]], EmailEvidence]] = {
    Dialect.NATIVE: native_email_evidence,
    Dialect.VENDOR_STATUS: vendor_status_evidence,
    Dialect.VENDOR_RESULT: vendor_result_evidence,
}
# Which key echoes the value, per dialect; in our protocol the echo is required.
_ECHO_KEYS = {
    Dialect.NATIVE: ("value",),
    Dialect.VENDOR_STATUS: ("value", "address", "email"),
    Dialect.VENDOR_RESULT: ("value", "email", "address"),
}
_LINE_TYPES = {t.value: t for t in LineType}


def mobile_evidence_verdict(result: Mapping[str, Any]) -> Verdict:
    """Real-time mobile check (R11), composed by the core's `mobile_verdict`."""
    word = result.get("line_type")
    if not isinstance(word, str):
        raise MalformedAnswer(f"'line_type' must be a string, got {word!r}")
    reachable = result.get("reachable")
    if reachable is not None and not isinstance(reachable, bool):
        raise MalformedAnswer(f"'reachable' must be a boolean or null, got {reachable!r}")
    line_type = _LINE_TYPES.get(word.strip().lower(), LineType.UNKNOWN)
    return mobile_verdict(line_type, reachable=reachable)


def _echo_matches(contact: Contact, result: Mapping[str, Any], dialect: Dialect) -> bool:
    keys = _ECHO_KEYS[dialect]
    echoed = next((result[k] for k in keys if k in result), None)
    if echoed is None:
        return dialect is not Dialect.NATIVE
    if not isinstance(echoed, str):
        return False
    if contact.channel is Channel.EMAIL:
        return echoed.strip().lower() == contact.value
    return echoed.strip() == contact.value


def read_result(contact: Contact, result: object, dialect: Dialect) -> Verdict:
    """One item's verdict; anything unreadable about it is UNKNOWN (R10)."""
    if not isinstance(result, Mapping):
        return Verdict.UNKNOWN
    try:
        if not _echo_matches(contact, result, dialect):
            log.warning("verification service answered for another value than %s", contact)
            return Verdict.UNKNOWN
        if result.get("error") is not None:
            return Verdict.UNKNOWN
        if contact.channel is Channel.EMAIL:
            return _EMAIL_READERS[dialect](result).verdict()
        return mobile_evidence_verdict(result)
    except MalformedAnswer as exc:
        log.warning("verification service: malformed result for %s: %s", contact, exc)
        return Verdict.UNKNOWN


def read_answer(contacts: Sequence[Contact], body: bytes, dialect: Dialect) -> list[Verdict]:
    """All verdicts of one response; raises MalformedAnswer when the envelope is wrong."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise MalformedAnswer(f"not JSON: {exc}") from exc
    results = document.get("results") if isinstance(document, dict) else None
    if not isinstance(results, list):
        raise MalformedAnswer("no 'results' list")
    if len(results) != len(contacts):
        raise MalformedAnswer(f"{len(results)} results for {len(contacts)} items")
    return [read_result(c, r, dialect) for c, r in zip(contacts, results, strict=True)]


def retry_after_s(header: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), or None."""
    if header is None:
        return None
    text = header.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


# -- the client ----------------------------------------------------------------------------


@attrs.frozen
class _Answer:
    verdicts: list[Verdict]


@attrs.frozen(kw_only=True)
class _Failure:
    why: str
    retryable: bool
    retry_after_s: float | None = None


def _base_url(base_url: str) -> httpx.URL:
    """The service's URL, refused here rather than failing every request later."""
    refused = InvalidRequest(
        f"base_url must be an http(s) URL with a host and a port from 1 to 65535, got {base_url!r}"
    )
    if not isinstance(base_url, str):
        raise refused
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as error:
        raise refused from error
    if url.scheme not in ("http", "https") or not url.host:
        raise refused
    if url.port is not None and not 1 <= url.port <= 65535:
        raise refused
    return url


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Extra request headers: ASCII, and no line break that would smuggle in another."""
    for name, value in headers.items():
        for text in (name, value):
            if not isinstance(text, str) or not text.isascii() or "\r" in text or "\n" in text:
                raise InvalidRequest(
                    f"a verifier header must be ASCII text without line breaks, got "
                    f"{name!r}: {value!r}"
                )
    return dict(headers)


class HttpVerifier:
    """The Verifier port over HTTP (see the module docstring for protocol and behaviour).

    Safe to share between threads; `close()` it (or use it as a context manager) to free
    its connections and worker threads.
    """

    def __init__(
        self,
        base_url: str,
        *,
        dialect: Dialect = Dialect.NATIVE,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        max_in_flight: int = 8,
        chunk_size: int = 100,
        headers: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        url = _base_url(base_url)
        for name, value in (("max_in_flight", max_in_flight), ("chunk_size", chunk_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequest(f"{name} must be a whole number >= 1, got {value!r}")
        self.dialect = dialect
        self.timeouts = timeouts if timeouts is not None else Timeouts()
        self.retry = retry if retry is not None else RetryPolicy()
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.max_in_flight = max_in_flight
        self.chunk_size = chunk_size
        self._url = url.join(VERIFY_PATH)
        # Thread-safe: random.Random's methods hold the GIL for each draw.
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep
        self._wall_clock = wall_clock
        # The semaphore is the bound on requests in flight, for every thread calling
        # verify(); the pool only needs as many connections, so it never waits itself.
        self._in_flight = threading.BoundedSemaphore(max_in_flight)
        self._client = httpx.Client(
            timeout=self.timeouts.to_httpx(),
            limits=httpx.Limits(
                max_connections=max_in_flight, max_keepalive_connections=max_in_flight
            ),
            headers=_headers(headers or {}),
        )
        self._executor = ThreadPoolExecutor(
            max_workers=max_in_flight, thread_name_prefix="http-verifier"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._client.close()

    def verify(self, contacts: Sequence[Contact]) -> Sequence[Verdict]:
        """One verdict per contact, in order; failures are UNKNOWN, never raised (R10)."""
        batch = tuple(contacts)
        chunks = [batch[i : i + self.chunk_size] for i in range(0, len(batch), self.chunk_size)]
        if len(chunks) <= 1:
            answers = [self._verify_chunk(chunk) for chunk in chunks]
        else:
            answers = list(self._executor.map(self._verify_chunk, chunks))
        verdicts = [verdict for answer in answers for verdict in answer]
        invariant(len(verdicts) == len(batch), "one verdict per contact, in order")
        return verdicts

    def _verify_chunk(self, chunk: tuple[Contact, ...]) -> list[Verdict]:
        unknown = [Verdict.UNKNOWN] * len(chunk)
        body = json.dumps(
            {"items": [{"channel": c.channel.value, "value": c.value} for c in chunk]}
        ).encode()
        for attempt in range(1, self.retry.max_attempts + 1):
            if not self.breaker.allow():
                return unknown  # fail fast: the service is failing (open circuit)
            try:
                outcome = self._attempt(chunk, body)
            except BaseException:
                self.breaker.record_failure()  # a probe must never stay unreported
                raise
            if isinstance(outcome, _Answer):
                self.breaker.record_success()
                return outcome.verdicts
            self.breaker.record_failure()
            log.warning(
                "verification of %d items failed (attempt %d of %d): %s",
                len(chunk),
                attempt,
                self.retry.max_attempts,
                outcome.why,
            )
            if not outcome.retryable or attempt == self.retry.max_attempts:
                return unknown
            if outcome.retry_after_s is not None:
                if outcome.retry_after_s > self.retry.max_retry_after_s:
                    return unknown  # asked to wait longer than we may: give up, call no earlier
                delay_s = outcome.retry_after_s
            else:
                delay_s = self.retry.backoff_s(attempt, self._rng)
            self._sleep(delay_s)
        return unknown

    def _attempt(self, chunk: tuple[Contact, ...], body: bytes) -> _Answer | _Failure:
        limit = MAX_RESPONSE_BASE_BYTES + MAX_RESPONSE_BYTES_PER_ITEM * len(chunk)
        with self._in_flight:
            try:
                with self._client.stream(
                    "POST",
                    self._url,
                    content=body,
                    headers={"content-type": "application/json", "accept": "application/json"},
                ) as response:
                    status = response.status_code
                    if status != 200:
                        header = response.headers.get("retry-after")
                        return _Failure(
                            why=f"status {status}",
                            retryable=status in RETRYABLE_STATUSES,
                            retry_after_s=retry_after_s(header, self._wall_clock()),
                        )
                    data = bytearray()
                    for piece in response.iter_bytes():
                        data += piece
                        if len(data) > limit:
                            return _Failure(why=f"answer over {limit} bytes", retryable=False)
            except httpx.ReadTimeout as exc:
                return _Failure(
                    why=f"read timeout: {exc!r}", retryable=self.retry.retry_read_timeouts
                )
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                # Connect/write/pool timeouts and broken connections: transient.
                return _Failure(why=f"transport: {exc!r}", retryable=True)
            except httpx.HTTPError as exc:  # other protocol or decoding errors: not transient
                return _Failure(why=f"http: {exc!r}", retryable=False)
        try:
            return _Answer(read_answer(chunk, bytes(data), self.dialect))
        except MalformedAnswer as exc:
            return _Failure(why=f"malformed answer: {exc}", retryable=False)
