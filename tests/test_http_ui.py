"""The pages for people, over HTTP: /ui (sign-in, sessions, the account page) and /docs.

Under a real uvicorn on 127.0.0.1, called with httpx as a browser would call them
(forms url-encoded, an Origin header, cookies kept by the client). The browser itself
is tests/test_browser.py; here are the rules a browser cannot be trusted to show: the
cookie's attributes, the origin check, the limits, the end of a session, isolation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import httpx
import pytest

from adapters.api import create_app
from adapters.api.chart import MAX_STEPS, balance_chart, steps
from adapters.api.ui import COOKIE, MAX_FORM_BYTES, MAX_KEY_LENGTH, PAGE, Sessions
from adapters.clock import ManualClock
from adapters.memory import InMemoryApiKeyStore, InMemoryRepository
from adapters.verifier import ScriptedVerifier
from credits_domain import (
    Cause,
    Channel,
    Contact,
    Credits,
    CreditService,
    EntryKind,
    LedgerEntry,
    Operation,
    Verdict,
)
from http_api_support import START, serve

SIGN_IN = "/ui/sign-in"
SIGN_OUT = "/ui/sign-out"


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@attrs.define
class UiWorld:
    base_url: str
    service: CreditService
    clock: ManualClock
    keys: InMemoryApiKeyStore
    ticks: FakeMonotonic
    sessions: Sessions

    def browser(self) -> httpx.Client:
        """A client that sends what a browser sends with our forms: our Origin."""
        return httpx.Client(base_url=self.base_url, headers={"Origin": self.base_url}, timeout=10.0)

    @contextmanager
    def signed_in(self, account: str) -> Iterator[httpx.Client]:
        with self.browser() as c:
            answer = c.post(SIGN_IN, data={"key": self.keys.create(account).token})
            assert answer.status_code == 303 and answer.headers["location"] == "/ui"
            yield c


@pytest.fixture
def world() -> Iterator[UiWorld]:
    clock = ManualClock(START)
    service = CreditService(
        repository=InMemoryRepository(),
        verifier=ScriptedVerifier({"bad@corp.com": Verdict.INVALID}),
        clock=clock,
    )
    keys = InMemoryApiKeyStore(clock=clock)
    ticks = FakeMonotonic()
    sessions = Sessions(lifetime_s=600, max_sessions=50, now=ticks)
    with serve(create_app(service, keys, sessions=sessions)) as base_url:
        yield UiWorld(base_url, service, clock, keys, ticks, sessions)


def emails(prefix: str, count: int) -> list[Contact]:
    return [Contact.email(f"{prefix}{i:02d}@corp.com") for i in range(count)]


def section(page: str, name: str) -> str:
    found = re.search(rf'<section class="card" id="{name}".*?</section>', page, re.S)
    assert found is not None, name
    return found.group(0)


def field(html: str, name: str) -> str:
    found = re.search(rf'data-field="{name}">([^<]*)<', html)
    assert found is not None, name
    return found.group(1)


def problem_slug(answer: httpx.Response) -> str:
    found = re.search(r'data-problem="([a-z-]+)"', answer.text)
    assert found is not None, answer.text
    return found.group(1)


# -- signing in and out -------------------------------------------------------------------


def test_without_a_session_the_page_sends_to_the_sign_in_form(world: UiWorld) -> None:
    with world.browser() as c:
        answer = c.get("/ui")
        assert answer.status_code == 303 and answer.headers["location"] == SIGN_IN
        form = c.get(SIGN_IN)
        assert form.status_code == 200
        assert 'method="post" action="/ui/sign-in"' in form.text
        assert 'type="password"' in form.text


def test_signing_in_sets_a_strict_http_only_cookie_and_no_key_in_any_url(
    world: UiWorld,
) -> None:
    world.service.subscribe("acme", "boost")
    token = world.keys.create("acme").token
    with world.browser() as c:
        answer = c.post(SIGN_IN, data={"key": token})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui"
        cookie = answer.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes
        assert "samesite=strict" in cookie.lower() and "path=/ui" in cookie.lower()
        assert "max-age=600" in cookie.lower()
        assert "secure" not in attributes  # plain http on the loopback; https sets it
        value = c.cookies[COOKIE]
        assert len(value) >= 43 and token not in cookie and token not in value
        page = c.get("/ui")
        assert page.status_code == 200 and token not in page.text
        for header, expected in [
            ("cache-control", "no-store"),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
        ]:
            assert page.headers[header] == expected
        assert "default-src 'none'" in page.headers["content-security-policy"]


def test_a_wrong_key_is_refused_with_the_form_again(world: UiWorld) -> None:
    world.service.subscribe("acme", "boost")
    with world.browser() as c:
        for key, status in [
            ("ck_0000000000000000_" + "A" * 43, 401),
            ("not a key", 401),
            ("", 400),
            ("k" * (MAX_KEY_LENGTH + 1), 400),
        ]:
            answer = c.post(SIGN_IN, data={"key": key})
            assert answer.status_code == status
            assert 'class="error"' in answer.text and COOKIE not in answer.headers.get(
                "set-cookie", ""
            )
        # The longest key the form takes is still read (and refused as unknown).
        assert c.post(SIGN_IN, data={"key": "k" * MAX_KEY_LENGTH}).status_code == 401


def test_a_form_that_is_not_a_small_url_encoded_form_is_refused(world: UiWorld) -> None:
    token = world.keys.create("acme").token
    with world.browser() as c:
        big = {"key": token, "pad": "x" * MAX_FORM_BYTES}
        assert c.post(SIGN_IN, data=big).status_code == 400
        assert c.post(SIGN_IN, json={"key": token}).status_code == 400
        assert c.post(SIGN_IN, data={"key": [token, token]}).status_code == 400
        assert COOKIE not in c.cookies


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Referer": "http://evil.example/page"},
        {"Origin": "https://127.0.0.1"},  # another scheme is another origin
    ],
)
def test_the_forms_refuse_another_origin(world: UiWorld, headers: dict[str, str]) -> None:
    world.service.subscribe("acme", "boost")
    token = world.keys.create("acme").token
    with httpx.Client(base_url=world.base_url, headers=headers) as stranger:
        answer = stranger.post(SIGN_IN, data={"key": token})
        assert answer.status_code == 403 and problem_slug(answer) == "cross-origin-form"
        assert COOKIE not in stranger.cookies
    with world.signed_in("acme") as mine:
        # Another site cannot sign a browser out either (the cookie would not come with
        # a SameSite=Strict request; the origin check holds even if it did).
        cookies = {COOKIE: mine.cookies[COOKIE]}
        with httpx.Client(base_url=world.base_url, headers=headers, cookies=cookies) as forged:
            assert forged.post(SIGN_OUT).status_code == 403
        assert mine.get("/ui").status_code == 200


def test_a_same_origin_referer_stands_in_for_a_missing_origin(world: UiWorld) -> None:
    world.service.subscribe("acme", "boost")
    token = world.keys.create("acme").token
    with httpx.Client(base_url=world.base_url, headers={"Referer": world.base_url + SIGN_IN}) as c:
        assert c.post(SIGN_IN, data={"key": token}).status_code == 303


def test_signing_out_ends_the_session_on_the_server(world: UiWorld) -> None:
    world.service.subscribe("acme", "boost")
    with world.signed_in("acme") as c:
        stolen = c.cookies[COOKIE]
        answer = c.post(SIGN_OUT)
        assert answer.status_code == 303 and answer.headers["location"] == SIGN_IN
        assert "max-age=0" in answer.headers["set-cookie"].lower()
        assert c.get("/ui").status_code == 303
    # The old cookie value is worth nothing now.
    with httpx.Client(base_url=world.base_url, cookies={COOKIE: stolen}) as replay:
        assert replay.get("/ui").status_code == 303
    assert len(world.sessions) == 0


def test_a_session_ends_at_its_lifetime(world: UiWorld) -> None:
    world.service.subscribe("acme", "boost")
    with world.signed_in("acme") as c:
        world.ticks.now += 599
        assert c.get("/ui").status_code == 200
        world.ticks.now += 1
        assert c.get("/ui").status_code == 303
    assert len(world.sessions) == 0


def test_a_revoked_key_ends_its_sessions(world: UiWorld) -> None:
    world.service.subscribe("acme", "boost")
    issued = world.keys.create("acme")
    with world.browser() as c:
        c.post(SIGN_IN, data={"key": issued.token})
        assert c.get("/ui").status_code == 200
        world.keys.revoke(issued.key_id)
        assert c.get("/ui").status_code == 303


def test_sessions_are_bounded_and_the_oldest_goes_first() -> None:
    ticks = FakeMonotonic()
    sessions = Sessions(lifetime_s=60, max_sessions=2, now=ticks)
    first, second = sessions.open("a", "key-a"), sessions.open("b", "key-b")
    third = sessions.open("c", "key-c")
    assert sessions.find(first) is None
    assert [s.account for s in map(sessions.find, (second, third)) if s] == ["b", "c"]
    assert len(sessions) == 2
    assert len({first, second, third}) == 3
    with pytest.raises(ValueError, match="lifetime_s"):
        Sessions(lifetime_s=0)


def test_a_cookie_of_no_session_is_a_sign_in(world: UiWorld) -> None:
    for value in ["x", "y" * 101, ""]:
        with httpx.Client(base_url=world.base_url, cookies={COOKIE: value}) as c:
            assert c.get("/ui").status_code == 303


def test_an_account_without_a_subscription_reads_as_a_page_saying_so(world: UiWorld) -> None:
    with world.signed_in("newco") as c:
        answer = c.get("/ui")
        assert answer.status_code == 404 and problem_slug(answer) == "unknown-account"
        assert "Sign out" in answer.text


# -- the account page ---------------------------------------------------------------------


def test_the_page_shows_pools_renewal_usage_and_the_chart(world: UiWorld) -> None:
    s = world.service
    s.subscribe("acme", "boost")
    s.unlock("acme", [*emails("jan", 3), Contact.mobile("+15550000001")])
    world.clock.advance(timedelta(days=30))  # into period 2 (anchor 31 Jan -> 28 Feb)
    s.unlock("acme", [*emails("feb", 2), Contact.email("bad@corp.com")])
    world.clock.advance(timedelta(hours=1))
    s.export("acme", emails("jan", 3) + emails("exp", 1), destination="csv")
    s.enrich("acme", [Contact.mobile("+15550000002")])
    s.top_up("acme", Credits(email=50), reason="goodwill")
    s.report_bounce("acme", emails("feb", 1)[0])
    with world.signed_in("acme") as c:
        page = c.get("/ui").text
    pools = section(page, "pools")
    email_pool = pools.split('data-pool="mobile"')[0]
    assert field(email_pool, "available") == f"{12_000 - 3 + 12_000 - 2 - 1 + 50 + 1:,}"
    assert field(email_pool, "held") == "0"
    subscription = section(page, "subscription")
    assert field(subscription, "plan") == "boost" and field(subscription, "status") == "active"
    assert field(subscription, "renews-at") == "31 Mar 2025 09:00 UTC"
    assert field(subscription, "grant-email") == "12,000"
    usage = section(page, "usage")
    rows = dict(
        re.findall(
            r'data-operation="(\w+)"><td>\w+</td><td class="num" data-field="data">(\d+)<', usage
        )
    )
    assert rows == {"unlock": "2", "export": "1", "enrich": "1"}
    assert field(usage, "refunds") == "1"
    # The chart: the previous and the current period, one marker per step.
    email_chart = re.search(r'<svg class="chart" data-pool="email".*?</svg>', page, re.S)
    assert email_chart is not None
    marks = re.findall(
        r'data-kind="(\w+)" data-at="([^"]+)" data-amount="(-?\d+)" data-balance="(\d+)"',
        email_chart.group(0),
    )
    assert [(kind, int(amount), int(balance)) for kind, _, amount, balance in marks] == [
        ("grant", 12_000, 12_000),
        ("charge", -3, 11_997),
        ("grant", 12_000, 23_997),
        ("charge", -2, 23_995),  # the unlock: its two charges at one instant, one step
        ("charge", -1, 23_994),  # the export, an hour later
        ("top_up", 50, 24_044),
        ("refund", 1, 24_045),
    ]
    assert marks[2][1] == "2025-02-28T09:00:00+00:00"  # the renewal, at the boundary


def test_paging_the_statement_and_the_data_owned(world: UiWorld) -> None:
    s = world.service
    s.subscribe("acme", "boost")
    s.unlock("acme", emails("a", PAGE + 5))
    with world.signed_in("acme") as c:
        page = c.get("/ui").text
        statement = section(page, "statement")
        seqs = [int(n) for n in re.findall(r'<tr data-seq="(\d+)"', statement)]
        assert seqs == list(range(PAGE))
        following = re.search(r'href="([^"]+)" rel="statement-next"', statement)
        assert following is not None
        nxt = c.get(following.group(1).replace("&amp;", "&")).text
        seqs = [int(n) for n in re.findall(r'<tr data-seq="(\d+)"', section(nxt, "statement"))]
        assert seqs == list(range(PAGE, PAGE + 7))  # 2 grants + 25 charges in all
        assert 'rel="statement-next"' not in section(nxt, "statement")
        owned = section(page, "owned")
        data = re.findall(r'<tr data-datum="email:([^"]+)"', owned)
        assert data == [f"a{i:02d}@corp.com" for i in range(PAGE)]
        link = re.search(r'href="([^"]+)" rel="owned-next"', owned)
        assert link is not None
        rest = c.get(link.group(1).replace("&amp;", "&")).text
        data = re.findall(r'<tr data-datum="email:([^"]+)"', section(rest, "owned"))
        assert data == [f"a{i:02d}@corp.com" for i in range(PAGE, PAGE + 5)]


def test_another_accounts_data_never_appear(world: UiWorld) -> None:
    s = world.service
    for account in ("acme", "globex"):
        s.subscribe(account, "boost")
    s.unlock("acme", emails("mine", 2))
    s.unlock("globex", [Contact.email("theirs@globex.example"), Contact.mobile("+15559990000")])
    s.top_up("globex", Credits(email=777), reason="globex-only goodwill")
    with world.signed_in("acme") as c:
        pages = [
            c.get("/ui"),
            c.get("/ui?owned_after=email:a@a.com"),
            c.get("/ui?period=0&after=0"),
            c.get("/ui", params={"account": "globex"}),  # refused: 422
        ]
    assert [p.status_code for p in pages] == [200, 200, 200, 422]
    for page in pages:
        for secret in ("globex", "theirs@", "+15559990000", "777"):
            assert secret not in page.text


@pytest.mark.parametrize(
    "query",
    [
        "bogus=1",
        "period=1201",
        "period=-1",
        "period=1",  # the account's current period is 0
        "after=x",
        "after=" + "9" * 17,
        "owned_after=fax:123",
        "owned_after=email:not-an-email",
        "owned_after=email:" + "a" * 400,
    ],
)
def test_the_page_refuses_bad_parameters(world: UiWorld, query: str) -> None:
    world.service.subscribe("acme", "boost")
    with world.signed_in("acme") as c:
        answer = c.get("/ui?" + query)
        assert answer.status_code == 422, answer.text
        assert problem_slug(answer) == "invalid-request"


def test_the_page_is_at_most_a_page_of_each_list_however_long_the_history(
    world: UiWorld,
) -> None:
    world.service.subscribe("acme", "boost")
    world.service.unlock("acme", emails("x", 90))
    with world.signed_in("acme") as c:
        page = c.get("/ui").text
    assert len(re.findall(r"<tr data-seq=", page)) == PAGE
    assert len(re.findall(r"<tr data-datum=", page)) == PAGE


# -- the chart on its own -----------------------------------------------------------------


def entry(seq: int, at: datetime, kind: EntryKind, amount: int, after: int) -> LedgerEntry:
    return LedgerEntry(
        account="acme",
        seq=seq,
        kind=kind,
        pool=Channel.EMAIL,
        amount=amount,
        at=at,
        balance_after=after,
        cause=Cause(operation=Operation.UNLOCK),
    )


def test_a_batch_at_one_instant_is_one_step() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    t1 = t0 + timedelta(hours=1)
    found = steps(
        [
            entry(0, t0, EntryKind.GRANT, 10, 10),
            entry(1, t1, EntryKind.CHARGE, -1, 9),
            entry(2, t1, EntryKind.CHARGE, -1, 8),
            entry(3, t1, EntryKind.REFUND, 1, 9),
        ]
    )
    assert [(s.kind, s.amount, s.balance, s.entries) for s in found] == [
        (EntryKind.GRANT, 10, 10, 1),
        (EntryKind.CHARGE, -2, 8, 2),
        (EntryKind.REFUND, 1, 9, 1),
    ]


def test_a_chart_of_many_changes_keeps_a_bounded_number_of_markers() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    many = [entry(0, t0, EntryKind.GRANT, 10 * MAX_STEPS, 10 * MAX_STEPS)]
    many += [
        entry(i, t0 + timedelta(seconds=i), EntryKind.CHARGE, -1, 10 * MAX_STEPS - i)
        for i in range(1, 3 * MAX_STEPS)
    ]
    svg = balance_chart(
        Channel.EMAIL,
        start=t0,
        end=t0 + timedelta(days=30),
        boundaries=[],
        opening=0,
        entries=many,
    )
    marks = re.findall(r'data-amount="(-?\d+)"', svg)
    assert len(marks) <= MAX_STEPS
    assert sum(int(m) for m in marks) == 10 * MAX_STEPS - (3 * MAX_STEPS - 1)


# -- /docs ---------------------------------------------------------------------------------


def test_the_reference_is_served_without_a_key_and_names_every_operation(
    world: UiWorld,
) -> None:
    with httpx.Client(base_url=world.base_url) as c:
        docs = c.get("/docs")
        document: dict[str, Any] = c.get("/openapi.json").json()
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put"):
                assert f'data-operation="{operation["operationId"]}"' in docs.text
                assert f'data-method="{method.upper()}" data-path="{path}"' in docs.text
    for name in document["components"]["schemas"]:
        assert name in docs.text
    assert "/top-ups" in docs.text and "idempotency-key-reused" in docs.text


def external_references(html: str) -> list[str]:
    """Every address the page would load or send to that is not this server's."""
    found = re.findall(r'(?:src|href|action)="([^"]*)"', html)
    found += re.findall(r"url\(([^)]*)\)", html)
    found += re.findall(r"@import\s+[\"']?([^\"';]+)", html)
    return [ref for ref in found if not ref.startswith("/") and not ref.startswith("#")]


def test_no_page_and_no_asset_references_another_server(world: UiWorld) -> None:
    world.service.subscribe("acme", "boost")
    world.service.unlock("acme", emails("a", 2))
    with world.signed_in("acme") as c:
        pages = [c.get(path) for path in ("/docs", SIGN_IN, "/ui")]
        assets = [c.get(path) for path in ("/assets/site.css", "/assets/docs.js")]
    for page in pages:
        assert page.status_code == 200
        assert external_references(page.text) == []
    for asset in assets:
        assert asset.status_code == 200
        assert re.findall(r"https?://", asset.text) == []
    assert assets[0].headers["content-type"].startswith("text/css")
    assert assets[1].headers["content-type"].startswith("text/javascript")
    # The test of the test: it sees a reference when there is one.
    assert external_references('<link href="https://cdn.example/x.css">') == [
        "https://cdn.example/x.css"
    ]


def test_the_statement_names_the_member_the_grant_and_the_expiry(world: UiWorld) -> None:
    """R22, R23 on the account page: who charged, the grant drawn on, its expire entry."""
    world.service.subscribe("acme", "boost")
    world.service.add_member("acme", "ana")
    top_up = world.service.top_up(
        "acme",
        Credits(email=5),
        reason="promo",
        expires_at=world.clock.now() + timedelta(days=3),
    )
    grant = top_up.entries[0].seq
    world.service.unlock("acme", emails("ana", 2), member="ana")
    world.clock.advance(timedelta(days=4))
    with world.signed_in("acme") as c:
        statement = section(c.get("/ui").text, "statement")
    rows = re.findall(r'<tr data-seq="(\d+)">(.*?)</tr>', statement, re.S)
    kinds = {seq: re.findall(r"<td>([a-z_]+)</td>", row)[0] for seq, row in rows}
    by_kind = {kinds[seq]: row for seq, row in rows}
    assert "promo" in by_kind["top_up"] and "expires " in by_kind["top_up"]
    charges = [row for seq, row in rows if kinds[seq] == "charge"]
    assert len(charges) == 2
    assert all(f"member ana, grant of entry {grant}" in row for row in charges)
    assert f"grant of entry {grant}" in by_kind["expire"]
