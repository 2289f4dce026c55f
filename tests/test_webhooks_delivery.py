"""Webhook delivery (R24) against a real receiver on 127.0.0.1: Standard Webhooks
signatures (checked with the `standardwebhooks` package), order per endpoint across
failures, the same webhook-id on a retry, backoff with bounded jitter, timeouts and late
answers, and an endpoint disabled after 3 days of failures (on a manual clock)."""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from adapters.clock import ManualClock
from adapters.webhooks import DISABLE_AFTER, Endpoint, MemoryEndpointStore, register
from adapters.webhooks.delivery import (
    Backoff,
    DeliveryLimits,
    PassReport,
    deliver_pass,
    new_client,
)
from adapters.webhooks.runner import WebhookRunner
from credits_domain.events import EventType
from endpoint_store_contract import counting_bytes
from webhook_support import ListSource, Receiver, Reply

ACCOUNT = "acme"


class World:
    """A store, an outbox, a manual clock (at the real time: standardwebhooks refuses
    a timestamp more than 5 minutes off) and fixed jitter draws."""

    def __init__(self, client: httpx.Client, *, draws: Callable[[], float] | None = None) -> None:
        self.store = MemoryEndpointStore()
        self.source = ListSource()
        self.clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
        self.client = client
        self.draw = draws if draws is not None else itertools.repeat(0.5).__next__
        self._bytes = counting_bytes()

    def endpoint(self, url: str, account: str = ACCOUNT) -> Endpoint:
        return register(self.store, account, url, at=self.clock.now(), random_bytes=self._bytes)

    def emit(self, n: int = 1, account: str = ACCOUNT) -> None:
        for _ in range(n):
            self.source.emit(account, self.clock.now())

    def deliver(
        self, limits: DeliveryLimits | None = None, after_id: str | None = None
    ) -> PassReport:
        return deliver_pass(
            store=self.store,
            source=self.source,
            client=self.client,
            clock=self.clock,
            draw=self.draw,
            limits=limits if limits is not None else DeliveryLimits(timeout_s=5),
            after_id=after_id,
        )

    def state(self, endpoint: Endpoint) -> Endpoint:
        (found,) = [
            e
            for e in self.store.endpoints(endpoint.account)
            if e == e and e.endpoint_id == endpoint.endpoint_id
        ]
        return found

    def until_due(self, endpoint: Endpoint) -> None:
        due = self.state(endpoint).next_attempt_at
        assert due is not None
        self.clock.set(due)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with new_client(5.0) as made:
        yield made


@pytest.fixture
def world(client: httpx.Client) -> World:
    return World(client)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as made:
        yield made


def test_each_event_is_signed_as_standard_webhooks_says(world: World, receiver: Receiver) -> None:
    endpoint = world.endpoint(receiver.url)
    world.emit(2)
    report = world.deliver()
    assert (report.delivered, report.failed) == (2, 0)
    events = world.source.events(ACCOUNT)
    for got, event in zip(receiver.received, events, strict=True):
        payload = Webhook(endpoint.secret).verify(got.body, got.headers)
        assert payload == {
            "type": "credits.low",
            "timestamp": event.at.isoformat(),
            "data": {"pool": "email", "account": ACCOUNT, "seq": event.seq},
        }
        assert got.headers["webhook-id"] == event.id
        assert got.headers["webhook-timestamp"] == str(int(world.clock.now().timestamp()))
        assert got.headers["content-type"] == "application/json"
        with pytest.raises(WebhookVerificationError):  # another endpoint's secret
            Webhook("whsec_" + "A" * 43 + "=").verify(got.body, got.headers)
        tampered = got.body.replace(b'"seq":', b'"seq":1')
        with pytest.raises(WebhookVerificationError):
            Webhook(endpoint.secret).verify(tampered, got.headers)
    assert world.state(endpoint).last_seq == 2


def test_order_is_kept_across_failures_and_a_retry_has_the_same_id(
    world: World, receiver: Receiver
) -> None:
    endpoint = world.endpoint(receiver.url)
    world.emit(3)
    receiver.script(Reply(status=204), Reply(status=500))
    report = world.deliver()
    assert [(a.seq, a.ok) for a in report.attempts] == [(1, True), (2, False)]
    assert report.attempts[1].outcome == "HTTP 500"
    assert receiver.seqs() == [1, 2]  # 3 waits for 2
    assert world.deliver().attempts == ()  # not due yet: nothing sent
    world.until_due(endpoint)
    assert [(a.seq, a.ok) for a in world.deliver().attempts] == [(2, True), (3, True)]
    assert receiver.seqs() == [1, 2, 2, 3]
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert ids[1] == ids[2] != ids[3]
    assert world.state(endpoint).attempts == 0 and world.state(endpoint).failing_since is None


def test_each_endpoint_keeps_its_own_order_and_a_failing_one_holds_up_no_other(
    world: World, receiver: Receiver
) -> None:
    with Receiver(default=Reply(status=503)) as failing:
        bad = world.endpoint(failing.url)
        good = world.endpoint(receiver.url)
        world.emit(2)
        report = world.deliver()
        assert failing.seqs() == [1]
        assert receiver.seqs() == [1, 2]
        assert {a.endpoint_id for a in report.attempts if a.ok} == {good.endpoint_id}
        assert world.state(bad).last_seq == 0


def test_a_timeout_is_a_failure_and_a_late_answer_within_it_is_not(receiver: Receiver) -> None:
    with new_client(0.3) as client:
        world = World(client)
        endpoint = world.endpoint(receiver.url)
        world.emit(2)
        receiver.script(Reply(status=204, delay_s=3.0))
        report = world.deliver(DeliveryLimits(timeout_s=0.3))
        assert [(a.seq, a.ok) for a in report.attempts] == [(1, False)]
        assert report.attempts[0].outcome.startswith("timeout")
        world.until_due(endpoint)
        receiver.script(Reply(status=200, delay_s=0.1))  # late, but within the timeout
        report = world.deliver(DeliveryLimits(timeout_s=0.3))
        assert [(a.seq, a.ok) for a in report.attempts] == [(1, True), (2, True)]
        ids = [r.headers["webhook-id"] for r in receiver.received]
        assert ids[0] == ids[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_dead_endpoint_is_a_connection_failure(world: World) -> None:
    world.endpoint(f"http://127.0.0.1:{_closed_port()}/hooks")
    world.emit()
    (attempt,) = world.deliver().attempts
    assert not attempt.ok and attempt.outcome.startswith("connection failed")
    assert attempt.retry_at is not None


def test_a_redirect_is_a_failure(world: World, receiver: Receiver) -> None:
    world.endpoint(receiver.url)
    world.emit()
    receiver.script(Reply(status=307))
    (attempt,) = world.deliver().attempts
    assert attempt.outcome == "HTTP 307"


def test_retries_back_off_exponentially_with_the_drawn_jitter(receiver: Receiver) -> None:
    draws = iter([0.0, 0.99, 0.5, 0.25])
    with new_client(5.0) as client:
        world = World(client, draws=draws.__next__)
        endpoint = world.endpoint(receiver.url)
        world.emit()
        receiver.default = Reply(status=500)
        waits = []
        for _ in range(4):
            failed_at = world.clock.now()
            world.deliver()
            due = world.state(endpoint).next_attempt_at
            assert due is not None
            waits.append((due - failed_at).total_seconds())
            world.clock.set(due)
    # base 5 s doubling; less jitter * draw of it (jitter 0.5)
    assert waits == [5.0, pytest.approx(10 * (1 - 0.5 * 0.99)), 15.0, 40 * 0.875]
    assert world.state(endpoint).attempts == 4
    assert receiver.seqs() == [1, 1, 1, 1]


@given(
    attempts=st.integers(min_value=1, max_value=80),
    first=st.floats(min_value=0, max_value=1, exclude_max=True),
    second=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_a_wait_is_within_its_jitter_and_grows_until_the_cap(
    attempts: int, first: float, second: float
) -> None:
    backoff = Backoff()
    full = min(backoff.cap_s, backoff.base_s * 2 ** (attempts - 1))
    wait = backoff.wait_s(attempts, first)
    assert full * (1 - backoff.jitter) <= wait <= full
    if 2 * full <= backoff.cap_s:  # the next full wait doubles: never shorter
        assert backoff.wait_s(attempts + 1, second) >= wait


def test_the_jitter_is_bounded_at_the_ends_of_its_draw() -> None:
    backoff = Backoff(base_s=5, cap_s=7_200, jitter=0.5)
    assert backoff.wait_s(1, 0.0) == 5.0
    assert backoff.wait_s(3, 0.999999) == pytest.approx(10.0, abs=1e-4)
    assert backoff.wait_s(30, 0.0) == 7_200.0
    with pytest.raises(ValueError, match="draw in"):
        backoff.wait_s(1, 1.0)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=0.6)


def test_an_endpoint_failing_for_three_days_is_disabled_and_says_so(
    world: World, receiver: Receiver
) -> None:
    endpoint = world.endpoint(receiver.url)
    world.emit(2)
    receiver.default = Reply(status=500)
    start = world.clock.now()
    for _ in range(200):  # a bound: with waits capped at 2 h, 3 days take about 45
        report = world.deliver()
        state = world.state(endpoint)
        if state.disabled:
            break
        assert world.clock.now() - start < DISABLE_AFTER
        world.until_due(endpoint)
    assert state.disabled and state.disabled_at == world.clock.now()
    assert world.clock.now() - start >= DISABLE_AFTER
    assert state.disabled_reason is not None
    assert "HTTP 500" in state.disabled_reason and "disabled after 3 days" in state.disabled_reason
    assert report.attempts[-1].disabled
    assert set(receiver.seqs()) == {1}  # seq 2 never overtook seq 1
    assert world.store.due(world.clock.now() + timedelta(days=30), limit=10) == []
    receiver.default = Reply(status=204)
    assert world.deliver().attempts == ()  # disabled: nothing more is sent


def test_events_before_the_endpoint_existed_are_not_sent(world: World, receiver: Receiver) -> None:
    world.emit(2)
    world.clock.advance(timedelta(seconds=1))
    endpoint = world.endpoint(receiver.url)
    assert world.deliver().attempts == ()
    assert world.state(endpoint).last_seq == 2  # skipped, and saved
    world.emit()
    assert [a.seq for a in world.deliver().attempts] == [3]
    assert receiver.seqs() == [3]
    assert world.state(endpoint).last_seq == 3


def test_a_pass_is_bounded_in_endpoints_and_events(world: World, receiver: Receiver) -> None:
    made = sorted(
        (world.endpoint(receiver.url, f"a{i}") for i in range(3)), key=lambda e: e.endpoint_id
    )
    for endpoint in made:
        world.emit(3, endpoint.account)
    limits = DeliveryLimits(max_endpoints=2, max_events=2, timeout_s=5)
    first = world.deliver(limits)
    assert first.endpoints == 2 and first.delivered == 4
    assert first.last_endpoint_id == made[1].endpoint_id
    rest = world.deliver(limits, after_id=first.last_endpoint_id)
    assert {a.account for a in rest.attempts} == {made[2].account}
    assert rest.last_endpoint_id is None
    assert world.deliver(limits).delivered == 2  # the third event of the first two


def test_the_body_is_json_with_the_account_and_seq_in_data(
    world: World, receiver: Receiver
) -> None:
    world.endpoint(receiver.url)
    world.source.emit(ACCOUNT, world.clock.now(), EventType.PERIOD_RENEWED)
    world.deliver()
    body = json.loads(receiver.received[0].body)
    assert body["type"] == "period.renewed"
    assert datetime.fromisoformat(body["timestamp"]) == world.clock.now()
    assert body["data"]["account"] == ACCOUNT and body["data"]["seq"] == 1


def test_the_runner_delivers_in_the_background_and_stops(world: World, receiver: Receiver) -> None:
    world.endpoint(receiver.url)
    world.emit(2)
    runner = WebhookRunner(lambda after_id: world.deliver(after_id=after_id), interval_s=0.05)
    runner.start()
    try:
        waiting = threading.Event()
        for _ in range(400):  # a bound: 20 s
            if runner.delivered >= 2:
                break
            waiting.wait(0.05)
    finally:
        assert runner.stop(timeout_s=10)
    assert receiver.seqs() == [1, 2]
    assert runner.passes >= 1 and runner.errors == 0


def test_the_runner_survives_a_failing_pass() -> None:
    calls: list[str | None] = []

    def boom(after_id: str | None) -> PassReport:
        calls.append(after_id)
        raise RuntimeError("the database went away")

    runner = WebhookRunner(boom, interval_s=0.01, max_passes=3)
    runner.start()
    runner.join(timeout_s=10)
    assert runner.errors == 3 and runner.passes == 3
    assert calls == [None, None, None]


def test_a_stopping_pass_ends_before_its_next_request(world: World, receiver: Receiver) -> None:
    endpoint = world.endpoint(receiver.url)
    world.endpoint(receiver.url, "other")
    world.emit(3)
    world.emit(3, "other")
    report = deliver_pass(
        store=world.store,
        source=world.source,
        client=world.client,
        clock=world.clock,
        draw=world.draw,
        stopping=lambda: len(receiver.received) >= 1,
    )
    assert report.delivered == 1 and len(receiver.received) == 1
    assert (
        world.state(endpoint).last_seq + sum(e.last_seq for e in world.store.endpoints("other"))
        == 1
    )  # what was sent is saved; the rest waits for the next pass
