"""The SQL adapter on PostgreSQL: a fresh database on the local server per test.

The shared Repository, ChargePath and ApiKeyStore contracts, the shared state machine,
the SQL adapter's own checks and the race and crash tests with real processes; the SQLite file
differs only in how it gets its database.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.sql import SqlRepository
from credits_domain.testing import ChargePathContract, RepositoryContract
from sql_checks import SqlAdapterChecks, SqlApiKeyStoreChecks, sql_state_machine
from sql_race import SqlRaceChecks

pytestmark = pytest.mark.postgres


@pytest.fixture
def db_url(postgres_url: str) -> str:
    return postgres_url


class TestPostgresRepository(SqlAdapterChecks, RepositoryContract):
    pass


class TestPostgresChargePath(ChargePathContract):
    @pytest.fixture
    def repository(self, db_url: str) -> Iterator[SqlRepository]:
        with SqlRepository.connect(db_url, migrate=True) as repository:
            yield repository


class TestPostgresApiKeys(SqlApiKeyStoreChecks):
    pass


TestPostgresStateMachine = sql_state_machine()


class TestPostgresRaces(SqlRaceChecks):
    pass
