"""Webhooks end to end (R24): the service's own events, written by real charges in a real
database (SQLite, and PostgreSQL), delivered by the real `credits webhooks deliver` to a
real receiver on 127.0.0.1, each verified with the `standardwebhooks` package.

Nothing is replaced but the clock the commands read (cli_support): the account is
charged through bootstrap's wiring, as the CLI wires it, with a scripted verifier."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from adapters import bootstrap
from adapters.bootstrap import Settings
from cli_support import Cli
from credits_domain import Contact
from credits_domain.events import Event
from webhook_support import Receiver, Reply

IGNITE_MOBILE = 333  # ignite's monthly mobile credits (R3); the default threshold is 34


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as made:
        yield made


@pytest.fixture(params=["sqlite", "postgresql"])
def cli(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    made = Cli(tmp_path, monkeypatch)
    if request.param == "postgresql":
        made.url = request.getfixturevalue("postgres_url")
    # A receiver checks the timestamp against its own clock: run the story at real time.
    made.clock.set(datetime.now(UTC).replace(microsecond=0))
    made.ok("db", "upgrade")
    return made


def _charge_mobiles(cli: Cli, account: str, first: int, count: int) -> None:
    settings = Settings(database_url=cli.url, verifier_script={})
    with bootstrap.build(settings, clock=cli.clock) as wiring:
        mobiles = [Contact.mobile(f"+447700900{n:03d}") for n in range(first, first + count)]
        wiring.service.unlock(account, mobiles)


def _events(cli: Cli, account: str) -> list[Event]:
    with bootstrap.build(Settings(database_url=cli.url), clock=cli.clock) as wiring:
        return wiring.service.events(account)


def _verified(secret: str, body: bytes, headers: dict[str, str]) -> Any:
    return Webhook(secret).verify(body, headers)  # raises on a bad signature or timestamp


def test_low_and_depleted_reach_a_real_receiver_signed_in_order_and_retried(
    cli: Cli, receiver: Receiver
) -> None:
    cli.ok("subscribe", "acme", "ignite")
    added = cli.ok("webhooks", "add", "acme", receiver.url).out.split()
    endpoint_id, secret = added[2], added[-1]
    _charge_mobiles(cli, "acme", 0, IGNITE_MOBILE - 20)  # 20 left: at or below 34, low
    _charge_mobiles(cli, "acme", 500, 20)  # 0 left: depleted
    events = _events(cli, "acme")
    assert [e.type.value for e in events] == ["credits.low", "credits.depleted"], events

    out = cli.ok("webhooks", "deliver").out
    assert f"Delivered {len(events)}, failed 0 (1 endpoint due)." in out
    assert [r.headers["webhook-id"] for r in receiver.received] == [e.id for e in events]
    got = [_verified(secret, r.body, r.headers) for r in receiver.received]
    assert [g["data"]["seq"] for g in got] == [e.seq for e in events]
    assert [(g["type"], g["data"]["account"]) for g in got][-2:] == [
        ("credits.low", "acme"),
        ("credits.depleted", "acme"),
    ]
    assert {g["data"]["pool"] for g in got if g["type"] in ("credits.low", "credits.depleted")} == {
        "mobile"
    }

    # A receiver that fails: the event stays pending and a later pass sends it again, with
    # the same webhook-id (the event's id) and a valid signature.
    cli.ok("top-up", "acme", "--mobile", "100", "--reason", "goodwill")
    receiver.script(Reply(status=503))
    _charge_mobiles(cli, "acme", 600, 100)  # 100 -> 0: low and depleted again
    fresh = _events(cli, "acme")[len(events) :]
    assert [e.type.value for e in fresh] == ["credits.low", "credits.depleted"]
    before = len(receiver.received)
    out = cli.ok("webhooks", "deliver").out
    assert f"failed acme event {fresh[0].seq} ({fresh[0].id})" in out and "HTTP 503" in out
    assert "Delivered 0, failed 1 (1 endpoint due)." in out
    assert "Delivered 0, failed 0 (0 endpoints due)." in cli.ok("webhooks", "deliver").out
    cli.clock.advance(timedelta(minutes=1))  # past the first retry's backoff
    out = cli.ok("webhooks", "deliver").out
    assert f"Delivered {len(fresh)}, failed 0 (1 endpoint due)." in out
    retried = receiver.received[before:]
    assert [r.headers["webhook-id"] for r in retried] == [fresh[0].id] + [e.id for e in fresh]
    got = [_verified(secret, r.body, r.headers) for r in retried]
    assert [g["data"]["seq"] for g in got] == [fresh[0].seq] + [e.seq for e in fresh]
    assert json.loads(retried[0].body) == json.loads(retried[1].body)
    listed = cli.ok("webhooks", "list", "acme", "--format", "json").json()["endpoints"]
    assert [(e["endpoint_id"], e["status"], e["last_seq"]) for e in listed] == [
        (endpoint_id, "active", fresh[-1].seq)
    ]
