"""Test mode (`credits serve --test-mode`): sandbox accounts, test clocks, custom plans and
the magic values of the test verifier; and every client-controlled input past its bound.

The app runs under a real uvicorn on 127.0.0.1 (`http_api_support.serve`), over an
in-memory repository wired as the composition root wires a test-mode server; the
command's own refusals run `credits serve` as a process.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters import bootstrap
from adapters.api import create_app
from adapters.api.sandbox import Sandbox
from adapters.clock import ManualClock
from adapters.memory import InMemoryApiKeyStore, InMemoryRepository
from adapters.verifier import SandboxVerifier
from adapters.webhooks import MemoryEndpointStore
from credits_domain import ChargePolicy, Contact, CreditService, Verdict
from credits_domain.sandbox import (
    MAGIC_EMAIL_DOMAINS,
    MAGIC_MOBILE_ENDINGS,
    MAX_CLOCK_ADVANCE_S,
    MAX_SANDBOX_PLANS,
    sandbox_verdict,
)
from credits_domain.testing.http import instant
from http_api_support import PROBLEM, client, serve

SERVER_NOW = datetime(2025, 3, 31, 12, 30, 15, 123456, tzinfo=UTC)
CREDITS = Path(sys.executable).parent / "credits"
README = Path(__file__).resolve().parents[1] / "README.md"


@contextmanager
def sandbox_server(*, max_accounts: int = 50, sandbox: bool = True) -> Iterator[str]:
    repository = InMemoryRepository()
    server_clock = ManualClock(SERVER_NOW)
    verifier = SandboxVerifier()
    service = CreditService(
        repository=repository,
        verifier=verifier,
        clock=server_clock,
        policy=ChargePolicy(max_batch=1000),
    )
    keys = InMemoryApiKeyStore(clock=server_clock)
    wiring = bootstrap.Wiring(
        service=service,
        repository=repository,
        keys=keys,
        verifier=verifier,
        clock=server_clock,
        webhooks=MemoryEndpointStore(),
    )
    made = bootstrap.build_sandbox(wiring, max_accounts=max_accounts) if sandbox else None
    with serve(create_app(service, keys, max_batch=50, sandbox=made)) as base_url:
        yield base_url


@pytest.fixture
def base_url() -> Iterator[str]:
    with sandbox_server() as url:
        yield url


def new_account(base_url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = httpx.post(f"{base_url}/v1/test/accounts", json=body or {})
    assert answer.status_code == 201, answer.text
    made: dict[str, Any] = answer.json()
    return made


def advance(base_url: str, made: dict[str, Any], seconds: object) -> httpx.Response:
    with client(base_url, made["api_key"]) as http:
        return http.post(f"/v1/test/accounts/{made['account']}/clock", json={"seconds": seconds})


def problem(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, answer.json()["type"].removeprefix(PROBLEM)


# -- sandbox accounts and their clocks ------------------------------------------------------


def test_a_sandbox_account_comes_with_its_key_a_clock_in_whole_seconds_and_its_plans(
    base_url: str,
) -> None:
    made = new_account(base_url, {"plans": [{"name": "tiny", "monthly": {"email": 3}}]})
    assert made["account"].startswith("sbx_")
    assert made["now"] == "2025-03-31T12:30:15Z"  # the server's time, whole seconds
    assert made["plans"] == ["ignite", "boost", "power", "tiny"]
    assert made["subscription"] is None
    with client(base_url, made["api_key"]) as http:
        answer = http.post(f"/v1/accounts/{made['account']}/subscription", json={"plan": "tiny"})
        assert answer.status_code == 201, answer.text
        assert http.get(f"/v1/accounts/{made['account']}/balance").json()["email"] == 3


def test_each_sandbox_clock_moves_alone_and_renewals_follow_it(base_url: str) -> None:
    custom = {"name": "tiny", "monthly": {"email": 3, "mobile": 1}}
    first = new_account(base_url, {"plans": [custom], "plan": "tiny"})
    second = new_account(base_url, {"plans": [custom], "plan": "tiny"})
    assert first["subscription"]["period"]["end"] == "2025-04-30T12:30:15Z"  # R4 clamping
    start = SERVER_NOW.replace(microsecond=0)
    to_boundary = int((datetime(2025, 4, 30, 12, 30, 15, tzinfo=UTC) - start).total_seconds())
    assert advance(base_url, first, to_boundary - 1).json()["now"] == "2025-04-30T12:30:14Z"
    with client(base_url, first["api_key"]) as http:
        assert http.get(f"/v1/accounts/{first['account']}/balance").json()["email"] == 3
    assert advance(base_url, first, 1).json()["now"] == "2025-04-30T12:30:15Z"
    with client(base_url, first["api_key"]) as http:
        assert http.get(f"/v1/accounts/{first['account']}/balance").json()["email"] == 6
    with client(base_url, second["api_key"]) as http:
        assert http.get(f"/v1/accounts/{second['account']}/balance").json()["email"] == 3


def test_a_clock_is_moved_only_with_its_own_accounts_key(base_url: str) -> None:
    first, second = new_account(base_url), new_account(base_url)
    with client(base_url, second["api_key"]) as http:
        answer = http.post(f"/v1/test/accounts/{first['account']}/clock", json={"seconds": 5})
    assert problem(answer) == (404, "unknown-account")
    with client(base_url, None) as http:
        answer = http.post(f"/v1/test/accounts/{first['account']}/clock", json={"seconds": 5})
    assert problem(answer) == (401, "unauthorized")


@pytest.mark.parametrize(
    ("seconds", "status"),
    [(1, 200), (MAX_CLOCK_ADVANCE_S, 200), (MAX_CLOCK_ADVANCE_S + 1, 422), (0, 422), (-1, 422)],
)
def test_a_clock_moves_forward_by_a_bounded_amount(
    base_url: str, seconds: int, status: int
) -> None:
    made = new_account(base_url)
    answer = advance(base_url, made, seconds)
    assert answer.status_code == status, answer.text
    if status == 422:
        assert problem(answer) == (422, "invalid-request")
        assert "seconds" in answer.json()["detail"]


def test_sandbox_accounts_beyond_the_bound_are_refused() -> None:
    with sandbox_server(max_accounts=2) as url:
        new_account(url)
        new_account(url)
        answer = httpx.post(f"{url}/v1/test/accounts", json={})
        assert problem(answer) == (409, "sandbox-full")
        assert "--max-sandbox-accounts" in answer.json()["detail"]


def test_custom_plans_beyond_the_bound_are_refused(base_url: str) -> None:
    plans = [{"name": f"p{i}", "monthly": {"email": 1}} for i in range(MAX_SANDBOX_PLANS + 1)]
    new_account(base_url, {"plans": plans[:MAX_SANDBOX_PLANS]})
    answer = httpx.post(f"{base_url}/v1/test/accounts", json={"plans": plans})
    assert problem(answer) == (422, "invalid-request")
    assert "plans" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("plan", "slug"),
    [
        ({"name": "big", "monthly": {"email": 10**12}}, None),
        ({"name": "big", "monthly": {"email": 10**12 + 1}}, "invalid-request"),
        ({"name": "x" * 100, "monthly": {}}, None),
        ({"name": "x" * 101, "monthly": {}}, "invalid-request"),
        (
            {"name": "p", "monthly": {}, "prices": {"mobile": {"pool": "email", "credits": 0}}},
            "invalid-request",
        ),
        (
            {"name": "p", "monthly": {}, "prices": {"mobile": {"pool": "email", "credits": 15}}},
            None,
        ),
        ({"name": "p", "monthly": {}, "rollover_cap": {"mobile": 10**12 + 1}}, "invalid-request"),
        ({"name": " p", "monthly": {}}, "invalid-plan"),
        ({"name": "boost", "monthly": {}}, "invalid-plan"),
        ({"name": "p", "monthly": {}, "surprise": 1}, "invalid-request"),
    ],
)
def test_custom_plans_are_checked_as_any_plan(
    base_url: str, plan: dict[str, Any], slug: str | None
) -> None:
    answer = httpx.post(
        f"{base_url}/v1/test/accounts", json={"plans": [plan], "plan": plan["name"]}
    )
    if slug is None:
        assert answer.status_code == 201, answer.text
        assert answer.json()["subscription"]["plan"] == plan["name"]
    else:
        assert problem(answer) == (422, slug), answer.text


def test_subscribing_at_creation_to_an_unknown_plan_is_refused_and_takes_no_slot() -> None:
    with sandbox_server(max_accounts=1) as url:
        for _ in range(3):
            answer = httpx.post(f"{url}/v1/test/accounts", json={"plan": "nope"})
            assert problem(answer) == (422, "unknown-plan")
        new_account(url)


def test_custom_plans_are_the_accounts_own(base_url: str) -> None:
    first = new_account(base_url, {"plans": [{"name": "mine", "monthly": {"email": 2}}]})
    second = new_account(base_url)
    with client(base_url, second["api_key"]) as http:
        answer = http.post(f"/v1/accounts/{second['account']}/subscription", json={"plan": "mine"})
    assert problem(answer) == (422, "unknown-plan")
    with client(base_url, first["api_key"]) as http:
        answer = http.post(f"/v1/accounts/{first['account']}/subscription", json={"plan": "mine"})
    assert answer.status_code == 201


# -- the magic values -----------------------------------------------------------------------

MAGIC_CASES = [
    *[(f"ann@{domain}", verdict) for domain, verdict in MAGIC_EMAIL_DOMAINS.items()],
    ("ann@example.com", Verdict.VALID),
    *[(f"+1 415 555 {ending}", verdict) for ending, verdict in MAGIC_MOBILE_ENDINGS.items()],
    ("+1 415 555 0100", Verdict.VALID),
]


def test_the_magic_values_choose_the_verdict_over_http(base_url: str) -> None:
    made = new_account(base_url, {"plan": "boost"})
    contacts = [
        {"channel": "email" if "@" in value else "mobile", "value": value}
        for value, _ in MAGIC_CASES
    ]
    with client(base_url, made["api_key"]) as http:
        answer = http.post(f"/v1/accounts/{made['account']}/unlock", json={"contacts": contacts})
    assert answer.status_code == 200, answer.text
    verdicts = [item["verdict"] for item in answer.json()["items"]]
    assert verdicts == [verdict.value for _, verdict in MAGIC_CASES]
    outcomes = [item["outcome"] for item in answer.json()["items"]]
    assert outcomes == [
        "charged" if verdict is Verdict.VALID else "not_verified" for _, verdict in MAGIC_CASES
    ]


def test_the_readme_table_is_the_rule() -> None:
    text = README.read_text(encoding="utf-8")
    for domain, verdict in MAGIC_EMAIL_DOMAINS.items():
        assert f"| an email at `{domain}` | `{verdict.value}` |" in text
    for ending, verdict in MAGIC_MOBILE_ENDINGS.items():
        assert f"| a mobile number ending in `{ending}` | `{verdict.value}` |" in text
    assert sandbox_verdict(Contact.email("a@b.example")) is Verdict.VALID


# -- only in test mode ----------------------------------------------------------------------


def test_the_test_routes_are_404_and_undocumented_outside_test_mode() -> None:
    with sandbox_server(sandbox=False) as url:
        answer = httpx.post(f"{url}/v1/test/accounts", json={})
        assert problem(answer) == (404, "not-found")
        answer = httpx.post(f"{url}/v1/test/accounts/sbx_1/clock", json={"seconds": 1})
        assert problem(answer) == (404, "not-found")
        document = httpx.get(f"{url}/openapi.json").json()
        assert not any(path.startswith("/v1/test") for path in document["paths"])
        assert "magic" not in httpx.get(f"{url}/docs").text


def test_the_test_routes_are_documented_in_test_mode(base_url: str) -> None:
    document = httpx.get(f"{base_url}/openapi.json").json()
    assert {"/v1/test/accounts", "/v1/test/accounts/{account}/clock"} <= set(document["paths"])
    assert "invalid.example" in httpx.get(f"{base_url}/docs").text


# -- the command ----------------------------------------------------------------------------


def credits_serve(directory: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`credits serve` as a process, for a refusal (it must exit at once)."""
    command = [str(CREDITS), "serve", *options]
    return subprocess.run(
        command, cwd=directory, capture_output=True, text=True, check=False, timeout=60
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example.com"])
def test_serve_refuses_test_mode_beyond_the_loopback(tmp_path: Path, host: str) -> None:
    done = credits_serve(tmp_path, "--test-mode", "--host", host)
    assert done.returncode == 2
    assert f"--test-mode serves on the loopback only (127.0.0.1, ::1 or localhost), not {host}" in (
        done.stderr
    )
    assert not (tmp_path / "credits.db").exists()


def test_serve_refuses_test_mode_with_a_verifier(tmp_path: Path) -> None:
    done = credits_serve(tmp_path, "--test-mode", "--demo-verifier")
    assert done.returncode == 2
    assert "give no --verifier-url or --demo-verifier" in done.stderr


def test_the_sandbox_starts_its_clocks_at_the_wiring_clock_in_whole_seconds() -> None:
    clock = ManualClock(SERVER_NOW)
    repository = InMemoryRepository()
    verifier = SandboxVerifier()
    service = CreditService(repository=repository, verifier=verifier, clock=clock)
    wiring = bootstrap.Wiring(
        service=service,
        repository=repository,
        keys=InMemoryApiKeyStore(clock=clock),
        verifier=verifier,
        clock=clock,
        webhooks=MemoryEndpointStore(),
    )
    sandbox: Sandbox = bootstrap.build_sandbox(wiring, max_accounts=1)
    assert sandbox.new_clock().now() == SERVER_NOW.replace(microsecond=0)
    clock.advance(timedelta(days=1))
    assert sandbox.new_clock().now() == (SERVER_NOW + timedelta(days=1)).replace(microsecond=0)


def test_the_readme_test_mode_commands_do_what_they_say() -> None:
    from test_cli_walkthrough import curl_request, section, shell_lines

    commands = shell_lines(section("Test mode: a sandbox"))
    lines = [line.split("  #")[0] for line in commands if line.startswith("curl ")]
    assert len(lines) == 2
    with sandbox_server(max_accounts=1) as url, httpx.Client(timeout=10) as http:
        port = int(url.rsplit(":", 1)[1])
        made = http.send(curl_request(lines[0], port, ""))
        assert made.status_code == 201, made.text
        assert made.json()["subscription"]["plan"] == "tiny"
        account, key = made.json()["account"], made.json()["api_key"]
        moved = http.send(curl_request(lines[1].replace("$ACCOUNT", account), port, key))
        assert moved.status_code == 200, moved.text
        assert instant(moved.json()["now"]) - instant(made.json()["now"]) == timedelta(days=31)
        balance = http.get(
            f"{url}/v1/accounts/{account}/balance", headers={"Authorization": f"Bearer {key}"}
        )
        assert balance.json()["email"] == 6  # renewed: "31 days later"
