"""Benchmark of the HTTP API's overhead on unlock (issue 4, "Benchmarks").

Run: `.venv/bin/python bench/bench_http.py` (about a minute; prints figures, exits 0; it
does not assert speed: speed belongs here, not in tests). `--backends sqlite` skips
PostgreSQL; without a reachable server PostgreSQL is skipped with a note.

For each backend (a fresh SQLite file; a fresh PostgreSQL database), the same operation
is timed two ways, one request at a time:
- in process: `CreditService.unlock(account, [one new email], idempotency_key=...)` on
  `SqlRepository`, with the in-process ScriptedVerifier (every datum VALID);
- over HTTP: `POST /v1/accounts/{account}/unlock` with the same body and an
  Idempotency-Key, to `credits serve --demo-verifier` (uvicorn, SqlRepository,
  SqlApiKeyStore, the same verifier) in a child process, over loopback, with a
  kept-alive connection from this process: by an httpx client (the issue's load loop),
  and by the standard library's http.client, whose own cost per request is a few tenths
  of a millisecond lower: the difference is the client's share of the overhead.
Every request unlocks an email never seen before, so each one verifies, charges and
writes (hold, charge, ownership, idempotency record): the worst case of a single unlock.
The two ways alternate request by request (so that whatever else the machine does hits
both alike), after an untimed warm-up, on two accounts of the same database.

Printed per backend: the median and p90 latency of each way, requests per second one
at a time (1 / median), the HTTP overhead per request (median HTTP - median in process,
and the median of the paired differences) and the ratio; then the throughput of httpx
clients in several threads at once.
Target: overhead <= 1 ms at the median.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from bench_sql import sqlalchemy_url

from adapters.clock import SystemClock
from adapters.sql import SqlApiKeyStore, SqlRepository
from adapters.verifier import ScriptedVerifier
from credits_domain import Contact, CreditService

TARGET_OVERHEAD_MS = 1.0
PG_ADMIN_DSN = os.environ.get("CREDITS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
STARTUP_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench-http-") as folder:
        yield f"sqlite:///{Path(folder) / 'credits.db'}"


@contextmanager
def postgres_database() -> Iterator[str]:
    import psycopg

    name = f"credits_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield sqlalchemy_url(PG_ADMIN_DSN, name)  # the server CREDITS_TEST_PG names
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def server(url: str) -> Iterator[str]:
    """`credits serve` in a child process; yields its base URL once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "adapters.cli", "serve", "--demo-verifier"]
    command += ["--db", url, "--port", str(port), "--no-access-log"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"credits serve exited: {err}")
            try:
                if httpx.get(f"{base}/openapi.json", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("credits serve did not start")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=STARTUP_TIMEOUT_S)


class Emails:
    """A new email address per call, never repeated in a run (each one is charged)."""

    def __init__(self, tag: str) -> None:
        self._tag = tag
        self._n = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            self._n += 1
            return f"lead{self._n}@{self._tag}.example.com"


def p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10)[-1]


def run_backend(name: str, url: str, rounds: int, per_round: int, threads: list[int]) -> None:
    repository = SqlRepository.connect(url, migrate=True)
    service = CreditService(repository=repository, verifier=ScriptedVerifier(), clock=SystemClock())
    needed = 2 * (rounds + 1) * per_round + sum(threads) * per_round
    if needed > 30_000:  # the power plan's monthly allowance of email credits
        raise SystemExit(f"{needed} unlocks exceed one account's 30,000 credits; use fewer")
    service.subscribe("inproc", "power")
    service.subscribe("http", "power")
    token = SqlApiKeyStore(repository.engine, clock=SystemClock()).create("http").token
    inproc_emails, http_emails = Emails("inproc"), Emails("http")

    def in_process(i: int) -> None:
        result = service.unlock(
            "inproc", [Contact.email(inproc_emails.next())], idempotency_key=f"in-{i}"
        )
        assert result.charged_credits.email == 1

    try:
        with (
            server(url) as base,
            httpx.Client(
                base_url=base,
                headers={"Authorization": f"Bearer {token}"},
                timeout=REQUEST_TIMEOUT_S,
            ) as client,
        ):
            port = httpx.URL(base).port
            assert port is not None
            stdlib = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)

            def with_httpx(i: int) -> None:
                body = {"contacts": [{"channel": "email", "value": http_emails.next()}]}
                response = client.post(
                    "/v1/accounts/http/unlock", json=body, headers={"Idempotency-Key": f"h-{i}"}
                )
                assert response.status_code == 200, response.text
                assert response.json()["charged"]["email"] == 1

            def with_stdlib(i: int) -> None:
                body = {"contacts": [{"channel": "email", "value": http_emails.next()}]}
                headers = {
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": f"s-{i}",
                }
                stdlib.request("POST", "/v1/accounts/http/unlock", json.dumps(body), headers)
                response = stdlib.getresponse()
                answer = json.loads(response.read())
                assert response.status == 200, answer
                assert answer["charged"]["email"] == 1

            ways: list[tuple[str, Callable[[int], None]]] = [
                ("in process", in_process),
                ("httpx", with_httpx),
                ("http.client", with_stdlib),
            ]
            for i in range(per_round):  # warm-up: connections, caches, code paths
                for _, call in ways:
                    call(-1 - i)
            samples: dict[str, list[float]] = {label: [] for label, _ in ways}
            # Interleaved request by request, in rotating order, so that whatever else
            # the machine does at a moment weighs on every way alike.
            for i in range(rounds * per_round):
                shift = i % len(ways)
                for label, call in ways[shift:] + ways[:shift]:
                    start = time.perf_counter()
                    call(i)
                    samples[label].append(time.perf_counter() - start)
            stdlib.close()
            report(name, samples)
            throughput(base, token, http_emails, threads, per_round)
    finally:
        repository.close()


def report(name: str, samples: dict[str, list[float]]) -> None:
    local = samples["in process"]
    local_ms = statistics.median(local) * 1e3
    print(f"\n{name}: {len(local)} unlocks each way, one at a time")
    print(f"  {'':24} {'median':>9} {'p90':>9} {'req/s':>8} {'overhead':>9} {'paired':>8}")
    for label, values in samples.items():
        median = statistics.median(values)
        line = f"  {label:24} {median * 1e3:7.3f}ms {p90(values) * 1e3:7.3f}ms {1 / median:8.0f}"
        if values is not local:
            overhead_ms = median * 1e3 - local_ms
            paired_ms = statistics.median(r - h for r, h in zip(values, local, strict=True)) * 1e3
            verdict = "meets" if overhead_ms <= TARGET_OVERHEAD_MS else "MISSES"
            line += f" {overhead_ms:7.3f}ms {paired_ms:6.3f}ms  x{median * 1e3 / local_ms:.2f} "
            line += f"{verdict} <= {TARGET_OVERHEAD_MS} ms"
        print(line)


def throughput(base: str, token: str, emails: Emails, threads: list[int], per_thread: int) -> None:
    for n in threads:
        errors: list[str] = []

        def worker(n_requests: int, tag: str, errors: list[str] = errors) -> None:
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
            ) as client:
                for i in range(n_requests):
                    body = {"contacts": [{"channel": "email", "value": emails.next()}]}
                    response = client.post(
                        "/v1/accounts/http/unlock",
                        json=body,
                        headers={"Idempotency-Key": f"t-{tag}-{i}"},
                    )
                    if response.status_code != 200:
                        errors.append(response.text)

        workers = [threading.Thread(target=worker, args=(per_thread, f"{n}-{k}")) for k in range(n)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        print(
            f"  {n} client thread(s): {n * per_thread / elapsed:6.0f} unlocks/s over HTTP"
            + (f" ({len(errors)} failed: {errors[0][:200]})" if errors else "")
        )


def server_stack() -> str:
    """What uvicorn picks by itself (`--http auto --loop auto`): the C parser and loop
    if installed (uvicorn[standard]), else the pure-Python h11 and asyncio."""
    found = [m for m in ("httptools", "uvloop") if importlib.util.find_spec(m) is not None]
    http = "httptools" if "httptools" in found else "h11"
    loop = "uvloop" if "uvloop" in found else "asyncio"
    return f"{http} + {loop}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--threads", default="1,4", help="client threads for throughput")
    args = parser.parse_args()
    threads = [int(n) for n in args.threads.split(",") if n]
    print(
        f"HTTP API overhead on unlock: {args.rounds} x {args.per_round} requests each way "
        f"per backend; python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"uvicorn with {server_stack()}, load average {os.getloadavg()[0]:.1f}"
    )
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with sqlite_database() as url:
                run_backend("SQLite file", url, args.rounds, args.per_round, threads)
        elif backend == "postgres":
            try:
                database = postgres_database()
                url = database.__enter__()
            except Exception as exc:  # no server here: say so, measure the rest
                print(f"\nPostgreSQL: skipped, {PG_ADMIN_DSN} unreachable ({exc})")
                continue
            try:
                run_backend("PostgreSQL", url, args.rounds, args.per_round, threads)
            finally:
                database.__exit__(None, None, None)
        else:
            raise SystemExit(f"unknown backend {backend!r}; use sqlite,postgres")


if __name__ == "__main__":
    main()
