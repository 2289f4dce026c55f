"""The OpenAPI 3.1 document of the HTTP API, generated from the wire shapes.

Every request and answer body's schema is the JSON Schema of its shape in `shapes.py`
(or `problems.Problem`), made by `msgspec.json.schema_components`; this module adds what
is not a body: paths, parameters, headers, status codes and which problems each answers.
The document of the default limits is kept in tests/snapshots/openapi.json, and a test
compares the two, so that any change of the public contract shows as a reviewed diff
(regenerate with `python -m adapters.api > tests/snapshots/openapi.json`).
tests/test_http_schemathesis.py checks that the served answers conform to it.
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgspec

from adapters.api import shapes
from adapters.api.problems import PROBLEM_MEDIA_TYPE, Problem
from adapters.api.shapes import RequestShapes
from credits_domain.limits import (
    DEFAULT_STATEMENT_PAGE,
    MAX_ACCOUNT_ID_LENGTH,
    MAX_EVENTS_PAGE,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_PERIOD_INDEX,
    MAX_STATEMENT_CURSOR,
    MAX_STATEMENT_PAGE,
)

API_VERSION: Final = "1.0.0"
REF_TEMPLATE: Final = "#/components/schemas/{name}"

Json = dict[str, Any]


_STATUS_TEXT: Final = {
    400: "Malformed JSON body or header (malformed-json, malformed-header)",
    401: "No API key, an unknown key or a revoked key (unauthorized)",
    404: "No such account for this key (unknown-account): the same for an account that "
    "does not exist and for another account's",
    409: "Conflicts with the account's state (already-subscribed, no-active-subscription, "
    "subscription-paused, idempotency-key-reused, request-in-flight, hold-expired, "
    "concurrency-conflict, already-refunded, refund-window-closed)",
    413: "The body is above the size limit (body-too-large)",
    415: "The body is not application/json (unsupported-media-type)",
    422: "A value is wrong (invalid-request, malformed-contact, batch-too-large, unknown-plan, "
    "not-charged, not-an-email); an unknown query parameter is refused too",
}


class _Schemas:
    """The component schemas of every body, and a `$ref` to each shape's."""

    def __init__(self, requests: RequestShapes) -> None:
        bodies: list[type[msgspec.Struct]] = [
            shapes.PlanRequest,
            shapes.ContactIn,
            requests.unlock,
            requests.export,
            requests.enrich,
            shapes.Subscription,
            shapes.PlanChangeResult,
            shapes.ChargeResult,
            shapes.LedgerEntry,
            shapes.Balance,
            shapes.PastBalance,
            shapes.Statement,
            shapes.TopUpRequest,
            shapes.TopUpResult,
            shapes.Guarantee,
            shapes.MemberRequest,
            shapes.AllowanceRequest,
            shapes.MemberAdded,
            shapes.MemberAllowance,
            shapes.MemberUsage,
            shapes.Events,
            shapes.LowBalanceThresholdRequest,
            shapes.LowBalanceThresholds,
            Problem,
        ]
        refs, self.components = msgspec.json.schema_components(bodies, ref_template=REF_TEMPLATE)
        self._refs = dict(zip(bodies, refs, strict=True))

    def ref(self, shape: type[msgspec.Struct]) -> Json:
        return dict(self._refs[shape])


def _problem(schemas: _Schemas, status: int) -> Json:
    response: Json = {
        "description": _STATUS_TEXT[status],
        "content": {PROBLEM_MEDIA_TYPE: {"schema": schemas.ref(Problem)}},
    }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    if status == 409:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds; sent for request-in-flight (what is left of the "
                "first attempt's lease) and concurrency-conflict.",
                "schema": {"type": "string"},
            }
        }
    return response


def _ok(description: str, schema: Json, headers: Json | None = None) -> Json:
    response: Json = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def _current_period() -> Json:
    """`?period=`: a billing period, by default the current one (R22, R25)."""
    return _int_query(
        "period",
        0,
        MAX_PERIOD_INDEX,
        "A billing period of the current subscription (0 is the first); absent: the current one.",
    )


def _operation(
    schemas: _Schemas,
    operation_id: str,
    summary: str,
    success: tuple[int, Json],
    problems: list[int],
    *,
    body: type[msgspec.Struct] | None = None,
    example: Json | None = None,
    parameters: list[Json] | None = None,
) -> Json:
    operation: Json = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {
            str(success[0]): success[1],
            **{str(status): _problem(schemas, status) for status in sorted(problems)},
        },
    }
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        media: Json = {"schema": schemas.ref(body)}
        if example is not None:
            media["example"] = example
        operation["requestBody"] = {"required": True, "content": {"application/json": media}}
    return operation


_IDEMPOTENCY: Final = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "R17: a repeat with the same key and payload answers the first answer, "
    "byte for byte, and charges nothing more (with the header Idempotent-Replayed: true); "
    "the same key with another payload is refused (409 idempotency-key-reused); a repeat "
    "while the first is still being verified is refused (409 request-in-flight, Retry-After: "
    "the seconds left of the first one's lease); once that lease has lapsed (the first one "
    "died), a repeat takes the request over and completes it, once. Keys are scoped to the "
    "account.",
    "schema": {"type": "string", "pattern": f"^[!-~]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}$"},
}

_TOP_UP_IDEMPOTENCY: Final = {
    **_IDEMPOTENCY,
    "description": "R17 for grants: a repeat with the same key and payload (credits and "
    "reason) answers the first answer, byte for byte, and grants nothing more (with the "
    "header Idempotent-Replayed: true); the same key with another payload is refused (409 "
    "idempotency-key-reused). Top-ups and charging requests share the account's keys.",
}

_REPLAYED: Final = {
    "Idempotent-Replayed": {
        "description": "'true' when this is the stored answer of an earlier request (R17).",
        "schema": {"type": "string", "enum": ["true"]},
    }
}

_BODY_PROBLEMS: Final = [400, 401, 404, 409, 413, 415, 422]
_READ_PROBLEMS: Final = [401, 404, 409]


def _int_query(name: str, low: int, high: int, description: str) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "minimum": low, "maximum": high},
    }


def openapi_document(requests: RequestShapes) -> Json:
    """The document an app with these request shapes serves at /openapi.json."""
    schemas = _Schemas(requests)
    charge_ok = _ok(
        "One item per contact, in request order",
        schemas.ref(shapes.ChargeResult),
        dict(_REPLAYED),
    )
    contacts_example = {
        "contacts": [
            {"channel": "email", "value": "Ann@Example.com"},
            {"channel": "mobile", "value": "+1 415 555 0100"},
        ]
    }
    subscription_ok = _ok("The subscription", schemas.ref(shapes.Subscription))
    account_path = "/v1/accounts/{account}"
    paths: Json = {
        f"{account_path}/subscription": {
            "post": _operation(
                schemas,
                "subscribe",
                "Subscribe to a plan: the first allowance is granted at once (R3, R6)",
                (
                    201,
                    _ok(
                        "Subscribed",
                        schemas.ref(shapes.Subscription),
                        {"Location": {"schema": {"type": "string"}}},
                    ),
                ),
                _BODY_PROBLEMS,
                body=shapes.PlanRequest,
                example={"plan": "boost"},
            ),
            "get": _operation(
                schemas,
                "getSubscription",
                "The subscription",
                (200, subscription_ok),
                _READ_PROBLEMS,
            ),
        },
        f"{account_path}/subscription/plan": {
            "put": _operation(
                schemas,
                "changePlan",
                "Change plan: an upgrade acts at once, pro-rated; a downgrade at renewal (R7)",
                (
                    200,
                    _ok(
                        "The change and the subscription after it",
                        schemas.ref(shapes.PlanChangeResult),
                    ),
                ),
                _BODY_PROBLEMS,
                body=shapes.PlanRequest,
                example={"plan": "power"},
            )
        },
        **{
            f"{account_path}/subscription/{verb}": {
                "post": _operation(
                    schemas, verb + "Subscription", summary, (200, subscription_ok), _READ_PROBLEMS
                )
            }
            for verb, summary in [
                ("cancel", "Cancel at the end of the current period (R6)"),
                ("pause", "Pause at once: credits kept, nothing granted, charges refused (R6)"),
                ("resume", "Resume a paused subscription"),
            ]
        },
        f"{account_path}/unlock": {
            "post": _operation(
                schemas,
                "unlock",
                "Unlock contacts: pay once per new datum that verifies VALID (R9..R17)",
                (200, charge_ok),
                _BODY_PROBLEMS,
                body=requests.unlock,
                example=contacts_example,
                parameters=[_IDEMPOTENCY],
            )
        },
        f"{account_path}/export": {
            "post": _operation(
                schemas,
                "export",
                "Export contacts to a file or CRM: charges only data not owned yet (R13)",
                (200, charge_ok),
                _BODY_PROBLEMS,
                body=requests.export,
                example={**contacts_example, "destination": "csv"},
                parameters=[_IDEMPOTENCY],
            )
        },
        f"{account_path}/enrich": {
            "post": _operation(
                schemas,
                "enrich",
                "Enrichment found these data: charges only new, VALID data (R14)",
                (200, charge_ok),
                _BODY_PROBLEMS,
                body=requests.enrich,
                example={"found": contacts_example["contacts"]},
                parameters=[_IDEMPOTENCY],
            )
        },
        f"{account_path}/bounces": {
            "post": _operation(
                schemas,
                "reportBounce",
                "Report a hard bounce: a charged email is refunded once, within 30 days (R18)",
                (201, _ok("The refund's ledger entry", schemas.ref(shapes.LedgerEntry))),
                _BODY_PROBLEMS,
                body=shapes.ContactIn,
                example={"channel": "email", "value": "ann@example.com"},
            )
        },
        f"{account_path}/top-ups": {
            "post": _operation(
                schemas,
                "topUp",
                "Grant credits outside the plan: top-up, promotion, goodwill (R8)",
                (
                    201,
                    _ok(
                        "The top-up's ledger entries",
                        schemas.ref(shapes.TopUpResult),
                        dict(_REPLAYED),
                    ),
                ),
                _BODY_PROBLEMS,
                body=shapes.TopUpRequest,
                example={"email": 500, "mobile": 50, "reason": "promotion"},
                parameters=[_TOP_UP_IDEMPOTENCY],
            )
        },
        f"{account_path}/balance": {
            "get": _operation(
                schemas,
                "balance",
                "Both pools now; *_available subtract open holds (R16, R20)",
                (200, _ok("The balance", schemas.ref(shapes.Balance))),
                _READ_PROBLEMS,
            )
        },
        f"{account_path}/balance-at": {
            "get": _operation(
                schemas,
                "balanceAt",
                "Both pools at an instant, from the ledger (R21)",
                (200, _ok("The balance at that instant", schemas.ref(shapes.PastBalance))),
                [*_READ_PROBLEMS, 422],
                parameters=[
                    {
                        "name": "at",
                        "in": "query",
                        "required": True,
                        "description": "An RFC 3339 date-time with a time zone.",
                        "schema": {"type": "string", "format": "date-time"},
                    }
                ],
            )
        },
        f"{account_path}/statement": {
            "get": _operation(
                schemas,
                "statement",
                "The ledger with running balances, paged by seq (R19, R21)",
                (
                    200,
                    _ok(
                        "One page; next_cursor is null on the last page",
                        schemas.ref(shapes.Statement),
                    ),
                ),
                [*_READ_PROBLEMS, 422],
                parameters=[
                    _int_query(
                        "cursor",
                        0,
                        MAX_STATEMENT_CURSOR,
                        "The seq of the last entry already read (next_cursor of the page "
                        "before); absent: from the first entry.",
                    ),
                    _int_query(
                        "limit",
                        1,
                        MAX_STATEMENT_PAGE,
                        f"Entries per page (default {DEFAULT_STATEMENT_PAGE}).",
                    ),
                    _int_query(
                        "period",
                        0,
                        MAX_PERIOD_INDEX,
                        "Only this billing period's entries (0 is the first period of the "
                        "current subscription); absent: all entries.",
                    ),
                ],
            )
        },
        f"{account_path}/members": {
            "post": _operation(
                schemas,
                "addMember",
                "Add a team member; data belong to the team (R22)",
                (200, _ok("Whether they were added", schemas.ref(shapes.MemberAdded))),
                _BODY_PROBLEMS,
                body=shapes.MemberRequest,
                example={"member": "alice"},
            )
        },
        f"{account_path}/members/allowance": {
            "put": _operation(
                schemas,
                "setMemberAllowance",
                "Set or remove a member's allowance per pool and period (R22)",
                (200, _ok("The allowance now", schemas.ref(shapes.MemberAllowance))),
                _BODY_PROBLEMS,
                body=shapes.AllowanceRequest,
                example={"member": "alice", "allowance": {"email": 500, "mobile": 20}},
            )
        },
        f"{account_path}/members/usage": {
            "get": _operation(
                schemas,
                "memberUsage",
                "What a member was charged in a period, less bounce refunds (R22)",
                (200, _ok("The member's usage", schemas.ref(shapes.MemberUsage))),
                [*_READ_PROBLEMS, 422],
                parameters=[
                    {
                        "name": "member",
                        "in": "query",
                        "required": True,
                        "description": "The team member's id.",
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_ACCOUNT_ID_LENGTH,
                        },
                    },
                    _current_period(),
                ],
            )
        },
        f"{account_path}/events": {
            "get": _operation(
                schemas,
                "events",
                "The account's events, oldest first, paged by seq (R24)",
                (200, _ok("One page of events", schemas.ref(shapes.Events))),
                [*_READ_PROBLEMS, 422],
                parameters=[
                    _int_query(
                        "after_seq",
                        0,
                        2**63 - 1,
                        "The seq of the last event already read (next_after_seq of the page "
                        "before); absent: from the first event.",
                    ),
                    _int_query("limit", 1, MAX_EVENTS_PAGE, "Events per page (default 100)."),
                ],
            )
        },
        f"{account_path}/low-balance-threshold": {
            "put": _operation(
                schemas,
                "setLowBalanceThreshold",
                "Set (or, with null, reset) a pool's low-balance threshold (R24)",
                (200, _ok("Each pool's threshold now", schemas.ref(shapes.LowBalanceThresholds))),
                _BODY_PROBLEMS,
                body=shapes.LowBalanceThresholdRequest,
                example={"pool": "email", "credits": 500},
            )
        },
        f"{account_path}/guarantee": {
            "get": _operation(
                schemas,
                "guarantee",
                "The deliverability guarantee of a billing period, from the ledger (R25)",
                (200, _ok("The period's emails, bounces and rate", schemas.ref(shapes.Guarantee))),
                [*_READ_PROBLEMS, 422],
                parameters=[_current_period()],
            )
        },
    }
    account_parameter = {
        "name": "account",
        "in": "path",
        "required": True,
        "description": "The account id the API key is bound to.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ACCOUNT_ID_LENGTH},
    }
    for path, item in paths.items():
        if path.startswith(account_path):
            item["parameters"] = [account_parameter]
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {
                    "description": "The OpenAPI document",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "credits-domain API",
            "version": API_VERSION,
            "description": "Prepaid credits for verified lead data: pay once, only for "
            "verified, new data (rules R1..R21). Authenticate with an API key bound to one "
            "account: `Authorization: Bearer <key>`. Errors are RFC 9457 problem details "
            "with a stable `type` URI under https://credits-domain.dev/problems/. Request "
            f"bodies: JSON, at most {requests.max_body_bytes} bytes, unknown fields refused, "
            f"no field named twice; at most {requests.max_batch} contacts per request.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
    }


def document_text(document: Json) -> str:
    """The document as the snapshot stores it: indented, in the order it was built."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
