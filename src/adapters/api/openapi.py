"""The OpenAPI 3.1 document of the HTTP API, written by hand.

It is the contract other teams script against, so it is written, not generated: a change
of the wire format shows in this file's diff. tests/test_http_schemathesis.py checks that
the served answers conform to it (status codes, media types, bodies).
"""

from __future__ import annotations

from typing import Any, Final

from adapters.api import schemas
from adapters.api.problems import ALL_KINDS, PROBLEM_MEDIA_TYPE, problem_type
from credits_domain import Channel, EntryKind, Operation, Outcome, PlanChange, Status, Verdict
from credits_domain.limits import (
    MAX_ACCOUNT_ID_LENGTH,
    MAX_DESTINATION_LENGTH,
    MAX_IDEMPOTENCY_KEY_LENGTH,
)

API_VERSION: Final = "1.0.0"

Json = dict[str, Any]


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Json) -> Json:
    return {"anyOf": [schema, {"type": "null"}]}


def _enum(values: list[str]) -> Json:
    return {"type": "string", "enum": values}


def _object(properties: Json, required: list[str] | None = None) -> Json:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


_COUNT: Final = {"type": "integer", "minimum": 0}
_INSTANT: Final = {"type": "string", "format": "date-time"}
_CHANNEL: Final = _enum([c.value for c in Channel])


def _schemas(max_batch: int) -> Json:
    contact_in = _object(
        {
            "channel": _CHANNEL,
            "value": {
                "type": "string",
                "minLength": 1,
                "maxLength": schemas.MAX_VALUE_LENGTH,
                "description": "An email address, or a mobile number in E.164 ('+' and "
                "digits; spaces, dashes, dots and parentheses are ignored), or in national "
                "form with a region. Put in canonical form before anything else (R12): an "
                "email trimmed and lower-cased, a number in E.164. A value that cannot be "
                "is refused with 422 malformed-contact.",
            },
            "region": {
                "type": "string",
                "pattern": "^[A-Z]{2}$",
                "description": "Mobile only: the ISO 3166 region of a national number.",
            },
        },
        required=["channel", "value"],
    )
    contacts = {
        "type": "array",
        "items": _ref("ContactIn"),
        "maxItems": max_batch,
        "description": f"At most {max_batch} contacts (422 batch-too-large above); "
        "settled in this order (R15). The same datum twice is charged once (R12).",
    }
    item = _object(
        {
            "channel": _CHANNEL,
            "value": {"type": "string", "description": "The datum in canonical form."},
            "outcome": _enum([o.value for o in Outcome]),
            "verdict": _nullable(_enum([v.value for v in Verdict])),
            "revealed": {
                "type": "boolean",
                "description": "May the datum be handed out as verified (charged or owned).",
            },
            "pool": _nullable(_CHANNEL),
            "credits": _COUNT,
        }
    )
    period = _object({"index": _COUNT, "start": _INSTANT, "end": _INSTANT})
    subscription = _object(
        {
            "account": {"type": "string"},
            "plan": {"type": "string"},
            "status": _enum([s.value for s in Status]),
            "period": _ref("Period"),
            "ends_at": _nullable(_INSTANT),
            "pending_plan": _nullable({"type": "string"}),
        }
    )
    cause = _object(
        {
            "operation": _enum([o.value for o in Operation]),
            "datum": _nullable({"type": "string"}),
            "plan": _nullable({"type": "string"}),
            "period": _nullable(_COUNT),
            "idempotency_key": _nullable({"type": "string"}),
            "destination": _nullable({"type": "string"}),
            "note": _nullable({"type": "string"}),
        }
    )
    entry = _object(
        {
            "seq": _COUNT,
            "kind": _enum([k.value for k in EntryKind]),
            "pool": _CHANNEL,
            "amount": {"type": "integer", "description": "Signed: grants > 0, charges < 0."},
            "at": _INSTANT,
            "balance_after": _COUNT,
            "cause": _ref("Cause"),
        }
    )
    problem = {
        "type": "object",
        "description": "RFC 9457 problem details. Branch on `type`; title and detail are "
        "for people.",
        "properties": {
            "type": {"type": "string", "enum": sorted({problem_type(k.slug) for k in ALL_KINDS})},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
        },
        "required": ["type", "title", "status", "detail"],
        "additionalProperties": False,
    }
    return {
        "ContactIn": contact_in,
        "PlanRequest": _object(
            {
                "plan": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": schemas.MAX_PLAN_NAME_LENGTH,
                    "description": "A plan of the catalogue (ignite, boost, power); "
                    "another name is refused with 422 unknown-plan.",
                }
            }
        ),
        "UnlockRequest": _object({"contacts": contacts}),
        "ExportRequest": _object(
            {
                "contacts": contacts,
                "destination": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_DESTINATION_LENGTH,
                    "description": "A file format or CRM: 'csv', 'hubspot', ...",
                },
            }
        ),
        "EnrichRequest": _object({"found": contacts}),
        "ChargeItem": item,
        "ChargeResult": _object(
            {
                "operation": _enum(["unlock", "export", "enrich"]),
                "idempotency_key": _nullable({"type": "string"}),
                "items": {"type": "array", "items": _ref("ChargeItem")},
                "charged": _object({"email": _COUNT, "mobile": _COUNT}),
            }
        ),
        "Period": period,
        "Subscription": subscription,
        "PlanChange": _object(
            {
                "change": _enum([c.value for c in PlanChange]),
                "subscription": _ref("Subscription"),
            }
        ),
        "Balance": _object(
            {
                "email": _COUNT,
                "mobile": _COUNT,
                "email_available": _COUNT,
                "mobile_available": _COUNT,
            }
        ),
        "PastBalance": _object({"at": _INSTANT, "email": _COUNT, "mobile": _COUNT}),
        "Cause": cause,
        "LedgerEntry": entry,
        "Statement": _object(
            {
                "entries": {"type": "array", "items": _ref("LedgerEntry")},
                "next_cursor": _nullable(_COUNT),
                "period": _nullable(_ref("Period")),
            }
        ),
        "Problem": problem,
    }


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


def _problem(status: int) -> Json:
    response: Json = {
        "description": _STATUS_TEXT[status],
        "content": {PROBLEM_MEDIA_TYPE: {"schema": _ref("Problem")}},
    }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    if status == 409:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds; sent for request-in-flight and concurrency-conflict.",
                "schema": {"type": "string"},
            }
        }
    return response


def _ok(description: str, schema: str, headers: Json | None = None) -> Json:
    response: Json = {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema)}},
    }
    if headers:
        response["headers"] = headers
    return response


def _operation(
    operation_id: str,
    summary: str,
    success: tuple[int, Json],
    problems: list[int],
    *,
    body: str | None = None,
    example: Json | None = None,
    parameters: list[Json] | None = None,
) -> Json:
    operation: Json = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {
            str(success[0]): success[1],
            **{str(status): _problem(status) for status in sorted(problems)},
        },
    }
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        media: Json = {"schema": _ref(body)}
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
    "while the first is still being verified is refused (409 request-in-flight). Keys are "
    "scoped to the account.",
    "schema": {"type": "string", "pattern": f"^[!-~]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}$"},
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


def openapi_document(*, max_batch: int, max_body_bytes: int) -> Json:
    """The document the app serves at /openapi.json, for the app's limits."""
    charge_ok = _ok("One item per contact, in request order", "ChargeResult", dict(_REPLAYED))
    contacts_example = {
        "contacts": [
            {"channel": "email", "value": "Ann@Example.com"},
            {"channel": "mobile", "value": "+1 415 555 0100"},
        ]
    }
    subscription_ok = _ok("The subscription", "Subscription")
    account_path = "/v1/accounts/{account}"
    paths: Json = {
        f"{account_path}/subscription": {
            "post": _operation(
                "subscribe",
                "Subscribe to a plan: the first allowance is granted at once (R3, R6)",
                (
                    201,
                    _ok(
                        "Subscribed",
                        "Subscription",
                        {"Location": {"schema": {"type": "string"}}},
                    ),
                ),
                _BODY_PROBLEMS,
                body="PlanRequest",
                example={"plan": "boost"},
            ),
            "get": _operation(
                "getSubscription", "The subscription", (200, subscription_ok), _READ_PROBLEMS
            ),
        },
        f"{account_path}/subscription/plan": {
            "put": _operation(
                "changePlan",
                "Change plan: an upgrade acts at once, pro-rated; a downgrade at renewal (R7)",
                (200, _ok("The change and the subscription after it", "PlanChange")),
                _BODY_PROBLEMS,
                body="PlanRequest",
                example={"plan": "power"},
            )
        },
        **{
            f"{account_path}/subscription/{verb}": {
                "post": _operation(
                    verb + "Subscription", summary, (200, subscription_ok), _READ_PROBLEMS
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
                "unlock",
                "Unlock contacts: pay once per new datum that verifies VALID (R9..R17)",
                (200, charge_ok),
                _BODY_PROBLEMS,
                body="UnlockRequest",
                example=contacts_example,
                parameters=[_IDEMPOTENCY],
            )
        },
        f"{account_path}/export": {
            "post": _operation(
                "export",
                "Export contacts to a file or CRM: charges only data not owned yet (R13)",
                (200, charge_ok),
                _BODY_PROBLEMS,
                body="ExportRequest",
                example={**contacts_example, "destination": "csv"},
                parameters=[_IDEMPOTENCY],
            )
        },
        f"{account_path}/enrich": {
            "post": _operation(
                "enrich",
                "Enrichment found these data: charges only new, VALID data (R14)",
                (200, charge_ok),
                _BODY_PROBLEMS,
                body="EnrichRequest",
                example={"found": contacts_example["contacts"]},
                parameters=[_IDEMPOTENCY],
            )
        },
        f"{account_path}/bounces": {
            "post": _operation(
                "reportBounce",
                "Report a hard bounce: a charged email is refunded once, within 30 days (R18)",
                (201, _ok("The refund's ledger entry", "LedgerEntry")),
                _BODY_PROBLEMS,
                body="ContactIn",
                example={"channel": "email", "value": "ann@example.com"},
            )
        },
        f"{account_path}/balance": {
            "get": _operation(
                "balance",
                "Both pools now; *_available subtract open holds (R16, R20)",
                (200, _ok("The balance", "Balance")),
                _READ_PROBLEMS,
            )
        },
        f"{account_path}/balance-at": {
            "get": _operation(
                "balanceAt",
                "Both pools at an instant, from the ledger (R21)",
                (200, _ok("The balance at that instant", "PastBalance")),
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
                "statement",
                "The ledger with running balances, paged by seq (R19, R21)",
                (200, _ok("One page; next_cursor is null on the last page", "Statement")),
                [*_READ_PROBLEMS, 422],
                parameters=[
                    _int_query(
                        "cursor",
                        0,
                        schemas.MAX_CURSOR,
                        "The seq of the last entry already read (next_cursor of the page "
                        "before); absent: from the first entry.",
                    ),
                    _int_query(
                        "limit",
                        1,
                        schemas.MAX_STATEMENT_LIMIT,
                        f"Entries per page (default {schemas.DEFAULT_STATEMENT_LIMIT}).",
                    ),
                    _int_query(
                        "period",
                        0,
                        schemas.MAX_PERIOD_INDEX,
                        "Only this billing period's entries (0 is the first period of the "
                        "current subscription); absent: all entries.",
                    ),
                ],
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
            f"bodies: JSON, at most {max_body_bytes} bytes, unknown fields refused; at most "
            f"{max_batch} contacts per request.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(max_batch),
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
    }
