"""The SQL adapter on SQLite (the embedded default): a fresh database file per test.

The shared Repository and ApiKeyStore contracts, the shared state machine, the SQL
adapter's own checks and the race and crash tests with real processes; the PostgreSQL
file differs only in how it gets its database.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from credits_domain.testing import RepositoryContract
from sql_checks import SqlAdapterChecks, SqlApiKeyStoreChecks, sql_state_machine
from sql_race import SqlRaceChecks


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'credits.db'}"


class TestSqliteRepository(SqlAdapterChecks, RepositoryContract):
    pass


class TestSqliteApiKeys(SqlApiKeyStoreChecks):
    pass


TestSqliteStateMachine = sql_state_machine()


class TestSqliteRaces(SqlRaceChecks):
    pass
