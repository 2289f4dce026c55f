"""The wire shapes in process, without a server: what a refusal says, and the exact bytes
of an answer.

The served API is tested in test_http_api.py; here each message is pinned whole, so that
a change of msgspec's wording (which `schemas` translates) shows as a failure here, and
the bytes of an answer are pinned, so that a stored answer replays byte for byte (R17)
after an upgrade of the renderer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.api import schemas, shapes
from adapters.api.app import _Call
from adapters.api.problems import (
    DOMAIN_PROBLEMS,
    MALFORMED_JSON,
    ProblemError,
    problem_response,
)
from adapters.api.shapes import RequestShapes
from credits_domain import (
    BatchTooLarge,
    Cause,
    Channel,
    ChargeResult,
    Contact,
    CreditsError,
    EntryKind,
    InvalidRequest,
    ItemResult,
    LedgerEntry,
    NotCharged,
    Operation,
    Outcome,
    Verdict,
)

REQUESTS = RequestShapes.bounded(3)


def _email(value: Any) -> dict[str, Any]:
    return {"channel": "email", "value": value}


REFUSALS: list[tuple[object, type[CreditsError], str]] = [
    ([], InvalidRequest, "the body must be a JSON object, got array"),
    (None, InvalidRequest, "the body must be a JSON object, got null"),
    ({}, InvalidRequest, "the body is missing the field contacts"),
    ({"contacts": "a@corp.com"}, InvalidRequest, "contacts must be an array, got string"),
    (
        {"contacts": [], "extra": 1},
        InvalidRequest,
        "the body has the unknown field 'extra'; allowed: contacts, member",
    ),
    (
        {"contacts": [{**_email("a@corp.com"), "name": "Ann"}]},
        InvalidRequest,
        "contacts[0] has the unknown field 'name'; allowed: channel, region, value",
    ),
    (
        {"contacts": [{"channel": "fax", "value": "1"}]},
        InvalidRequest,
        "contacts[0].channel must be one of email, mobile, got 'fax'",
    ),
    (
        {"contacts": [{"channel": "email"}]},
        InvalidRequest,
        "contacts[0] is missing the field value",
    ),
    (
        {"contacts": [_email("a@corp.com"), _email(True)]},
        InvalidRequest,
        "contacts[1].value must be a string, got boolean",
    ),
    ({"contacts": [_email("")]}, InvalidRequest, "contacts[0].value must not be blank"),
    (
        {"contacts": [_email("x" * 321)]},
        InvalidRequest,
        "contacts[0].value must be at most 320 characters long",
    ),
    (
        {"contacts": [{"channel": "mobile", "value": "0207", "region": "gb"}]},
        InvalidRequest,
        "contacts[0].region must match '^[A-Z]{2}$' (Mobile only: the ISO 3166 alpha-2 "
        "region of a number in national form, like 'GB'.)",
    ),
    (
        {"contacts": [_email(f"c{n}@corp.com") for n in range(4)]},
        BatchTooLarge,
        "contacts has 4 contacts; at most 3 per request: split the batch",
    ),
]


@pytest.mark.parametrize(("body", "error", "message"), REFUSALS)
def test_a_refusal_names_the_field_and_says_what_it_must_be(
    body: object, error: type[CreditsError], message: str
) -> None:
    with pytest.raises(error) as raised:
        schemas.decode(body, REQUESTS.unlock)
    assert type(raised.value) is error
    assert str(raised.value) == message


def test_a_batch_too_large_is_refused_before_its_contacts_are_read() -> None:
    """As before msgspec: the count, not a bad contact deep in an oversized batch."""
    body = {"contacts": [_email(5)] * 4}
    with pytest.raises(BatchTooLarge):
        schemas.decode(body, REQUESTS.unlock)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"contacts": [_email("  ")]}, "contacts[0].value must not be blank"),
        (
            {"contacts": [{**_email("a@corp.com"), "region": "GB"}]},
            "contacts[0].region is only for mobile numbers",
        ),
    ],
)
def test_contacts_are_checked_beyond_their_shape(body: object, message: str) -> None:
    request = schemas.decode(body, REQUESTS.unlock)
    with pytest.raises(InvalidRequest) as raised:
        schemas.to_contacts(request.contacts, "contacts")
    assert str(raised.value) == message


def test_a_malformed_contact_is_named_by_its_place() -> None:
    request = schemas.decode({"found": [_email("ok@corp.com"), _email("nope")]}, REQUESTS.enrich)
    with pytest.raises(ProblemError) as raised:
        schemas.to_contacts(request.found, "found")
    assert raised.value.kind.slug == "malformed-contact"
    assert raised.value.detail.startswith("found[1]: ")


def test_a_bounce_body_is_one_contact() -> None:
    contact = schemas.to_contact(schemas.decode(_email(" Ann@Corp.com"), shapes.ContactIn), "")
    assert contact == Contact.email("ann@corp.com")
    with pytest.raises(InvalidRequest) as raised:
        schemas.to_contact(schemas.decode(_email(" "), shapes.ContactIn), "")
    assert str(raised.value) == "value must not be blank"


def _body(raw: bytes) -> object:
    call = _Call(
        account="acme",
        headers={},
        idempotency_keys=(),
        query={},
        body=raw,
        content_type="application/json",
    )
    return call.json()


@pytest.mark.parametrize(
    "raw",
    [
        b'{"contacts": [], "contacts": []}',
        b'{"contacts": [{"channel": "email", "value": "a@corp.com", "value": "b@corp.com"}]}',
    ],
)
def test_a_name_given_twice_is_malformed_json(raw: bytes) -> None:
    with pytest.raises(ProblemError) as raised:
        _body(raw)
    assert raised.value.kind is MALFORMED_JSON
    assert "twice" in raised.value.detail


T0 = datetime(2025, 1, 31, 9, 0, tzinfo=UTC)


def test_a_charge_answer_is_these_bytes() -> None:
    result = ChargeResult(
        operation=Operation.EXPORT,
        idempotency_key="order-7",
        items=(
            ItemResult(
                contact=Contact.email("ann@corp.com"),
                outcome=Outcome.CHARGED,
                verdict=Verdict.VALID,
                pool=Channel.EMAIL,
                credits=1,
            ),
            ItemResult(
                contact=Contact.mobile("+15550000001"),
                outcome=Outcome.NOT_VERIFIED,
                verdict=Verdict.INVALID,
            ),
        ),
    )
    assert schemas.encode(schemas.render_charge(result)) == (
        b'{"operation":"export","idempotency_key":"order-7","items":['
        b'{"channel":"email","value":"ann@corp.com","outcome":"charged","verdict":"valid",'
        b'"revealed":true,"pool":"email","credits":1},'
        b'{"channel":"mobile","value":"+15550000001","outcome":"not_verified",'
        b'"verdict":"invalid","revealed":false,"pool":null,"credits":0}],'
        b'"charged":{"email":1,"mobile":0}}'
    )


def test_a_ledger_entry_is_these_bytes() -> None:
    entry = LedgerEntry(
        account="日本",
        seq=4,
        kind=EntryKind.REFUND,
        pool=Channel.EMAIL,
        amount=1,
        at=T0.replace(microsecond=120),
        balance_after=12_000,
        cause=Cause(operation=Operation.BOUNCE, datum="email:ann@corp.com", note="bounce «A»"),
    )
    assert schemas.encode(schemas.render_entry(entry)) == (
        b'{"seq":4,"kind":"refund","pool":"email","amount":1,'
        b'"at":"2025-01-31T09:00:00.000120Z","balance_after":12000,'
        b'"cause":{"operation":"bounce","datum":"email:ann@corp.com","plan":null,'
        b'"period":null,"idempotency_key":null,"destination":null,'
        b'"note":"bounce \xc2\xabA\xc2\xbb","grant":null,"expires_at":null,'
        b'"member":null}}'
    )


def test_a_problem_is_these_bytes() -> None:
    response = problem_response(
        DOMAIN_PROBLEMS[NotCharged], 'email:a"b@corp.com was never charged', instance="/x"
    )
    assert response.media_type == "application/problem+json"
    assert bytes(response.body) == (
        b'{"type":"https://credits-domain.dev/problems/not-charged",'
        b'"title":"The datum was never charged to this account","status":422,'
        b'"detail":"email:a\\"b@corp.com was never charged","instance":"/x"}'
    )
    without_instance = json.loads(bytes(problem_response(MALFORMED_JSON, "bad").body))
    assert "instance" not in without_instance
