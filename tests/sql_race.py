"""Races and crashes with real processes, for any SQL database (Jepsen's "bank" shape).

`SqlRaceChecks` is subclassed by each database's test file, which provides `db_url`.

- Race: 8 processes x 500 operations on one hot account: unlocks of shared and of
  distinct data, exports, enrichments, idempotent replays, balance reads, and one
  renewal when one worker moves the shared clock a month on. Afterwards, exactly: no
  datum charged twice (R12), no pool below zero (R15), conservation recomputed from the
  ledger (R20), and ledger, balances, ownership and what the workers were told agree.
- Renewal: two processes renew the same due accounts at once, in small batches; every
  account is renewed, and no period is granted twice (R3, R5).
- Crash: three times, a process charging a batch of 2,000 contacts under an idempotency
  key is killed with SIGKILL at a random point of the request (uniform over how long the
  request takes here); the database is reopened and the invariants hold; retrying the
  batch with its key, once its hold expired, charges each datum at most once, and
  exactly the data its result reports (R16, R17).

The workers run in processes started with `spawn`, so this module is imported afresh in
each of them; everything they need is a module-level function with picklable arguments.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import random
import signal
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from adapters.clock import ManualClock
from adapters.sql import SqlRepository
from adapters.sql.schema import ownership
from credits_domain import (
    Channel,
    ChargePolicy,
    ChargeResult,
    Contact,
    Credits,
    CreditService,
    EntryKind,
    HoldExpired,
    LedgerEntry,
    Operation,
    Outcome,
    Plan,
    Verdict,
)

SPAWN = multiprocessing.get_context("spawn")
START = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

WORKERS = 8
OPERATIONS = 500
RENEWAL_AT_OPERATION = 250  # worker 0 moves the shared clock a month on here
HOT_PLAN = Plan(name="hot", monthly=Credits(email=1_200, mobile=60))
SHARED_EMAILS = 300
SHARED_MOBILES = 40

CRASH_BATCH = 2_000
CRASH_KILLS = 3
CRASH_PLAN = Plan(name="bulk", monthly=Credits(email=10_000, mobile=0))
CRASH_POLICY = ChargePolicy(hold_ttl_s=60)

PROCESS_TIMEOUT_S = 300  # a hung worker fails the test instead of hanging CI


def _micros(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1)


class SharedClock:
    """One clock for all worker processes: an instant in shared memory (no file, no DB)."""

    def __init__(self, cell: Any) -> None:
        self._cell = cell  # a multiprocessing.Value("q"): microseconds since the epoch

    def now(self) -> datetime:
        return EPOCH + timedelta(microseconds=self._cell.value)

    def advance(self, delta: timedelta) -> None:
        with self._cell.get_lock():
            self._cell.value += delta // timedelta(microseconds=1)


class HashVerifier:
    """The same verdict for a datum in every process: a tenth INVALID, a tenth CATCH_ALL."""

    def verify(self, contacts: Sequence[Contact]) -> list[Verdict]:
        return [self.verdict_of(contact) for contact in contacts]

    @staticmethod
    def verdict_of(contact: Contact) -> Verdict:
        bucket = zlib.crc32(contact.value.encode()) % 10
        return (
            Verdict.INVALID if bucket == 0 else Verdict.CATCH_ALL if bucket == 1 else Verdict.VALID
        )


def shared_pool() -> list[Contact]:
    return [Contact.email(f"shared{i}@hot.example.com") for i in range(SHARED_EMAILS)] + [
        Contact.mobile(f"+4477009{i:05d}") for i in range(SHARED_MOBILES)
    ]


@attrs.frozen
class WorkerReport:
    charged: tuple[str, ...]  # data this worker was told it paid for (first answers only)
    credits: tuple[int, int]  # (email, mobile) credits this worker was told it paid
    outcomes: dict[str, int]
    hold_expired: int
    renewed: int
    errors: tuple[str, ...]


def race_worker(url: str, worker: int, cell: Any, start_line: Any, reports: Any) -> None:
    """One client process: OPERATIONS charging requests on the hot account."""
    rng = random.Random(worker)
    shared = shared_pool()
    clock = SharedClock(cell)
    charged: list[str] = []
    credits = [0, 0]
    outcomes: Counter[str] = Counter()
    hold_expired = renewed = 0
    errors: list[str] = []
    distinct = 0

    def mine(count: int) -> list[Contact]:
        nonlocal distinct
        made = []
        for _ in range(count):
            distinct += 1
            made.append(Contact.email(f"w{worker}-{distinct}@hot.example.com"))
        return made

    def record(result: ChargeResult) -> None:
        for item in result.items:
            outcomes[item.outcome.value] += 1
            if item.outcome is Outcome.CHARGED:
                charged.append(str(item.contact))
        credits[0] += result.charged(Channel.EMAIL)
        credits[1] += result.charged(Channel.MOBILE)

    repository = SqlRepository.connect(url)
    service = CreditService(repository=repository, verifier=HashVerifier(), clock=clock)
    start_line.wait(timeout=PROCESS_TIMEOUT_S)
    try:
        for op in range(OPERATIONS):
            if worker == 0 and op == RENEWAL_AT_OPERATION:
                clock.advance(timedelta(days=32))  # past the period's end (April 10)
                renewed += service.renew_due()
            roll = rng.random()
            try:
                if roll < 0.40:
                    record(service.unlock("hot", rng.sample(shared, rng.randint(1, 3))))
                elif roll < 0.62:
                    record(service.unlock("hot", mine(rng.randint(1, 2))))
                elif roll < 0.77:
                    batch = [*rng.sample(shared, rng.randint(1, 3)), *mine(rng.randint(0, 2))]
                    record(service.export("hot", batch, destination="csv"))
                elif roll < 0.92:
                    record(service.enrich("hot", [*rng.sample(shared, 1), *mine(1)]))
                elif roll < 0.97:
                    key = f"w{worker}-op{op}"
                    batch = [*rng.sample(shared, 2), *mine(1)]
                    first = service.unlock("hot", batch, idempotency_key=key)
                    record(first)
                    again = service.unlock("hot", batch, idempotency_key=key)
                    if not again.replayed or again.items != first.items:
                        errors.append(f"R17: replay of {key} differs: {again} != {first}")
                else:
                    balance = service.balance("hot")
                    if min(balance.email_available, balance.mobile_available) < 0:
                        errors.append(f"R20: negative available credits {balance}")
            except HoldExpired:  # R16: reserved before the clock jumped a month
                hold_expired += 1
    except Exception as error:  # reported to the parent, which fails the test
        errors.append(f"worker {worker}: {error!r}")
    finally:
        repository.close()
        reports.put(
            WorkerReport(
                charged=tuple(charged),
                credits=(credits[0], credits[1]),
                outcomes=dict(outcomes),
                hold_expired=hold_expired,
                renewed=renewed,
                errors=tuple(errors),
            )
        )


RENEWAL_ACCOUNTS = 40


def renew_child(url: str, at_micros: int, batch_size: int, start_line: Any, renewed: Any) -> None:
    repository = SqlRepository.connect(url)
    clock = ManualClock(EPOCH + timedelta(microseconds=at_micros))
    service = CreditService(repository=repository, verifier=HashVerifier(), clock=clock)
    start_line.wait(timeout=PROCESS_TIMEOUT_S)
    renewed.value = service.renew_due(batch_size=batch_size)
    repository.close()


def crash_batch(batch: int) -> list[Contact]:
    return [Contact.email(f"lead{i}@bulk{batch}.example.com") for i in range(CRASH_BATCH)]


def crash_child(
    url: str, account: str, batch: int, at_micros: int, started: Any, took_s: Any
) -> None:
    """Charge batch `batch` under its key at the given instant (killed at a random point).

    `started` is set just before the request; `took_s` receives how long it took.
    """
    repository = SqlRepository.connect(url)
    clock = ManualClock(EPOCH + timedelta(microseconds=at_micros))
    service = CreditService(
        repository=repository, verifier=HashVerifier(), clock=clock, policy=CRASH_POLICY
    )
    contacts = crash_batch(batch)
    started.set()
    begun = time.monotonic()
    service.unlock(account, contacts, idempotency_key=f"bulk-import-{batch}")
    took_s.value = time.monotonic() - begun
    repository.close()


# -- checking a database after the fact --------------------------------------------------


@attrs.frozen
class AccountFacts:
    entries: tuple[LedgerEntry, ...]
    charged: frozenset[str]  # data charged, from the ledger
    balances: dict[Channel, int]
    open_holds: int


def check_account(repository: SqlRepository, account: str) -> AccountFacts:
    """Assert R12, R15, R19, R20 and that ledger, balances and ownership agree."""
    entries: list[LedgerEntry] = []
    while True:
        page = repository.entries(account, after_seq=entries[-1].seq if entries else -1)
        entries.extend(page)
        if len(page) < 1000:
            break
    assert [e.seq for e in entries] == list(range(len(entries))), "R19: seq has gaps"
    running = dict.fromkeys(Channel, 0)
    for entry in entries:
        running[entry.pool] += entry.amount
        assert entry.balance_after == running[entry.pool], f"R20: running balance at {entry}"
        assert entry.balance_after >= 0, f"R15: {entry}"
    with repository.unit_of_work() as uow:
        wallet = uow.load_wallet(account)
    assert wallet is not None
    for pool in Channel:
        # R20: balance = grants + refunds - charges - forfeits, from the ledger.
        assert wallet.balances[pool] == running[pool] >= 0, f"R20: {pool} {wallet.balances}"
        assert wallet.available(pool) >= 0, f"R20: {pool} holds {wallet.holds}"
    charges = [e for e in entries if e.kind is EntryKind.CHARGE]
    datums = Counter(e.cause.datum for e in charges)
    assert all(n == 1 for n in datums.values()), f"R12: charged twice: {datums.most_common(3)}"
    with repository.engine.connect() as connection:
        owned = {
            f"{row.channel}:{row.value}": row
            for row in connection.execute(
                sa.select(ownership).where(ownership.c.account == account)
            )
        }
    assert set(owned) == set(datums), "ownership and ledger charges agree"
    by_seq = {e.seq: e for e in charges}
    for datum, row in owned.items():
        paid = by_seq[row.entry_seq]
        assert (paid.cause.datum, -paid.amount, paid.pool.value) == (
            datum,
            row.credits,
            row.pool,
        ), f"ownership of {datum} points at {paid}"
    return AccountFacts(
        entries=tuple(entries),
        charged=frozenset(str(d) for d in datums),
        balances=dict(wallet.balances),
        open_holds=len(wallet.holds),
    )


def wait_for_other_sessions(repository: SqlRepository) -> None:
    """Wait (bounded) until no other session of this database is running a statement;
    SQLite has no server, so nothing outlives its client there."""
    if repository.dialect != "postgresql":
        return
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND state <> 'idle'"
    )
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    with repository.engine.connect() as connection:
        while connection.execute(query).scalar_one():
            assert time.monotonic() < deadline, "a dead client's statement never finished"
            connection.rollback()  # a fresh snapshot of pg_stat_activity
            time.sleep(0.05)


def _join(process: Any) -> None:
    process.join(timeout=PROCESS_TIMEOUT_S)
    if process.is_alive():
        process.kill()
        process.join()
        pytest.fail(f"{process.name} did not finish within {PROCESS_TIMEOUT_S}s")


@pytest.mark.slow
class SqlRaceChecks:
    def test_eight_processes_on_one_hot_account(self, db_url: str) -> None:
        with SqlRepository.connect(db_url, migrate=True) as repository:
            setup = CreditService(
                repository=repository, verifier=HashVerifier(), clock=ManualClock(START)
            )
            setup.subscribe("hot", HOT_PLAN)
        cell = SPAWN.Value("q", _micros(START))
        start_line = SPAWN.Barrier(WORKERS)
        reports = SPAWN.Queue()
        workers = [
            SPAWN.Process(
                target=race_worker,
                args=(db_url, n, cell, start_line, reports),
                name=f"race-worker-{n}",
            )
            for n in range(WORKERS)
        ]
        for process in workers:
            process.start()
        try:
            got = [reports.get(timeout=PROCESS_TIMEOUT_S) for _ in workers]
        except queue.Empty:
            pytest.fail("a race worker sent no report")
        finally:
            for process in workers:
                _join(process)
        exitcodes = [p.exitcode for p in workers]
        assert exitcodes == [0] * WORKERS, exitcodes
        errors = [e for report in got for e in report.errors]
        assert errors == [], f"{len(errors)} errors in the workers, first: {errors[:3]}"

        with SqlRepository.connect(db_url) as repository:
            facts = check_account(repository, "hot")
        told = [datum for report in got for datum in report.charged]
        # Every charge was answered to exactly one worker, and every answer was a charge.
        assert len(told) == len(set(told)), Counter(told).most_common(3)
        assert set(told) == facts.charged, set(told) ^ facts.charged
        for pool, index in ((Channel.EMAIL, 0), (Channel.MOBILE, 1)):
            paid = -sum(
                e.amount for e in facts.entries if e.kind is EntryKind.CHARGE and e.pool is pool
            )
            assert paid == sum(report.credits[index] for report in got), pool
        # The renewal granted period 1 exactly once, and nothing else was granted.
        grants = Counter(
            (e.cause.operation, e.cause.period, e.pool) for e in facts.entries if e.amount > 0
        )
        expected = [(Operation.SUBSCRIBE, 0), (Operation.RENEWAL, 1)]
        assert grants == Counter(
            (op, period, pool) for op, period in expected for pool in Channel
        ), grants
        # Every request settled or found its hold expired.
        assert facts.open_holds == 0, facts.open_holds
        # The mix did what it is for: shared data contended, credits ran out (R15).
        outcomes = Counter[str]()
        for report in got:
            outcomes.update(report.outcomes)
        for needed in (Outcome.ALREADY_OWNED, Outcome.INSUFFICIENT_CREDITS, Outcome.NOT_VERIFIED):
            assert outcomes[needed.value] > 0, outcomes

    def test_two_processes_renewing_at_once_grant_each_period_once(self, db_url: str) -> None:
        plan = Plan(name="renewing", monthly=Credits(email=100, mobile=10))
        with SqlRepository.connect(db_url, migrate=True) as repository:
            clock = ManualClock(START)
            setup = CreditService(repository=repository, verifier=HashVerifier(), clock=clock)
            for n in range(RENEWAL_ACCOUNTS):
                setup.subscribe(f"acct{n:02d}", plan)
                clock.advance(timedelta(hours=1))  # different anchors, different boundaries
        # Two and a half months on: every account is due for two boundaries.
        at = START + timedelta(days=75)
        start_line = SPAWN.Barrier(2)
        counts = [SPAWN.Value("q", -1) for _ in range(2)]
        children = [
            SPAWN.Process(
                target=renew_child,
                args=(db_url, _micros(at), batch_size, start_line, counts[n]),
                name=f"renew-{n}",
            )
            for n, batch_size in enumerate((3, 7))
        ]
        for child in children:
            child.start()
        for child in children:
            _join(child)
        assert [c.exitcode for c in children] == [0, 0]
        # Each process saw every account due, or found it renewed by the other meanwhile.
        assert all(0 <= count.value <= RENEWAL_ACCOUNTS for count in counts)
        with SqlRepository.connect(db_url) as repository:
            assert repository.due_accounts(at, 1_000) == []
            for n in range(RENEWAL_ACCOUNTS):
                facts = check_account(repository, f"acct{n:02d}")
                grants = Counter(
                    (e.cause.operation, e.cause.period, e.pool)
                    for e in facts.entries
                    if e.kind is EntryKind.GRANT
                )
                expected = [
                    (Operation.SUBSCRIBE, 0),
                    (Operation.RENEWAL, 1),
                    (Operation.RENEWAL, 2),
                ]
                assert grants == Counter(
                    (op, period, pool) for op, period in expected for pool in Channel
                ), f"acct{n:02d}: {grants}"
                assert facts.balances == {Channel.EMAIL: 300, Channel.MOBILE: 30}

    def test_killed_in_the_middle_of_a_batch_then_retried(self, db_url: str) -> None:
        with SqlRepository.connect(db_url, migrate=True) as repository:
            setup = CreditService(
                repository=repository, verifier=HashVerifier(), clock=ManualClock(START)
            )
            setup.subscribe("crash", CRASH_PLAN)
            setup.subscribe("calibration", CRASH_PLAN)
        request_s = self._run_child(db_url, "calibration", CRASH_KILLS, START, kill_after_s=None)
        seed = int.from_bytes(os.urandom(4), "big")
        rng = random.Random(seed)
        at = START
        for batch in range(CRASH_KILLS):
            kill_after_s = rng.uniform(0, request_s)
            self._run_child(db_url, "crash", batch, at, kill_after_s=kill_after_s)
            with SqlRepository.connect(db_url) as repository:
                # A statement the killed client had sent runs to its end on the server
                # (a one-call settle commits even though nobody reads its answer): look
                # once the server has finished with the dead client's sessions.
                wait_for_other_sessions(repository)
                check_account(repository, "crash")

            # The retry comes after the killed attempt's hold expired (R16).
            at += timedelta(seconds=CRASH_POLICY.hold_ttl_s + 1)
            contacts = crash_batch(batch)
            with SqlRepository.connect(db_url) as repository:
                service = CreditService(
                    repository=repository,
                    verifier=HashVerifier(),
                    clock=ManualClock(at),
                    policy=CRASH_POLICY,
                )
                result = service.unlock("crash", contacts, idempotency_key=f"bulk-import-{batch}")
                facts = check_account(repository, "crash")
                # R17: whoever finished the request, its answer is exactly what was charged.
                answered = {str(i.contact) for i in result.items if i.outcome is Outcome.CHARGED}
                of_batch = facts.charged & {str(c) for c in contacts}
                context = f"seed {seed}, batch {batch}, killed after {kill_after_s:.3f}s"
                assert answered == of_batch, context
                valid = sum(HashVerifier.verdict_of(c) is Verdict.VALID for c in contacts)
                assert len(answered) == valid, context
                again = service.unlock("crash", contacts, idempotency_key=f"bulk-import-{batch}")
                assert again.replayed and again.items == result.items, context
                assert check_account(repository, "crash") == facts, context
                assert facts.open_holds == 0, context

    @staticmethod
    def _run_child(
        db_url: str, account: str, batch: int, at: datetime, *, kill_after_s: float | None
    ) -> float:
        """Run `crash_child`; SIGKILL it `kill_after_s` into its request (None: let it
        finish). Returns how long its request took, when it finished."""
        started, took_s = SPAWN.Event(), SPAWN.Value("d", -1.0)
        child = SPAWN.Process(
            target=crash_child,
            args=(db_url, account, batch, _micros(at), started, took_s),
            name=f"crash-{account}-{batch}",
        )
        child.start()
        assert started.wait(timeout=PROCESS_TIMEOUT_S), f"{child.name} never started"
        if kill_after_s is not None:
            time.sleep(kill_after_s)
            if child.is_alive():
                os.kill(child.pid or 0, signal.SIGKILL)
        _join(child)
        if kill_after_s is None:
            assert child.exitcode == 0 and took_s.value > 0
        return float(took_s.value)
