"""The webhook endpoint registry (R24) on memory, SQLite and PostgreSQL, and the limits
on what a client gives it (URL scheme and length, endpoints per account)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import attrs
import pytest

from adapters.sql import SqlEndpointStore, create_engine, upgrade
from adapters.sql.webhooks import metadata as webhook_metadata
from adapters.webhooks import (
    DISABLE_AFTER,
    MAX_ENDPOINTS_PER_ACCOUNT,
    MAX_URL_LENGTH,
    EndpointStore,
    InvalidWebhookUrl,
    MemoryEndpointStore,
    TooManyEndpoints,
    check_url,
    new_secret,
    register,
)
from credits_domain import InvalidRequest
from endpoint_store_contract import T0, EndpointStoreContract, counting_bytes
from sql_checks import column_differences


def sql_store(url: str) -> Iterator[SqlEndpointStore]:
    upgrade(url)
    engine = create_engine(url)
    try:
        yield SqlEndpointStore(engine)
    finally:
        engine.dispose()


class TestMemoryEndpoints(EndpointStoreContract):
    @pytest.fixture
    def store(self) -> EndpointStore:
        return MemoryEndpointStore()


class TestSqliteEndpoints(EndpointStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[EndpointStore]:
        yield from sql_store(f"sqlite:///{tmp_path / 'credits.db'}")


@pytest.mark.postgres
class TestPostgresEndpoints(EndpointStoreContract):
    @pytest.fixture
    def store(self, postgres_url: str) -> Iterator[EndpointStore]:
        yield from sql_store(postgres_url)


def test_the_table_object_matches_the_migration_on_sqlite(tmp_path: Path) -> None:
    assert column_differences(f"sqlite:///{tmp_path / 'credits.db'}", webhook_metadata) == []


@pytest.mark.postgres
def test_the_table_object_matches_the_migration_on_postgres(postgres_url: str) -> None:
    assert column_differences(postgres_url, webhook_metadata) == []


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://a.test/h", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("https://", "must name a host"),
        ("https://a.test:0/", "must name a host"),
        ("https://a.test:99999/", "malformed"),
        ("https://user:pw@a.test/", "user or password"),
        ("https://a.test/a b", "printable ASCII"),
        ("https://a.test/\u00e9", "printable ASCII"),
        ("", "printable ASCII"),
        ("https://a.test/" + "x" * (MAX_URL_LENGTH - 14), f"longer than {MAX_URL_LENGTH}"),
    ],
)
def test_a_url_past_a_limit_is_refused_and_says_why(url: str, why: str) -> None:
    with pytest.raises(InvalidWebhookUrl, match=why):
        check_url(url)


def test_a_url_at_the_length_limit_is_taken(tmp_path: Path) -> None:
    longest = "https://a.test/" + "x" * (MAX_URL_LENGTH - 15)
    assert len(longest) == MAX_URL_LENGTH
    assert check_url(longest) == longest
    for store in sql_store(f"sqlite:///{tmp_path / 'credits.db'}"):  # and stored whole
        made = register(store, "acme", longest, at=T0, random_bytes=counting_bytes())
        assert store.endpoints("acme")[0].url == longest == made.url


def test_a_secret_is_whsec_and_base64_of_24_to_64_bytes() -> None:
    import base64

    secret = new_secret(bytes(range(32)))
    assert secret.startswith("whsec_")
    assert base64.b64decode(secret.removeprefix("whsec_")) == bytes(range(32))
    with pytest.raises(ValueError, match="24 to 64"):
        new_secret(bytes(23))
    with pytest.raises(ValueError, match="24 to 64"):
        new_secret(bytes(65))


def test_an_endpoint_state_that_contradicts_itself_is_refused() -> None:
    made = register(
        MemoryEndpointStore(), "acme", "https://a.test/", at=T0, random_bytes=counting_bytes()
    )
    with pytest.raises(ValueError, match="iff attempts"):
        attrs.evolve(made, failing_since=T0)
    with pytest.raises(ValueError, match="both disabled_at and disabled_reason"):
        attrs.evolve(made, disabled_at=T0)
    disabled = made.failed(T0, retry_in_s=1, why="x").failed(
        T0 + DISABLE_AFTER, retry_in_s=1, why="x"
    )
    assert disabled.disabled and disabled.next_attempt_at is None
    with pytest.raises(ValueError, match="no next attempt"):
        attrs.evolve(disabled, next_attempt_at=T0)
    almost = made.failed(T0, retry_in_s=1, why="x").failed(
        T0 + DISABLE_AFTER - timedelta(microseconds=1), retry_in_s=1, why="x"
    )
    assert not almost.disabled and almost.attempts == 2
    with pytest.raises(InvalidRequest, match="not after the cursor"):
        made.delivered(0)


def _race_adds(store: EndpointStore, tries: int) -> list[BaseException]:
    """`tries` adds for one account at once, from as many threads; their errors."""
    barrier = threading.Barrier(tries)
    errors: list[BaseException] = []
    draws = counting_bytes()
    lock = threading.Lock()
    endpoints = []
    for _ in range(tries):  # drawn up front: counting_bytes is not thread-safe
        endpoints.append((draws(12), draws(32)))

    def add(n: int) -> None:
        ids, secret = endpoints[n]
        barrier.wait(timeout=30)
        try:
            register(store, "acme", f"https://a.test/{n}", at=T0, random_bytes=_given(ids, secret))
        except BaseException as error:
            with lock:
                errors.append(error)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(tries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def _given(*chunks: bytes) -> Callable[[int], bytes]:
    left = list(chunks)
    return lambda n: left.pop(0)


@pytest.mark.postgres
def test_adds_at_once_never_pass_the_limit_on_postgres(postgres_url: str) -> None:
    for store in sql_store(postgres_url):
        tries = MAX_ENDPOINTS_PER_ACCOUNT + 6
        errors = _race_adds(store, tries)
        assert len(store.endpoints("acme")) == MAX_ENDPOINTS_PER_ACCOUNT
        assert len(errors) == 6 and all(isinstance(e, TooManyEndpoints) for e in errors)


def test_adds_at_once_never_pass_the_limit_on_sqlite(tmp_path: Path) -> None:
    for store in sql_store(f"sqlite:///{tmp_path / 'credits.db'}"):
        errors = _race_adds(store, MAX_ENDPOINTS_PER_ACCOUNT + 6)
        assert len(store.endpoints("acme")) == MAX_ENDPOINTS_PER_ACCOUNT
        assert len(errors) == 6 and all(isinstance(e, TooManyEndpoints) for e in errors)
