"""The Heartbeat port on a thread (adapters.heartbeat): a request's lease renewed while a
real verifier call outlives it (R16), and the adapter's bounds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest

from adapters.clock import SystemClock
from adapters.heartbeat import ThreadHeartbeat
from adapters.memory import InMemoryRepository
from adapters.verifier import ScriptedVerifier
from credits_domain import (
    ChargePolicy,
    Contact,
    Credits,
    CreditService,
    HoldExpired,
    InvalidRequest,
)

WAIT_S = 30.0  # a bound on waiting for a thread, never a measured time


def counting(into: list[int]) -> Callable[[], bool]:
    """A beat that counts itself into `into` and asks for more."""

    def beat() -> bool:
        into.append(1)
        return True

    return beat


def wait_for(beats: list[int]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not beats and time.monotonic() < deadline:
        time.sleep(0.005)


def test_it_beats_until_the_beat_says_stop() -> None:
    heartbeat = ThreadHeartbeat()
    beats: list[int] = []
    done = threading.Event()

    def beat() -> bool:
        beats.append(1)
        if len(beats) == 3:
            done.set()
            return False
        return True

    with heartbeat.beating(0.01, beat):
        assert done.wait(WAIT_S)
        time.sleep(0.05)  # room for a fourth beat, which must not come
    assert len(beats) == 3 and heartbeat.beats == 3


def test_leaving_the_block_stops_the_beats() -> None:
    heartbeat = ThreadHeartbeat()
    beats: list[int] = []
    with heartbeat.beating(0.01, counting(beats)):
        wait_for(beats)
    seen = len(beats)
    time.sleep(0.05)
    assert seen >= 1 and len(beats) == seen
    assert not [t for t in threading.enumerate() if t.name == "credits-heartbeat"]


def test_beyond_its_threads_a_call_goes_without_a_heartbeat() -> None:
    heartbeat = ThreadHeartbeat(max_threads=1)
    outer: list[int] = []
    inner: list[int] = []
    with heartbeat.beating(0.01, counting(outer)), heartbeat.beating(0.01, counting(inner)):
        wait_for(outer)
        time.sleep(0.05)
    assert outer and not inner
    with heartbeat.beating(0.01, counting(inner)):  # the slot is free again
        wait_for(inner)
    assert inner


def test_a_beat_that_raises_ends_the_heartbeat_not_the_request() -> None:
    heartbeat = ThreadHeartbeat()

    def broken() -> bool:
        raise RuntimeError("a bug")

    with heartbeat.beating(0.01, broken):
        time.sleep(0.05)
    assert heartbeat.beats == 1


@pytest.mark.parametrize("settings", [{"max_threads": 0}, {"max_beats": 0}])
def test_its_bounds_are_whole_numbers_from_one(settings: dict[str, int]) -> None:
    with pytest.raises(InvalidRequest):
        ThreadHeartbeat(**settings)


@pytest.mark.parametrize("beating", [True, False], ids=["heartbeat", "no-heartbeat"])
def test_a_verifier_call_longer_than_the_lease_settles_while_it_beats(beating: bool) -> None:
    """On the machine's clock, a 1-second lease and a verifier call of 2.5 s: renewed by
    the heartbeat (every third of a second), the request settles; without one, its lease
    lapses mid-call and it is HoldExpired, charging nothing."""

    def slow(batch: Sequence[Contact]) -> None:
        time.sleep(2.5)

    heartbeat = ThreadHeartbeat()
    service = CreditService(
        repository=InMemoryRepository(),
        verifier=ScriptedVerifier(before_answer=slow),
        clock=SystemClock(),
        policy=ChargePolicy(lease_s=1, hold_ttl_s=60),
        heartbeat=heartbeat if beating else None,
    )
    service.subscribe("acme", "boost")
    data = [Contact.email("ann@corp.com")]
    if beating:
        assert service.unlock("acme", data, idempotency_key="k").charged_credits == Credits(email=1)
        assert heartbeat.beats >= 2
    else:
        with pytest.raises(HoldExpired):
            service.unlock("acme", data, idempotency_key="k")
        assert service.balance("acme").email_available == service.balance("acme").email
