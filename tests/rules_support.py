"""Shared set-up of the example-based rule tests (tests/test_rules_*.py).

Everything goes through the public facade (`credits_domain`) and the in-memory adapters,
exactly as an application would: a real InMemoryRepository, a ManualClock that moves
only when a test says so, and a ScriptedVerifier whose `before_answer` hook lets a test
act while the verifier "works" (R16, R17).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from adapters.clock import ManualClock
from adapters.memory import InMemoryRepository
from adapters.sql import SqlRepository
from adapters.verifier import ScriptedVerifier
from credits_domain import (
    PLANS,
    Balance,
    Channel,
    ChargePolicy,
    ChargeResult,
    Contact,
    Credits,
    CreditService,
    EntryKind,
    LedgerEntry,
    Plan,
    Price,
    Repository,
    Verdict,
    Verifier,
)

ACCOUNT = "acme"
JAN_1 = datetime(2024, 1, 1, tzinfo=UTC)
SECOND = timedelta(seconds=1)

Hook = Callable[[Sequence[Contact]], None]
Charging = Callable[[CreditService, Sequence[Contact]], ChargeResult]

# The three charging events of R9, called the way an application calls them.
CHARGING: dict[str, Charging] = {
    "unlock": lambda s, c: s.unlock(ACCOUNT, c),
    "export": lambda s, c: s.export(ACCOUNT, c, destination="hubspot"),
    "enrich": lambda s, c: s.enrich(ACCOUNT, c),
}


@attrs.define
class World:
    """One service on in-memory adapters, and handles on its clock, verifier and storage."""

    service: CreditService
    clock: ManualClock
    verifier: ScriptedVerifier
    repository: InMemoryRepository
    # Runs inside every verifier call, before it answers; None means "answer at once".
    hook: Hook | None = None

    def balance(self, account: str = ACCOUNT) -> Balance:
        return self.service.balance(account)

    def entries(self, account: str = ACCOUNT) -> list[LedgerEntry]:
        return list(self.service.statement(account))

    def stored_entries(self, account: str = ACCOUNT) -> list[LedgerEntry]:
        """The ledger as stored, read without touching the account (no catch-up)."""
        return list(self.repository.entries(account, limit=100_000))

    def advance(self, delta: timedelta) -> datetime:
        return self.clock.advance(delta)

    def now(self) -> datetime:
        return self.clock.now()


def make_world(
    *,
    start: datetime = JAN_1,
    script: Mapping[str, Verdict] | None = None,
    default: Verdict = Verdict.VALID,
    policy: ChargePolicy | None = None,
    plans: Mapping[str, Plan] = PLANS,
) -> World:
    clock = ManualClock(start)
    repository = InMemoryRepository()
    holder: list[World] = []

    def before_answer(batch: Sequence[Contact]) -> None:
        hook = holder[0].hook
        if hook is not None:
            hook(batch)

    verifier = ScriptedVerifier(script, default=default, before_answer=before_answer)
    service = CreditService(
        repository=repository,
        verifier=verifier,
        clock=clock,
        policy=policy,
        plans=plans,
    )
    world = World(service=service, clock=clock, verifier=verifier, repository=repository)
    holder.append(world)
    return world


def tiny_plan(
    email: int,
    mobile: int = 0,
    *,
    name: str = "tiny",
    mobile_price: Price | None = None,
    cap: Credits | None = None,
) -> Plan:
    """A small custom plan, so that running out of credits takes a few contacts (R15)."""
    prices = {
        Channel.EMAIL: Price(pool=Channel.EMAIL),
        Channel.MOBILE: mobile_price or Price(pool=Channel.MOBILE),
    }
    return Plan(
        name=name, monthly=Credits(email=email, mobile=mobile), prices=prices, rollover_cap=cap
    )


def fifteen_per_mobile(email: int) -> Plan:
    """R2: the help page's plan that prices a mobile number at 15 EMAIL credits."""
    return tiny_plan(
        email, 0, name="email-only", mobile_price=Price(pool=Channel.EMAIL, credits=15)
    )


def emails(count: int, prefix: str = "lead") -> list[Contact]:
    return [Contact.email(f"{prefix}{i}@corp.com") for i in range(count)]


def mobiles(count: int, first: int = 0) -> list[Contact]:
    return [Contact.mobile(f"+1555{first + i:07d}") for i in range(count)]


def of_kind(entries: Sequence[LedgerEntry], kind: EntryKind) -> list[LedgerEntry]:
    return [e for e in entries if e.kind is kind]


def total(entries: Sequence[LedgerEntry], kind: EntryKind, pool: Channel) -> int:
    return sum(e.amount for e in entries if e.kind is kind and e.pool is pool)


def make_service(verifier: Verifier, *, policy: ChargePolicy | None = None) -> CreditService:
    """A service on a fresh in-memory store and a clock stopped at JAN_1, for a test that
    brings its own Verifier implementation."""
    return CreditService(
        repository=InMemoryRepository(),
        verifier=verifier,
        clock=ManualClock(JAN_1),
        policy=policy,
    )


# The storages a rule test may run on, for `pytest.fixture(params=STORAGES)`.
STORAGES = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repository]:
    """A fresh repository of the kind `request.param` names (one of STORAGES)."""
    if request.param == "memory":
        yield InMemoryRepository()
        return
    url = (
        f"sqlite:///{tmp_path / 'rules.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    with SqlRepository.connect(url, migrate=True) as repository:
        yield repository
