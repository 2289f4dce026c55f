"""Requests into domain values, results into answers, through the wire shapes (`shapes.py`).

Parsing is strict and complete before any use case runs, so a bad request charges nothing
and stores nothing:
- the body, read as JSON by the app (malformed JSON, or a name given twice in one object,
  is 400 there), is converted to its shape by msgspec: a missing or unknown field, a wrong
  type or an out-of-range value is `InvalidRequest` (422), more contacts than the batch
  limit `BatchTooLarge` (422). The message names the field (`contacts[3].value`), read
  from msgspec's own path (`$.contacts[3].value`), and says what the field must be.
- each contact is then put in canonical form by the core: a malformed one is a
  `MalformedContact`-kind problem (422) naming its place in the request.
- Query parameters: an unknown one is refused, and so is a documented one given twice.

Mobile numbers are read by `phones.parse_phone` (the `phonenumbers` library) into E.164,
international ones included, so that every spelling of one number is one datum (R12:
"+44 (0) 7700 900123" is +447700900123). A national format needs a `region` (ISO 3166
alpha-2, "GB"); without one, only international numbers are accepted.

Rendering builds the shapes from domain values; `encode` turns them into bytes, the same
bytes for the same result every time (a replay is byte for byte the first answer, R17).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final, TypeVar

import attrs
import msgspec
import msgspec.inspect as mi

from adapters.api import shapes
from adapters.api.problems import DOMAIN_PROBLEMS, ProblemError
from adapters.phones import parse_phone
from credits_domain import (
    Balance,
    BatchTooLarge,
    Channel,
    ChargeResult,
    Contact,
    Credits,
    CreditsError,
    Event,
    Guarantee,
    InvalidRequest,
    LedgerEntry,
    MalformedContact,
    Operation,
    Period,
    PlanChange,
    Subscription,
    TopUp,
)
from credits_domain.limits import (
    DEFAULT_STATEMENT_PAGE,
    MAX_EVENTS_PAGE,
    MAX_PERIOD_INDEX,
    MAX_STATEMENT_CURSOR,
    MAX_STATEMENT_PAGE,
)

_INTEGER = re.compile(r"-?[0-9]{1,16}")  # used with fullmatch: `$` would admit "5\n"

_S = TypeVar("_S", bound=shapes.Shape)


# -- bodies -------------------------------------------------------------------------------


def decode(body: object, shape: type[_S]) -> _S:
    """`body` (parsed JSON) as `shape`, or the refusal naming the field that is wrong."""
    try:
        return msgspec.convert(body, shape)
    except msgspec.ValidationError as exc:
        raise _refusal(str(exc), shape, body) from exc


# msgspec says "<what> - at `$.contacts[3].value`" (no "at" for the body itself).
_AT: Final = " - at `$"
_STEP = re.compile(r"\.([^.\[]+)|\[([0-9]+)\]")
_EXPECTED = re.compile(r"Expected `(?P<want>\w+)`, got `(?P<got>\w+)`")
_LENGTH = re.compile(r"Expected `(?P<kind>str|array)` of length (?P<op><=|>=) (?P<n>[0-9]+)")
_PATTERN = re.compile(r"Expected `str` matching regex (?P<regex>.+)")
_MISSING = re.compile(r"Object missing required field `(?P<name>.+)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>.+)`")
_BAD_ENUM = re.compile(r"Invalid enum value (?P<value>.+)")
_WANTED: Final = {
    "object": "a JSON object",
    "array": "an array",
    "str": "a string",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "null": "null",
}
_GIVEN: Final = {"str": "string", "int": "number", "float": "number", "bool": "boolean"}


@attrs.frozen
class _Field:
    """What the shape declares at a path: the bare type, and its description if any."""

    type: mi.Type
    description: str | None


def _bare(t: mi.Type, description: str | None = None) -> _Field:
    while True:
        if isinstance(t, mi.Metadata):
            description = (t.extra_json_schema or {}).get("description", description)
            t = t.type
        elif isinstance(t, mi.UnionType) and len(t.types) == 2 and mi.NoneType() in t.types:
            t = next(u for u in t.types if u != mi.NoneType())
        else:
            return _Field(t, description)


def _field_at(shape: type[shapes.Shape], path: str) -> _Field:
    field = _bare(mi.type_info(shape))
    for name, _index in _STEP.findall(path):
        t = field.type
        if name and isinstance(t, mi.StructType):
            field = _bare(next(f.type for f in t.fields if f.encode_name == name))
        elif not name and isinstance(t, mi.ListType):
            field = _bare(t.item_type)
    return field


def _value_at(body: object, path: str) -> object:
    for name, index in _STEP.findall(path):
        if name and isinstance(body, dict):
            body = body.get(name)
        elif index and isinstance(body, list):
            body = body[int(index)]
        else:
            return None
    return body


def _is_contact_list(field: _Field) -> bool:
    if not isinstance(field.type, mi.ListType):
        return False
    item = _bare(field.type.item_type).type
    return isinstance(item, mi.StructType) and item.cls is shapes.ContactIn


def _refusal(message: str, shape: type[shapes.Shape], body: object) -> CreditsError:
    """msgspec's message, said in the API's words and with the field named as in the body."""
    what, _, at = message.partition(_AT)
    path = at.removesuffix("`")
    where = path.removeprefix(".") or "the body"
    field = _field_at(shape, path)
    if m := _EXPECTED.fullmatch(what):
        wanted = _WANTED.get(m["want"], m["want"])
        return InvalidRequest(f"{where} must be {wanted}, got {_GIVEN.get(m['got'], m['got'])}")
    if m := _LENGTH.fullmatch(what):
        n, at_most, is_str = int(m["n"]), m["op"] == "<=", m["kind"] == "str"
        if at_most and _is_contact_list(field):
            given = _value_at(body, path)
            count = len(given) if isinstance(given, list) else "too many"
            return BatchTooLarge(
                f"{where} has {count} contacts; at most {n} per request: split the batch"
            )
        if is_str and not at_most and n == 1:
            return InvalidRequest(f"{where} must not be blank")
        bound = "at most" if at_most else "at least"
        if is_str:
            return InvalidRequest(f"{where} must be {bound} {n} characters long")
        return InvalidRequest(f"{where} must have {bound} {n} items")
    if m := _PATTERN.fullmatch(what):
        about = f" ({field.description})" if field.description else ""
        return InvalidRequest(f"{where} must match {m['regex']}{about}")
    if m := _MISSING.fullmatch(what):
        return InvalidRequest(f"{where} is missing the field {m['name']}")
    if m := _UNKNOWN.fullmatch(what):
        allowed = ""
        if isinstance(field.type, mi.StructType):
            allowed = "; allowed: " + ", ".join(sorted(f.encode_name for f in field.type.fields))
        return InvalidRequest(f"{where} has the unknown field {m['name']!r}{allowed}")
    if (m := _BAD_ENUM.fullmatch(what)) and isinstance(field.type, mi.EnumType):
        allowed = ", ".join(str(member.value) for member in field.type.cls)
        return InvalidRequest(f"{where} must be one of {allowed}, got {m['value']}")
    return InvalidRequest(f"{where}: {what}")


def _mobile(value: str, region: str | None) -> Contact:
    # Every spelling goes through phonenumbers, "+..." included: the core only strips
    # punctuation, so "+44 (0) 7700 900123" became +4407700900123, a second datum
    # charged again beside +447700900123 (R12). The CLI and CSV paths do the same.
    return parse_phone(value, region)


def _not_blank(value: str, where: str) -> str:
    # The shapes refuse an empty string; one of spaces only says as little.
    if not value.strip():
        raise InvalidRequest(f"{where} must not be blank")
    return value


def to_plan(request: shapes.PlanRequest) -> str:
    return _not_blank(request.plan, "plan")


def to_contact(item: shapes.ContactIn, where: str) -> Contact:
    """One contact of a request in canonical form; `where` names it ("" for the body)."""
    if not item.value.strip():
        raise InvalidRequest(f"{_name(where, 'value')} must not be blank")
    region: str | None = None
    if isinstance(item.region, str):
        if item.channel is not Channel.MOBILE:
            raise InvalidRequest(f"{_name(where, 'region')} is only for mobile numbers")
        region = item.region
    try:
        if item.channel is Channel.EMAIL:
            return Contact.email(item.value)
        return _mobile(item.value, region)
    except MalformedContact as exc:
        raise ProblemError(
            DOMAIN_PROBLEMS[MalformedContact], f"{where or 'the body'}: {exc}"
        ) from exc
    except InvalidRequest as exc:  # a region that phonenumbers does not know
        raise InvalidRequest(f"{_name(where, 'region')}: {exc}") from exc


def to_contacts(items: Sequence[shapes.ContactIn], field: str) -> tuple[Contact, ...]:
    return tuple(to_contact(item, f"{field}[{i}]") for i, item in enumerate(items))


def _name(where: str, field: str) -> str:
    return f"{where}.{field}" if where else field


# -- query parameters ---------------------------------------------------------------------


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
        limit = _int_param(params, "limit", low=1, high=MAX_STATEMENT_PAGE)
        return cls(
            cursor=_int_param(params, "cursor", low=0, high=MAX_STATEMENT_CURSOR),
            limit=DEFAULT_STATEMENT_PAGE if limit is None else limit,
            period=_int_param(params, "period", low=0, high=MAX_PERIOD_INDEX),
        )


DEFAULT_EVENTS_PAGE: Final = 100
MAX_EVENT_CURSOR: Final = 2**63 - 1


@attrs.frozen
class EventsQuery:
    """`?after_seq=` the seq of the last event already read (absent: from the first),
    `?limit=` events per page (R24)."""

    after_seq: int | None
    limit: int

    @classmethod
    def parse(cls, params: Mapping[str, list[str]]) -> EventsQuery:
        limit = _int_param(params, "limit", low=1, high=MAX_EVENTS_PAGE)
        return cls(
            after_seq=_int_param(params, "after_seq", low=0, high=MAX_EVENT_CURSOR),
            limit=DEFAULT_EVENTS_PAGE if limit is None else limit,
        )


def render_events(events: Sequence[Event], after_seq: int | None) -> shapes.Events:
    return shapes.Events(
        events=[
            shapes.Event(
                id=e.id, type=e.type, account=e.account, seq=e.seq, at=_utc(e.at), data=dict(e.data)
            )
            for e in events
        ],
        next_after_seq=events[-1].seq if events else after_seq or 0,
    )


def parse_member_param(params: Mapping[str, list[str]]) -> str:
    """`?member=` a team member's id (R22), required."""
    member = _single(params, "member")
    if member is None:
        raise InvalidRequest("query parameter member is required (a team member's id)")
    return member


def parse_period_param(params: Mapping[str, list[str]]) -> int | None:
    """`?period=` a billing period's index (absent: the current one)."""
    return _int_param(params, "period", low=0, high=MAX_PERIOD_INDEX)


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

_ENCODER: Final = msgspec.json.Encoder()

_CHARGING: Final[dict[Operation, shapes.ChargingOperation]] = {
    Operation.UNLOCK: "unlock",
    Operation.EXPORT: "export",
    Operation.ENRICH: "enrich",
}


def encode(answer: shapes.Shape) -> bytes:
    """Compact UTF-8 JSON, fields in declaration order, instants RFC 3339 with a `Z`."""
    return _ENCODER.encode(answer)


def _utc(at: datetime) -> datetime:
    # msgspec writes an offset as given; answers say every instant in UTC with a `Z`.
    return at.astimezone(UTC)


def render_period(period: Period) -> shapes.Period:
    return shapes.Period(index=period.index, start=_utc(period.start), end=_utc(period.end))


def render_guarantee(guarantee: Guarantee) -> shapes.Guarantee:
    return shapes.Guarantee(
        account=guarantee.account,
        period=render_period(guarantee.period),
        emails_charged=guarantee.emails_charged,
        bounces=guarantee.bounces,
        bounce_rate=guarantee.bounce_rate,
        breached=guarantee.breached,
    )


def render_subscription(subscription: Subscription) -> shapes.Subscription:
    pending = subscription.pending_plan
    ends_at = subscription.ends_at
    return shapes.Subscription(
        account=subscription.account,
        plan=subscription.plan.name,
        status=subscription.status,
        period=render_period(subscription.period),
        ends_at=None if ends_at is None else _utc(ends_at),
        pending_plan=None if pending is None else pending.name,
    )


def render_plan_change(change: PlanChange, subscription: Subscription) -> shapes.PlanChangeResult:
    return shapes.PlanChangeResult(change=change, subscription=render_subscription(subscription))


def render_balance(balance: Balance) -> shapes.Balance:
    return shapes.Balance(
        email=balance.email,
        mobile=balance.mobile,
        email_available=balance.email_available,
        mobile_available=balance.mobile_available,
    )


def render_past_balance(at: datetime, credits: Credits) -> shapes.PastBalance:
    return shapes.PastBalance(at=_utc(at), email=credits.email, mobile=credits.mobile)


def render_charge(result: ChargeResult) -> shapes.ChargeResult:
    """One item per contact in request order. `replayed` is not in the body, so that a
    replay's body is byte for byte the first answer's (R17); the API says it in a header."""
    return shapes.ChargeResult(
        operation=_CHARGING[result.operation],
        idempotency_key=result.idempotency_key,
        items=[
            shapes.ChargeItem(
                channel=item.contact.channel,
                value=item.contact.value,
                outcome=item.outcome,
                verdict=item.verdict,
                revealed=item.revealed,
                pool=item.pool,
                credits=item.credits,
            )
            for item in result.items
        ],
        charged=shapes.Charged(
            email=result.charged(Channel.EMAIL), mobile=result.charged(Channel.MOBILE)
        ),
    )


def render_entry(entry: LedgerEntry) -> shapes.LedgerEntry:
    cause = entry.cause
    return shapes.LedgerEntry(
        seq=entry.seq,
        kind=entry.kind,
        pool=entry.pool,
        amount=entry.amount,
        at=_utc(entry.at),
        balance_after=entry.balance_after,
        cause=shapes.Cause(
            operation=cause.operation,
            datum=cause.datum,
            plan=cause.plan,
            period=cause.period,
            idempotency_key=cause.idempotency_key,
            destination=cause.destination,
            note=cause.note,
            grant=cause.grant,
            expires_at=None if cause.expires_at is None else _utc(cause.expires_at),
            member=cause.member,
        ),
    )


def render_top_up(done: TopUp) -> shapes.TopUpResult:
    """`replayed` is not in the body, as for charges: a replay is the first body (R17)."""
    return shapes.TopUpResult(
        idempotency_key=done.idempotency_key, entries=[render_entry(e) for e in done.entries]
    )


def to_top_up(request: shapes.TopUpRequest) -> tuple[Credits, str, datetime | None]:
    credits = Credits(email=request.email, mobile=request.mobile)
    return credits, request.reason, request.expires_at


def render_statement(
    entries: list[LedgerEntry], next_cursor: int | None, period: Period | None
) -> shapes.Statement:
    return shapes.Statement(
        entries=[render_entry(e) for e in entries],
        next_cursor=next_cursor,
        period=None if period is None else render_period(period),
    )
