"""The seeded fault simulator (tests/fault_simulator.py) on memory, SQLite and PostgreSQL:
a bounded number of seeds in CI, each replayable; `make soak SEEDS=N` runs more. Each
step is checked against the invariants, the reference model and the leases (no orphan
hold after its lease; a retry after a lapsed lease takes over, one during it is refused)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.memory import InMemoryRepository
from adapters.sql import SqlRepository
from credits_domain import Repository
from fault_simulator import FAULT_KINDS, Run, make_table, simulate


def _report(store: str, runs: list[Run]) -> None:
    # The closing figures, shown in CI's output even when pytest captures.
    print(f"\nfault simulator on {store}: {make_table(runs)}", file=sys.__stderr__)


def test_the_simulator_injects_every_kind_of_fault_and_nothing_breaks() -> None:
    runs = [simulate(InMemoryRepository, seed) for seed in range(120)]
    injected = {kind for run in runs for kind, n in run.injected.items() if n}
    assert injected == set(FAULT_KINDS)
    assert sum(run.answered for run in runs) > 1_000
    # Retries that took a request over after its lease lapsed, while it still ran (R16).
    assert sum(run.taken_over for run in runs) > 20
    _report("memory", runs)


def test_a_seed_replays_exactly() -> None:
    first, again = simulate(InMemoryRepository, 4242), simulate(InMemoryRepository, 4242)
    assert (first.injected, first.answered, first.refused, first.taken_over) == (
        again.injected,
        again.answered,
        again.refused,
        again.taken_over,
    )


def _sqlite(tmp_path: Path) -> Callable[[], Repository]:
    counter = iter(range(1_000))
    return lambda: SqlRepository.connect(
        f"sqlite:///{tmp_path / f'sim-{next(counter)}.db'}", migrate=True
    )


def test_on_sqlite(tmp_path: Path) -> None:
    make = _sqlite(tmp_path)  # a fresh file per seed
    runs = [simulate(make, seed, steps=40) for seed in range(12)]
    _report("SQLite", runs)


@pytest.mark.postgres
def test_on_postgresql(postgres_url: str) -> None:
    # One database, one seed: the accounts start afresh in a database of their own.
    runs = [simulate(lambda: SqlRepository.connect(postgres_url, migrate=True), 7, steps=60)]
    _report("PostgreSQL", runs)
