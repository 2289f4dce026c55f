"""The SQL adapter on PostgreSQL: a fresh database on the local server per test."""

from __future__ import annotations

import pytest
from sql_checks import SqlAdapterChecks

pytestmark = pytest.mark.postgres


@pytest.fixture
def db_url(postgres_url: str) -> str:
    return postgres_url


class TestPostgresAdapter(SqlAdapterChecks):
    pass
