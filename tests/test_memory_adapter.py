"""The in-memory adapter passes the shared Repository, ChargePath and ApiKeyStore contracts
and the state machine, on each charging path and on their mix; and what only memory has:
the bounded wait of a nested unit of work."""

from __future__ import annotations

import pytest
from hypothesis import settings

from adapters.memory import InMemoryApiKeyStore, InMemoryRepository
from credits_domain import ConcurrencyConflict
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
