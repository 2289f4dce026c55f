"""Review of the HTTP API: each test reproduces a bug found in review (it failed before
the fix in src/adapters/api named in its docstring). Real uvicorn on 127.0.0.1, httpx.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa

from adapters.api.problems import DOMAIN_PROBLEMS, problem_response
from adapters.clock import SystemClock
from adapters.memory import InMemoryApiKeyStore
from adapters.sql import SqlApiKeyStore, SqlRepository, create_engine, upgrade
from adapters.sql.api_keys import api_keys
from adapters.verifier import ScriptedVerifier
from credits_domain import InvalidRequest, NotCharged
from http_api_support import PROBLEM, ApiWorld, api_world

ACME = "acme"
BASE = f"/v1/accounts/{ACME}"
JSON_HEADERS = {"Content-Type": "application/json"}


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + slug
    assert body["status"] == status
    return body


@pytest.fixture
def world() -> Iterator[ApiWorld]:
    with api_world(verifier=ScriptedVerifier(), max_batch=50) as w:
        yield w


@pytest.fixture
def acme(world: ApiWorld) -> Iterator[httpx.Client]:
    with world.client_for(ACME) as c:
        assert c.post(f"{BASE}/subscription", json={"plan": "boost"}).status_code == 201
        yield c


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlRepository]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'credits.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    repo = SqlRepository.connect(url, migrate=True)
    try:
        yield repo
    finally:
        repo.close()


# -- strings that storage or rendering cannot hold ----------------------------------------

# JSON escapes can carry what no UTF-8 text column (and no UTF-8 answer) can hold: an
# unpaired surrogate, NUL (PostgreSQL refuses it in text), and other control characters
# that no address contains. Written as JSON text, since httpx cannot encode a surrogate.
_EMAIL_VALUES = [r"\ud800@corp.com", r"a\u0000b@corp.com", r"a\u001bb@corp.com"]
UNSTORABLE: list[tuple[str, str, int, str]] = [
    *[
        ("/unlock", f'{{"contacts": [{{"channel": "email", "value": "{v}"}}]}}', 422, slug)
        for v, slug in zip(_EMAIL_VALUES, ["malformed-contact"] * 3, strict=True)
    ],
    (
        "/enrich",
        r'{"found": [{"channel": "email", "value": "\udfff\ud800@corp.com"}]}',
        422,
        "malformed-contact",
    ),
    (
        "/export",
        r'{"contacts": [{"channel": "email", "value": "ok@corp.com"}], "destination": "c\ud800"}',
        422,
        "invalid-request",
    ),
    (
        "/export",
        r'{"contacts": [{"channel": "email", "value": "ok@corp.com"}], "destination": "c\u0000"}',
        422,
        "invalid-request",
    ),
    ("/bounces", r'{"channel": "email", "value": "\ud800@corp.com"}', 422, "malformed-contact"),
]


@pytest.mark.parametrize(("path", "body", "status", "slug"), UNSTORABLE)
def test_unstorable_strings_are_refused_and_charge_nothing(
    world: ApiWorld, acme: httpx.Client, path: str, body: str, status: int, slug: str
) -> None:
    """Before: the in-memory API charged the datum, then failed to render the answer
    (500), and every later statement read answered 500 (the datum is in the ledger); a
    bounce's 500 was not even problem+json. Fixed by the core's printable rule (e11544d,
    landed during this review); problems.problem_body also escapes what it cannot encode."""
    raw = body.encode("ascii")
    json.loads(raw)  # the body is valid JSON: only its strings are the problem
    response = acme.post(BASE + path, content=raw, headers=JSON_HEADERS)
    assert_problem(response, status, slug)
    assert world.verifier.calls == []
    balance = acme.get(f"{BASE}/balance").json()
    assert balance["email"] == 12_000
    assert acme.get(f"{BASE}/statement").status_code == 200


def test_unstorable_strings_never_reach_sql(repository: SqlRepository) -> None:
    """Before: SQLite answered 500 on a surrogate and stored a NUL; PostgreSQL answered 500
    on a NUL (its text type refuses it). Now both are 422 before any storage (e11544d)."""
    keys = SqlApiKeyStore(repository.engine, clock=SystemClock())
    with api_world(repository=repository, keys=keys) as world, world.client_for(ACME) as acme:
        assert acme.post(f"{BASE}/subscription", json={"plan": "boost"}).status_code == 201
        for value in _EMAIL_VALUES:
            raw = f'{{"contacts": [{{"channel": "email", "value": "{value}"}}]}}'.encode()
            headers = {**JSON_HEADERS, "Idempotency-Key": f"k-{len(value)}"}
            assert_problem(
                acme.post(f"{BASE}/unlock", content=raw, headers=headers),
                422,
                "malformed-contact",
            )
        assert acme.get(f"{BASE}/balance").json()["email"] == 12_000
        assert len(acme.get(f"{BASE}/statement").json()["entries"]) == 2


# -- the Location header ------------------------------------------------------------------


@pytest.mark.parametrize("account", ["日本", "a b", "a?b#c", "100%"])
def test_location_is_the_percent_encoded_url_of_the_subscription(
    world: ApiWorld, account: str
) -> None:
    """Before: the account went into Location raw: a non-Latin-1 id answered 500 *after*
    subscribing (a retry then read 409), and '?', '#', ' ' gave a wrong URL. Fixed in
    api.subscribe."""
    path = f"/v1/accounts/{quote(account, safe='')}/subscription"
    with world.client_for(account) as c:
        response = c.post(path, json={"plan": "boost"})
        assert response.status_code == 201, response.text
        assert response.headers["location"] == path
        again = c.get(response.headers["location"])
        assert again.status_code == 200 and again.json()["account"] == account


# -- query integers -----------------------------------------------------------------------


@pytest.mark.parametrize("query", ["limit=5%0A", "cursor=1%0A", "period=0%0A"])
def test_query_integers_are_digits_only(acme: httpx.Client, query: str) -> None:
    """Before: `$` matched before a trailing newline, so ?limit=5%0A read as 5. Fixed in
    schemas._int_param (fullmatch)."""
    assert_problem(acme.get(f"{BASE}/statement?{query}"), 422, "invalid-request")


# -- revocation through the key store races with authentication ---------------------------


@contextmanager
def _once_on_pool(engine: sa.Engine, event: str, action: Callable[[], object]) -> Iterator[None]:
    """Run `action` once, at the engine's next pool `checkout` or `checkin`: outside any
    transaction, where the windows of these races are (SQLite's BEGIN IMMEDIATE makes
    the two calls wait for each other inside one)."""
    fired: list[bool] = []

    def listener(*args: object) -> None:
        if not fired:
            fired.append(True)
            action()

    sa.event.listen(engine, event, listener)
    try:
        yield
    finally:
        sa.event.remove(engine, event, listener)
    assert fired == [True]


def test_an_authentication_during_revoke_does_not_cache_the_key(
    repository: SqlRepository,
) -> None:
    """Before: revoke() emptied the cache, then wrote the row; an authentication between
    the two read the still-active row and cached it, so the revoked key worked for 5 s
    more on the store that revoked it. Fixed in SqlApiKeyStore (the cache purged after
    the commit, and a revocation counter)."""
    store = SqlApiKeyStore(repository.engine, clock=SystemClock())
    issued = store.create(ACME)
    seen: list[str | None] = []
    # At revoke's checkout: after the old code had emptied the cache, before its write.
    with _once_on_pool(
        repository.engine, "checkout", lambda: seen.append(store.authenticate(issued.token))
    ):
        assert store.revoke(issued.key_id) is True
    assert seen == [ACME]  # the row was still active when that one read it
    assert store.authenticate(issued.token) is None


def test_a_revoke_during_authentication_is_not_undone_by_its_cache_write(
    repository: SqlRepository,
) -> None:
    """The other order: an authentication reads the row, a revoke commits, then the
    authentication caches what it read. Fixed by the same revocation counter."""
    store = SqlApiKeyStore(repository.engine, clock=SystemClock())
    issued = store.create(ACME)
    revoked: list[bool] = []
    # At authenticate's checkin: it has read the row, it has not yet cached it.
    with _once_on_pool(
        repository.engine, "checkin", lambda: revoked.append(store.revoke(issued.key_id))
    ):
        first = store.authenticate(issued.token)
    assert revoked == [True]
    assert first == ACME  # it read the row before the revocation: concurrent, and right
    assert store.authenticate(issued.token) is None


# -- key creation follows the core's account rule -----------------------------------------


@pytest.mark.parametrize("account", ["ac\x00me", "ac\x1bme", "ac\u200bme"])
def test_no_key_for_an_account_the_core_refuses(repository: SqlRepository, account: str) -> None:
    """keys.check_account is "the core's rule for account ids", but it lagged the core's
    new printable rule (e11544d): a key was created for an account no call accepts (on
    PostgreSQL a NUL was a raw DataError). Fixed in keys.check_account."""
    with pytest.raises(InvalidRequest, match="printable"):
        SqlApiKeyStore(repository.engine, clock=SystemClock()).create(account)
    with pytest.raises(InvalidRequest, match="printable"):
        InMemoryApiKeyStore(clock=SystemClock()).create(account)
    with repository.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar_one() == 0


def test_a_problem_detail_with_an_unpaired_surrogate_still_renders() -> None:
    """Before e11544d a bounce of '\\ud800@corp.com' answered a plain-text 500: the
    NotCharged detail quoted the datum, and rendering the problem itself failed. The
    core no longer lets such a datum through; the problem shape no longer depends on it."""
    response = problem_response(DOMAIN_PROBLEMS[NotCharged], "email:\ud800@corp.com")
    assert json.loads(bytes(response.body))["detail"] == "email:\\ud800@corp.com"


def test_a_key_lookup_does_not_wait_for_the_sqlite_write_lock(tmp_path: Path) -> None:
    """Before: SqlApiKeyStore read the key inside the engine's BEGIN IMMEDIATE, so while
    any unit of work held SQLite's write lock, authentication waited for it and, past
    the lock wait, raised a raw OperationalError (500 on every request). A key lookup
    only reads: it now begins deferred, and WAL lets it read beside the writer."""
    url = f"sqlite:///{tmp_path / 'credits.db'}"
    upgrade(url)
    engine = create_engine(url, lock_wait_s=0.2)
    writer = sqlite3.connect(tmp_path / "credits.db", isolation_level=None)
    try:
        store = SqlApiKeyStore(engine, cache_ttl_s=0, clock=SystemClock())
        issued = store.create(ACME)
        writer.execute("BEGIN IMMEDIATE")  # a unit of work holds the write lock
        assert store.authenticate(issued.token) == ACME
        writer.execute("ROLLBACK")
    finally:
        writer.close()
        engine.dispose()


DUPLICATED = [
    b'{"contacts": [{"channel": "email", "value": "a@corp.com"}], "contacts": []}',
    b'{"contacts": [{"channel": "email", "value": "a@corp.com", "value": "b@corp.com"}]}',
]


@pytest.mark.parametrize("body", DUPLICATED)
def test_a_field_given_twice_is_refused(world: ApiWorld, acme: httpx.Client, body: bytes) -> None:
    """Before: the last of two equal names silently won, so a proxy, log or validator
    that reads the first saw another request than the one charged. RFC 8259 leaves such
    objects' meaning undefined; the body is refused whole. Fixed in api._Call.json."""
    response = acme.post(f"{BASE}/unlock", content=body, headers=JSON_HEADERS)
    problem = assert_problem(response, 400, "malformed-json")
    assert "twice" in problem["detail"]
    assert world.verifier.calls == []
    assert acme.get(f"{BASE}/balance").json()["email"] == 12_000
