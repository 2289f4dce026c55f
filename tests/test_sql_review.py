"""Review of the SQL adapter: the failures a billing user would meet, each pinned by a test.

- An in-memory SQLite database is one connection shared by every unit of work: a second
  unit of work opened while the first is open (another thread, or a nested call) must
  wait or fail on its own, never roll back the first one's transaction behind its back
  (which let a datum's ownership vanish while its charge stayed: charged twice, R12).
- A pooled PostgreSQL connection that the server dropped (a restart, a failover) is
  replaced, not handed to the next request as a driver error.
- `entries` and `due_accounts` bound their answer on both dialects: a negative limit is
  refused as InvalidRequest (SQLite read it as "no limit", PostgreSQL failed in the driver).
- A naive instant given to the port is refused as InvalidRequest, as the read methods do,
  not as SQLAlchemy's StatementError.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

import psycopg
import pytest
import sqlalchemy as sa

from adapters.clock import ManualClock
from adapters.sql import SqlRepository, SqlUnitOfWork
from adapters.verifier import ScriptedVerifier
from credits_domain import (
    Cause,
    Channel,
    ConcurrencyConflict,
    Contact,
    CreditService,
    IdempotencyRecord,
    InvalidRequest,
    Operation,
    Outcome,
    Ownership,
)
from credits_domain.testing.contract import join_all

START = datetime(2025, 1, 31, 9, 30, tzinfo=UTC)
ANN = Contact.email("ann@corp.example.com")
NAIVE = datetime(2025, 1, 31, 9, 30)


def service_on(repository: SqlRepository) -> CreditService:
    return CreditService(
        repository=repository, verifier=ScriptedVerifier(), clock=ManualClock(START)
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'credits.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def repository(db_url: str) -> Iterator[SqlRepository]:
    with SqlRepository.connect(db_url, migrate=True) as repository:
        service_on(repository).subscribe("acme", "boost")
        yield repository


def _charge_ann_in(uow: SqlUnitOfWork) -> None:
    """Stage, in an open unit of work, the charge of ANN and its ownership (as settle does)."""
    wallet = uow.load_wallet("acme")
    assert wallet is not None
    entry = wallet.charge(
        Channel.EMAIL, 1, START, Cause(operation=Operation.UNLOCK, datum=str(ANN))
    )
    uow.dedup.add(
        [
            Ownership(
                account="acme",
                contact=ANN,
                pool=Channel.EMAIL,
                credits=1,
                charged_at=START,
                entry_seq=entry.seq,
            )
        ]
    )


# -- in-memory SQLite: one shared connection -----------------------------------------


def _signal_when_waiting_for_the_pool(waiting: threading.Event) -> None:
    """From now on, in this thread: set `waiting` once it waits for a free connection in
    the pool's queue. It holds the queue's mutex from there to the wait, so a connection
    given back after the signal still finds it waiting: the interleaving is forced."""

    def tracer(frame: FrameType, event: str, arg: object) -> None:
        caller = frame.f_back
        if (
            event == "call"
            and frame.f_code.co_name == "wait"
            and caller is not None
            and caller.f_code.co_name == "get"
            and caller.f_code.co_filename.endswith(os.path.join("sqlalchemy", "util", "queue.py"))
        ):
            waiting.set()

    sys.settrace(tracer)


def test_in_memory_a_second_thread_waits_and_never_undoes_the_first() -> None:
    with SqlRepository.connect("sqlite://", migrate=True, lock_wait_s=10) as repository:
        service = service_on(repository)
        service.subscribe("acme", "boost")
        staged, waiting, second_done = threading.Event(), threading.Event(), threading.Event()
        errors: list[BaseException] = []
        seen_by_second: list[bool] = []

        def second_writer() -> None:
            try:
                assert staged.wait(timeout=10), "the first unit of work never staged"
                _signal_when_waiting_for_the_pool(waiting)
                with repository.unit_of_work() as uow:
                    sys.settrace(None)
                    uow.load_wallet("acme")
                    seen_by_second.append(ANN in uow.dedup.owned("acme", [ANN]))
                    uow.commit()
            except BaseException as error:  # asserted below
                errors.append(error)
            finally:
                sys.settrace(None)
                second_done.set()

        thread = threading.Thread(target=second_writer, daemon=True)
        thread.start()
        with repository.unit_of_work() as uow:
            _charge_ann_in(uow)
            staged.set()
            # The race, forced: the other thread is blocked beginning its own unit of
            # work on the same database while ours is open.
            assert waiting.wait(timeout=10), "the second unit of work never waited"
            assert not second_done.is_set()
            # Our staged ownership is still part of our transaction.
            assert ANN in uow.dedup.owned("acme", [ANN])
            uow.commit()
        join_all([thread], timeout_s=20)
        assert errors == []
        # It began once ours had committed: it saw our charge.
        assert seen_by_second == [True]
        # R12: the datum is owned, so unlocking it again is free.
        assert service.unlock("acme", [ANN]).items[0].outcome is Outcome.ALREADY_OWNED
        assert service.balance("acme").email == 12_000


def test_in_memory_a_nested_unit_of_work_fails_alone() -> None:
    with SqlRepository.connect("sqlite://", migrate=True, lock_wait_s=0.2) as repository:
        service = service_on(repository)
        service.subscribe("acme", "boost")
        with repository.unit_of_work() as first:
            _charge_ann_in(first)
            with pytest.raises(ConcurrencyConflict), repository.unit_of_work():
                pass
            wallet = first.load_wallet("acme")
            assert wallet is not None
            assert ANN in first.dedup.owned("acme", [ANN])
            first.commit()
        with repository.unit_of_work() as uow:
            assert ANN in uow.dedup.owned("acme", [ANN])
        assert service.unlock("acme", [ANN]).items[0].outcome is Outcome.ALREADY_OWNED


# -- PostgreSQL: connections the server dropped ---------------------------------------


@pytest.mark.postgres
def test_a_connection_the_server_dropped_is_replaced(
    postgres_server: str, postgres_url: str
) -> None:
    with SqlRepository.connect(postgres_url, migrate=True) as repository:
        service = service_on(repository)
        service.subscribe("acme", "boost")
        database = sa.make_url(postgres_url).database
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
            # Once the server has said goodbye (pg_terminate_backend only signals), as
            # after a restart: the checkout sees the pooled connection is dead.
            for _ in range(200):
                left = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
                ).fetchone()
                if left == (0,):
                    break
                time.sleep(0.02)
            else:
                pytest.fail("the terminated sessions never ended")
        # The pool's connection is dead; the next request gets a fresh one instead of
        # the driver's "terminating connection".
        assert service.balance("acme").email == 12_000


# -- bounded reads --------------------------------------------------------------------


def test_a_negative_limit_is_refused(repository: SqlRepository) -> None:
    later = START + timedelta(days=60)
    with pytest.raises(InvalidRequest):
        repository.entries("acme", limit=-1)
    with pytest.raises(InvalidRequest):
        repository.due_accounts(later, -1)
    assert repository.entries("acme", limit=0) == []
    assert repository.due_accounts(later, 0) == []
    assert len(repository.entries("acme", limit=1)) == 1
    assert repository.due_accounts(later, 1) == ["acme"]


# -- instants -------------------------------------------------------------------------


def test_a_naive_instant_is_refused_as_invalid_request(repository: SqlRepository) -> None:
    with pytest.raises(InvalidRequest), repository.unit_of_work() as uow:
        uow.load_wallet("acme")
        uow.idempotency.put(
            IdempotencyRecord(
                account="acme", key="k", fingerprint="f", hold_id=None, created_at=NAIVE
            )
        )
    service_on(repository).unlock("acme", [ANN])
    with pytest.raises(InvalidRequest), repository.unit_of_work() as uow:
        uow.load_wallet("acme")
        uow.dedup.mark_refunded("acme", ANN, NAIVE)
    with pytest.raises(InvalidRequest):
        repository.last_entry("acme", Channel.EMAIL, NAIVE)
