"""The SQL adapter on PostgreSQL: a fresh database on the local server per test.

The shared Repository, ChargePath and ApiKeyStore contracts, the shared state machine,
the SQL adapter's own checks and the race and crash tests with real processes; the SQLite file
differs only in how it gets its database.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from adapters.sql import SqlRepository
from credits_domain import PLANS, Credits, Wallet
from credits_domain.testing import ChargePathContract, RepositoryContract
from credits_domain.testing.contract import T0
from sql_checks import SqlAdapterChecks, SqlApiKeyStoreChecks, sql_state_machine
from sql_race import SqlRaceChecks

pytestmark = pytest.mark.postgres


@pytest.fixture
def db_url(postgres_url: str) -> str:
    return postgres_url


class TestPostgresRepository(SqlAdapterChecks, RepositoryContract):
    def test_a_renewal_does_not_wait_for_a_writer_holding_the_wallet(self, db_url: str) -> None:
        """R16: a heartbeat's renewal touches the hold's row only: it completes while
        another transaction holds the account's wallet row locked (a hot account's writers
        are not queued behind renewals, nor renewals behind them)."""
        with SqlRepository.connect(db_url, migrate=True) as repository:
            wallet = Wallet.open("hot", PLANS["boost"], T0)
            hold = wallet.place_hold(Credits(email=1), T0, 30)
            with repository.unit_of_work() as uow:
                uow.add_wallet(wallet)
                uow.commit()
            renewed: list[bool] = []
            done = threading.Event()

            def renew() -> None:
                later = T0 + timedelta(seconds=60)
                renewed.append(repository.renew_hold("hot", hold.hold_id, now=T0, expires_at=later))
                done.set()

            with repository.unit_of_work() as uow:
                assert uow.load_wallet("hot") is not None  # SELECT ... FOR UPDATE
                thread = threading.Thread(target=renew)
                thread.start()
                finished_while_locked = done.wait(20)
            thread.join(60)
            assert finished_while_locked and renewed == [True]


class TestPostgresChargePath(ChargePathContract):
    @pytest.fixture
    def repository(self, db_url: str) -> Iterator[SqlRepository]:
        with SqlRepository.connect(db_url, migrate=True) as repository:
            yield repository


class TestPostgresApiKeys(SqlApiKeyStoreChecks):
    pass


TestPostgresStateMachine = sql_state_machine()


class TestPostgresRaces(SqlRaceChecks):
    pass
