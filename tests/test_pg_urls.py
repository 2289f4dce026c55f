"""The per-test PostgreSQL databases live on the server, and belong to the user, that
CREDITS_TEST_PG names (not a hard-coded 127.0.0.1:5432)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from pg_urls import database_url


@pytest.mark.parametrize(
    ("admin_dsn", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/postgres",
            "postgresql+psycopg://postgres@127.0.0.1:5432/t1",
        ),
        (
            "host=db.example port=6543 user=alice password=s3cr:t dbname=admin sslmode=require",
            "postgresql+psycopg://alice:s3cr%3At@db.example:6543/t1?sslmode=require",
        ),
        (
            "postgresql:///postgres?host=/var/run/postgresql&user=carol",
            "postgresql+psycopg://carol@/t1?host=%2Fvar%2Frun%2Fpostgresql",
        ),
        ("postgresql://bob@[::1]:5433/x", "postgresql+psycopg://bob@[::1]:5433/t1"),
    ],
)
def test_a_test_database_is_on_the_admin_dsns_server(admin_dsn: str, expected: str) -> None:
    assert database_url(admin_dsn, "t1") == expected


@pytest.mark.postgres
def test_the_fixture_database_is_reached_as_the_admin_dsn_says(
    postgres_server: str, postgres_url: str
) -> None:
    from psycopg.conninfo import conninfo_to_dict

    admin = conninfo_to_dict(postgres_server)
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            user = connection.scalar(sa.text("SELECT current_user"))
            port = connection.scalar(sa.text("SELECT inet_server_port()"))
    finally:
        engine.dispose()
    assert user == admin.get("user", user)
    assert str(port) == str(admin.get("port", 5432))
