"""Benchmarks of the core's charging path on the in-memory adapters (issue 2, "Benchmark").

Run: `.venv/bin/python bench/bench_core.py` (under a minute; prints figures and exits 0;
it checks that the work was done, never how fast: speed belongs here, not in tests).
`--part batch` or `--part owned` runs one part; `--help` lists the sizes one can change.

Part 1, "batch": unlock a batch of 10,000 new email contacts through the facade
(`CreditService.unlock`) on InMemoryRepository + ManualClock + ScriptedVerifier, a fresh
account per repeat, and print the median and min beside a baseline measured in the same
run: a bare loop over the same prebuilt Contact objects doing, per contact, a set lookup
(is it owned?), a counter decrement (the pool) and a list append (the result).
Target: unlock <= 10x the baseline. Contacts are built before timing for both sides, so
neither side pays for canonicalisation (R12). The baseline's set holds 1,000 other
contacts, and each fresh account owns those same 1,000 (unlocked before timing), so
that on both sides each lookup is a real miss in a non-empty index: an account that owns
nothing would let the facade skip the lookup. For context the same loop also runs on the
contacts' canonical strings (the keys the core's columns use internally), and the ratio
to it is printed too.

Part 2, "owned": the cost of one single-contact unlock (R12 dedup lookup, hold, charge,
ledger entry) for an account that already owns 1,000 data (and has ~1,000 ledger entries)
against one that owns 1,000,000 (and ~1,000,000 entries). Ownership is seeded through
the facade itself, in batches of 10,000 unlocks under a plan large enough for all of it,
so the seeded state is exactly what production code would have written (ownership
records, ledger entries, wallet). Both accounts live in one repository and are measured
interleaved, so garbage-collector and cache effects of the big heap hit both alike; the
small account is also measured once before the big one is seeded, to show the effect of
the heap alone. Target: large / small <= 1.2x. Balance reads are measured the same way
(they must be O(1) in the ledger's size).

Times are wall-clock (`time.perf_counter_ns`), or this process's CPU time with
`--timer cpu` (steadier when other processes share the machine), with the garbage
collector on (as in production) and a `gc.collect()` before each timed run so that runs
start alike. On a shared machine read the min: other processes only ever add time.
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from adapters.clock import ManualClock
from adapters.memory import InMemoryRepository
from adapters.verifier import ScriptedVerifier
from credits_domain import Contact, Credits, CreditService, Outcome, Plan

T = TypeVar("T")
K = TypeVar("K")
ClockNs = Callable[[], int]
TIMERS: dict[str, ClockNs] = {"wall": time.perf_counter_ns, "cpu": time.process_time_ns}

BATCH_SIZE = 10_000  # the batch; also ChargePolicy().max_batch
BATCH_TARGET_RATIO = 10.0
OWNED_TARGET_RATIO = 1.2
WARM_UP = 200  # untimed single unlocks first, so the first timed ones are not colder
START = datetime(2026, 1, 1, tzinfo=UTC)
# Enough credits in each pool for any run of this script (R1: a plan is data).
BENCH_PLAN = Plan(name="bench", monthly=Credits(email=1_000_000, mobile=1_000_000))
SEED_PLAN = Plan(name="bench-seed", monthly=Credits(email=5_000_000, mobile=5_000_000))


def make_contacts(prefix: str, count: int) -> list[Contact]:
    """`count` distinct canonical email contacts (built outside any timed region)."""
    return [Contact.email(f"{prefix}{i:07d}@company{i % 997}.example") for i in range(count)]


def make_service(repository: InMemoryRepository) -> CreditService:
    return CreditService(
        repository=repository, verifier=ScriptedVerifier(), clock=ManualClock(START)
    )


def check(condition: bool, message: str) -> None:
    """Sanity of what was measured (not speed); stays on under `python -O`."""
    if not condition:
        raise RuntimeError(f"benchmark sanity check failed: {message}")


def timed_ns(clock_ns: ClockNs, run: Callable[[], T]) -> tuple[int, T]:
    """Nanoseconds one call of `run` took, and what it returned."""
    gc.collect()
    started = clock_ns()
    result = run()
    return clock_ns() - started, result


def fmt_ms(ns: float) -> str:
    return f"{ns / 1e6:9.3f} ms"


def fmt_us(ns: float) -> str:
    return f"{ns / 1e3:9.2f} us"


# -- part 1: a batch of 10,000 ----------------------------------------------------------


def baseline_loop(contacts: Sequence[K], owned: set[K], credits: int) -> list[K]:
    """The floor the issue compares against: lookup, decrement, append per contact."""
    charged: list[K] = []
    for contact in contacts:
        if contact in owned:
            continue
        credits -= 1
        charged.append(contact)
    return charged


def bench_batch(clock_ns: ClockNs, repeats: int, baseline_per_run: int) -> tuple[float, float]:
    """Prints part 1; returns the medians (ns) of the unlock and of the baseline loop."""
    print(f"== part 1: unlock a batch of {BATCH_SIZE:,} new contacts (in-memory adapters) ==")
    contacts = make_contacts("lead", BATCH_SIZE)
    # The baseline's "owned" set holds other contacts, so each lookup is a real miss in a
    # non-empty set, like the dedup lookup of a fresh batch.
    owned_elsewhere = set(make_contacts("other", 1_000))

    keys = [contact.value for contact in contacts]
    owned_keys = {contact.value for contact in owned_elsewhere}

    # Baseline runs are interleaved with the facade's, so that load from other processes
    # on a shared machine hits both sides of the ratio alike.
    baseline: list[int] = []
    str_baseline: list[int] = []
    measured: list[int] = []
    for run in range(repeats):
        for _ in range(baseline_per_run):
            elapsed_ns, charged = timed_ns(
                clock_ns, functools.partial(baseline_loop, contacts, owned_elsewhere, 1_000_000)
            )
            check(len(charged) == BATCH_SIZE, "the baseline must see every contact as new")
            baseline.append(elapsed_ns)
            # Context only: the same loop on the canonical strings, to show what Contact's
            # hash (attrs-generated, hashing the Channel enum in Python) costs the baseline.
            str_baseline.append(
                timed_ns(clock_ns, functools.partial(baseline_loop, keys, owned_keys, 1_000_000))[0]
            )

        service = make_service(InMemoryRepository())
        account = f"batch-{run}"
        service.subscribe(account, BENCH_PLAN)
        seeded = service.unlock(account, sorted(owned_elsewhere))
        check(seeded.count(Outcome.CHARGED) == len(owned_elsewhere), "the account owns 1,000")
        elapsed_ns, result = timed_ns(
            clock_ns, functools.partial(service.unlock, account, contacts)
        )
        measured.append(elapsed_ns)
        # Every contact was charged once (R9, R12): the facade did the whole job.
        check(result.count(Outcome.CHARGED) == BATCH_SIZE, f"{result.charged_credits}")
        left = service.balance(account).email
        expected = BENCH_PLAN.monthly.email - BATCH_SIZE - len(owned_elsewhere)
        check(left == expected, f"email balance {left}")

    base_med, base_min = statistics.median(baseline), min(baseline)
    unl_med, unl_min = statistics.median(measured), min(measured)
    print(f"baseline (set lookup + decrement + append), {len(baseline)} runs:")
    print(
        f"    median {fmt_ms(base_med)}   min {fmt_ms(base_min)}"
        f"   per contact {fmt_us(base_med / BATCH_SIZE)}"
    )
    print(
        "  (context: same loop on str keys instead of Contact:"
        f" median {fmt_ms(statistics.median(str_baseline))})"
    )
    print(f"CreditService.unlock, {repeats} runs, fresh account owning 1,000 others each:")
    print(
        f"    median {fmt_ms(unl_med)}   min {fmt_ms(unl_min)}"
        f"   per contact {fmt_us(unl_med / BATCH_SIZE)}"
    )
    ratio_med, ratio_min = unl_med / base_med, unl_min / base_min
    verdict = "meets" if ratio_med <= BATCH_TARGET_RATIO else "MISSES"
    print(
        f"ratio unlock/baseline: median {ratio_med:.1f}x, min {ratio_min:.1f}x;"
        f" target <= {BATCH_TARGET_RATIO:.0f}x (= {fmt_ms(BATCH_TARGET_RATIO * base_med).strip()}"
        f" here): {verdict} the target"
    )
    str_med = statistics.median(str_baseline)
    print(
        f"  (context: ratio to the loop on str keys: median {unl_med / str_med:.1f}x;"
        f" {BATCH_TARGET_RATIO:.0f}x that stricter floor"
        f" = {fmt_ms(BATCH_TARGET_RATIO * str_med).strip()})"
    )
    print()
    return unl_med, base_med


# -- part 2: one unlock, 1,000 vs 1,000,000 owned ---------------------------------------


def seed(service: CreditService, account: str, prefix: str, count: int) -> None:
    """Make `account` own `count` data, through the facade, in batches of 10,000."""
    service.subscribe(account, SEED_PLAN)
    for start in range(0, count, BATCH_SIZE):
        batch = make_contacts(f"{prefix}{start // BATCH_SIZE}x", min(BATCH_SIZE, count - start))
        result = service.unlock(account, batch)
        check(result.count(Outcome.CHARGED) == len(batch), "seeding must charge every datum")


def per_call_ns(clock_ns: ClockNs, calls: Sequence[Callable[[], object]]) -> list[int]:
    times: list[int] = []
    for call in calls:
        started = clock_ns()
        call()
        times.append(clock_ns() - started)
    return times


def interleaved_unlocks(
    clock_ns: ClockNs,
    service: CreditService,
    accounts: Sequence[str],
    fresh: dict[str, list[Contact]],
    n: int,
) -> dict[str, list[int]]:
    """`n` single-contact unlocks per account, alternating accounts, each of a new datum."""
    times: dict[str, list[int]] = {account: [] for account in accounts}
    gc.collect()
    for _ in range(n):
        for account in accounts:
            contact = fresh[account].pop()
            started = clock_ns()
            result = service.unlock(account, [contact])
            times[account].append(clock_ns() - started)
            check(result.count(Outcome.CHARGED) == 1, f"{contact} must be charged once")
    return times


def bench_owned(clock_ns: ClockNs, small_n: int, large_n: int, samples: int) -> None:
    print(f"== part 2: one single-contact unlock, {small_n:,} vs {large_n:,} owned data ==")
    repository = InMemoryRepository()
    service = make_service(repository)
    alone, small, large = "owns-small-alone", "owns-small", "owns-large"
    fresh = {
        account: make_contacts(f"new-{account}-", samples) for account in (alone, small, large)
    }

    # The same figure before the big account exists: the heap's size alone, if it matters.
    seed(service, alone, "a", small_n)
    warm = {alone: make_contacts("warm-", WARM_UP)}
    interleaved_unlocks(clock_ns, service, [alone], warm, WARM_UP)
    before = interleaved_unlocks(clock_ns, service, [alone], fresh, samples)[alone]

    seed_started = time.perf_counter()
    seed(service, large, "l", large_n)
    seed_s = time.perf_counter() - seed_started
    seed(service, small, "s", small_n)
    print(
        f"seeded through the facade (unlock in batches of {BATCH_SIZE:,}, one plan granting "
        f"enough): {large_n:,} data in {seed_s:.1f} s"
    )
    for account in (small, large):
        print(
            f"  {account}: owns {len(repository.owned_by[account]):,} data and has "
            f"{len(repository.ledgers[account]):,} ledger entries before the timed unlocks"
        )

    after = interleaved_unlocks(clock_ns, service, [small, large], fresh, samples)
    balance_times = {
        account: per_call_ns(clock_ns, [functools.partial(service.balance, account)] * samples)
        for account in (small, large)
    }

    def line(label: str, times: Sequence[int]) -> float:
        med = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        print(f"  {label:<44} median {fmt_us(med)}   min {fmt_us(min(times))}   p90 {fmt_us(p90)}")
        return med

    print(f"unlock of one new contact, {samples:,} calls each, accounts interleaved:")
    line(f"{alone} (before {large} existed)", before)
    small_med = line(small, after[small])
    large_med = line(large, after[large])
    ratio = large_med / small_med
    ratio_min = min(after[large]) / min(after[small])
    verdict = "meets" if ratio <= OWNED_TARGET_RATIO else "MISSES"
    print(
        f"ratio {large} / {small} (owned data and ledger entries): median {ratio:.2f}x, "
        f"min {ratio_min:.2f}x; target <= {OWNED_TARGET_RATIO}x: {verdict} the target"
    )
    print(f"balance(), {samples:,} calls each:")
    bal_small = line(small, balance_times[small])
    bal_large = line(large, balance_times[large])
    print(f"ratio balance {large} / {small}: {bal_large / bal_small:.2f}x (O(1) in the ledger)")
    print()


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--part", choices=["batch", "owned", "all"], default="all")
    parser.add_argument("--repeats", type=_at_least(1), default=15, help="facade batch runs")
    parser.add_argument(
        "--baseline-per-run", type=_at_least(1), default=5, help="baseline runs per facade run"
    )
    parser.add_argument("--small", type=_at_least(1), default=1_000, help="small account's data")
    parser.add_argument("--large", type=_at_least(1), default=1_000_000, help="large one's data")
    parser.add_argument("--samples", type=_at_least(2), default=1_000, help="unlocks per account")
    parser.add_argument("--timer", choices=sorted(TIMERS), default="wall")
    args = parser.parse_args(argv)
    clock_ns = TIMERS[args.timer]
    print(f"python {sys.version.split()[0]}, gc on, in-memory adapters, {args.timer} time")
    started = time.perf_counter()
    if args.part in ("batch", "all"):
        bench_batch(clock_ns, args.repeats, args.baseline_per_run)
    if args.part in ("owned", "all"):
        bench_owned(clock_ns, args.small, args.large, args.samples)
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
