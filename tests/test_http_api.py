"""The HTTP API under a real uvicorn on 127.0.0.1, called with httpx.

Every endpoint, the idempotency semantics (R17), isolation between accounts (404, never
403), authentication (401), and the shape of each error (RFC 9457 problem+json with a
stable type). Bad input must answer 4xx and leave no trace: nothing charged, nothing
verified, nothing stored, the idempotency key still free.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import attrs
import httpx
import pytest

from adapters.clock import SystemClock
from adapters.memory import InMemoryApiKeyStore
from adapters.verifier import ScriptedVerifier
from credits_domain import Contact, UnknownApiKey, Verdict
from http_api_support import PROBLEM, ApiWorld, api_world, client

ACME = "acme"
GLOBEX = "globex"
UNLOCK = f"/v1/accounts/{ACME}/unlock"
GATE_TIMEOUT_S = 10.0


def email(value: str) -> dict[str, str]:
    return {"channel": "email", "value": value}


def mobile(value: str) -> dict[str, str]:
    return {"channel": "mobile", "value": value}


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + slug
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.fixture
def world() -> Iterator[ApiWorld]:
    verifier = ScriptedVerifier(
        {
            "bad@corp.com": Verdict.INVALID,
            "all@catchall.com": Verdict.CATCH_ALL,
            "+15550000002": Verdict.INVALID,
        }
    )
    with api_world(verifier=verifier, max_batch=50) as w:
        yield w


@pytest.fixture
def acme(world: ApiWorld) -> Iterator[httpx.Client]:
    with world.client_for(ACME) as c:
        assert c.post(f"/v1/accounts/{ACME}/subscription", json={"plan": "boost"}).is_success
        yield c


def ledger_size(world: ApiWorld, account: str) -> int:
    return len(list(world.service.statement(account)))


# -- subscriptions ------------------------------------------------------------------------


def test_subscribe_answers_201_with_the_subscription(world: ApiWorld) -> None:
    with world.client_for(ACME) as c:
        response = c.post(f"/v1/accounts/{ACME}/subscription", json={"plan": "boost"})
        assert response.status_code == 201
        assert response.headers["location"] == f"/v1/accounts/{ACME}/subscription"
        assert response.json() == {
            "account": ACME,
            "plan": "boost",
            "status": "active",
            "period": {
                "index": 0,
                "start": "2025-01-31T09:00:00Z",
                "end": "2025-02-28T09:00:00Z",
            },
            "ends_at": None,
            "pending_plan": None,
        }
        assert c.get(f"/v1/accounts/{ACME}/subscription").json() == response.json()
        assert c.get(f"/v1/accounts/{ACME}/balance").json() == {
            "email": 12_000,
            "mobile": 800,
            "email_available": 12_000,
            "mobile_available": 800,
        }
        again = c.post(f"/v1/accounts/{ACME}/subscription", json={"plan": "power"})
        assert_problem(again, 409, "already-subscribed")


def test_unknown_plan_is_422_and_creates_no_account(world: ApiWorld) -> None:
    with world.client_for(ACME) as c:
        body = assert_problem(
            c.post(f"/v1/accounts/{ACME}/subscription", json={"plan": "platinum"}),
            422,
            "unknown-plan",
        )
        assert "boost" in body["detail"]  # the message lists the known plans
        assert_problem(c.get(f"/v1/accounts/{ACME}/balance"), 404, "unknown-account")


def test_a_key_of_an_account_that_never_subscribed_reads_404(world: ApiWorld) -> None:
    with world.client_for(ACME) as c:
        assert_problem(c.get(f"/v1/accounts/{ACME}/subscription"), 404, "unknown-account")
        assert_problem(c.post(UNLOCK, json={"contacts": []}), 404, "unknown-account")


def test_upgrade_acts_at_once_and_downgrade_waits(world: ApiWorld, acme: httpx.Client) -> None:
    up = acme.put(f"/v1/accounts/{ACME}/subscription/plan", json={"plan": "power"})
    assert up.status_code == 200
    assert up.json()["change"] == "upgraded"
    assert up.json()["subscription"]["plan"] == "power"
    balance = acme.get(f"/v1/accounts/{ACME}/balance").json()
    assert balance["email"] > 12_000  # R7: the pro-rated difference is granted at once
    down = acme.put(f"/v1/accounts/{ACME}/subscription/plan", json={"plan": "ignite"})
    assert down.json()["change"] == "downgrade_scheduled"
    assert down.json()["subscription"] == {**up.json()["subscription"], "pending_plan": "ignite"}
    same = acme.put(f"/v1/accounts/{ACME}/subscription/plan", json={"plan": "power"})
    assert same.json()["change"] == "unchanged"
    unknown = acme.put(f"/v1/accounts/{ACME}/subscription/plan", json={"plan": "gold"})
    assert_problem(unknown, 422, "unknown-plan")


def test_pause_refuses_charges_until_resume(world: ApiWorld, acme: httpx.Client) -> None:
    paused = acme.post(f"/v1/accounts/{ACME}/subscription/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    refused = acme.post(UNLOCK, json={"contacts": [email("a@corp.com")]})
    assert_problem(refused, 409, "subscription-paused")
    assert acme.get(f"/v1/accounts/{ACME}/balance").json()["email"] == 12_000
    resumed = acme.post(f"/v1/accounts/{ACME}/subscription/resume")
    assert resumed.json()["status"] == "active"
    assert acme.post(UNLOCK, json={"contacts": [email("a@corp.com")]}).json()["charged"] == {
        "email": 1,
        "mobile": 0,
    }


def test_cancel_lapses_at_period_end_and_forfeits(world: ApiWorld, acme: httpx.Client) -> None:
    cancelled = acme.post(f"/v1/accounts/{ACME}/subscription/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["ends_at"] == "2025-02-28T09:00:00Z"
    # R6: the credits can be spent until the end of the last paid period.
    assert acme.post(UNLOCK, json={"contacts": [email("a@corp.com")]}).status_code == 200
    world.clock.advance(timedelta(days=31))
    assert acme.get(f"/v1/accounts/{ACME}/subscription").json()["status"] == "lapsed"
    assert acme.get(f"/v1/accounts/{ACME}/balance").json()["email"] == 0
    refused = acme.post(UNLOCK, json={"contacts": [email("b@corp.com")]})
    assert_problem(refused, 409, "no-active-subscription")
    assert_problem(
        acme.post(f"/v1/accounts/{ACME}/subscription/pause"), 409, "no-active-subscription"
    )
    again = acme.post(f"/v1/accounts/{ACME}/subscription", json={"plan": "ignite"})
    assert again.status_code == 201 and again.json()["plan"] == "ignite"


# -- charging -----------------------------------------------------------------------------


def test_unlock_answers_one_item_per_contact_in_order(world: ApiWorld, acme: httpx.Client) -> None:
    response = acme.post(
        UNLOCK,
        json={
            "contacts": [
                email("  Ann@Corp.COM "),
                mobile("+1 (555) 000-0001"),
                email("bad@corp.com"),
                email("ann@corp.com"),
                {"channel": "mobile", "value": "020 7946 0958", "region": "GB"},
            ]
        },
    )
    assert response.status_code == 200
    assert "idempotent-replayed" not in response.headers
    charged = {"outcome": "charged", "verdict": "valid", "revealed": True, "credits": 1}
    assert response.json() == {
        "operation": "unlock",
        "idempotency_key": None,
        "items": [
            {"channel": "email", "value": "ann@corp.com", "pool": "email", **charged},
            {"channel": "mobile", "value": "+15550000001", "pool": "mobile", **charged},
            {
                "channel": "email",
                "value": "bad@corp.com",
                "outcome": "not_verified",
                "verdict": "invalid",
                "revealed": False,
                "pool": None,
                "credits": 0,
            },
            {
                "channel": "email",
                "value": "ann@corp.com",
                "outcome": "duplicate_in_request",
                "verdict": None,
                "revealed": False,
                "pool": None,
                "credits": 0,
            },
            {"channel": "mobile", "value": "+442079460958", "pool": "mobile", **charged},
        ],
        "charged": {"email": 1, "mobile": 2},
    }
    assert acme.get(f"/v1/accounts/{ACME}/balance").json()["email"] == 11_999
    # R12: owned data are free, and revealed.
    again = acme.post(UNLOCK, json={"contacts": [email("ANN@corp.com")]}).json()
    assert again["items"][0]["outcome"] == "already_owned"
    assert again["items"][0]["revealed"] is True
    assert again["charged"] == {"email": 0, "mobile": 0}


def test_export_and_enrich_charge_only_new_verified_data(
    world: ApiWorld, acme: httpx.Client
) -> None:
    acme.post(UNLOCK, json={"contacts": [email("owned@corp.com")]})
    exported = acme.post(
        f"/v1/accounts/{ACME}/export",
        json={"contacts": [email("owned@corp.com"), email("new@corp.com")], "destination": "csv"},
    )
    assert exported.status_code == 200
    assert exported.json()["operation"] == "export"
    assert [i["outcome"] for i in exported.json()["items"]] == ["already_owned", "charged"]
    enriched = acme.post(
        f"/v1/accounts/{ACME}/enrich",
        json={"found": [email("all@catchall.com"), mobile("+15550000003")]},
    )
    assert enriched.json()["operation"] == "enrich"
    assert [(i["outcome"], i["verdict"]) for i in enriched.json()["items"]] == [
        ("not_verified", "catch_all"),
        ("charged", "valid"),
    ]
    assert enriched.json()["charged"] == {"email": 0, "mobile": 1}
    entries = acme.get(f"/v1/accounts/{ACME}/statement").json()["entries"]
    export_entry = next(e for e in entries if e["cause"]["operation"] == "export")
    assert export_entry["cause"]["destination"] == "csv"
    assert export_entry["cause"]["datum"] == "email:new@corp.com"
    assert_problem(
        acme.post(f"/v1/accounts/{ACME}/export", json={"contacts": [], "destination": "x" * 101}),
        422,
        "invalid-request",
    )


def test_insufficient_credits_are_refused_in_request_order(world: ApiWorld) -> None:
    with world.client_for(ACME) as c:
        c.post(f"/v1/accounts/{ACME}/subscription", json={"plan": "ignite"})  # 333 mobiles
        numbers = [mobile(f"+1555100{n:04d}") for n in range(340)]
        first = c.post(UNLOCK, json={"contacts": numbers[:45]}).json()
        assert first["charged"]["mobile"] == 45
        outcomes: list[str] = []
        for start in range(45, 340, 45):
            page = c.post(UNLOCK, json={"contacts": numbers[start : start + 45]}).json()
            outcomes += [item["outcome"] for item in page["items"]]
        assert outcomes.count("charged") == 333 - 45
        assert set(outcomes[333 - 45 :]) == {"insufficient_credits"}
        assert c.get(f"/v1/accounts/{ACME}/balance").json()["mobile"] == 0


def test_bounce_refunds_once(world: ApiWorld, acme: httpx.Client) -> None:
    acme.post(UNLOCK, json={"contacts": [email("gone@corp.com"), mobile("+15550000004")]})
    refund = acme.post(f"/v1/accounts/{ACME}/bounces", json=email("Gone@Corp.com"))
    assert refund.status_code == 201
    body = refund.json()
    assert (body["kind"], body["pool"], body["amount"]) == ("refund", "email", 1)
    assert body["cause"]["operation"] == "bounce"
    assert body["cause"]["datum"] == "email:gone@corp.com"
    assert acme.get(f"/v1/accounts/{ACME}/balance").json()["email"] == 12_000
    bounces = f"/v1/accounts/{ACME}/bounces"
    assert_problem(acme.post(bounces, json=email("gone@corp.com")), 409, "already-refunded")
    assert_problem(acme.post(bounces, json=email("never@corp.com")), 422, "not-charged")
    assert_problem(acme.post(bounces, json=mobile("+15550000004")), 422, "not-an-email")
    world.clock.advance(timedelta(days=40))
    acme.post(UNLOCK, json={"contacts": [email("late@corp.com")]})
    world.clock.advance(timedelta(days=31))
    late = acme.post(bounces, json=email("late@corp.com"))
    assert_problem(late, 409, "refund-window-closed")


def test_r25_the_guarantee_of_a_period(world: ApiWorld, acme: httpx.Client) -> None:
    guarantee = f"/v1/accounts/{ACME}/guarantee"
    contacts = [email(f"lead{i}@corp.com") for i in range(50)]
    for start in (0, 25):  # 100 emails in two requests of the batch limit (50)
        batch = [email(f"lead{i}@corp.com") for i in range(start * 4, start * 4 + 50)]
        assert acme.post(UNLOCK, json={"contacts": batch}).is_success
    bounces = f"/v1/accounts/{ACME}/bounces"
    assert acme.post(bounces, json=contacts[0]).status_code == 201
    kept = acme.get(guarantee)
    assert kept.status_code == 200, kept.text
    body = kept.json()
    assert body["period"]["index"] == 0
    assert (body["emails_charged"], body["bounces"], body["bounce_rate"], body["breached"]) == (
        100,
        1,
        0.01,
        False,
    )
    assert acme.post(bounces, json=contacts[1]).status_code == 201
    world.clock.advance(timedelta(days=40))  # period 1: nothing charged in it
    current = acme.get(guarantee).json()
    assert (current["period"]["index"], current["emails_charged"]) == (1, 0)
    past = acme.get(guarantee, params={"period": 0}).json()
    assert (past["bounces"], past["breached"]) == (2, True)
    assert_problem(acme.get(guarantee, params={"period": 7}), 422, "invalid-request")
    assert_problem(acme.get(guarantee, params={"periods": 0}), 422, "invalid-request")


# -- reading ------------------------------------------------------------------------------


def test_statement_pages_by_cursor(world: ApiWorld, acme: httpx.Client) -> None:
    acme.post(UNLOCK, json={"contacts": [email(f"p{n}@corp.com") for n in range(5)]})
    statement = f"/v1/accounts/{ACME}/statement"
    whole = acme.get(statement, params={"limit": 1000}).json()
    assert [e["seq"] for e in whole["entries"]] == list(range(7))  # 2 grants, 5 charges
    assert whole["next_cursor"] is None and whole["period"] is None
    assert [e["balance_after"] for e in whole["entries"][2:]] == [
        11_999,
        11_998,
        11_997,
        11_996,
        11_995,
    ]
    seen: list[int] = []
    cursor: int | None = None
    for _ in range(10):  # bounded: 7 entries in pages of 3
        params: dict[str, int] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        page = acme.get(statement, params=params).json()
        seen += [e["seq"] for e in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(7))


def test_statement_of_a_period(world: ApiWorld, acme: httpx.Client) -> None:
    world.clock.advance(timedelta(days=30))  # into period 1: a renewal
    acme.post(UNLOCK, json={"contacts": [email("x@corp.com")]})
    page = acme.get(f"/v1/accounts/{ACME}/statement", params={"period": 1}).json()
    assert page["period"] == {
        "index": 1,
        "start": "2025-02-28T09:00:00Z",
        "end": "2025-03-31T09:00:00Z",
    }
    assert [e["kind"] for e in page["entries"]] == ["grant", "grant", "charge"]
    assert {e["cause"]["period"] for e in page["entries"]} == {1}
    # R5: the rollover shows in the running balance.
    assert page["entries"][0]["balance_after"] == 24_000


def test_balance_at_a_past_instant(world: ApiWorld, acme: httpx.Client) -> None:
    world.clock.advance(timedelta(hours=1))
    acme.post(UNLOCK, json={"contacts": [email("x@corp.com")]})
    at = acme.get(f"/v1/accounts/{ACME}/balance-at", params={"at": "2025-01-31T09:30:00Z"})
    assert at.json() == {"at": "2025-01-31T09:30:00Z", "email": 12_000, "mobile": 800}
    offset = acme.get(f"/v1/accounts/{ACME}/balance-at", params={"at": "2025-01-31T12:00:00+02:00"})
    assert offset.json() == {"at": "2025-01-31T10:00:00Z", "email": 11_999, "mobile": 800}
    for bad in ["yesterday", "2025-01-31T09:30:00", "2025-13-01T00:00:00Z"]:
        response = acme.get(f"/v1/accounts/{ACME}/balance-at", params={"at": bad})
        assert_problem(response, 422, "invalid-request")
    assert_problem(acme.get(f"/v1/accounts/{ACME}/balance-at"), 422, "invalid-request")


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=1.5",
        "cursor=-1",
        "period=-1",
        "period=1201",
        "limit=1&limit=2",
        "cursor=99999999999999999999",
        "limt=5",
    ],
)
def test_statement_refuses_bad_parameters(world: ApiWorld, acme: httpx.Client, query: str) -> None:
    response = acme.get(f"/v1/accounts/{ACME}/statement?{query}")
    body = assert_problem(response, 422, "invalid-request")
    assert query.split("=")[0] in body["detail"]


# -- idempotency (R17) -------------------------------------------------------------------


def test_a_replay_answers_the_same_body_and_charges_nothing(
    world: ApiWorld, acme: httpx.Client
) -> None:
    payload = {"contacts": [email("a@corp.com"), email("bad@corp.com"), mobile("+15550000005")]}
    headers = {"Idempotency-Key": "order-1"}
    first = acme.post(UNLOCK, json=payload, headers=headers)
    assert first.status_code == 200
    assert first.json()["idempotency_key"] == "order-1"
    calls = len(world.verifier.calls)
    replay = acme.post(UNLOCK, json=payload, headers=headers)
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    assert len(world.verifier.calls) == calls  # nothing verified again
    assert acme.get(f"/v1/accounts/{ACME}/balance").json()["email"] == 11_999
    # The same contacts in another spelling are the same payload (canonical form).
    respelled = {
        "contacts": [email("A@Corp.com"), email("bad@corp.com"), mobile("+1 555 000 0005")]
    }
    assert acme.post(UNLOCK, json=respelled, headers=headers).content == first.content


def test_a_key_reused_for_another_payload_is_409(world: ApiWorld, acme: httpx.Client) -> None:
    headers = {"Idempotency-Key": "order-2"}
    acme.post(UNLOCK, json={"contacts": [email("a@corp.com")]}, headers=headers)
    other = acme.post(UNLOCK, json={"contacts": [email("b@corp.com")]}, headers=headers)
    assert_problem(other, 409, "idempotency-key-reused")
    # Another operation with the same data is another payload too.
    export = acme.post(
        f"/v1/accounts/{ACME}/export",
        json={"contacts": [email("a@corp.com")], "destination": "csv"},
        headers=headers,
    )
    assert_problem(export, 409, "idempotency-key-reused")
    assert acme.get(f"/v1/accounts/{ACME}/balance").json()["email"] == 11_999


def test_keys_are_scoped_to_the_account(world: ApiWorld, acme: httpx.Client) -> None:
    headers = {"Idempotency-Key": "shared-key"}
    acme.post(UNLOCK, json={"contacts": [email("a@corp.com")]}, headers=headers)
    with world.client_for(GLOBEX) as globex:
        globex.post(f"/v1/accounts/{GLOBEX}/subscription", json={"plan": "boost"})
        mine = globex.post(
            f"/v1/accounts/{GLOBEX}/unlock",
            json={"contacts": [email("b@corp.com")]},
            headers=headers,
        )
        assert mine.status_code == 200
        assert mine.json()["items"][0]["value"] == "b@corp.com"


def test_a_request_in_flight_is_409_then_replays(world: ApiWorld) -> None:
    entered, release = threading.Event(), threading.Event()

    def hold_the_line(batch: object) -> None:
        entered.set()
        release.wait(GATE_TIMEOUT_S)

    gated = ScriptedVerifier(before_answer=hold_the_line)
    with api_world(verifier=gated) as gw, gw.client_for(ACME) as c:
        c.post(f"/v1/accounts/{ACME}/subscription", json={"plan": "boost"})
        payload = {"contacts": [email("slow@corp.com")]}
        headers = {"Idempotency-Key": "slow-1"}
        first: list[httpx.Response] = []
        thread = threading.Thread(
            target=lambda: first.append(c.post(UNLOCK, json=payload, headers=headers))
        )
        thread.start()
        try:
            assert entered.wait(GATE_TIMEOUT_S)
            busy = c.post(UNLOCK, json=payload, headers=headers)
            assert_problem(busy, 409, "request-in-flight")
            # The seconds left of the first attempt's lease (the clock stands still here).
            assert busy.headers["retry-after"] == str(gw.service.policy.lease_s)
            gw.clock.advance(timedelta(seconds=12))
            later = c.post(UNLOCK, json=payload, headers=headers)
            assert later.headers["retry-after"] == str(gw.service.policy.lease_s - 12)
        finally:
            release.set()
            thread.join(GATE_TIMEOUT_S)
        assert first[0].status_code == 200
        replay = c.post(UNLOCK, json=payload, headers=headers)
        assert replay.content == first[0].content
        assert c.get(f"/v1/accounts/{ACME}/balance").json()["email"] == 11_999


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\tkey", "é"])
def test_a_malformed_idempotency_key_is_400(world: ApiWorld, acme: httpx.Client, key: str) -> None:
    response = acme.post(
        UNLOCK,
        content=json.dumps({"contacts": [email("a@corp.com")]}).encode(),
        headers=[(b"Idempotency-Key", key.encode()), (b"Content-Type", b"application/json")],
    )
    assert_problem(response, 400, "malformed-header")
    assert acme.get(f"/v1/accounts/{ACME}/balance").json()["email"] == 12_000


def test_two_idempotency_keys_are_400(world: ApiWorld, acme: httpx.Client) -> None:
    response = acme.post(
        UNLOCK,
        json={"contacts": [email("a@corp.com")]},
        headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    )
    assert_problem(response, 400, "malformed-header")


# -- authentication and isolation ---------------------------------------------------------


def test_a_key_of_another_account_reads_exactly_like_no_account(world: ApiWorld) -> None:
    with world.client_for(ACME) as acme, world.client_for(GLOBEX) as globex:
        acme.post(f"/v1/accounts/{ACME}/subscription", json={"plan": "boost"})
        globex.post(f"/v1/accounts/{GLOBEX}/subscription", json={"plan": "boost"})
        # The same answer for an account that exists and for one that does not.
        existing = acme.get(f"/v1/accounts/{GLOBEX}/balance")
        missing = acme.get("/v1/accounts/initech/balance")
        body = assert_problem(existing, 404, "unknown-account")
        assert assert_problem(missing, 404, "unknown-account") == {
            **body,
            "detail": body["detail"].replace(GLOBEX, "initech"),
            "instance": "/v1/accounts/initech/balance",
        }
        attempts = [
            acme.post(f"/v1/accounts/{GLOBEX}/unlock", json={"contacts": [email("a@corp.com")]}),
            acme.post(f"/v1/accounts/{GLOBEX}/subscription/cancel"),
            acme.put(f"/v1/accounts/{GLOBEX}/subscription/plan", json={"plan": "power"}),
            acme.post(f"/v1/accounts/{GLOBEX}/bounces", json=email("a@corp.com")),
            acme.get(f"/v1/accounts/{GLOBEX}/statement"),
            acme.post(f"/v1/accounts/{GLOBEX}/subscription", json={"plan": "power"}),
            # Even a malformed body: the account is checked first, so no detail leaks.
            acme.post(
                f"/v1/accounts/{GLOBEX}/unlock",
                content=b"{",
                headers={"Content-Type": "application/json"},
            ),
        ]
        for response in attempts:
            assert_problem(response, 404, "unknown-account")
        assert globex.get(f"/v1/accounts/{GLOBEX}/subscription").json()["ends_at"] is None
        assert globex.get(f"/v1/accounts/{GLOBEX}/balance").json()["email"] == 12_000
        assert ledger_size(world, GLOBEX) == 2


def test_requests_without_a_valid_key_are_401(world: ApiWorld, acme: httpx.Client) -> None:
    issued = world.keys.create(ACME)
    tampered = issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")
    forged = "ck_0123456789abcdef_" + "x" * 43
    bad_headers: list[dict[str, str]] = [
        {},
        {"Authorization": f"Basic {issued.token}"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Bearer {tampered}"},
        {"Authorization": f"Bearer {forged}"},
    ]
    for headers in bad_headers:
        with client(world.base_url, None) as anonymous:
            for response in [
                anonymous.get(f"/v1/accounts/{ACME}/balance", headers=headers),
                anonymous.post(UNLOCK, json={"contacts": [email("a@corp.com")]}, headers=headers),
                anonymous.get("/v1/accounts/nobody/balance", headers=headers),
            ]:
                assert_problem(response, 401, "unauthorized")
                assert response.headers["www-authenticate"].startswith("Bearer")
    assert ledger_size(world, ACME) == 2
    with client(world.base_url, issued.token) as fresh:
        assert fresh.get(f"/v1/accounts/{ACME}/balance").status_code == 200
        assert world.keys.revoke(issued.key_id) is True
        assert world.keys.revoke(issued.key_id) is False
        assert_problem(fresh.get(f"/v1/accounts/{ACME}/balance"), 401, "unauthorized")
    # The other key of the account still works.
    assert acme.get(f"/v1/accounts/{ACME}/balance").status_code == 200
    with pytest.raises(UnknownApiKey):
        world.keys.revoke("0000000000000000")


def test_keys_are_stored_hashed() -> None:
    store = InMemoryApiKeyStore(clock=SystemClock())
    issued = store.create(ACME)
    assert issued.token.startswith("ck_" + issued.key_id + "_")
    stored = vars(store)["_records"][issued.key_id]
    assert issued.token not in repr(attrs.asdict(stored))
    assert stored.key_hash != issued.token and len(stored.key_hash) == 64
    assert store.authenticate(issued.token) == ACME
    assert store.create(ACME).token != issued.token


# -- bad input: 4xx, nothing charged, nothing stored --------------------------------------


BAD_UNLOCKS: list[tuple[bytes, int, str, str]] = [
    (b"{", 400, "malformed-json", "not valid JSON"),
    (b"\xff\xfe", 400, "malformed-json", "not valid JSON"),
    (b'{"contacts": [NaN]}', 400, "malformed-json", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, 413, "body-too-large", "limit"),
    (b"[]", 422, "invalid-request", "JSON object"),
    (b"null", 422, "invalid-request", "JSON object"),
    (b"{}", 422, "invalid-request", "contacts"),
    (b'{"contacts": "a@corp.com"}', 422, "invalid-request", "array"),
    (b'{"contacts": [], "extra": 1}', 422, "invalid-request", "extra"),
    (
        b'{"contacts": [{"channel": "fax", "value": "1"}]}',
        422,
        "invalid-request",
        "contacts[0].channel",
    ),
    (b'{"contacts": [{"channel": "email"}]}', 422, "invalid-request", "contacts[0]"),
    (
        b'{"contacts": [{"channel": "email", "value": 5}]}',
        422,
        "invalid-request",
        "contacts[0].value",
    ),
    (b'{"contacts": [{"channel": "email", "value": "  "}]}', 422, "invalid-request", "blank"),
    (
        b'{"contacts": [{"channel": "email", "value": "ok@corp.com"}, '
        b'{"channel": "email", "value": "not-an-email"}]}',
        422,
        "malformed-contact",
        "contacts[1]",
    ),
    (
        b'{"contacts": [{"channel": "mobile", "value": "0207 946 0958"}]}',
        422,
        "malformed-contact",
        "international form",
    ),
    (
        b'{"contacts": [{"channel": "mobile", "value": "12", "region": "GB"}]}',
        422,
        "malformed-contact",
        "contacts[0]",
    ),
    (
        b'{"contacts": [{"channel": "mobile", "value": "0207", "region": "ZZ"}]}',
        422,
        "invalid-request",
        "region",
    ),
    (
        b'{"contacts": [{"channel": "email", "value": "a@b.com", "region": "GB"}]}',
        422,
        "invalid-request",
        "region",
    ),
]


@pytest.mark.parametrize(("body", "status", "slug", "words"), BAD_UNLOCKS)
def test_bad_input_is_4xx_and_leaves_no_trace(
    world: ApiWorld, acme: httpx.Client, body: bytes, status: int, slug: str, words: str
) -> None:
    headers = {"Content-Type": "application/json", "Idempotency-Key": "bad-1"}
    response = acme.post(UNLOCK, content=body, headers=headers)
    problem = assert_problem(response, status, slug)
    assert words in problem["detail"]
    assert problem["instance"] == UNLOCK
    assert world.verifier.calls == []
    assert ledger_size(world, ACME) == 2
    assert acme.get(f"/v1/accounts/{ACME}/balance").json()["email_available"] == 12_000
    # The key was not taken: a good request with it goes through.
    good = acme.post(UNLOCK, json={"contacts": [email("ok@corp.com")]}, headers=headers)
    assert good.status_code == 200 and good.json()["charged"]["email"] == 1


def test_an_oversized_batch_is_422_with_the_limit(world: ApiWorld, acme: httpx.Client) -> None:
    contacts = [email(f"c{n}@corp.com") for n in range(51)]  # the world's limit is 50
    body = assert_problem(acme.post(UNLOCK, json={"contacts": contacts}), 422, "batch-too-large")
    assert "at most 50" in body["detail"]
    assert world.verifier.calls == []
    assert acme.post(UNLOCK, json={"contacts": contacts[:50]}).json()["charged"]["email"] == 50


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_415(
    world: ApiWorld, acme: httpx.Client, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = acme.post(UNLOCK, content=b'{"contacts": []}', headers=headers)
    assert_problem(response, 415, "unsupported-media-type")
    ok = acme.post(
        UNLOCK,
        content=b'{"contacts": []}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200


def test_unknown_query_parameters_are_422(world: ApiWorld, acme: httpx.Client) -> None:
    body = assert_problem(
        acme.get(f"/v1/accounts/{ACME}/balance", params={"as_of": "now"}), 422, "invalid-request"
    )
    assert "'as_of'" in body["detail"] and "takes none" in body["detail"]
    unlock = acme.post(UNLOCK, params={"dry_run": "1"}, json={"contacts": [email("a@corp.com")]})
    assert_problem(unlock, 422, "invalid-request")
    assert world.verifier.calls == []


def test_unknown_routes_and_methods(world: ApiWorld, acme: httpx.Client) -> None:
    assert_problem(acme.get("/v1/nothing"), 404, "not-found")
    assert_problem(acme.get(f"/v1/accounts/{ACME}/unlock/more"), 404, "not-found")
    wrong = acme.delete(f"/v1/accounts/{ACME}/subscription")
    assert_problem(wrong, 405, "method-not-allowed")
    assert set(wrong.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert_problem(acme.get(UNLOCK), 405, "method-not-allowed")


def test_openapi_document_is_served_without_a_key(world: ApiWorld) -> None:
    with world.anonymous() as anonymous:
        response = anonymous.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert "/v1/accounts/{account}/unlock" in document["paths"]
    contacts = document["components"]["schemas"]["UnlockRequest"]["properties"]["contacts"]
    assert contacts["maxItems"] == 50
    problem_types = document["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
    assert PROBLEM + "idempotency-key-reused" in problem_types


def test_canonical_contacts_match_the_core(world: ApiWorld, acme: httpx.Client) -> None:
    """The API parses mobiles at the boundary (adapters.phones) into the E.164 the core
    takes, and answers each datum in the core's canonical form."""
    raw = ["  MiXed@Corp.Com", "+44 20 7946 0958", "+1.555.000.0006"]
    response = acme.post(
        UNLOCK, json={"contacts": [email(raw[0]), mobile(raw[1]), mobile(raw[2])]}
    ).json()
    assert [i["value"] for i in response["items"]] == [
        Contact.email(raw[0]).value,
        Contact.mobile("+442079460958").value,
        Contact.mobile("+15550000006").value,
    ]


def test_r22_members_and_allowances_over_http(world: ApiWorld, acme: httpx.Client) -> None:
    members = f"/v1/accounts/{ACME}/members"
    added = acme.post(members, json={"member": "alice"})
    assert added.status_code == 200, added.text
    assert added.json() == {"member": "alice", "added": True}
    assert acme.post(members, json={"member": "alice"}).json()["added"] is False
    allowance = {"member": "alice", "allowance": {"email": 2, "mobile": 0}}
    assert acme.put(f"{members}/allowance", json=allowance).json() == allowance
    batch = [email(f"m{i}@corp.com") for i in range(3)]
    answer = acme.post(UNLOCK, json={"contacts": batch, "member": "alice"}).json()
    assert [i["outcome"] for i in answer["items"]] == [
        "charged",
        "charged",
        "member_allowance_exceeded",
    ]
    entries = acme.get(f"/v1/accounts/{ACME}/statement").json()["entries"]
    assert [e["cause"]["member"] for e in entries if e["kind"] == "charge"] == ["alice"] * 2
    usage = acme.get(f"{members}/usage", params={"member": "alice"}).json()
    assert (usage["used"], usage["period"]["index"]) == ({"email": 2, "mobile": 0}, 0)
    assert acme.put(f"{members}/allowance", json={"member": "alice", "allowance": None}).is_success
    again = acme.post(UNLOCK, json={"contacts": batch, "member": "alice"}).json()
    assert [i["outcome"] for i in again["items"]] == ["already_owned"] * 2 + ["charged"]
    unknown = acme.post(UNLOCK, json={"contacts": batch, "member": "carol"})
    assert_problem(unknown, 422, "unknown-member")
    missing = acme.get(f"{members}/usage")
    assert_problem(missing, 422, "invalid-request")


def test_r24_events_and_the_low_balance_threshold(world: ApiWorld, acme: httpx.Client) -> None:
    threshold = f"/v1/accounts/{ACME}/low-balance-threshold"
    events = f"/v1/accounts/{ACME}/events"
    answer = acme.put(threshold, json={"pool": "email", "credits": 11_999})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"email": 11_999, "mobile": 80}  # mobile: 10% of 800
    assert acme.get(events).json() == {"events": [], "next_after_seq": 0}
    assert acme.post(UNLOCK, json={"contacts": [email("first@corp.com")]}).is_success
    page = acme.get(events).json()
    (low,) = page["events"]
    assert page["next_after_seq"] == 1
    assert (low["type"], low["account"], low["seq"]) == ("credits.low", ACME, 1)
    assert low["id"].startswith("evt_")
    assert low["data"] == {"pool": "email", "balance": 11_999, "threshold": 11_999, "entry_seq": 2}
    assert acme.get(events, params={"after_seq": 1}).json() == {
        "events": [],
        "next_after_seq": 1,
    }
    reset = acme.put(threshold, json={"pool": "email", "credits": None}).json()
    assert reset["email"] == 1_200
    assert_problem(acme.get(events, params={"limit": 0}), 422, "invalid-request")
    assert_problem(acme.get(events, params={"limit": 1001}), 422, "invalid-request")
    assert_problem(acme.get(events, params={"after": 1}), 422, "invalid-request")
    assert_problem(
        acme.put(threshold, json={"pool": "email", "credits": -1}), 422, "invalid-request"
    )
    assert_problem(acme.put(threshold, json={"pool": "fax", "credits": 1}), 422, "invalid-request")
