"""A seeded fault simulator, in the spirit of TigerBeetle's VOPR and Jepsen's bank test.

One seed drives a few accounts through random operations while faults are injected at
the ports, and checks after every step what must hold whatever failed:
- R12: no datum charged twice (the ledger's charges name each datum once);
- R15: no pool and no available balance below zero;
- R20: each pool's balance is the sum of its ledger entries;
- R17: a request retried under its key, once it is answered, answers what it answered
  first, and every datum it was told it was charged is charged in the ledger exactly once;
- R16: once its hold has expired and the account is touched, no hold is left behind.

Faults, by kind:
- `fail_before_commit`: a unit of work (or one-call phase) fails before it writes;
- `fail_after_commit`: it writes, then the caller sees an error (the ambiguous commit);
- `verifier_error`, `verifier_garbage`: the verifier raises, or answers nonsense (R10: no
  charge);
- `abandoned`: the process dies between reserve and settle (a hold is left);
- `clock_jump`: time jumps forward by hours to months (renewals, expiries).
Every charging request carries an idempotency key and is retried after a storage fault
until it is answered (bounded): what the caller finally hears is compared with the
ledger. A failing seed replays exactly: everything random comes from `random.Random(seed)`.

Run: `make soak SEEDS=N` (a progress bar), or the CI's bounded run in
tests/test_fault_simulator.py on memory, SQLite and PostgreSQL.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

import attrs

from adapters.clock import ManualClock
from credits_domain import (
    ChargePolicy,
    ChargeResult,
    Contact,
    CreditsError,
    CreditService,
    EntryKind,
    Outcome,
    Repository,
    StorageUnavailable,
    Verdict,
)

START = datetime(2026, 1, 30, 9, 0, tzinfo=UTC)
ACCOUNTS = ("acme", "globex", "initech")
PLANS = ("ignite", "boost")
HOLD_TTL_S = 600
MAX_RETRIES = 12  # a request retried after storage faults, at most this often
FAULT_KINDS = (
    "fail_before_commit",
    "fail_after_commit",
    "verifier_error",
    "verifier_garbage",
    "abandoned",
    "clock_jump",
)


class Died(BaseException):
    """The process running a request died (not an Exception: nothing catches it)."""


@attrs.define
class Faults:
    """What to inject next, decided by the seed; counts what was injected."""

    rng: random.Random
    rate: float
    injected: Counter[str] = attrs.field(factory=Counter)
    armed: bool = True

    def roll(self, kind: str) -> bool:
        if self.armed and self.rng.random() < self.rate:
            self.injected[kind] += 1
            return True
        return False


class FaultyUnitOfWork:
    """A unit of work whose commit may fail before or after it writes."""

    def __init__(self, inner: Any, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __enter__(self) -> Self:
        self._inner.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._inner.__exit__(exc_type, exc, tb)

    def commit(self) -> None:
        if self._faults.roll("fail_before_commit"):
            raise StorageUnavailable("simulated: the connection broke before COMMIT")
        self._inner.commit()
        if self._faults.roll("fail_after_commit"):
            raise StorageUnavailable("simulated: the connection broke after COMMIT")


class FaultyRepository:
    """A repository whose units of work and one-call phases fail as `faults` decides."""

    def __init__(self, inner: Repository, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults
        if hasattr(inner, "reserve_fast"):
            self.reserve_fast = self._wrap(inner.reserve_fast)
            self.settle_fast = self._wrap(inner.settle_fast)  # type: ignore[attr-defined]

    def _wrap(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def faulty(*args: Any, **kwargs: Any) -> Any:
            if self._faults.roll("fail_before_commit"):
                raise StorageUnavailable("simulated: the call never reached the database")
            answer = call(*args, **kwargs)
            if self._faults.roll("fail_after_commit"):
                raise StorageUnavailable("simulated: the answer was lost after COMMIT")
            return answer

        return faulty

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def unit_of_work(self) -> FaultyUnitOfWork:
        return FaultyUnitOfWork(self._inner.unit_of_work(), self._faults)


class FaultyVerifier:
    """Verdicts from the seed; sometimes raises, answers garbage, or dies mid-request."""

    def __init__(self, faults: Faults, verdict_of: Callable[[Contact], Verdict]) -> None:
        self._faults = faults
        self._verdict_of = verdict_of

    def verify(self, contacts: Sequence[Contact]) -> Sequence[Any]:
        if self._faults.roll("abandoned"):
            raise Died
        if self._faults.roll("verifier_error"):
            raise TimeoutError("simulated: the verifier timed out")
        if self._faults.roll("verifier_garbage"):
            return ["valid"] * (len(contacts) + 1)
        return [self._verdict_of(contact) for contact in contacts]


@attrs.define
class Told:
    """What a caller finally heard for one key."""

    result: ChargeResult
    charged: frozenset[str]


@attrs.define
class Run:
    seed: int
    steps: int
    injected: Counter[str]
    answered: int
    refused: int
    gave_up: int


class Violation(AssertionError):
    """An invariant broke; the message names the seed, which replays it exactly."""


def _verdict_of(contact: Contact) -> Verdict:
    # A pure function of the datum, so that every attempt of a request sees the same.
    digit = sum(map(ord, contact.value)) % 10
    return Verdict.INVALID if digit == 0 else Verdict.CATCH_ALL if digit == 1 else Verdict.VALID


def simulate(make_repository: Callable[[], Repository], seed: int, steps: int = 60) -> Run:
    """Run one seed; raises Violation on the first broken invariant."""
    rng = random.Random(seed)
    faults = Faults(rng=random.Random(rng.getrandbits(64)), rate=0.08)
    clock = ManualClock(START)
    inner = make_repository()
    repository = FaultyRepository(inner, faults)
    service = CreditService(
        repository=repository,
        verifier=FaultyVerifier(faults, _verdict_of),
        clock=clock,
        policy=ChargePolicy(hold_ttl_s=HOLD_TTL_S, max_conflict_retries=3),
    )
    clean = CreditService(
        repository=inner,
        verifier=FaultyVerifier(Faults(rng=rng, rate=0.0), _verdict_of),
        clock=clock,
    )
    universe = [Contact.email(f"lead{n}@corp{n % 3}.example.com") for n in range(40)]
    universe += [Contact.mobile(f"+4477009{n:05d}") for n in range(15)]
    told: dict[tuple[str, str], Told] = {}
    answered = refused = gave_up = 0
    with _FaultsOff(faults):
        for account in ACCOUNTS:
            service.subscribe(account, rng.choice(PLANS))
    for step in range(steps):
        account = rng.choice(ACCOUNTS)
        if faults.roll("clock_jump"):
            clock.advance(timedelta(seconds=rng.choice([60, 3_600, 86_400, 31 * 86_400])))
        key = f"k{rng.randrange(25)}"  # keys repeat: later uses are retries or reuse
        batch = rng.sample(universe, rng.randint(1, 6))
        if rng.random() < 0.2:
            batch.append(batch[0])  # a repeat within the request (R12)
        outcome = _charge(service, clock, account, batch, key)
        if isinstance(outcome, ChargeResult):
            answered += 1
            charged = frozenset(
                str(item.contact) for item in outcome.items if item.outcome is Outcome.CHARGED
            )
            first = told.setdefault((account, key), Told(outcome, charged))
            if outcome.replayed and outcome.items != first.result.items:
                raise Violation(f"seed {seed} step {step}: replay of {key} differs (R17)")
        elif outcome == "refused":
            refused += 1
        else:
            gave_up += 1
        _check(clean, inner, told, seed, step)
    # Every hold expires: past its time, touching the account leaves none (R16).
    clock.advance(timedelta(seconds=HOLD_TTL_S + 1))
    for account in ACCOUNTS:
        clean.balance(account)
    _check(clean, inner, told, seed, steps, holds_gone=True)
    return Run(seed, steps, faults.injected, answered, refused, gave_up)


class _FaultsOff:
    def __init__(self, faults: Faults) -> None:
        self._faults = faults

    def __enter__(self) -> None:
        self._faults.armed = False

    def __exit__(self, *exc: object) -> None:
        self._faults.armed = True


def _charge(
    service: CreditService, clock: ManualClock, account: str, batch: list[Contact], key: str
) -> ChargeResult | str:
    for _ in range(MAX_RETRIES):
        try:
            return service.unlock(account, batch, idempotency_key=key)
        except Died:
            # The worker died with its hold; a retry comes once that hold has expired.
            clock.advance(timedelta(seconds=HOLD_TTL_S + 1))
        except StorageUnavailable:
            continue  # the retry with the same key (R17)
        except CreditsError as error:
            if type(error).__name__ == "RequestInFlight":
                clock.advance(timedelta(seconds=HOLD_TTL_S + 1))
                continue
            return "refused"  # reused key, paused, lapsed, ...: an expected refusal
    return "gave up"


def _entries(service: CreditService, account: str) -> Iterator[Any]:
    return service.statement(account)


def _check(
    service: CreditService,
    repository: Repository,
    told: dict[tuple[str, str], Told],
    seed: int,
    step: int,
    *,
    holds_gone: bool = False,
) -> None:
    where = f"seed {seed} step {step}"
    for account in ACCOUNTS:
        entries = list(_entries(service, account))
        running: dict[Any, int] = {}
        charges: Counter[str] = Counter()
        by_key: dict[str, set[str]] = {}
        for entry in entries:
            running[entry.pool] = running.get(entry.pool, 0) + entry.amount
            if entry.balance_after != running[entry.pool] or entry.balance_after < 0:
                raise Violation(f"{where}: {account} running balance broke at {entry} (R20)")
            if entry.kind is EntryKind.CHARGE:
                charges[entry.cause.datum or ""] += 1
                if entry.cause.idempotency_key is not None:
                    by_key.setdefault(entry.cause.idempotency_key, set()).add(
                        entry.cause.datum or ""
                    )
        twice = [datum for datum, n in charges.items() if n > 1]
        if twice:
            raise Violation(f"{where}: {account} charged twice for {twice[:3]} (R12)")
        with repository.unit_of_work() as uow:
            wallet = uow.load_wallet(account)
        if wallet is None:
            raise Violation(f"{where}: {account} has no wallet")
        for pool, amount in running.items():
            if wallet.balances[pool] != amount or wallet.available(pool) < 0:
                raise Violation(f"{where}: {account} {pool} balance off the ledger (R15, R20)")
        if holds_gone and wallet.holds:
            raise Violation(f"{where}: {account} keeps holds past their expiry (R16)")
        for (owner, key), heard in told.items():
            # R17: what the caller finally heard is what its key charged, whatever failed
            # on the way (a lost answer retried must replay it, not tell another story).
            if owner == account and by_key.get(key, set()) != heard.charged:
                raise Violation(
                    f"{where}: {account} key {key}: told charged {sorted(heard.charged)}, "
                    f"the ledger charged {sorted(by_key.get(key, set()))} under it (R17)"
                )


def make_table(runs: Sequence[Run]) -> str:
    injected: Counter[str] = Counter()
    for run in runs:
        injected.update(run.injected)
    kinds = ", ".join(f"{kind} {injected[kind]}" for kind in FAULT_KINDS)
    return (
        f"{len(runs)} seeds, {sum(r.steps for r in runs)} steps, faults injected: {kinds}; "
        f"answered {sum(r.answered for r in runs)}, refused {sum(r.refused for r in runs)}, "
        f"gave up {sum(r.gave_up for r in runs)}; violations: 0"
    )


def _store(name: str, folder: str) -> Callable[[], Repository]:
    from adapters.memory import InMemoryRepository
    from adapters.sql import SqlRepository

    if name == "memory":
        return InMemoryRepository
    if name == "sqlite":
        counter = iter(range(10**9))
        return lambda: SqlRepository.connect(
            f"sqlite:///{folder}/soak-{next(counter)}.db", migrate=True
        )
    raise SystemExit(f"--store takes memory or sqlite, got {name!r}")


def main() -> int:
    """`make soak SEEDS=N [STORE=memory|sqlite] [FROM=first seed]`, with a progress bar."""
    import argparse
    import tempfile

    from rich.progress import Progress

    parser = argparse.ArgumentParser(description="Seeded fault simulator (tests/fault_simulator)")
    parser.add_argument("--seeds", type=int, default=1_000)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--store", default="memory")
    args = parser.parse_args()
    if not 0 < args.seeds <= 10_000_000 or not 0 < args.steps <= 10_000:
        parser.error("--seeds in 1..10,000,000 and --steps in 1..10,000")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="soak-") as folder, Progress() as progress:
        make = _store(args.store, folder)
        task = progress.add_task(f"seeds on {args.store}", total=args.seeds)
        for seed in range(args.first, args.first + args.seeds):
            runs.append(simulate(make, seed, args.steps))  # a Violation stops with its seed
            progress.advance(task)
    print(make_table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
