"""The webhook endpoint registry's contract (R24): what every `EndpointStore` does,
run on memory, SQLite and PostgreSQL by `tests/test_webhook_endpoints.py`.

A subclass provides the `store` fixture (a new, empty store)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from adapters.webhooks import (
    MAX_ENDPOINTS_PER_ACCOUNT,
    Endpoint,
    EndpointStore,
    TooManyEndpoints,
    UnknownEndpoint,
    register,
)
from credits_domain import InvalidRequest

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def counting_bytes() -> Callable[[int], bytes]:
    """Deterministic "random" bytes: each call a new run of counting bytes."""
    counter = itertools.count(1)

    def draw(n: int) -> bytes:
        start = next(counter)
        return bytes((start * 7 + i) % 256 for i in range(n))

    return draw


class EndpointStoreContract:
    def add(
        self, store: EndpointStore, account: str = "acme", url: str = "https://a.test/h"
    ) -> Endpoint:
        return register(store, account, url, at=T0, random_bytes=self._bytes)

    @pytest.fixture(autouse=True)
    def _entropy(self) -> None:
        self._bytes = counting_bytes()

    def test_an_endpoint_round_trips_every_field(self, store: EndpointStore) -> None:
        added = self.add(store, url="http://127.0.0.1:9/x?y=1")
        assert store.endpoints("acme") == [added]
        assert added.secret.startswith("whsec_")
        assert (added.last_seq, added.attempts, added.disabled) == (0, 0, False)
        failing = attrs.evolve(
            added,
            last_seq=3,
            failing_since=T0,
            attempts=2,
            next_attempt_at=T0 + timedelta(seconds=10),
        )
        store.save_state(failing)
        assert store.endpoints("acme") == [failing]
        disabled = failing.failed(T0 + timedelta(days=3), retry_in_s=1, why="HTTP 500")
        store.save_state(disabled)
        (back,) = store.endpoints("acme")
        assert back == disabled
        assert back.disabled and back.disabled_reason is not None
        assert "disabled after 3 days" in back.disabled_reason

    def test_endpoints_keep_to_their_account(self, store: EndpointStore) -> None:
        a = self.add(store, "acme")
        b = self.add(store, "acme/2")
        assert store.endpoints("acme") == [a]
        assert store.endpoints("acme/2") == [b]
        assert store.endpoints("nobody") == []
        with pytest.raises(UnknownEndpoint, match="credits webhooks list"):
            store.remove("acme", b.endpoint_id)
        store.remove("acme/2", b.endpoint_id)
        assert store.endpoints("acme/2") == []
        with pytest.raises(UnknownEndpoint):
            store.remove("acme/2", b.endpoint_id)

    def test_an_account_has_at_most_its_maximum_of_endpoints(self, store: EndpointStore) -> None:
        for _ in range(MAX_ENDPOINTS_PER_ACCOUNT):
            self.add(store)
        with pytest.raises(TooManyEndpoints, match="remove one first"):
            self.add(store)
        assert len(store.endpoints("acme")) == MAX_ENDPOINTS_PER_ACCOUNT
        self.add(store, "other")  # another account is not concerned
        store.remove("acme", store.endpoints("acme")[0].endpoint_id)
        self.add(store)  # room again

    def test_due_skips_disabled_and_not_yet_due_and_pages_by_id(self, store: EndpointStore) -> None:
        made = sorted((self.add(store, f"a{i}") for i in range(5)), key=lambda e: e.endpoint_id)
        later = attrs.evolve(
            made[1], attempts=1, failing_since=T0, next_attempt_at=T0 + timedelta(seconds=30)
        )
        store.save_state(later)
        # failing, and due again now: due
        store.save_state(made[2].failed(T0 - timedelta(seconds=5), retry_in_s=5, why="x"))
        # failing for 3 days: disabled, never due again
        failing = made[3].failed(T0 - timedelta(days=3), retry_in_s=5, why="x")
        store.save_state(failing.failed(T0, retry_in_s=5, why="x"))
        assert store.endpoints(made[3].account)[0].disabled
        ids = [e.endpoint_id for e in store.due(T0, limit=100)]
        assert ids == [made[0].endpoint_id, made[2].endpoint_id, made[4].endpoint_id]
        at_retry = [e.endpoint_id for e in store.due(T0 + timedelta(seconds=30), limit=100)]
        assert made[1].endpoint_id in at_retry  # due exactly at its instant
        assert [e.endpoint_id for e in store.due(T0, limit=1)] == [made[0].endpoint_id]
        page = store.due(T0, after_id=made[0].endpoint_id, limit=1)
        assert [e.endpoint_id for e in page] == [made[2].endpoint_id]
        assert store.due(T0 + timedelta(days=365), after_id=made[2].endpoint_id, limit=9) == [
            store.endpoints(made[4].account)[0]
        ]
        with pytest.raises(InvalidRequest):
            store.due(T0, limit=1_001)

    def test_a_cursor_never_goes_back_and_a_removed_endpoint_stays_removed(
        self, store: EndpointStore
    ) -> None:
        added = self.add(store)
        store.save_state(added.delivered(5))
        store.save_state(added.delivered(4))  # a slower, older pass
        assert store.endpoints("acme")[0].last_seq == 5
        store.remove("acme", added.endpoint_id)
        store.save_state(added.delivered(6))
        assert store.endpoints("acme") == []
