"""Delivering events to webhook endpoints, as the Standard Webhooks specification says.

One pass (`deliver_pass`) is bounded: at most `max_endpoints` endpoints, `max_events`
events each, one request at a time with `timeout_s` on each of connect, write, read and
pool. Per endpoint, events go in seq order and the next waits for the one before to be
acknowledged (a 2xx); a failure (another status, a connection error, a timeout) stops
that endpoint for the pass and schedules its next try after an exponential backoff with
jitter. An endpoint that has been failing for 3 days is disabled, and says why.

Delivery is at least once: the cursor moves after the 2xx, so a crash between the two
sends the event again, with the same `webhook-id` (the event's id). Receivers
deduplicate by it. Nothing here runs inside charging: passes read the outbox
(`EventSource`) and the endpoint store only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from typing import Final

import attrs
import httpx

from adapters.webhooks.endpoints import (
    MAX_PAGE,
    Endpoint,
    EndpointStore,
    EventSource,
    secret_key,
)
from credits_domain import Clock, InvalidRequest, UnknownAccount
from credits_domain.errors import invariant
from credits_domain.events import Event

MAX_EVENTS_PER_ENDPOINT: Final = 1_000
USER_AGENT: Final = "credits-domain-webhooks/1"


def body_of(event: Event) -> bytes:
    """The request body: `{"type", "timestamp", "data"}`, with the account and seq in data."""
    data = {**event.data, "account": event.account, "seq": event.seq}
    payload = {"type": event.type.value, "timestamp": event.at.isoformat(), "data": data}
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def signature(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """`v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`, keyed by the
    secret's decoded bytes."""
    signed = f"{msg_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers_of(endpoint: Endpoint, event: Event, timestamp_s: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": event.id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signature(endpoint.secret, event.id, timestamp_s, body),
    }


@attrs.frozen(kw_only=True)
class Backoff:
    """The wait before try n+1 after n failures: `base_s * 2**(n-1)`, at most `cap_s`,
    less a random part of up to `jitter` of it. With `jitter <= 0.5` a wait is never
    shorter than the one before while the full wait doubles (below the cap); at the cap,
    waits are between `cap_s * (1 - jitter)` and `cap_s`."""

    base_s: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    cap_s: float = attrs.field(default=7_200.0, validator=attrs.validators.gt(0))
    jitter: float = attrs.field(
        default=0.5, validator=[attrs.validators.ge(0), attrs.validators.le(0.5)]
    )

    def wait_s(self, attempts: int, draw: float) -> float:
        """`attempts` failed tries so far (1 or more); `draw` a random number in [0, 1)."""
        if attempts < 1 or not 0 <= draw < 1:
            raise InvalidRequest(
                f"a wait needs attempts >= 1 and a draw in [0, 1), got {attempts}, {draw}"
            )
        full = min(self.cap_s, self.base_s * 2.0 ** min(attempts - 1, 62))
        return full * (1 - self.jitter * draw)


@attrs.frozen(kw_only=True)
class DeliveryLimits:
    """The bounds of one pass."""

    max_endpoints: int = attrs.field(
        default=100, validator=[attrs.validators.ge(1), attrs.validators.le(MAX_PAGE)]
    )
    max_events: int = attrs.field(
        default=100,
        validator=[attrs.validators.ge(1), attrs.validators.le(MAX_EVENTS_PER_ENDPOINT)],
    )
    timeout_s: float = attrs.field(
        default=10.0, validator=[attrs.validators.gt(0), attrs.validators.le(60)]
    )


@attrs.frozen(kw_only=True)
class Attempt:
    """One request of a pass: which event to which endpoint, and how it went."""

    endpoint_id: str
    account: str
    event_id: str
    seq: int
    ok: bool
    outcome: str  # "HTTP 204", "timeout", "connection failed: ..."
    retry_at: str | None = None  # ISO-8601, after a failure
    disabled: bool = False


@attrs.frozen(kw_only=True)
class PassReport:
    attempts: tuple[Attempt, ...]
    endpoints: int  # endpoints looked at
    last_endpoint_id: str | None  # where the next pass may go on (`after_id`)

    @property
    def delivered(self) -> int:
        return sum(1 for a in self.attempts if a.ok)

    @property
    def failed(self) -> int:
        return sum(1 for a in self.attempts if not a.ok)


def new_client(timeout_s: float) -> httpx.Client:
    """The HTTP client of delivery: explicit timeouts, no redirects followed (a redirect
    is a failure: the receiver must give the URL it answers at), no proxies from the
    environment."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
    )


def _post(client: httpx.Client, endpoint: Endpoint, event: Event, timestamp_s: int) -> str | None:
    """None if the endpoint acknowledged the event, else what went wrong."""
    body = body_of(event)
    try:
        # Streamed and closed unread: only the status counts, and a receiver's body
        # (however large or slow) costs nothing.
        with client.stream(
            "POST",
            endpoint.url,
            content=body,
            headers=headers_of(endpoint, event, timestamp_s, body),
        ) as response:
            status = response.status_code
    except httpx.TimeoutException as error:
        return f"timeout ({type(error).__name__})"
    except httpx.HTTPError as error:
        return f"connection failed ({type(error).__name__}: {str(error)[:120]})"
    return None if 200 <= status < 300 else f"HTTP {status}"


def _deliver_endpoint(
    endpoint: Endpoint,
    *,
    store: EndpointStore,
    source: EventSource,
    client: httpx.Client,
    clock: Clock,
    draw: Callable[[], float],
    backoff: Backoff,
    limits: DeliveryLimits,
    stopping: Callable[[], bool],
) -> list[Attempt]:
    attempts: list[Attempt] = []
    try:
        events = source.events(
            endpoint.account, after_seq=endpoint.last_seq or None, limit=limits.max_events
        )
    except UnknownAccount:  # registered before its account subscribed: nothing happened yet
        return attempts
    skipped = False  # the cursor moved past events older than the endpoint, unsaved
    for event in events[: limits.max_events]:
        if stopping():
            break
        invariant(event.seq == endpoint.last_seq + 1, "the outbox gives seqs without gaps")
        if event.at < endpoint.created_at:
            # Before the endpoint existed: not its business. The cursor moves on, saved
            # once for the run of them (a new endpoint of an old account skips many).
            endpoint, skipped = endpoint.delivered(event.seq), True
            continue
        skipped = False
        now = clock.now()
        why = _post(client, endpoint, event, int(now.timestamp()))
        done = clock.now()
        if why is None:
            endpoint = endpoint.delivered(event.seq)
            store.save_state(endpoint)
            attempts.append(_attempt(endpoint, event, ok=True, outcome="delivered"))
            continue
        wait_s = backoff.wait_s(endpoint.attempts + 1, draw())
        endpoint = endpoint.failed(done, retry_in_s=wait_s, why=why)
        store.save_state(endpoint)
        attempts.append(_attempt(endpoint, event, ok=False, outcome=why))
        break  # the endpoint's next event waits for this one
    if skipped:
        store.save_state(endpoint)
    return attempts


def _attempt(endpoint: Endpoint, event: Event, *, ok: bool, outcome: str) -> Attempt:
    retry = endpoint.next_attempt_at
    return Attempt(
        endpoint_id=endpoint.endpoint_id,
        account=endpoint.account,
        event_id=event.id,
        seq=event.seq,
        ok=ok,
        outcome=outcome,
        retry_at=None if ok or retry is None else retry.isoformat(),
        disabled=endpoint.disabled,
    )


def deliver_pass(
    *,
    store: EndpointStore,
    source: EventSource,
    client: httpx.Client,
    clock: Clock,
    draw: Callable[[], float],
    backoff: Backoff = Backoff(),
    limits: DeliveryLimits = DeliveryLimits(),
    after_id: str | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> PassReport:
    """One bounded pass over the endpoints due now (after `after_id`, by id): each gets
    its pending events in order until one fails. `draw` gives the jitter's random
    numbers in [0, 1) (`random.random`; a fixed sequence in tests). Once `stopping()`
    answers True the pass ends before its next request (what was sent is saved)."""
    due: Sequence[Endpoint] = store.due(clock.now(), after_id=after_id, limit=limits.max_endpoints)
    attempts: list[Attempt] = []
    for endpoint in due[: limits.max_endpoints]:
        if stopping():
            break
        attempts += _deliver_endpoint(
            endpoint,
            store=store,
            source=source,
            client=client,
            clock=clock,
            draw=draw,
            backoff=backoff,
            limits=limits,
            stopping=stopping,
        )
    return PassReport(
        attempts=tuple(attempts),
        endpoints=len(due),
        last_endpoint_id=due[-1].endpoint_id if len(due) == limits.max_endpoints else None,
    )
