"""A seeded fault simulator, in the spirit of TigerBeetle's VOPR and Jepsen's bank test.

One seed drives a few accounts through random operations while faults are injected at
the ports, and checks after every step what must hold whatever failed:
- R12: no datum charged twice (the ledger's charges name each datum once);
- R15: no pool and no available balance below zero;
- R20: each pool's balance is the sum of its ledger entries;
- R17: a request retried under its key, once it is answered, answers what it answered
  first, and every datum it was told it was charged is charged in the ledger exactly once;
- R16: no orphan hold outlives its lease: between requests (none is in flight) every
  hold left expires within `lease_s` of now and within `hold_ttl_s` of its creation,
  and once the lease has passed and the account is touched, no hold is left at all;
- the reference model (credits_domain.testing.model): every request's outcomes, item by
  item, and every account's balances are what the naive model computes from the same
  verdicts (those the verifier gave the attempt that settled: a fault's UNKNOWN too).

Faults, by kind:
- `fail_before_commit`: a unit of work (or one-call phase) fails before it writes;
- `fail_after_commit`: it writes, then the caller sees an error (the ambiguous commit);
- `verifier_error`, `verifier_garbage`: the verifier raises, or answers nonsense (R10: no
  charge);
- `abandoned`: the process dies between reserve and settle (a hold is left); the retry
  waits out the lease (the `Retry-After` of its RequestInFlight), then takes over;
- `late_answer`: the verifier answers after the request's lease lapsed; half the time a
  retry with the same key arrives meanwhile and must take the request over and complete
  it; the late first attempt must then charge nothing (HoldExpired, or the retry's
  result replayed);
- `retry_in_flight`: a retry with the same key arrives while the first attempt is still
  verifying: it must be RequestInFlight with a Retry-After within the lease; once the
  first answers, a replay must answer the same;
- `clock_jump`: time jumps forward by hours to months (renewals, expiries).
Every charging request carries an idempotency key and is retried after a storage fault
until it is answered (bounded; one that gives up is retried once more after its lease,
faults off): what the caller finally hears is compared with the ledger and the model. A
failing seed replays exactly: everything random comes from `random.Random(seed)`.

Run: `make soak SEEDS=N` (a progress bar), or the CI's bounded run in
tests/test_fault_simulator.py on memory, SQLite and PostgreSQL.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

import attrs

from adapters.clock import ManualClock
from credits_domain import (
    PLANS,
    Channel,
    ChargePolicy,
    ChargeResult,
    Contact,
    CreditsError,
    CreditService,
    EntryKind,
    HoldExpired,
    Outcome,
    Repository,
    RequestInFlight,
    StorageUnavailable,
    Verdict,
)
from credits_domain.testing.model import ReferenceModel

START = datetime(2026, 1, 30, 9, 0, tzinfo=UTC)
ACCOUNTS = ("acme", "globex", "initech")
PLAN_NAMES = ("ignite", "boost")
HOLD_TTL_S = 600
LEASE_S = 30
POLICY = ChargePolicy(hold_ttl_s=HOLD_TTL_S, lease_s=LEASE_S, max_conflict_retries=3)
MAX_RETRIES = 12  # a request retried after storage faults, at most this often
FAULT_KINDS = (
    "fail_before_commit",
    "fail_after_commit",
    "verifier_error",
    "verifier_garbage",
    "abandoned",
    "late_answer",
    "retry_in_flight",
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
    """Verdicts from the seed; sometimes raises, answers garbage, dies mid-request,
    answers late or meets a retry of its request (`meanwhile`, set by the simulator).

    `answers` keeps, per datum of the request under way, the verdict the service got
    last (UNKNOWN for a failure or garbage): the verdicts of the attempt that settled."""

    def __init__(self, faults: Faults, verdict_of: Callable[[Contact], Verdict]) -> None:
        self._faults = faults
        self._verdict_of = verdict_of
        self.answers: dict[Contact, Verdict] = {}
        # What to run when a request's verification meets a late answer or a retry:
        # set by the simulator for the request under way.
        self.meanwhile: Callable[[str], None] | None = None

    def verify(self, contacts: Sequence[Contact]) -> Sequence[Any]:
        if self._faults.roll("abandoned"):
            raise Died
        if self._faults.roll("verifier_error"):
            self.answers.update(dict.fromkeys(contacts, Verdict.UNKNOWN))
            raise TimeoutError("simulated: the verifier timed out")
        if self._faults.roll("verifier_garbage"):
            self.answers.update(dict.fromkeys(contacts, Verdict.UNKNOWN))
            return ["valid"] * (len(contacts) + 1)
        meanwhile = self.meanwhile
        if meanwhile is not None:
            for kind in ("late_answer", "retry_in_flight"):
                if self._faults.roll(kind):
                    meanwhile(kind)
                    break
        verdicts = [self._verdict_of(contact) for contact in contacts]
        self.answers.update(zip(contacts, verdicts, strict=True))
        return verdicts


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
    taken_over: int = 0  # requests completed by a retry after the first one's lease lapsed


class Violation(AssertionError):
    """An invariant broke; the message names the seed, which replays it exactly."""


def _verdict_of(contact: Contact) -> Verdict:
    # A pure function of the datum, so that every attempt of a request sees the same.
    digit = sum(map(ord, contact.value)) % 10
    return Verdict.INVALID if digit == 0 else Verdict.CATCH_ALL if digit == 1 else Verdict.VALID


def simulate(make_repository: Callable[[], Repository], seed: int, steps: int = 60) -> Run:
    """Run one seed; raises Violation on the first broken invariant."""
    return _Simulation(make_repository, seed).run(steps)


class _Simulation:
    def __init__(self, make_repository: Callable[[], Repository], seed: int) -> None:
        self.seed = seed
        self.rng = rng = random.Random(seed)
        self.faults = Faults(rng=random.Random(rng.getrandbits(64)), rate=0.08)
        self.clock = ManualClock(START)
        self.inner = make_repository()
        self.verifier = FaultyVerifier(self.faults, _verdict_of)
        self.service = CreditService(
            repository=FaultyRepository(self.inner, self.faults),
            verifier=self.verifier,
            clock=self.clock,
            policy=POLICY,
        )
        self.clean_verifier = FaultyVerifier(Faults(rng=rng, rate=0.0), _verdict_of)
        self.clean = CreditService(
            repository=self.inner, verifier=self.clean_verifier, clock=self.clock, policy=POLICY
        )
        # A Violation found inside a verifier call, raised once the request is over (the
        # service turns whatever a verifier raises into UNKNOWN).
        self.violation: Violation | None = None
        self.model = ReferenceModel()
        self.told: dict[tuple[str, str], Told] = {}
        self.answered = self.refused = self.gave_up = self.taken_over = 0
        self.where = f"seed {seed} step 0"

    def run(self, steps: int) -> Run:
        rng, faults, clock = self.rng, self.faults, self.clock
        universe = [Contact.email(f"lead{n}@corp{n % 3}.example.com") for n in range(40)]
        universe += [Contact.mobile(f"+4477009{n:05d}") for n in range(15)]
        with _FaultsOff(faults):
            for account in ACCOUNTS:
                plan = rng.choice(PLAN_NAMES)
                self.service.subscribe(account, plan)
                self.model.subscribe(account, PLANS[plan], clock.now())
        for step in range(steps):
            self.where = f"seed {self.seed} step {step}"
            account = rng.choice(ACCOUNTS)
            if faults.roll("clock_jump"):
                clock.advance(timedelta(seconds=rng.choice([60, 3_600, 86_400, 31 * 86_400])))
            key = f"k{rng.randrange(25)}"  # keys repeat: later uses are retries or reuse
            batch = rng.sample(universe, rng.randint(1, 6))
            if rng.random() < 0.2:
                batch.append(batch[0])  # a repeat within the request (R12)
            # One record of the verdicts for the request, whichever attempt verifies it.
            self.verifier.answers = self.clean_verifier.answers = {}
            self.verifier.meanwhile = functools.partial(self._meanwhile, account, batch, key)
            try:
                outcome = self._charge(self.service, account, batch, key)
            finally:
                self.verifier.meanwhile = None
            if self.violation is not None:
                raise self.violation
            if outcome == "gave up":
                # The caller comes back after the lease: its retry takes over (faults off).
                self.gave_up += 1
                clock.advance(timedelta(seconds=LEASE_S))
                with _FaultsOff(faults):
                    outcome = self._charge(self.service, account, batch, key)
            if isinstance(outcome, ChargeResult):
                self.answered += 1
            elif outcome == "refused":
                self.refused += 1
            else:
                raise Violation(f"{self.where}: {key} not answered with the faults off")
            self._check()
        # No orphan hold after its lease: past it, touching the account leaves none (R16).
        clock.advance(timedelta(seconds=LEASE_S))
        for account in ACCOUNTS:
            self.clean.balance(account)
        self.where = f"seed {self.seed} step {steps}"
        self._check(holds_gone=True)
        return Run(
            self.seed,
            steps,
            faults.injected,
            self.answered,
            self.refused,
            self.gave_up,
            self.taken_over,
        )

    def _meanwhile(self, account: str, batch: list[Contact], key: str, kind: str) -> None:
        """Inside the verifier call of the request (account, batch, key): its answer comes
        late, or a retry of it arrives (both with the faults off); once per request."""
        self.verifier.meanwhile = None
        try:
            self._meanwhile_of(account, batch, key, kind)
        except Violation as violation:
            self.violation = violation

    def _meanwhile_of(self, account: str, batch: list[Contact], key: str, kind: str) -> None:
        with _FaultsOff(self.faults):
            if kind == "retry_in_flight":
                try:
                    answer = self.clean.unlock(account, batch, idempotency_key=key)
                except RequestInFlight as error:
                    if not 1 <= error.retry_after_s <= LEASE_S:
                        raise Violation(
                            f"{self.where}: Retry-After {error.retry_after_s} s for a lease "
                            f"of {LEASE_S} s (R16)"
                        ) from None
                    return
                raise Violation(
                    f"{self.where}: a retry of {key} while it was verifying was answered "
                    f"{answer} instead of RequestInFlight (R17)"
                )
            self.clock.advance(timedelta(seconds=LEASE_S + 1))  # the answer comes late
            if self.rng.random() < 0.5:
                return  # nobody retried meanwhile: the late attempt finds its hold gone
            try:
                done = self.clean.unlock(account, batch, idempotency_key=key)
            except RequestInFlight:
                raise Violation(
                    f"{self.where}: a retry of {key} after the lease lapsed was refused "
                    "RequestInFlight; it should take the request over (R16, R17)"
                ) from None
            if done.replayed:
                raise Violation(f"{self.where}: a takeover of {key} replayed an unfinished request")
            self.taken_over += 1
            self._heard(account, batch, key, done)

    def _charge(
        self, service: CreditService, account: str, batch: list[Contact], key: str
    ) -> ChargeResult | str:
        waited = False
        for _ in range(MAX_RETRIES):
            try:
                result = service.unlock(account, batch, idempotency_key=key)
            except (Died, StorageUnavailable, HoldExpired):
                # Died: the worker died with its hold; its retry is refused until the lease
                # lapses. StorageUnavailable: the retry with the same key (R17). HoldExpired:
                # the lease lapsed before it settled, nothing charged; retry.
                waited = False
                continue
            except RequestInFlight as error:
                if waited:
                    raise Violation(
                        f"{self.where}: {key} still in flight after waiting its Retry-After "
                        "(R16: an abandoned request's lease lapses)"
                    ) from None
                self.clock.advance(timedelta(seconds=error.retry_after_s))
                waited = True
                continue
            except CreditsError:
                return "refused"  # reused key, paused, lapsed, ...: an expected refusal
            self._heard(account, batch, key, result)
            return result
        return "gave up"

    def _heard(self, account: str, batch: list[Contact], key: str, result: ChargeResult) -> None:
        """What a caller heard for `key`: the same as before if it heard before (R17);
        else the model's outcomes from the verdicts the settling attempt got."""
        charged = frozenset(
            str(item.contact) for item in result.items if item.outcome is Outcome.CHARGED
        )
        first = self.told.get((account, key))
        if first is not None:
            if result.items != first.result.items:
                raise Violation(f"{self.where}: replay of {key} differs (R17)")
            return
        self.told[(account, key)] = Told(result, charged)
        self.model.advance(self.clock.now())
        answers = self.verifier.answers
        expected = self.model.charge(
            account, batch, lambda c: answers.get(c, _verdict_of(c)), self.clock.now()
        )
        outcomes = [item.outcome for item in result.items]
        if outcomes != expected:
            raise Violation(
                f"{self.where}: {key} answered {[o.value for o in outcomes]}, the reference "
                f"model {[o.value for o in expected]}"
            )

    def _check(self, *, holds_gone: bool = False) -> None:
        _check(self.clean, self.inner, self.told, self.where, holds_gone=holds_gone)
        now = self.clock.now()
        self.model.advance(now)
        for account in ACCOUNTS:
            balance, expected = self.clean.balance(account), self.model.balance(account)
            if (balance.email, balance.mobile) != (
                expected[Channel.EMAIL],
                expected[Channel.MOBILE],
            ):
                raise Violation(
                    f"{self.where}: {account} balance {balance}, the reference model {expected}"
                )
            with self.inner.unit_of_work() as uow:
                wallet = uow.load_wallet(account)
            for hold in wallet.holds.values() if wallet is not None else ():
                if hold.expires_at > now + timedelta(seconds=LEASE_S) or (
                    hold.expires_at > hold.created_at + timedelta(seconds=HOLD_TTL_S)
                ):
                    raise Violation(
                        f"{self.where}: {account} hold {hold.hold_id} outlives its lease "
                        f"(expires {hold.expires_at}, now {now}; R16)"
                    )


class _FaultsOff:
    def __init__(self, faults: Faults) -> None:
        self._faults = faults
        self._was = True

    def __enter__(self) -> None:
        self._was, self._faults.armed = self._faults.armed, False

    def __exit__(self, *exc: object) -> None:
        self._faults.armed = self._was


def _entries(service: CreditService, account: str) -> Iterator[Any]:
    return service.statement(account)


def _check(
    service: CreditService,
    repository: Repository,
    told: dict[tuple[str, str], Told],
    where: str,
    *,
    holds_gone: bool = False,
) -> None:
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
            raise Violation(f"{where}: {account} keeps holds past their lease (R16)")
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
        f"gave up {sum(r.gave_up for r in runs)} (then retried after the lease), "
        f"taken over {sum(r.taken_over for r in runs)}; violations: 0"
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
