"""A wrong secret for a real key id costs what an unknown key id does (the fault
campaign's finding: the key id's existence leaked through the lookup's time).

Times are never asserted: the lookup is checked to do the same work either way. It sends
the same statement and reads exactly one row, a dummy one standing in for an unknown id,
with no instant to parse; the digest is compared in constant time against the row's hash
(the dummy's is DUMMY_HASH).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from adapters.clock import SystemClock
from adapters.sql import SqlApiKeyStore, SqlRepository
from adapters.sql.api_keys import _AUTHENTICATE
from credits_domain.keys import DUMMY_HASH


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlRepository]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'keys.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    with SqlRepository.connect(url, migrate=True) as opened:
        yield opened


def test_an_unknown_id_and_a_wrong_secret_read_one_row_each(repository: SqlRepository) -> None:
    store = SqlApiKeyStore(repository.engine, clock=SystemClock(), cache_ttl_s=0)
    issued = store.create("acme")
    with repository.engine.connect() as connection:
        for key_id in (issued.key_id, "0" * 16):
            rows = connection.execute(_AUTHENTICATE, {"key_id": key_id, "dummy": DUMMY_HASH})
            assert len(rows.all()) == 1, key_id


def test_both_lookups_send_the_same_statement(repository: SqlRepository) -> None:
    store = SqlApiKeyStore(repository.engine, clock=SystemClock(), cache_ttl_s=0)
    issued = store.create("acme")
    sent: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if "credits_api_keys" in statement:
            sent.append(statement)

    event.listen(repository.engine, "before_cursor_execute", seen)
    try:
        assert store.authenticate(f"ck_{issued.key_id}_{'A' * 43}") is None  # wrong secret
        assert store.authenticate(f"ck_{'0' * 16}_{'A' * 43}") is None  # unknown id
    finally:
        event.remove(repository.engine, "before_cursor_execute", seen)
    assert len(sent) == 2 and sent[0] == sent[1]
    assert "UNION ALL" in sent[0].upper()


def test_the_lookup_still_tells_keys_apart(repository: SqlRepository) -> None:
    store = SqlApiKeyStore(repository.engine, clock=SystemClock(), cache_ttl_s=0)
    issued = store.create("acme")
    assert store.authenticate(issued.token) == "acme"
    assert store.authenticate(issued.token[:-1] + ("B" if issued.token[-1] != "B" else "C")) is None
    store.revoke(issued.key_id)
    assert store.authenticate(issued.token) is None
