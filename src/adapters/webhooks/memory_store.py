"""`MemoryEndpointStore`: the webhook endpoints in a dict, for tests and embedding."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

from adapters.webhooks.endpoints import (
    MAX_ENDPOINTS_PER_ACCOUNT,
    Endpoint,
    TooManyEndpoints,
    UnknownEndpoint,
    check_endpoint_id,
    check_limit,
)
from credits_domain import InvalidRequest
from credits_domain.limits import check_account


class MemoryEndpointStore:
    """The port in memory; one lock makes each call atomic."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._endpoints: dict[str, Endpoint] = {}

    def add(self, endpoint: Endpoint) -> Endpoint:
        with self._lock:
            if endpoint.endpoint_id in self._endpoints:
                raise InvalidRequest(f"endpoint {endpoint.endpoint_id!r} exists already")
            owned = sum(1 for e in self._endpoints.values() if e.account == endpoint.account)
            if owned >= MAX_ENDPOINTS_PER_ACCOUNT:
                raise TooManyEndpoints(endpoint.account)
            self._endpoints[endpoint.endpoint_id] = endpoint
        return endpoint

    def endpoints(self, account: str) -> Sequence[Endpoint]:
        check_account(account)
        with self._lock:
            return sorted(
                (e for e in self._endpoints.values() if e.account == account),
                key=lambda e: e.endpoint_id,
            )

    def remove(self, account: str, endpoint_id: str) -> None:
        check_account(account)
        with self._lock:
            found = self._endpoints.get(endpoint_id)
            if found is None or found.account != account:
                raise UnknownEndpoint(account, endpoint_id)
            del self._endpoints[endpoint_id]

    def due(self, now: datetime, *, after_id: str | None = None, limit: int) -> Sequence[Endpoint]:
        check_limit(limit)
        if after_id is not None:
            check_endpoint_id(after_id)
        with self._lock:
            ready = sorted(
                (
                    e
                    for e in self._endpoints.values()
                    if not e.disabled
                    and (e.next_attempt_at is None or e.next_attempt_at <= now)
                    and (after_id is None or e.endpoint_id > after_id)
                ),
                key=lambda e: e.endpoint_id,
            )
        return ready[:limit]

    def save_state(self, endpoint: Endpoint) -> None:
        with self._lock:
            stored = self._endpoints.get(endpoint.endpoint_id)
            if stored is None or stored.last_seq > endpoint.last_seq:
                return
            self._endpoints[endpoint.endpoint_id] = endpoint
