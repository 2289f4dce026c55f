"""Top-ups over HTTP (R8, with R17's idempotency): `POST /v1/accounts/{account}/top-ups`.

Under a real uvicorn on 127.0.0.1, as the rest of the API: the answer is the top-up's
ledger entries; a replay is the first body byte for byte with Idempotent-Replayed; the
same key with another payload is 409; bad bodies are 422 and grant nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from credits_domain.limits import MAX_REASON_LENGTH
from credits_domain.plans import MAX_CREDITS
from http_api_support import PROBLEM, ApiWorld, api_world

ACME = "acme"
TOP_UPS = f"/v1/accounts/{ACME}/top-ups"
BALANCE = f"/v1/accounts/{ACME}/balance"


@pytest.fixture
def world() -> Iterator[ApiWorld]:
    with api_world() as w:
        yield w


@pytest.fixture
def acme(world: ApiWorld) -> Iterator[httpx.Client]:
    with world.client_for(ACME) as c:
        assert c.post(f"/v1/accounts/{ACME}/subscription", json={"plan": "boost"}).is_success
        yield c


def problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + slug
    return body


def balance(acme: httpx.Client) -> tuple[int, int]:
    body = acme.get(BALANCE).json()
    return body["email"], body["mobile"]


def test_a_top_up_answers_201_with_its_ledger_entries(world: ApiWorld, acme: httpx.Client) -> None:
    answer = acme.post(TOP_UPS, json={"email": 500, "mobile": 50, "reason": "promotion"})
    assert answer.status_code == 201, answer.text
    assert "idempotent-replayed" not in answer.headers
    body = answer.json()
    assert body["idempotency_key"] is None
    assert [(e["kind"], e["pool"], e["amount"], e["balance_after"]) for e in body["entries"]] == [
        ("top_up", "email", 500, 12_500),
        ("top_up", "mobile", 50, 850),
    ]
    assert {e["cause"]["note"] for e in body["entries"]} == {"promotion"}
    assert balance(acme) == (12_500, 850)
    # One pool only: the other may be left out.
    only = acme.post(TOP_UPS, json={"mobile": 7, "reason": "goodwill"})
    assert [e["pool"] for e in only.json()["entries"]] == ["mobile"]
    statement = acme.get(f"/v1/accounts/{ACME}/statement").json()["entries"]
    assert statement[-3:] == [*body["entries"], *only.json()["entries"]]


def test_a_replay_is_the_first_body_byte_for_byte(world: ApiWorld, acme: httpx.Client) -> None:
    payload = {"email": 5, "reason": "goodwill"}
    headers = {"Idempotency-Key": "grant-1"}
    first = acme.post(TOP_UPS, json=payload, headers=headers)
    assert first.status_code == 201
    assert first.json()["idempotency_key"] == "grant-1"
    acme.post(
        f"/v1/accounts/{ACME}/unlock", json={"contacts": [{"channel": "email", "value": "a@b.co"}]}
    )
    # The same payload in other JSON (order of fields, a zero written out) is the same.
    replay = acme.post(
        TOP_UPS, content=b'{"reason":"goodwill","mobile":0,"email":5}', headers={
            **headers, "Content-Type": "application/json"
        }
    )  # fmt: skip
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    assert balance(acme) == (12_000 + 5 - 1, 800)


@pytest.mark.parametrize(
    "payload",
    [
        {"email": 6, "reason": "goodwill"},
        {"email": 5, "mobile": 1, "reason": "goodwill"},
        {"email": 5, "reason": "promotion"},
    ],
)
def test_the_same_key_with_another_payload_is_409(
    world: ApiWorld, acme: httpx.Client, payload: dict[str, Any]
) -> None:
    headers = {"Idempotency-Key": "grant-2"}
    assert acme.post(TOP_UPS, json={"email": 5, "reason": "goodwill"}, headers=headers).is_success
    problem(acme.post(TOP_UPS, json=payload, headers=headers), 409, "idempotency-key-reused")
    assert balance(acme) == (12_005, 800)


def test_top_ups_and_charges_share_the_accounts_keys(world: ApiWorld, acme: httpx.Client) -> None:
    headers = {"Idempotency-Key": "order-7"}
    unlock = {"contacts": [{"channel": "email", "value": "a@b.co"}]}
    assert acme.post(f"/v1/accounts/{ACME}/unlock", json=unlock, headers=headers).is_success
    reused = acme.post(TOP_UPS, json={"email": 5, "reason": "goodwill"}, headers=headers)
    problem(reused, 409, "idempotency-key-reused")
    assert balance(acme) == (11_999, 800)


def test_a_lapsed_account_takes_no_top_up(world: ApiWorld, acme: httpx.Client) -> None:
    acme.post(f"/v1/accounts/{ACME}/subscription/cancel")
    world.clock.advance(timedelta(days=40))
    problem(acme.post(TOP_UPS, json={"email": 5, "reason": "x"}), 409, "no-active-subscription")


BAD_TOP_UPS: list[tuple[object, str, str]] = [
    ({"reason": "goodwill"}, "invalid-request", "at least one pool"),
    (
        {"email": 0, "mobile": 0, "reason": "goodwill"},
        "invalid-request",
        "needs credits in at least one pool",
    ),
    ({"email": -1, "reason": "goodwill"}, "invalid-request", "email"),
    ({"email": MAX_CREDITS + 1, "reason": "goodwill"}, "invalid-request", "email"),
    ({"mobile": 1.5, "reason": "goodwill"}, "invalid-request", "mobile"),
    ({"email": True, "reason": "goodwill"}, "invalid-request", "email"),
    ({"email": 5}, "invalid-request", "reason"),
    ({"email": 5, "reason": ""}, "invalid-request", "reason"),
    ({"email": 5, "reason": "   "}, "invalid-request", "reason"),
    ({"email": 5, "reason": "r" * (MAX_REASON_LENGTH + 1)}, "invalid-request", "reason"),
    ({"email": 5, "reason": "line\nbreak"}, "invalid-request", "reason"),
    ({"email": 5, "reason": "x", "plan": "boost"}, "invalid-request", "plan"),
    ([5], "invalid-request", "the body"),
]


@pytest.mark.parametrize(("payload", "slug", "words"), BAD_TOP_UPS)
def test_a_bad_top_up_is_422_and_grants_nothing(
    world: ApiWorld, acme: httpx.Client, payload: object, slug: str, words: str
) -> None:
    headers = {"Idempotency-Key": "bad-1"}
    body = problem(acme.post(TOP_UPS, json=payload, headers=headers), 422, slug)
    assert words in body["detail"]
    assert balance(acme) == (12_000, 800)
    # The key was not taken.
    assert acme.post(TOP_UPS, json={"email": 1, "reason": "ok"}, headers=headers).status_code == 201


def test_the_longest_reason_is_taken(world: ApiWorld, acme: httpx.Client) -> None:
    reason = "r" * MAX_REASON_LENGTH
    answer = acme.post(TOP_UPS, json={"email": MAX_CREDITS, "reason": reason})
    assert answer.status_code == 201
    assert answer.json()["entries"][0]["cause"]["note"] == reason


def test_another_accounts_key_cannot_top_up(world: ApiWorld, acme: httpx.Client) -> None:
    with world.client_for("globex") as globex:
        globex.post("/v1/accounts/globex/subscription", json={"plan": "boost"})
        problem(globex.post(TOP_UPS, json={"email": 5, "reason": "x"}), 404, "unknown-account")
    assert balance(acme) == (12_000, 800)


def test_r23_an_expiring_grant_over_http(world: ApiWorld, acme: httpx.Client) -> None:
    expires_at = world.clock.now() + timedelta(days=3)
    stamp = expires_at.isoformat().replace("+00:00", "Z")
    answer = acme.post(TOP_UPS, json={"email": 40, "reason": "promo", "expires_at": stamp})
    assert answer.status_code == 201, answer.text
    (entry,) = answer.json()["entries"]
    assert entry["cause"]["expires_at"] == stamp
    assert entry["cause"]["grant"] == entry["seq"]
    assert balance(acme) == (12_040, 800)
    world.clock.advance(timedelta(days=3))
    assert balance(acme) == (12_000, 800)
    last = acme.get(f"/v1/accounts/{ACME}/statement").json()["entries"][-1]
    assert (last["kind"], last["amount"], last["at"]) == ("expire", -40, stamp)
    assert last["cause"]["grant"] == entry["seq"]
    past = acme.post(TOP_UPS, json={"email": 1, "reason": "late", "expires_at": stamp})
    assert "after now" in problem(past, 422, "invalid-request")["detail"]
    naive = acme.post(TOP_UPS, json={"email": 1, "reason": "x", "expires_at": "2030-01-01T00:00"})
    problem(naive, 422, "invalid-request")
    assert balance(acme) == (12_000, 800)
