"""The in-memory adapter passes the shared Repository, ChargePath and ApiKeyStore contracts
and the state machine, on each charging path and on their mix; and what only memory has:
the bounded wait of a nested unit of work."""

from __future__ import annotations

import pytest
from hypothesis import settings

from adapters.clock import ManualClock
from adapters.memory import InMemoryApiKeyStore, InMemoryRepository
from adapters.verifier import ScriptedVerifier
from credits_domain import Channel, ConcurrencyConflict, Contact, CreditService
from credits_domain.plans import PLANS
from credits_domain.ports import ApiKeyStore, Clock, Repository
from credits_domain.testing import (
    ApiKeyStoreContract,
    ChargePathContract,
    ChosenPaths,
    RepositoryContract,
    make_state_machine,
)
from credits_domain.testing.contract import T0
from credits_domain.wallet import Wallet


class TestInMemoryRepository(RepositoryContract):
    def make_repository(self) -> Repository:
        return InMemoryRepository()


class TestInMemoryApiKeys(ApiKeyStoreContract):
    def make_key_store(self, clock: Clock) -> ApiKeyStore:
        return InMemoryApiKeyStore(clock=clock)


def test_a_nested_unit_of_work_waits_then_conflicts_and_undoes_nothing() -> None:
    # As on SQLite (BEGIN IMMEDIATE) and PostgreSQL (the row lock): the lock is not
    # re-entrant, so an inner unit of work cannot change what the outer one loaded.
    repository = InMemoryRepository(lock_wait_s=0.05)
    with repository.unit_of_work() as outer:
        outer.add_wallet(Wallet.open("acct", PLANS["boost"], T0))
        with pytest.raises(ConcurrencyConflict, match="waited"), repository.unit_of_work():
            pass
        outer.commit()
    with repository.unit_of_work() as uow:
        assert uow.load_wallet("acct") is not None


MemoryMachine = make_state_machine(InMemoryRepository)
MemoryMachine.TestCase.settings = settings(
    max_examples=max(200, settings().max_examples), stateful_step_count=30
)
TestInMemoryStateMachine = MemoryMachine.TestCase


class TestInMemoryChargePath(ChargePathContract):
    def make_repository(self) -> Repository:
        return InMemoryRepository()


# The machine above charges in one call wherever it can; these two take units of work
# only, and every mix of the two paths in turn, request after request.
UnitsOfWorkMachine = make_state_machine(
    lambda: ChosenPaths(InMemoryRepository(), reserve=False, settle=False)
)
UnitsOfWorkMachine.TestCase.settings = MemoryMachine.TestCase.settings
TestInMemoryUnitsOfWorkStateMachine = UnitsOfWorkMachine.TestCase

MixedPathsMachine = make_state_machine(lambda: ChosenPaths(InMemoryRepository(), alternate=True))
MixedPathsMachine.TestCase.settings = MemoryMachine.TestCase.settings
TestInMemoryMixedPathsStateMachine = MixedPathsMachine.TestCase


def test_batches_kept_as_columns_read_as_the_entries_and_records_they_stand_for() -> None:
    # A batch settled in one call is stored as columns; the repository's ledger and
    # ownership still read as a list of entries and a mapping of records, whichever path
    # wrote them.
    repository = InMemoryRepository()
    service = CreditService(
        repository=repository, verifier=ScriptedVerifier(), clock=ManualClock(T0)
    )
    service.subscribe("acct", "boost")
    one_call = [Contact.email(f"c{n}@corp.com") for n in range(3)] + [Contact.mobile("+15550001")]
    service.unlock("acct", one_call)
    units = CreditService(
        repository=ChosenPaths(repository, reserve=False, settle=False),
        verifier=ScriptedVerifier(),
        clock=ManualClock(T0),
    )
    by_units = [Contact.email("u@corp.com")]
    units.unlock("acct", by_units)
    service.unlock("acct", [Contact.email("last@corp.com")])

    ledger = repository.ledgers["acct"]
    entries = list(repository.entries("acct"))
    assert [e.seq for e in entries] == list(range(8))
    assert list(ledger) == entries and len(ledger) == 8
    assert ledger[-1] == entries[-1] and ledger[2:5] == entries[2:5]
    assert [e.balance_after for e in entries[2:]] == [11_999, 11_998, 11_997, 799, 11_996, 11_995]
    with pytest.raises(IndexError):
        ledger[8]
    owned = repository.owned_by["acct"]
    everyone = [*one_call, *by_units, Contact.email("last@corp.com")]
    with repository.unit_of_work() as uow:
        records = uow.dedup.owned("acct", everyone)
    assert dict(owned) == dict(records) and len(owned) == 6
    assert [records[c].entry_seq for c in everyone] == [2, 3, 4, 5, 6, 7]
    assert owned[one_call[3]].pool is Channel.MOBILE
    with pytest.raises(KeyError):
        owned[Contact.email("nobody@corp.com")]
    assert repository.last_entry("acct", Channel.MOBILE, T0) == entries[5]
