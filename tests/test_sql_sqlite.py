"""The SQL adapter on SQLite (the embedded default): a fresh database file per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from sql_checks import SqlAdapterChecks


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'credits.db'}"


class TestSqliteAdapter(SqlAdapterChecks):
    pass
