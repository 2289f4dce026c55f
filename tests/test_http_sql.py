"""The HTTP API on the SQL adapter: SQLite files and PostgreSQL, keys in the database.

- The key store keeps hashes only, and a revoked key stops working at once.
- The API on SqlRepository + SqlApiKeyStore behaves as on memory (charging, R17 replay,
  isolation), on SQLite and on PostgreSQL.
- A storage failure answers 500 in the problem shape, never a traceback.
- The `keys` commands (typer's CliRunner) and `credits serve` in a real subprocess.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import typer
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from typer.testing import CliRunner

from adapters.cli.serve import register
from adapters.clock import SystemClock
from adapters.sql import SqlApiKeyStore, SqlRepository, upgrade
from adapters.sql import api_keys as sql_keys
from adapters.sql.api_keys import api_keys
from adapters.sql.errors import ApiKeysTableMissing
from http_api_support import PROBLEM, api_world, client
from verification_server import VerificationServer, status

SERVE_STARTUP_TIMEOUT_S = 20.0


def email(value: str) -> dict[str, str]:
    return {"channel": "email", "value": value}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'credits.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def repository(db_url: str) -> Iterator[SqlRepository]:
    repo = SqlRepository.connect(db_url, migrate=True)
    try:
        yield repo
    finally:
        repo.close()


def test_the_store_keeps_only_hashes_and_revokes(repository: SqlRepository) -> None:
    now_s = [0.0]  # the cache's monotonic clock, moved by the test
    store = SqlApiKeyStore(repository.engine, monotonic=lambda: now_s[0], clock=SystemClock())
    issued = store.create("acme")
    with repository.engine.connect() as conn:
        rows = conn.execute(sa.select(api_keys)).mappings().all()
    assert len(rows) == 1
    row = dict(rows[0])
    assert issued.token not in repr(row)
    assert row["key_hash"] == hashlib.sha256(issued.token.encode()).hexdigest()
    assert (row["key_id"], row["account"], row["revoked_at"]) == (issued.key_id, "acme", None)
    assert store.authenticate(issued.token) == "acme"
    # Another process (no cache here) revokes: it sees the revocation at once...
    other = SqlApiKeyStore(repository.engine, cache_ttl_s=0, clock=SystemClock())
    assert other.revoke(issued.key_id) is True
    assert other.authenticate(issued.token) is None
    # ...while this one remembers the key for at most its cache's time to live.
    assert store.authenticate(issued.token) == "acme"
    now_s[0] += 4.9
    assert store.authenticate(issued.token) == "acme"
    now_s[0] += 0.2
    assert store.authenticate(issued.token) is None
    assert store.revoke(issued.key_id) is False
    # A revocation through the store itself acts at once, cache or not.
    second = store.create("acme")
    assert store.authenticate(second.token) == "acme"
    assert store.revoke(second.key_id) is True
    assert store.authenticate(second.token) is None
    # Failures are never cached: a wrong key never becomes right, a right one works.
    third = store.create("acme")
    assert store.authenticate(third.token[:-1] + "?") is None
    assert store.authenticate(third.token) == "acme"


def test_the_key_table_matches_its_migration(db_url: str) -> None:
    """The store's table object and Alembic revision 0003 are written separately: a
    column, type, nullability or index that differs would fail only at run time."""
    upgrade(db_url)
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, sql_keys.metadata)
    finally:
        engine.dispose()

    def elsewhere(diff: Any) -> bool:
        """The other tables of the schema, which this metadata does not describe."""
        if not isinstance(diff, tuple) or diff[0] not in ("remove_table", "remove_index"):
            return False
        table = diff[1] if diff[0] == "remove_table" else diff[1].table
        return bool(table.name != sql_keys.TABLE_NAME)

    assert [d for d in differences if not elsewhere(d)] == []


def test_a_database_without_the_table_is_refused(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(ApiKeysTableMissing, match="credits db upgrade"):
            SqlApiKeyStore(engine, clock=SystemClock())
    finally:
        engine.dispose()


def test_the_api_on_sql(repository: SqlRepository) -> None:
    keys = SqlApiKeyStore(repository.engine, clock=SystemClock())
    with (
        api_world(repository=repository, keys=keys) as world,
        world.client_for("acme") as acme,
        world.client_for("globex") as globex,
    ):
        assert (
            acme.post("/v1/accounts/acme/subscription", json={"plan": "boost"}).status_code == 201
        )
        payload = {"contacts": [email("a@corp.com"), email("A@corp.com"), email("b@corp.com")]}
        headers = {"Idempotency-Key": "k-1"}
        first = acme.post("/v1/accounts/acme/unlock", json=payload, headers=headers)
        assert first.json()["charged"] == {"email": 2, "mobile": 0}
        replay = acme.post("/v1/accounts/acme/unlock", json=payload, headers=headers)
        assert replay.content == first.content
        assert replay.headers["idempotent-replayed"] == "true"
        other = acme.post(
            "/v1/accounts/acme/unlock", json={"contacts": [email("c@corp.com")]}, headers=headers
        )
        assert other.json()["type"] == PROBLEM + "idempotency-key-reused"
        assert globex.get("/v1/accounts/acme/balance").status_code == 404
        assert acme.get("/v1/accounts/acme/balance").json()["email"] == 11_998
        page = acme.get("/v1/accounts/acme/statement", params={"limit": 3}).json()
        assert [e["seq"] for e in page["entries"]] == [0, 1, 2]
        assert page["next_cursor"] == 2
        rest = acme.get("/v1/accounts/acme/statement", params={"cursor": 2}).json()
        assert [e["seq"] for e in rest["entries"]] == [3]
        assert rest["next_cursor"] is None


def test_a_storage_failure_is_a_500_problem_that_hides_the_storage(tmp_path: Path) -> None:
    repo = SqlRepository.connect(f"sqlite:///{tmp_path / 'broken.db'}", migrate=True)
    keys = SqlApiKeyStore(repo.engine, clock=SystemClock())
    try:
        with api_world(repository=repo, keys=keys) as world, world.client_for("acme") as acme:
            acme.post("/v1/accounts/acme/subscription", json={"plan": "boost"})
            with repo.engine.begin() as conn:  # the database loses a table under the server
                conn.execute(sa.text("DROP TABLE credits_holds"))
            response = acme.get("/v1/accounts/acme/balance")
            assert response.status_code == 500
            assert response.headers["content-type"] == "application/problem+json"
            body = response.json()
            assert body["type"] == PROBLEM + "storage-error"
            assert "Traceback" not in response.text and "credits_holds" not in response.text
    finally:
        repo.close()


# -- the commands -------------------------------------------------------------------------


def _commands() -> typer.Typer:
    app = typer.Typer(add_completion=False)
    register(app)
    return app


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(_commands(), list(args))
    return result.exit_code, result.stdout, result.stderr


def test_keys_create_prints_the_key_last_and_revoke_revokes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"  # a new file: create brings the schema up
    code, out, err = invoke("keys", "create", "acme", "--db", url)
    assert code == 0, err
    token = out.split()[-1]
    with SqlRepository.connect(url) as repo:
        store = SqlApiKeyStore(
            repo.engine, cache_ttl_s=0, clock=SystemClock()
        )  # sees the CLI revoke at once
        assert store.authenticate(token) == "acme"
        key_id = token.split("_")[1]
        assert key_id in out
        code, out, err = invoke("keys", "revoke", key_id, "--db", url)
        assert (code, out.strip()) == (0, f"API key {key_id} revoked.")
        assert store.authenticate(token) is None
    code, out, _ = invoke("keys", "revoke", key_id, "--db", url)
    assert (code, out.strip()) == (0, f"API key {key_id} was revoked already.")
    code, _, err = invoke("keys", "revoke", "ffffffffffffffff", "--db", url)
    assert code == 1 and "no API key" in err
    code, _, err = invoke("keys", "create", " padded", "--db", url)
    assert code == 1 and err.startswith("credits: error: account must be")


def test_serve_refuses_to_start_without_a_verifier(tmp_path: Path) -> None:
    code, _, err = invoke("serve", "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 2 and "--verifier-url" in err and "--demo-verifier" in err
    code, _, err = invoke(
        "serve", "--demo-verifier", "--verifier-url", "http://127.0.0.1:9", "--db", "sqlite://"
    )
    assert code == 2 and "not both" in err


def test_serve_on_an_old_schema_says_to_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    code, _, err = invoke("serve", "--demo-verifier", "--db", url)
    assert code == 1 and "credits db upgrade" in err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def credits_serve(url: str, *options: str) -> Iterator[str]:
    """`credits serve` in a child process (the module's entry point, as the console
    script calls it); yields its base URL once it answers."""
    port = _free_port()
    command = [sys.executable, "-m", "adapters.cli", "serve", *options]
    command += ["--db", url, "--port", str(port), "--no-access-log"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVE_STARTUP_TIMEOUT_S
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"{base}/openapi.json", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "credits serve did not start"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=SERVE_STARTUP_TIMEOUT_S)


@pytest.mark.slow
def test_serve_with_the_demo_verifier(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'served.db'}"
    code, out, err = invoke("keys", "create", "acme", "--db", url)
    assert code == 0, err
    with credits_serve(url, "--demo-verifier") as base:
        with client(base, out.split()[-1]) as acme:
            assert acme.post("/v1/accounts/acme/subscription", json={"plan": "boost"}).is_success
            unlocked = acme.post("/v1/accounts/acme/unlock", json={"contacts": [email("a@x.io")]})
            assert unlocked.json()["charged"] == {"email": 1, "mobile": 0}
        with client(base, None) as anonymous:
            assert anonymous.get("/v1/accounts/acme/balance").status_code == 401


@pytest.mark.slow
def test_serve_with_a_verification_service(tmp_path: Path) -> None:
    """The whole hexagon: HTTP API -> CreditService -> SQLite, and HttpVerifier -> the
    test verification server (R10, R11: only VALID is charged; a failing service charges
    nothing)."""
    url = f"sqlite:///{tmp_path / 'served.db'}"
    code, out, err = invoke("keys", "create", "acme", "--db", url)
    assert code == 0, err
    with (
        VerificationServer() as verification,
        credits_serve(url, "--verifier-url", verification.url) as base,
        client(base, out.split()[-1]) as acme,
    ):
        assert acme.post("/v1/accounts/acme/subscription", json={"plan": "boost"}).is_success
        contacts = [email("ann@x.io"), email("invalid.bob@x.io"), email("catchall@x.io")]
        unlocked = acme.post("/v1/accounts/acme/unlock", json={"contacts": contacts}).json()
        assert [(i["outcome"], i["verdict"]) for i in unlocked["items"]] == [
            ("charged", "valid"),
            ("not_verified", "invalid"),
            ("not_verified", "catch_all"),
        ]
        verification.default = status(500)  # the service fails: nothing is charged
        failed = acme.post("/v1/accounts/acme/unlock", json={"contacts": [email("cy@x.io")]})
        assert failed.json()["items"][0]["verdict"] == "unknown"
        assert failed.json()["charged"] == {"email": 0, "mobile": 0}
        balance = acme.get("/v1/accounts/acme/balance").json()
        assert (balance["email"], balance["email_available"]) == (11_999, 11_999)  # R16
