"""Benchmark of HttpVerifier's concurrency (issue 4, "Benchmarks").

Run: `.venv/bin/python bench/bench_verifier.py` (about 15 s; prints figures, exits 0; it
does not assert speed: speed belongs here, not in tests).

Verifies a batch of 1,000 emails against the test verification server of
tests/verification_server.py, run in a child process (so the server's threads do not
share the client's interpreter lock), which answers every request after 50 ms. The
verifier sends one item per request (`chunk_size=1`), so 1,000 requests of 50 ms each
with at most `max_in_flight` in flight. The ideal wall time is
(1,000 / max_in_flight) x 50 ms; printed beside the measured time, with the ratio.
Target: <= 1.1x the ideal.

Each concurrency bound is measured `--repeats` times on one verifier (its connections
warmed by a first, untimed batch) and the median is reported; the min is shown too, and
the client's CPU time (user + system) per request, which is what limits high bounds: at
50 in flight the ideal needs 1,000 requests a second, and one httpx request costs the
client process about 0.5 to 0.9 ms of CPU (more on a loaded machine), before the
interpreter lock is shared between 50 threads.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from adapters.verifier import HttpVerifier, RetryPolicy, Timeouts
from credits_domain import Contact, Verdict

BATCH = 1_000
DELAY_S = 0.05
TARGET_RATIO = 1.1
SERVER = Path(__file__).resolve().parent.parent / "tests" / "verification_server.py"


def start_server(delay_s: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--delay-s", str(delay_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"the verification server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(url: str, max_in_flight: int, repeats: int) -> tuple[list[float], list[float]]:
    contacts = [Contact.email(f"user{i:05d}@company{i % 97}.example") for i in range(BATCH)]
    timeouts = Timeouts(connect_s=5.0, read_s=5.0, write_s=5.0, pool_s=5.0)
    walls: list[float] = []
    cpus: list[float] = []
    with HttpVerifier(
        url,
        max_in_flight=max_in_flight,
        chunk_size=1,
        timeouts=timeouts,
        retry=RetryPolicy(max_attempts=1),
    ) as verifier:
        verifier.verify(contacts[: max_in_flight * 2])  # warm-up: open the connections
        for _ in range(repeats):
            cpu_started, started = cpu_s(), time.perf_counter()
            verdicts = verifier.verify(contacts)
            walls.append(time.perf_counter() - started)
            cpus.append(cpu_s() - cpu_started)
            valid = sum(1 for v in verdicts if v is Verdict.VALID)
            if valid != BATCH:  # a failed request would make the run look fast
                raise RuntimeError(f"only {valid} of {BATCH} verdicts were VALID")
    return walls, cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--in-flight", type=int, nargs="+", default=[8, 10, 20, 50])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    proc, url = start_server(DELAY_S)
    try:
        print(f"batch of {BATCH} emails, one per request, server delay {DELAY_S * 1000:.0f} ms")
        print(
            f"{'in flight':>9} {'ideal s':>8} {'median s':>9} {'min s':>7} {'ratio':>6}"
            f" {'cpu ms/req':>10}  target"
        )
        for bound in args.in_flight:
            walls, cpus = measure(url, bound, args.repeats)
            ideal = BATCH / bound * DELAY_S
            median = statistics.median(walls)
            ratio = median / ideal
            verdict = "ok" if ratio <= TARGET_RATIO else "MISSED"
            print(
                f"{bound:>9} {ideal:>8.3f} {median:>9.3f} {min(walls):>7.3f} {ratio:>5.2f}x"
                f" {statistics.median(cpus) / BATCH * 1000:>10.2f}  <= {TARGET_RATIO}x {verdict}"
            )
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
