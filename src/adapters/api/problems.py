"""Errors of the HTTP API as RFC 9457 problem details (`application/problem+json`).

Every problem has a stable `type` URI: `https://credits-domain.dev/problems/<slug>`. The
slug names the error class and never changes once published; clients branch on `type`,
never on `title` or `detail` (which are for people). The URIs are identifiers: nothing
needs to be served at them (RFC 9457 section 3.1.1 allows that).

The table `DOMAIN_PROBLEMS` maps each domain error class (credits_domain.errors) to its
slug and status. The status codes follow one rule:
- 400: the request cannot be read (malformed JSON, a malformed header);
- 401: no API key, an unknown key or a revoked key;
- 404: no such route, or no such account *for this key* (a key of account A asking for
  account B gets exactly the answer of an account that does not exist, so account ids
  do not leak);
- 405, 415: the method or the content type of the request is not served;
- 413: the body is above the documented limit in bytes (it is not read further);
- 422: the request reads fine but a value is wrong (wrong type, malformed contact, more
  contacts than the batch limit, an unknown query parameter, an unknown plan: a plan is
  a value of the body, not a resource of the URL);
- 409: the request is well-formed but conflicts with the account's state (already
  subscribed, paused, lapsed, idempotency key reused or in flight, hold expired);
- 500: a bug, or the storage refused an operation (a schema out of step); never the
  answer to bad input; the detail says nothing of the storage's internals (it is logged);
- 503: the storage cannot be reached right now, or the server has too many requests in
  flight (`too-many-requests`); `Retry-After` says when to try again.
"""

from __future__ import annotations

import logging
from typing import Annotated, Final

import attrs
import msgspec
from msgspec import UNSET, Meta, UnsetType
from starlette.responses import Response

from credits_domain import errors

log = logging.getLogger(__name__)

PROBLEM_BASE: Final = "https://credits-domain.dev/problems/"
PROBLEM_MEDIA_TYPE: Final = "application/problem+json"


def problem_type(slug: str) -> str:
    return PROBLEM_BASE + slug


@attrs.frozen(kw_only=True)
class ProblemKind:
    slug: str
    status: int
    title: str


def _kind(slug: str, status: int, title: str) -> ProblemKind:
    return ProblemKind(slug=slug, status=status, title=title)


# Problems of the HTTP boundary itself (no domain error behind them).
MALFORMED_JSON = _kind("malformed-json", 400, "The request body is not valid JSON")
MALFORMED_HEADER = _kind("malformed-header", 400, "A request header is malformed")
UNAUTHORIZED = _kind("unauthorized", 401, "Missing, unknown or revoked API key")
NOT_FOUND = _kind("not-found", 404, "No such resource")
METHOD_NOT_ALLOWED = _kind("method-not-allowed", 405, "Method not allowed on this resource")
BODY_TOO_LARGE = _kind("body-too-large", 413, "The request body is too large")
UNSUPPORTED_MEDIA_TYPE = _kind(
    "unsupported-media-type", 415, "The request body must be application/json"
)
INTERNAL_ERROR = _kind("internal-error", 500, "Internal server error")
TOO_MANY_REQUESTS = _kind(
    "too-many-requests", 503, "The server has too many requests in flight; retry"
)

# One entry per domain error class; the most specific class wins (looked up along the MRO).
DOMAIN_PROBLEMS: Final[dict[type[errors.CreditsError], ProblemKind]] = {
    errors.MalformedContact: _kind("malformed-contact", 422, "A contact datum is malformed"),
    errors.BatchTooLarge: _kind("batch-too-large", 422, "Too many contacts in one request"),
    errors.InvalidRequest: _kind("invalid-request", 422, "The request has an invalid value"),
    errors.InvalidPlan: _kind("invalid-plan", 422, "The plan definition is invalid"),
    errors.UnknownPlan: _kind("unknown-plan", 422, "No plan of that name"),
    errors.UnknownAccount: _kind("unknown-account", 404, "No such account"),
    errors.UnknownMember: _kind("unknown-member", 422, "No such team member; add them first"),
    errors.NoActiveSubscription: _kind(
        "no-active-subscription", 409, "The account has no active subscription"
    ),
    errors.AlreadySubscribed: _kind(
        "already-subscribed", 409, "The account already has a subscription"
    ),
    errors.SubscriptionPaused: _kind("subscription-paused", 409, "The subscription is paused"),
    errors.IdempotencyKeyReused: _kind(
        "idempotency-key-reused", 409, "The idempotency key was used for another request"
    ),
    errors.RequestInFlight: _kind(
        "request-in-flight", 409, "The request with this idempotency key is still in flight"
    ),
    errors.HoldExpired: _kind("hold-expired", 409, "The request's hold expired; nothing charged"),
    errors.ConcurrencyConflict: _kind(
        "concurrency-conflict", 409, "The account was changed concurrently; retry"
    ),
    errors.NotCharged: _kind("not-charged", 422, "The datum was never charged to this account"),
    errors.AlreadyRefunded: _kind("already-refunded", 409, "The datum was refunded already"),
    errors.RefundWindowClosed: _kind(
        "refund-window-closed", 409, "The bounce was reported after the refund window"
    ),
    errors.NotAnEmail: _kind("not-an-email", 422, "Only emails bounce"),
    errors.RefundRefused: _kind("refund-refused", 409, "The bounce cannot be refunded"),
    errors.StorageUnavailable: _kind(
        "storage-unavailable", 503, "The storage is unavailable for a moment; retry"
    ),
    errors.StorageError: _kind("storage-error", 500, "The storage failed; nothing was done"),
    errors.UnknownApiKey: _kind("unknown-api-key", 404, "No such API key"),
    errors.CreditsError: _kind("credits-error", 409, "The request was refused"),
}

# Every kind the API can answer with: the OpenAPI document enumerates their URIs.
ALL_KINDS: Final[tuple[ProblemKind, ...]] = (
    MALFORMED_JSON,
    MALFORMED_HEADER,
    UNAUTHORIZED,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    BODY_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    INTERNAL_ERROR,
    *DOMAIN_PROBLEMS.values(),
)

# The document lists every type URI, so that a client knows all it may have to handle.
PROBLEM_TYPES: Final = sorted({problem_type(kind.slug) for kind in ALL_KINDS})

# Errors whose condition passes with time: the answer says when to try again (seconds).
RETRY_AFTER_S: Final = {
    "request-in-flight": 1,
    "concurrency-conflict": 1,
    "storage-unavailable": 5,
    "too-many-requests": 1,
}


def kind_of(error: errors.CreditsError) -> ProblemKind:
    for cls in type(error).__mro__:
        kind = DOMAIN_PROBLEMS.get(cls)
        if kind is not None:
            return kind
    raise AssertionError(f"invariant broken: {type(error).__name__} has no problem kind")


class ProblemError(Exception):
    """Raised inside the HTTP layer to answer with a problem; carries no domain state."""

    def __init__(
        self, kind: ProblemKind, detail: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.headers = headers or {}


class Problem(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """RFC 9457 problem details. Branch on `type`; title and detail are for people."""

    type: Annotated[str, Meta(extra_json_schema={"enum": PROBLEM_TYPES})]
    title: str
    status: Annotated[int, Meta(ge=400, le=599)]
    detail: str
    instance: str | UnsetType = UNSET


_ENCODER: Final = msgspec.json.Encoder()


def problem_body(kind: ProblemKind, detail: str, instance: str | None = None) -> Problem:
    return Problem(
        type=problem_type(kind.slug),
        title=kind.title,
        status=kind.status,
        # A detail may quote client input; an unpaired surrogate in it must not turn the
        # answer into an unrendered 500 outside this shape.
        detail=detail.encode("utf-8", "backslashreplace").decode("utf-8"),
        instance=UNSET if instance is None else instance,
    )


def problem_response(
    kind: ProblemKind,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    all_headers = dict(headers or {})
    retry_after_s = RETRY_AFTER_S.get(kind.slug)
    if retry_after_s is not None:
        all_headers.setdefault("Retry-After", str(retry_after_s))
    if kind.status == 401:
        all_headers.setdefault("WWW-Authenticate", 'Bearer realm="credits"')
    return Response(
        _ENCODER.encode(problem_body(kind, detail, instance)),
        status_code=kind.status,
        headers=all_headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def domain_problem(error: errors.CreditsError, instance: str | None = None) -> Response:
    kind = kind_of(error)
    if isinstance(error, errors.StorageError):
        # The storage's own words may name tables and hosts: they go to the log only.
        log.warning("storage: %s (%s)", error, instance)
        return problem_response(kind, kind.title, instance=instance)
    if isinstance(error, errors.RequestInFlight):
        # Until the first attempt's lease lapses: then a retry takes the request over.
        headers = {"Retry-After": str(error.retry_after_s)}
        return problem_response(kind, str(error), instance=instance, headers=headers)
    return problem_response(kind, str(error), instance=instance)
