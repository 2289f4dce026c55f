"""The SQL adapter on SQLite (the embedded default): a fresh database file per test.

The shared Repository, ChargePath and ApiKeyStore contracts, the shared state machine,
the SQL adapter's own checks and the race and crash tests with real processes; the PostgreSQL
file differs only in how it gets its database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.sql import SqlRepository
from credits_domain.testing import ChargePathContract, RepositoryContract
from sql_checks import SqlAdapterChecks, SqlApiKeyStoreChecks, sql_state_machine
from sql_race import SqlRaceChecks


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'credits.db'}"


class TestSqliteRepository(SqlAdapterChecks, RepositoryContract):
    pass


class TestSqliteChargePath(ChargePathContract):
    @pytest.fixture
    def repository(self, db_url: str) -> Iterator[SqlRepository]:
        with SqlRepository.connect(db_url, migrate=True) as repository:
            yield repository


class TestSqliteApiKeys(SqlApiKeyStoreChecks):
    pass


TestSqliteStateMachine = sql_state_machine()


class TestSqliteRaces(SqlRaceChecks):
    pass
