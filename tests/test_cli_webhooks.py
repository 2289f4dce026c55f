"""`credits webhooks add|list|remove|deliver` on a real SQLite file, delivering to a
real receiver on 127.0.0.1 (the outbox is a `ListSource` given to the composition root's
`event_source`, the one seam: the unit under test is delivery, not the outbox)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from adapters import bootstrap
from adapters.webhooks import MAX_ENDPOINTS_PER_ACCOUNT, MAX_URL_LENGTH
from cli_support import Cli, new_cli
from webhook_support import ListSource, Receiver, Reply


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    return new_cli(tmp_path, monkeypatch)


@pytest.fixture
def source(monkeypatch: pytest.MonkeyPatch) -> ListSource:
    made = ListSource()
    monkeypatch.setattr(bootstrap, "event_source", lambda service: made)
    return made


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as made:
        yield made


def _add(cli: Cli, url: str, account: str = "acme") -> tuple[str, str]:
    done = cli.ok("webhooks", "add", account, url)
    endpoint_id = done.out.split()[2]
    return endpoint_id, done.out.split()[-1]


def test_add_prints_the_secret_last_and_list_shows_the_endpoint(cli: Cli) -> None:
    endpoint_id, secret = _add(cli, "https://hooks.example.com/credits")
    assert endpoint_id.startswith("ep_") and secret.startswith("whsec_")
    listed = cli.ok("webhooks", "list", "acme", "--format", "json").json()["endpoints"]
    assert [(e["endpoint_id"], e["url"], e["status"]) for e in listed] == [
        (endpoint_id, "https://hooks.example.com/credits", "active")
    ]
    table = cli.ok("webhooks", "list", "acme").out
    assert endpoint_id in table and secret not in table
    assert "has no webhook endpoints" in cli.ok("webhooks", "list", "other").out


def test_remove_forgets_the_endpoint_and_an_unknown_one_is_refused(cli: Cli) -> None:
    endpoint_id, _ = _add(cli, "https://hooks.example.com/credits")
    assert "removed" in cli.ok("webhooks", "remove", "acme", endpoint_id).out
    assert cli.ok("webhooks", "list", "acme", "--format", "json").json()["endpoints"] == []
    line = cli.run("webhooks", "remove", "acme", endpoint_id).error_line()
    assert "no webhook endpoint" in line and "credits webhooks list" in line


@pytest.mark.parametrize(
    ("url", "code", "said"),
    [
        ("ftp://hooks.example.com/", 1, "http:// or https://"),
        ("https://user:pw@hooks.example.com/", 1, "user or password"),
        ("https://hooks.example.com/" + "x" * MAX_URL_LENGTH, 2, f"at most {MAX_URL_LENGTH:,}"),
    ],
)
def test_a_bad_url_is_refused_in_one_line(cli: Cli, url: str, code: int, said: str) -> None:
    done = cli.run("webhooks", "add", "acme", url)
    assert done.code == code and said in done.err
    assert "Traceback" not in done.err


def test_an_account_has_at_most_its_endpoints(cli: Cli) -> None:
    for i in range(MAX_ENDPOINTS_PER_ACCOUNT):
        _add(cli, f"https://hooks.example.com/{i}")
    line = cli.run("webhooks", "add", "acme", "https://hooks.example.com/x").error_line()
    assert "remove one first" in line


def test_deliver_sends_signed_events_and_says_what_failed(
    cli: Cli, source: ListSource, receiver: Receiver
) -> None:
    endpoint_id, secret = _add(cli, receiver.url)
    source.emit("acme", cli.clock.now())
    source.emit("acme", cli.clock.now())
    receiver.script(Reply(status=204), Reply(status=500))
    out = cli.ok("webhooks", "deliver").out
    assert "delivered acme event 1 (" in out
    assert "failed acme event 2" in out and "HTTP 500; next try at" in out
    assert out.strip().splitlines()[-1] == "Delivered 1, failed 1 (1 endpoint due)."
    got = receiver.received[0]
    # The CLI's clock is a manual one, set in the past: verify the signature at its time.
    assert got.headers["webhook-timestamp"] == str(int(cli.clock.now().timestamp()))
    expected = Webhook(secret).sign(got.headers["webhook-id"], cli.clock.now(), got.body.decode())
    assert got.headers["webhook-signature"] == expected
    listed = cli.ok("webhooks", "list", "acme", "--format", "json").json()["endpoints"][0]
    assert (listed["status"], listed["last_seq"], listed["attempts"]) == ("failing", 1, 1)
    assert "failing since" in cli.ok("webhooks", "list", "acme").out
    cli.clock.advance(timedelta(minutes=1))
    out = cli.ok("webhooks", "deliver").out
    assert "delivered acme event 2" in out
    assert receiver.seqs() == [1, 2, 2]
    assert endpoint_id in out


def test_list_shows_an_endpoint_disabled_after_three_days(
    cli: Cli, source: ListSource, receiver: Receiver
) -> None:
    _add(cli, receiver.url)
    source.emit("acme", cli.clock.now())
    receiver.default = Reply(status=500)
    for _ in range(200):  # a bound: about 45 tries in 3 days
        out = cli.ok("webhooks", "deliver").out
        if "disabled" in out:
            break
        cli.clock.advance(timedelta(hours=2))
    assert "the endpoint is disabled (3 days)" in out
    listed = cli.ok("webhooks", "list", "acme", "--format", "json").json()["endpoints"][0]
    assert listed["status"] == "disabled"
    assert "disabled after 3 days" in listed["disabled_reason"]
    assert "disabled" in cli.ok("webhooks", "list", "acme").out
    assert "Delivered 0, failed 0 (0 endpoints due)." in cli.ok("webhooks", "deliver").out


def test_an_endpoint_of_an_account_with_no_wallet_yet_has_nothing_to_deliver(
    cli: Cli, receiver: Receiver
) -> None:
    """The service's own outbox (no stand-in source): an endpoint may be registered before
    its account subscribes; a pass then delivers nothing, rather than failing on it."""
    _add(cli, receiver.url, account="not-yet")
    assert "Delivered 0, failed 0" in cli.ok("webhooks", "deliver").out
    assert receiver.received == []


def test_serve_runs_deliveries_beside_the_api_and_stops_cleanly(
    tmp_path: Path, receiver: Receiver
) -> None:
    credits = Path(sys.executable).parent / "credits"
    url = f"sqlite:///{tmp_path / 'credits.db'}"
    env = {**os.environ, "COLUMNS": "200"}
    for args in (["db", "upgrade"], ["webhooks", "add", "acme", receiver.url]):
        done = subprocess.run([str(credits), *args, "--db", url], capture_output=True, env=env)
        assert done.returncode == 0, done.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [str(credits), "serve", "--demo-verifier", "--port", str(port), "--db", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        with httpx.Client(timeout=10) as client:
            for _ in range(300):  # bounded: fails rather than waits forever
                try:
                    assert client.get(f"http://127.0.0.1:{port}/openapi.json").status_code == 200
                    break
                except httpx.TransportError:
                    threading.Event().wait(0.1)
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=60)
    # Ctrl-C: uvicorn stops, then the delivery thread; the house's exit status for it.
    assert server.returncode == 130, err
    assert err.decode().strip().splitlines()[-1] == "credits: error: interrupted"
    assert b"Traceback" not in err + out
    assert b"webhook delivery pass failed" not in err  # passes ran without error


def test_the_readme_receiver_accepts_a_delivery_and_refuses_a_forgery(
    cli: Cli, source: ListSource, receiver: Receiver
) -> None:
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Webhooks", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    space: dict[str, object] = {}
    exec(compile(code.group(1), "README.md", "exec"), space)
    receive = space["receive"]
    assert callable(receive)
    # A receiver checks the timestamp against its own clock: deliver at the real time.
    cli.clock.set(datetime.now(UTC))
    _, secret = _add(cli, receiver.url)
    source.emit("acme", cli.clock.now())
    cli.ok("webhooks", "deliver")
    (got,) = receiver.received
    event = receive(secret, got.body, got.headers)
    assert event["type"] == "credits.low" and event["data"]["seq"] == 1
    assert receive(secret, got.body + b" ", got.headers) is None
    other = "whsec_" + "B" * 43 + "="
    assert receive(other, got.body, got.headers) is None
