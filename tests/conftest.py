"""Shared test set-up: Hypothesis profiles and the PostgreSQL database fixture."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from pg_urls import DEFAULT_ADMIN_DSN, database_url

# `ci`: bounded and derandomised, so CI is repeatable and fits its time; `dev`: the default.
settings.register_profile(
    "ci",
    max_examples=60,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

PG_ADMIN_DSN = os.environ.get("CREDITS_TEST_PG", DEFAULT_ADMIN_DSN)


def _pg_admin_connect() -> object:
    import psycopg

    return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin DSN of the local PostgreSQL server.

    Skips with a reason when no server is reachable, except under CI=true, where a
    missing server fails the run (CI must test PostgreSQL, not silently skip it).
    """
    try:
        conn = _pg_admin_connect()
    except Exception as exc:  # any driver or socket error means: no server here
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but PostgreSQL at {PG_ADMIN_DSN} is unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {PG_ADMIN_DSN} is unreachable: {exc}")
    conn.close()  # type: ignore[attr-defined]
    return PG_ADMIN_DSN


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, as a SQLAlchemy URL; dropped after."""
    import psycopg

    name = f"credits_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(postgres_server, name)  # the server and user CREDITS_TEST_PG names
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
