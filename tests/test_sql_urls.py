"""Opening the SQL adapter by URL: what it accepts, refuses and keeps."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from adapters.clock import ManualClock
from adapters.sql import DEFAULT_URL, SqlRepository, UnsupportedDatabase
from adapters.verifier import ScriptedVerifier
from credits_domain import Contact, CreditService

START = datetime(2025, 1, 31, tzinfo=UTC)


def _unlock_one(repository: SqlRepository) -> int:
    service = CreditService(
        repository=repository, verifier=ScriptedVerifier(), clock=ManualClock(START)
    )
    service.subscribe("acme", "boost")
    service.unlock("acme", [Contact.email("ann@corp.example.com")])
    return service.balance("acme").email


def test_the_default_is_an_sqlite_file_in_the_current_directory() -> None:
    url = sa.make_url(DEFAULT_URL)
    assert url.get_backend_name() == "sqlite"
    assert url.database == "credits.db"


def test_an_in_memory_sqlite_database_serves_one_thread() -> None:
    with SqlRepository.connect("sqlite://", migrate=True) as repository:
        assert _unlock_one(repository) == 11_999


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root@127.0.0.1/credits",
        "postgresql+psycopg2://postgres@127.0.0.1/credits",
        "sqlite+aiosqlite:///credits.db",
        "not a url",
    ],
)
def test_an_unsupported_url_is_refused_before_connecting(url: str) -> None:
    with pytest.raises(UnsupportedDatabase):
        SqlRepository.connect(url)


@pytest.mark.postgres
def test_a_plain_postgresql_url_uses_psycopg_3(postgres_url: str) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with SqlRepository.connect(plain, migrate=True) as repository:
        assert repository.engine.dialect.driver == "psycopg"
        assert _unlock_one(repository) == 11_999


@pytest.mark.postgres
def test_server_options_in_the_url_are_kept(postgres_url: str) -> None:
    # An application may keep the credits tables in a schema of their own.
    admin = sa.create_engine(postgres_url)
    try:
        with admin.begin() as connection:
            connection.execute(sa.text("CREATE SCHEMA billing"))
    finally:
        admin.dispose()
    url = f"{postgres_url}?options=-csearch_path%3Dbilling"
    with SqlRepository.connect(url, migrate=True) as repository:
        assert _unlock_one(repository) == 11_999
        with repository.engine.connect() as connection:
            assert connection.scalar(sa.text("SHOW lock_timeout")) == "30s"
            tables = sa.inspect(connection).get_table_names(schema="billing")
    assert "credits_ledger" in tables
