"""Every failure of the database is a domain error, at every public entry of the SQL
adapter, on real SQLite files and a real PostgreSQL server; and it reaches people as one
clean line: a 503 with Retry-After from the HTTP API, one line on stderr from the CLI.

How each class of failure is provoked, for real:
- unreachable: a port bound but not listening (refused at once); a TCP proxy between
  the adapter and PostgreSQL that the test cuts (and resumes); an SQLite file whose
  directory does not exist;
- refused: a dropped table; a file that is not a database; a database name or a
  revision that does not exist;
- a lost race: a lock held by another unit of work past the lock wait.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typer.testing import CliRunner

from adapters.api import create_app
from adapters.cli.main import app as cli_app
from adapters.clock import ManualClock
from adapters.sql import (
    SqlApiKeyStore,
    SqlRepository,
    UnknownSchemaRevision,
    UnsupportedDatabase,
    create_engine,
    upgrade,
)
from adapters.sql.errors import ApiKeysTableMissing
from adapters.verifier import ScriptedVerifier
from credits_domain import (
    Channel,
    ConcurrencyConflict,
    CreditsError,
    CreditService,
    InvalidRequest,
    StorageError,
    StorageUnavailable,
)
from http_api_support import PROBLEM, client, serve
from pg_urls import database_url
from tcp_proxy import TcpProxy, closed_port

START = datetime(2025, 1, 31, 9, 30, tzinfo=UTC)


def service_on(repository: SqlRepository) -> CreditService:
    return CreditService(
        repository=repository, verifier=ScriptedVerifier(), clock=ManualClock(START)
    )


def one_line(error: BaseException, *needles: str) -> str:
    """The error's message: one line, saying what failed and what to do (the needles)."""
    message = str(error)
    assert "\n" not in message and message == message.strip(), message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def raises_each(
    error: type[CreditsError], calls: dict[str, Callable[[], object]], *needles: str
) -> None:
    """Each call raises exactly the domain error `error` (never a driver's), one line."""
    for name, call in calls.items():
        with pytest.raises(CreditsError) as raised:
            call()
        assert type(raised.value) is error, (name, raised.value)
        one_line(raised.value, *needles)


def port_calls(repository: SqlRepository) -> dict[str, Callable[[], object]]:
    """One call of each public entry of the repository, the unit of work's included."""

    def load() -> object:
        with repository.unit_of_work() as uow:
            return uow.load_wallet("acme")

    return {
        "entries": lambda: repository.entries("acme"),
        "last_entry": lambda: repository.last_entry("acme", Channel.EMAIL, START),
        "due_accounts": lambda: repository.due_accounts(START, 10),
        "unit of work": load,
    }


def key_calls(keys: SqlApiKeyStore, token: str, key_id: str) -> dict[str, Callable[[], object]]:
    return {
        "create": lambda: keys.create("acme"),
        "authenticate": lambda: keys.authenticate(token),
        "revoke": lambda: keys.revoke(key_id),
    }


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'credits.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def repository(db_url: str) -> Iterator[SqlRepository]:
    with SqlRepository.connect(db_url, migrate=True, lock_wait_s=0.2) as repository:
        service_on(repository).subscribe("acme", "boost")
        yield repository


@pytest.fixture
def nowhere() -> Iterator[str]:
    """A PostgreSQL URL (with a password, which no message may show) where nothing
    listens."""
    with closed_port() as port:
        yield f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{port}/credits"


@contextlib.contextmanager
def proxied(postgres_server: str, postgres_url: str) -> Iterator[tuple[TcpProxy, str, str]]:
    """A TCP proxy to the test's PostgreSQL server, and the URL of its database through
    the proxy (and the database's name)."""
    admin = conninfo_to_dict(postgres_server)
    database = sa.make_url(postgres_url).database
    assert database is not None
    host, port = str(admin.get("host") or "127.0.0.1"), int(str(admin.get("port") or 5432))
    with TcpProxy(host, port) as proxy:
        through = make_conninfo(postgres_server, host="127.0.0.1", port=proxy.port)
        yield proxy, database_url(through, database), database


# -- unreachable ----------------------------------------------------------------------


def test_a_server_that_is_not_there_is_storage_unavailable(nowhere: str) -> None:
    shown = nowhere.replace("s3cret", "***")
    needles = (shown, "cannot be reached", "retry later")
    raises_each(
        StorageUnavailable,
        {
            "connect": lambda: SqlRepository.connect(nowhere),
            "connect and migrate": lambda: SqlRepository.connect(nowhere, migrate=True),
            "upgrade": lambda: upgrade(nowhere),
            "key store": lambda: SqlApiKeyStore(create_engine(nowhere), clock=ManualClock(START)),
        },
        *needles,
    )
    # An engine made before the outage: every call of the port says the same.
    repository = SqlRepository(create_engine(nowhere))
    try:
        raises_each(StorageUnavailable, port_calls(repository), *needles)
    finally:
        repository.close()
    with pytest.raises(StorageUnavailable) as raised:
        SqlRepository.connect(nowhere)
    assert "s3cret" not in str(raised.value)
    assert isinstance(raised.value.__cause__, sa.exc.OperationalError)  # the driver's, chained


def test_an_sqlite_file_that_cannot_be_opened_is_storage_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'directory' / 'credits.db'}"
    repository = SqlRepository(create_engine(url))
    try:
        raises_each(
            StorageUnavailable,
            {
                **port_calls(repository),
                "key store": lambda: SqlApiKeyStore(repository.engine, clock=ManualClock(START)),
            },
            "unable to open database file",
            "retry later",
        )
    finally:
        repository.close()


@pytest.mark.postgres
def test_a_server_cut_off_mid_use_is_storage_unavailable_then_comes_back(
    postgres_server: str, postgres_url: str
) -> None:
    with (
        proxied(postgres_server, postgres_url) as (proxy, url, _),
        SqlRepository.connect(url, migrate=True) as repository,
    ):
        service = service_on(repository)
        service.subscribe("acme", "boost")
        keys = SqlApiKeyStore(repository.engine, clock=ManualClock(START), cache_ttl_s=0)
        issued = keys.create("acme")

        # Cut during a unit of work, before its commit: whether it committed is
        # unknown to the client, and the message says what to do about it.
        with repository.unit_of_work() as uow:
            wallet = uow.load_wallet("acme")
            assert wallet is not None
            wallet.pause()
            uow.save_wallet(wallet)
            proxy.cut()
            with pytest.raises(StorageUnavailable) as raised:
                uow.commit()
        one_line(raised.value, "commit", "whether it committed is unknown", "idempotency key")

        # Cut while a unit of work is open: its next call fails; leaving never raises.
        proxy.resume()
        with repository.unit_of_work() as uow:
            proxy.cut()
            with pytest.raises(StorageUnavailable) as raised:
                uow.load_wallet("acme")
        one_line(raised.value, "loading a wallet", "retry later")

        # While cut off: every entry says so.
        raises_each(
            StorageUnavailable,
            {
                **port_calls(repository),
                **key_calls(keys, issued.token, issued.key_id),
                "service": lambda: service.balance("acme"),
                "connect": lambda: SqlRepository.connect(url),
            },
            "cannot be reached",
            "retry later",
        )

        # Back again: the pool replaces its dead connections; nothing was paused.
        proxy.resume()
        assert service.balance("acme").email == 12_000
        assert keys.authenticate(issued.token) == "acme"
        assert service.subscription("acme").status.value == "active"
        assert proxy.accepted >= 3  # the traffic did go through the proxy


# -- refused --------------------------------------------------------------------------


def test_a_dropped_table_is_a_storage_error_that_says_so(repository: SqlRepository) -> None:
    keys = SqlApiKeyStore(repository.engine, clock=ManualClock(START))
    issued = keys.create("acme")
    service = service_on(repository)
    with repository.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE credits_holds"))
        connection.execute(sa.text("DROP TABLE credits_api_keys"))
    needles = ("lacks a table or column", "credits db upgrade")
    raises_each(
        StorageError,
        {
            "unit of work": port_calls(repository)["unit of work"],
            "service": lambda: service.balance("acme"),
            **key_calls(keys, issued.token, issued.key_id),
        },
        *needles,
    )
    with pytest.raises(ApiKeysTableMissing, match="credits db upgrade"):
        SqlApiKeyStore(repository.engine, clock=ManualClock(START))
    with repository.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE credits_ownership"))
        connection.execute(sa.text("DROP TABLE credits_ledger"))
    raises_each(
        StorageError,
        {
            "entries": lambda: repository.entries("acme"),
            "last_entry": lambda: repository.last_entry("acme", Channel.EMAIL, START),
        },
        *needles,
    )


def test_a_file_that_is_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are not the tables you are looking for\n" * 100)
    with pytest.raises(StorageError) as raised:
        SqlRepository.connect(f"sqlite:///{path}")
    assert type(raised.value) is StorageError
    one_line(raised.value, "file is not a database")


@pytest.mark.postgres
def test_a_database_the_server_does_not_have_is_not_an_outage(postgres_server: str) -> None:
    # The server answered: retrying will not help; the URL needs fixing.
    url = database_url(postgres_server, "credits_no_such_database")
    with pytest.raises(StorageError) as raised:
        SqlRepository.connect(url)
    assert type(raised.value) is StorageError
    one_line(raised.value, "refused the connection", "does not exist", "check the URL")


def test_a_schema_revision_that_does_not_exist_is_refused(db_url: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        upgrade(db_url, revision="f00d")
    one_line(raised.value, "'f00d'", "0001")
    upgrade(db_url)
    engine = create_engine(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE credits_alembic_version SET version_num = 'f00d'"))
    finally:
        engine.dispose()
    # A newer database: Alembic's own "can't locate revision" never escapes.
    for call in (lambda: upgrade(db_url), lambda: SqlRepository.connect(db_url, migrate=True)):
        with pytest.raises(UnknownSchemaRevision) as unknown:
            call()
        one_line(unknown.value, "f00d", "upgrade the credits-domain package")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("sqlite:///credits.db?timeout=soon", "not a usable database URL"),
        ("postgresql+psycopg://postgres:s3cret@127.0.0.1:port/credits", "not a usable"),
        ("postgresql+psycopg2://postgres:s3cret@127.0.0.1/credits", "psycopg 3"),
        ("mysql://root:s3cret@127.0.0.1/credits", "unsupported database 'mysql'"),
    ],
)
def test_a_url_that_cannot_be_used_is_refused_before_connecting(url: str, needle: str) -> None:
    with pytest.raises(UnsupportedDatabase) as raised:
        SqlRepository.connect(url)
    assert "s3cret" not in one_line(raised.value, needle)  # a password never shows


# -- a lost race: a lock held past the lock wait ---------------------------------------


def test_a_lock_held_past_the_lock_wait_is_a_concurrency_conflict(
    repository: SqlRepository, db_url: str
) -> None:
    with SqlRepository.connect(db_url, lock_wait_s=0.2) as other:

        def load_too() -> object:
            with other.unit_of_work() as uow:
                return uow.load_wallet("acme")

        with repository.unit_of_work() as holder:
            assert holder.load_wallet("acme") is not None  # the row lock; SQLite: the file's
            with pytest.raises(ConcurrencyConflict) as raised:
                load_too()
            assert type(raised.value) is ConcurrencyConflict
            if repository.dialect == "postgresql":
                one_line(raised.value, "loading a wallet", "lock timeout", "retry")
            else:
                one_line(raised.value, "beginning a transaction", "database is locked", "retry")
                # SQLite: one writer for the whole file, the key store's included; its
                # lookups are reads, and go on beside the writer.
                keys = SqlApiKeyStore(other.engine, clock=ManualClock(START), cache_ttl_s=0)
                with pytest.raises(ConcurrencyConflict):
                    keys.create("acme")
                assert keys.authenticate("ck_0123456789abcdef_" + "A" * 43) is None
            holder.commit()
        assert load_too() is not None  # the lock ended with the unit of work


# -- the HTTP API: 503 with Retry-After, one clean log line ---------------------------


@pytest.mark.postgres
def test_the_api_answers_503_while_postgresql_is_cut_off(
    postgres_server: str, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        proxied(postgres_server, postgres_url) as (proxy, url, database),
        SqlRepository.connect(url, migrate=True) as repository,
    ):
        keys = SqlApiKeyStore(repository.engine, clock=ManualClock(START))
        service = service_on(repository)
        app = create_app(service, keys)
        known, fresh = keys.create("acme"), keys.create("acme")
        with serve(app) as base_url, client(base_url, known.token) as acme:
            assert acme.post("/v1/accounts/acme/subscription", json={"plan": "boost"}).is_success
            assert acme.get("/v1/accounts/acme/balance").status_code == 200

            proxy.cut()
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                # A key the store remembers, then one it must look up: both 503.
                answers = [acme.get("/v1/accounts/acme/balance")]
                with client(base_url, fresh.token) as other:
                    answers.append(other.get("/v1/accounts/acme/balance"))
            for answer in answers:
                assert answer.status_code == 503, answer.text
                assert answer.headers["retry-after"] == "5"
                assert answer.headers["content-type"] == "application/problem+json"
                body = answer.json()
                assert body["type"] == PROBLEM + "storage-unavailable"
                # The storage's words (host, port, database) are for the log only.
                assert str(proxy.port) not in answer.text and database not in answer.text
                assert "Traceback" not in answer.text
            logged = [r for r in caplog.records if r.name == "adapters.api.problems"]
            assert len(logged) == 2
            for record in logged:
                line = record.getMessage()
                assert "\n" not in line and record.exc_info is None, line
                assert "cannot be reached" in line and "Traceback" not in line
            assert not [r for r in caplog.records if r.exc_info is not None]

            proxy.resume()  # back: the next request is served
            assert acme.get("/v1/accounts/acme/balance").json()["email"] == 12_000


# -- the CLI: one line on stderr --------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["balance", "acme"],
        ["statement", "acme"],
        ["renew-due"],
        ["db", "upgrade"],
        ["keys", "revoke", "0123456789abcdef"],
        ["keys", "create", "acme"],
    ],
)
def test_the_cli_says_an_unreachable_database_in_one_line(nowhere: str, command: list[str]) -> None:
    result = CliRunner().invoke(cli_app, [*command, "--db", nowhere])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("credits: error: ")
    for needle in ("cannot be reached", "retry later", "127.0.0.1"):
        assert needle in lines[0]
    assert "s3cret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
