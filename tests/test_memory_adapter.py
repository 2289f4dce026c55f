"""The in-memory adapter passes the shared Repository contract and state machine."""

from __future__ import annotations

from hypothesis import settings

from adapters.memory import InMemoryRepository
from credits_domain.ports import Repository
from credits_domain.testing import RepositoryContract, make_state_machine


class TestInMemoryRepository(RepositoryContract):
    def make_repository(self) -> Repository:
        return InMemoryRepository()


MemoryMachine = make_state_machine(InMemoryRepository)
MemoryMachine.TestCase.settings = settings(
    max_examples=max(200, settings().max_examples), stateful_step_count=30
)
TestInMemoryStateMachine = MemoryMachine.TestCase
