"""The JSON schemas of the HTTP API: typed parsing of requests, rendering of responses.

These are the boundary's own shapes, kept apart from the domain classes so that the wire
format changes only on purpose. Parsing is strict and complete before any use case runs,
so a bad request charges nothing and stores nothing:
- a body is a JSON object with exactly the documented fields (an unknown field is refused:
  a typo must not pass silently);
- a wrong type, a missing field or an out-of-range value raises `InvalidRequest` (422), a
  malformed contact `MalformedContact`-kind problem (422), more contacts than the batch
  limit `BatchTooLarge` (422). Each message names the offending field (`contacts[3].value`).
- Query parameters: an unknown one is refused, and so is a documented one given twice.

Mobile numbers are E.164 (`+` and digits; spaces, dashes, dots and parentheses are
dropped by the core). A national format is accepted with a `region` (ISO 3166 alpha-2,
"GB"), and parsed into E.164 with `phones.parse_phone` (the `phonenumbers` library).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from adapters.api.problems import DOMAIN_PROBLEMS, ProblemError
from adapters.phones import parse_phone
from credits_domain import (
    Balance,
    BatchTooLarge,
    Channel,
    ChargeResult,
    Contact,
    Credits,
    InvalidRequest,
    LedgerEntry,
    MalformedContact,
    Period,
    PlanChange,
    Subscription,
)
from credits_domain.limits import MAX_DESTINATION_LENGTH

MAX_VALUE_LENGTH: Final = 320  # an email is at most 64 + 1 + 253 characters, with slack
MAX_PLAN_NAME_LENGTH: Final = 100
MAX_STATEMENT_LIMIT: Final = 1000
DEFAULT_STATEMENT_LIMIT: Final = 100
# Period indexes are months from the anchor: 1,200 is a century, the core's own horizon
# (wallet.MAX_RENEWALS_PER_CATCH_UP); beyond it dates leave the calendar's range.
MAX_PERIOD_INDEX: Final = 1200
MAX_CURSOR: Final = 10**15
_REGION = re.compile(r"^[A-Z]{2}$")
_INTEGER = re.compile(r"-?[0-9]{1,16}")  # used with fullmatch: `$` would admit "5\n"

JsonObject = dict[str, Any]


# -- parsing ------------------------------------------------------------------------------


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def require_object(
    value: object, where: str, *, required: frozenset[str], optional: frozenset[str] = frozenset()
) -> Mapping[str, object]:
    """`value` as a JSON object with all `required` fields and no field outside both sets."""
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be a JSON object, got {_type_name(value)}")
    missing = sorted(required - value.keys())
    if missing:
        raise InvalidRequest(f"{where} is missing the field(s) {', '.join(missing)}")
    unknown = sorted(value.keys() - required - optional)
    if unknown:
        raise InvalidRequest(
            f"{where} has unknown field(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(required | optional))}"
        )
    return value


def require_string(value: object, where: str, *, max_length: int) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{where} must be a string, got {_type_name(value)}")
    if not value.strip():
        raise InvalidRequest(f"{where} must not be blank")
    if len(value) > max_length:
        raise InvalidRequest(f"{where} must be at most {max_length} characters")
    return value


def _mobile(value: str, region: str | None) -> Contact:
    if region is None or value.lstrip().startswith("+"):
        # E.164 already: the core's own canonical form, so that the API accepts exactly
        # what the core accepts (the verifier, not the boundary, judges validity: R11).
        return Contact.mobile(value)
    return parse_phone(value, region)


def parse_contact(value: object, where: str) -> Contact:
    """One `{"channel": "email"|"mobile", "value": str, "region"?: "GB"}`."""
    obj = require_object(
        value, where, required=frozenset({"channel", "value"}), optional=frozenset({"region"})
    )
    channel_name = obj["channel"]
    channels = [c.value for c in Channel]
    if channel_name not in channels:
        raise InvalidRequest(f"{where}.channel must be one of {', '.join(channels)}")
    channel = Channel(channel_name)
    raw = require_string(obj["value"], f"{where}.value", max_length=MAX_VALUE_LENGTH)
    region: str | None = None
    if "region" in obj:
        if channel is not Channel.MOBILE:
            raise InvalidRequest(f"{where}.region is only for mobile numbers")
        given = obj["region"]
        if not isinstance(given, str) or not _REGION.match(given):
            raise InvalidRequest(f"{where}.region must be an ISO 3166 alpha-2 code like 'GB'")
        region = given
    try:
        if channel is Channel.EMAIL:
            return Contact.email(raw)
        return _mobile(raw, region)
    except MalformedContact as exc:
        raise ProblemError(DOMAIN_PROBLEMS[MalformedContact], f"{where}: {exc}") from exc
    except InvalidRequest as exc:  # a region that phonenumbers does not know
        raise InvalidRequest(f"{where}.region: {exc}") from exc


def parse_contacts(value: object, where: str, *, max_batch: int) -> tuple[Contact, ...]:
    if not isinstance(value, list):
        raise InvalidRequest(f"{where} must be an array of contacts, got {_type_name(value)}")
    if len(value) > max_batch:
        raise BatchTooLarge(
            f"{where} has {len(value)} contacts; at most {max_batch} per request: split the batch"
        )
    return tuple(parse_contact(item, f"{where}[{i}]") for i, item in enumerate(value))


@attrs.frozen(kw_only=True)
class PlanRequest:
    plan: str

    @classmethod
    def parse(cls, body: object) -> PlanRequest:
        obj = require_object(body, "the body", required=frozenset({"plan"}))
        return cls(plan=require_string(obj["plan"], "plan", max_length=MAX_PLAN_NAME_LENGTH))


@attrs.frozen(kw_only=True)
class UnlockRequest:
    contacts: tuple[Contact, ...]

    @classmethod
    def parse(cls, body: object, *, max_batch: int) -> UnlockRequest:
        obj = require_object(body, "the body", required=frozenset({"contacts"}))
        return cls(contacts=parse_contacts(obj["contacts"], "contacts", max_batch=max_batch))


@attrs.frozen(kw_only=True)
class ExportRequest:
    contacts: tuple[Contact, ...]
    destination: str

    @classmethod
    def parse(cls, body: object, *, max_batch: int) -> ExportRequest:
        obj = require_object(body, "the body", required=frozenset({"contacts", "destination"}))
        destination = require_string(
            obj["destination"], "destination", max_length=MAX_DESTINATION_LENGTH
        )
        contacts = parse_contacts(obj["contacts"], "contacts", max_batch=max_batch)
        return cls(contacts=contacts, destination=destination)


@attrs.frozen(kw_only=True)
class EnrichRequest:
    found: tuple[Contact, ...]

    @classmethod
    def parse(cls, body: object, *, max_batch: int) -> EnrichRequest:
        obj = require_object(body, "the body", required=frozenset({"found"}))
        return cls(found=parse_contacts(obj["found"], "found", max_batch=max_batch))


@attrs.frozen(kw_only=True)
class BounceRequest:
    contact: Contact

    @classmethod
    def parse(cls, body: object) -> BounceRequest:
        return cls(contact=parse_contact(body, "the body"))


def check_query_names(params: Mapping[str, list[str]], allowed: Collection[str]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        known = f"; allowed: {', '.join(allowed)}" if allowed else "; it takes none"
        raise InvalidRequest(
            f"unknown query parameter(s) {', '.join(repr(n) for n in unknown)}{known}"
        )


def _single(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name, [])
    if len(values) > 1:
        raise InvalidRequest(f"query parameter {name} given {len(values)} times; give it once")
    return values[0] if values else None


def _int_param(params: Mapping[str, list[str]], name: str, *, low: int, high: int) -> int | None:
    raw = _single(params, name)
    if raw is None:
        return None
    if not _INTEGER.fullmatch(raw) or not low <= int(raw) <= high:
        raise InvalidRequest(
            f"query parameter {name} must be a whole number from {low} to {high}, got {raw!r}"
        )
    return int(raw)


@attrs.frozen(kw_only=True)
class StatementQuery:
    """`?cursor=` the seq of the last entry already read (absent: from the first),
    `?limit=` entries per page, `?period=` a billing period's index (absent: all)."""

    cursor: int | None
    limit: int
    period: int | None

    @classmethod
    def parse(cls, params: Mapping[str, list[str]]) -> StatementQuery:
        limit = _int_param(params, "limit", low=1, high=MAX_STATEMENT_LIMIT)
        return cls(
            cursor=_int_param(params, "cursor", low=0, high=MAX_CURSOR),
            limit=DEFAULT_STATEMENT_LIMIT if limit is None else limit,
            period=_int_param(params, "period", low=0, high=MAX_PERIOD_INDEX),
        )


def parse_instant_param(params: Mapping[str, list[str]], name: str) -> datetime:
    raw = _single(params, name)
    if raw is None:
        raise InvalidRequest(f"query parameter {name} is required (an RFC 3339 date-time)")
    try:
        at = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidRequest(
            f"query parameter {name} must be an RFC 3339 date-time such as "
            f"2025-01-31T12:00:00Z, got {raw!r}"
        ) from exc
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidRequest(f"query parameter {name} needs a time zone (Z or +hh:mm)")
    try:
        return at.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00:00+01:00 leaves the calendar in UTC
        raise InvalidRequest(f"query parameter {name} is out of range: {raw!r}") from exc


# -- rendering ----------------------------------------------------------------------------


def instant_json(at: datetime) -> str:
    """RFC 3339 in UTC with a `Z`."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def period_json(period: Period) -> JsonObject:
    return {
        "index": period.index,
        "start": instant_json(period.start),
        "end": instant_json(period.end),
    }


def subscription_json(subscription: Subscription) -> JsonObject:
    pending = subscription.pending_plan
    return {
        "account": subscription.account,
        "plan": subscription.plan.name,
        "status": subscription.status.value,
        "period": period_json(subscription.period),
        "ends_at": None if subscription.ends_at is None else instant_json(subscription.ends_at),
        "pending_plan": None if pending is None else pending.name,
    }


def plan_change_json(change: PlanChange, subscription: Subscription) -> JsonObject:
    return {"change": change.value, "subscription": subscription_json(subscription)}


def balance_json(balance: Balance) -> JsonObject:
    return {
        "email": balance.email,
        "mobile": balance.mobile,
        "email_available": balance.email_available,
        "mobile_available": balance.mobile_available,
    }


def past_balance_json(at: datetime, credits: Credits) -> JsonObject:
    return {"at": instant_json(at), "email": credits.email, "mobile": credits.mobile}


def charge_result_json(result: ChargeResult) -> JsonObject:
    """One item per contact in request order. `replayed` is not in the body, so that a
    replay's body is byte for byte the first answer's (R17); the API says it in a header."""
    return {
        "operation": result.operation.value,
        "idempotency_key": result.idempotency_key,
        "items": [
            {
                "channel": item.contact.channel.value,
                "value": item.contact.value,
                "outcome": item.outcome.value,
                "verdict": None if item.verdict is None else item.verdict.value,
                "revealed": item.revealed,
                "pool": None if item.pool is None else item.pool.value,
                "credits": item.credits,
            }
            for item in result.items
        ],
        "charged": {
            "email": result.charged(Channel.EMAIL),
            "mobile": result.charged(Channel.MOBILE),
        },
    }


def entry_json(entry: LedgerEntry) -> JsonObject:
    cause = entry.cause
    return {
        "seq": entry.seq,
        "kind": entry.kind.value,
        "pool": entry.pool.value,
        "amount": entry.amount,
        "at": instant_json(entry.at),
        "balance_after": entry.balance_after,
        "cause": {
            "operation": cause.operation.value,
            "datum": cause.datum,
            "plan": cause.plan,
            "period": cause.period,
            "idempotency_key": cause.idempotency_key,
            "destination": cause.destination,
            "note": cause.note,
        },
    }


def statement_json(
    entries: list[LedgerEntry], next_cursor: int | None, period: Period | None
) -> JsonObject:
    return {
        "entries": [entry_json(e) for e in entries],
        "next_cursor": next_cursor,
        "period": None if period is None else period_json(period),
    }
