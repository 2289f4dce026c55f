"""Benchmarks of the SQL adapter (issue 3, "Benchmarks"): SQLite and PostgreSQL.

Run: `.venv/bin/python bench/bench_sql.py` (all parts, about 5 minutes on 2 cores), or
`--part sqlite-batch|pg-clients|scaling`. It prints figures beside a baseline measured in
the same run, the ratio and the target, and exits 0: it checks that the work was done
(every datum charged once, balances and ownership agree), never how fast. Not run in CI.
PostgreSQL is the server on 127.0.0.1:5432 (user postgres, trust; `--pg-dsn` or
CREDITS_TEST_PG to change); each part makes its own databases and drops them after. If no
server answers, the PostgreSQL figures are skipped with a note.

Part "sqlite-batch": one `CreditService.unlock` call with 10,000 new email contacts on a
fresh SQLite file (SqlRepository, ManualClock, ScriptedVerifier: every datum VALID, a big
Plan as data), against plain `sqlite3` writing the same rows in one transaction: one
ledger row and one ownership row per datum and one wallet balance update. The baseline's
file is made exactly like the facade's (same migrations: tables, keys, indexes, CHECKs,
triggers; the account subscribed through the facade), opened with the pragmas the adapter
sets (WAL, synchronous=FULL, foreign_keys=ON; read back and compared), and its rows are
built before the clock starts. The two files' ledger and ownership rows are compared
after the first repeat: they must be identical. Runs alternate; the median is reported.
Targets: >= 10,000 data/s, and >= 0.8x the baseline's data/s.

Part "pg-clients": single-contact unlocks (each of a new datum) from 8 client PROCESSES
(multiprocessing, spawn; SystemClock, ScriptedVerifier) for a fixed duration on a fresh
PostgreSQL database: (a) each client on its own account, (b) all on one hot account.
Baselines on the same server in the same run, same client count, pgbench's default
simple protocol: (a) `pgbench -i -s 10`, then built-in tpcb-like `-c 8 -j 2 -T <s>`;
(b) a custom script of one guarded `UPDATE ... SET balance = balance - 1 WHERE id = 1 AND
balance >= 1` on one row (autocommit: one statement, one transaction); as context only,
the docs/anchors.md variant that also inserts an ownership row (`BEGIN; UPDATE ... RETURNING;
INSERT ... ON CONFLICT DO NOTHING; END`). A CHECKPOINT precedes every timed run.
Targets: distinct >= 0.5x tpcb-like; hot >= 0.5x the guarded UPDATE.
Context printed: statements (round trips) per unlock counted with SQLAlchemy event
listeners, one client's latency and CPU per unlock, the clients' CPU per unlock under
load, how busy the machine's CPUs were, and what the clients' server sessions were doing
(pg_stat_activity sampled every 20 ms: waiting for a row lock, idle in transaction, i.e.
waiting for the client while holding locks, running, idle between transactions).

Part "scaling": the cost of one charge (a single-contact unlock of a new datum) for an
account holding 1,000 vs 1,000,000 ledger entries and owned data, on SQLite and on
PostgreSQL. Both accounts live in one database (so the tables' total size, and so index
depth, is the same for both: what differs is only the account's own history) and are
timed interleaved, after a warm-up (so the small one holds ~1,500 by then: its own seed,
warm-up and context runs; the counts are printed). Seeding goes through the facade
itself, in unlocks of 10,000 contacts, so the rows are exactly what the adapter writes.
On PostgreSQL the tables are ANALYZEd after seeding, as autovacuum would do in
production. As context, the small account is also timed before the large one exists.
Target: large <= 1.2x small.

Times are wall-clock (`time.perf_counter`), with the garbage collector on as in
production. The machine is shared: read ratios (both sides of each ran in the same
minute), and run a part again when its figures look off.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import multiprocessing
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import attrs
import bench_core
import psycopg
from psycopg import conninfo
from sqlalchemy import text
from sqlalchemy.engine import Engine

from adapters.clock import ManualClock, SystemClock
from adapters.sql import DEFAULT_LOCK_WAIT_S, SqlRepository

# Round trips are counted by the tests' capture at the driver (one definition of a round
# trip for the tests that bound it and the benchmark that reports it).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from adapters.verifier import ScriptedVerifier
from credits_domain import Clock, Contact, Credits, CreditsError, CreditService, Outcome, Plan
from statement_capture import captured

PG_ADMIN_DSN = os.environ.get("CREDITS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
START = datetime(2026, 1, 1, tzinfo=UTC)
SEED_BATCH = 10_000  # ChargePolicy().max_batch: the largest request the facade takes
# Enough credits in each pool for any run of this script (R1: a plan is data).
BIG_PLAN = Plan(name="bench", monthly=Credits(email=5_000_000, mobile=5_000_000))

BATCH_MIN_RATE = 10_000.0  # data/s
BATCH_MIN_RATIO = 0.8  # of the plain-sqlite3 baseline's data/s
CLIENTS_MIN_RATIO = 0.5  # of pgbench's TPS
CLIENT_CPU_MAX_MS = 0.3  # per single-contact unlock, one client alone
ROUND_TRIPS_MAX = 4  # per single-contact unlock
SCALING_MAX_RATIO = 1.2
PGBENCH_SCALE = 10
PROCESS_TIMEOUT_S = 300.0  # any wait on a child process or pgbench is bounded


@attrs.frozen
class Row:
    """One line of the closing table: a figure of this run beside its same-run baseline."""

    figure: str
    ours: str
    baseline: str
    ratio: str
    target: str
    met: bool


TABLE: list[Row] = []


def record(figure: str, ours: str, baseline: str, ratio: str, target: str, met: bool) -> None:
    TABLE.append(Row(figure, ours, baseline, ratio, target, met))


def print_table() -> None:
    if not TABLE:
        return
    print("== this run's figures, each beside its baseline from the same run ==")
    print("| figure | ours | baseline, same run | ratio | target |")
    print("|---|---|---|---|---|")
    for row in TABLE:
        target = f"{row.target}: {'met' if row.met else '**missed**'}"
        print(f"| {row.figure} | {row.ours} | {row.baseline} | {row.ratio} | {target} |")
    print()


def check(condition: bool, message: str) -> None:
    """Sanity of what was measured (not speed); stays on under `python -O`."""
    if not condition:
        raise RuntimeError(f"benchmark sanity check failed: {message}")


def emails(prefix: str, count: int) -> list[Contact]:
    """`count` distinct canonical email contacts."""
    return [Contact.email(f"{prefix}{i:07d}@company{i % 997}.example") for i in range(count)]


def make_service(repository: SqlRepository, clock: Clock) -> CreditService:
    return CreditService(repository=repository, verifier=ScriptedVerifier(), clock=clock)


def verdict(ok: bool) -> str:
    return "meets the target" if ok else "MISSES the target"


def p90(samples: Sequence[float]) -> float:
    return statistics.quantiles(samples, n=10)[-1]


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


# -- statement counting (SQLAlchemy event listeners) ------------------------------------

_TABLE = re.compile(r"\b(credits_\w+)")


def _statement_kind(statement: str) -> str:
    words = statement.split(None, 1)
    verb = words[0].upper() if words else "?"
    table = _TABLE.search(statement)
    return f"{verb} {table.group(1)}" if table else verb


def statements_per_unlock(service: CreditService, engine: Engine, account: str, n: int) -> str:
    """Round trips per single-contact unlock, counted at the driver (tests/statement_capture:
    every execute, psycopg's implicit BEGIN, every COMMIT or ROLLBACK of a transaction)."""
    with captured(engine) as sent:
        for contact in emails(f"count-{uuid.uuid4().hex[:6]}-", n):
            check(service.unlock(account, [contact]).count(Outcome.CHARGED) == 1, "count run")
    counts = collections.Counter(
        sent_one.kind if sent_one.kind != "execute" else _statement_kind(sent_one.statement)
        for sent_one in sent
    )
    total = sum(counts.values()) / n
    detail = ", ".join(f"{count / n:g} {kind}" for kind, count in sorted(counts.items()))
    return f"{total:g} round trips per unlock ({detail})"


# -- CPU accounting --------------------------------------------------------------------


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat (Linux)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0, 0
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user time
    return total - idle, total


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else float("nan")


# -- part 1: SQLite, one batch of 10,000 -------------------------------------------------


SQLITE_PRAGMAS = ("journal_mode", "synchronous", "foreign_keys")


def sqlite_like_adapter(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection set up as the adapter sets up its own (read sql.py)."""
    connection = sqlite3.connect(path, timeout=DEFAULT_LOCK_WAIT_S, isolation_level=None)
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    return connection


def pragmas_of(read: Callable[[str], object]) -> dict[str, str]:
    return {name: str(read(f"PRAGMA {name}")) for name in SQLITE_PRAGMAS}


def subscribed_file(path: Path, account: str) -> SqlRepository:
    """A fresh, migrated SQLite file with `account` subscribed through the facade."""
    repository = SqlRepository.connect(sqlite_url(path), migrate=True)
    make_service(repository, ManualClock(START)).subscribe(account, BIG_PLAN)
    return repository


@attrs.frozen
class BaselineRows:
    ledger: list[tuple[object, ...]]
    ownership: list[tuple[object, ...]]
    balance: int
    next_seq: int


def baseline_rows(
    connection: sqlite3.Connection, account: str, contacts: Sequence[Contact]
) -> BaselineRows:
    """The rows a charge of each contact writes, as the adapter stores them (R19, R12)."""
    seq, balance = connection.execute(
        "SELECT next_seq, email_balance FROM credits_wallets WHERE account = ?", (account,)
    ).fetchone()
    at = START.isoformat(timespec="microseconds")  # the adapter's fixed-width UTC text
    plan = BIG_PLAN.name
    ledger_rows: list[tuple[object, ...]] = []
    ownership_rows: list[tuple[object, ...]] = []
    for contact in contacts:
        balance -= 1
        datum = str(contact)
        # account, seq, kind, pool, amount, at, balance_after, operation, datum, plan,
        # period, idempotency_key, destination, note
        ledger_rows.append(
            (
                account,
                seq,
                "charge",
                "email",
                -1,
                at,
                balance,
                "unlock",
                datum,
                plan,
                0,
                None,
                None,
                None,
            )
        )
        ownership_rows.append((account, "email", contact.value, "email", 1, at, seq, None))
        seq += 1
    return BaselineRows(ledger=ledger_rows, ownership=ownership_rows, balance=balance, next_seq=seq)


def baseline_insert(connection: sqlite3.Connection, account: str, rows: BaselineRows) -> None:
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(
        "INSERT INTO credits_ledger (account, seq, kind, pool, amount, at, balance_after,"
        " operation, datum, plan, period, idempotency_key, destination, note)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows.ledger,
    )
    connection.executemany(
        "INSERT INTO credits_ownership (account, channel, value, pool, credits, charged_at,"
        " entry_seq, refunded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows.ownership,
    )
    connection.execute(
        "UPDATE credits_wallets SET email_balance = ?, next_seq = ?, version = version + 1"
        " WHERE account = ?",
        (rows.balance, rows.next_seq, account),
    )
    connection.execute("COMMIT")


def stored_rows(path: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        ledger_rows = connection.execute("SELECT * FROM credits_ledger ORDER BY seq").fetchall()
        ownership_rows = connection.execute(
            "SELECT * FROM credits_ownership ORDER BY value"
        ).fetchall()
    return ledger_rows, ownership_rows


def bench_sqlite_batch(workdir: Path, size: int, repeats: int) -> None:
    print(f"== sqlite-batch: one unlock of {size:,} new contacts on a fresh SQLite file ==")
    contacts = emails("lead", size)
    account = "batch"
    baseline_s: list[float] = []
    facade_s: list[float] = []
    for run in range(repeats):
        base_path, facade_path = workdir / f"base-{run}.db", workdir / f"facade-{run}.db"
        subscribed_file(base_path, account).close()
        with contextlib.closing(sqlite_like_adapter(base_path)) as connection:
            rows = baseline_rows(connection, account, contacts)
            base_pragmas = pragmas_of(lambda sql: connection.execute(sql).fetchone()[0])
            gc.collect()
            started = time.perf_counter()
            baseline_insert(connection, account, rows)
            baseline_s.append(time.perf_counter() - started)

        repository = subscribed_file(facade_path, account)
        try:
            service = make_service(repository, ManualClock(START))
            with repository.engine.connect() as probe:
                adapter_pragmas = pragmas_of(lambda sql: probe.exec_driver_sql(sql).scalar())
            check(base_pragmas == adapter_pragmas, f"{base_pragmas} != {adapter_pragmas}")
            gc.collect()
            started = time.perf_counter()
            result = service.unlock(account, contacts)
            facade_s.append(time.perf_counter() - started)
            check(result.count(Outcome.CHARGED) == size, "the facade must charge every datum")
            left = service.balance(account).email
            check(left == rows.balance, f"email balance {left}, expected {rows.balance}")
        finally:
            repository.close()
        if run == 0:  # the baseline wrote exactly the rows the adapter writes
            check(stored_rows(base_path) == stored_rows(facade_path), "rows differ")
        for path in workdir.glob(f"*-{run}.db*"):
            path.unlink()

    base_med, facade_med = statistics.median(baseline_s), statistics.median(facade_s)
    base_rate, facade_rate = size / base_med, size / facade_med
    print(f"pragmas on both sides: {adapter_pragmas}; {repeats} runs each, alternating")

    def show(label: str, times: Sequence[float], rate: float) -> None:
        print(
            f"  {label:<62} median {statistics.median(times) * 1e3:7.1f} ms"
            f"   min {min(times) * 1e3:7.1f} ms   {rate:8,.0f} data/s"
        )

    show("baseline: plain sqlite3, 2 executemany + 1 UPDATE, 1 transaction", baseline_s, base_rate)
    show("CreditService.unlock on SqlRepository (2 transactions, R16)", facade_s, facade_rate)
    ratio = facade_rate / base_rate
    print(
        f"rate {facade_rate:,.0f} data/s; target >= {BATCH_MIN_RATE:,.0f}: "
        f"{verdict(facade_rate >= BATCH_MIN_RATE)}"
    )
    print(
        f"ratio facade/baseline (data/s, medians) {ratio:.2f}x; target >= {BATCH_MIN_RATIO}x: "
        f"{verdict(ratio >= BATCH_MIN_RATIO)}"
    )
    record(
        f"SQLite: one unlock of {size:,} new emails",
        f"{facade_rate:,.0f} data/s",
        f"plain sqlite3, same rows: {base_rate:,.0f} data/s",
        f"{ratio:.2f}x",
        f">= {BATCH_MIN_RATIO}x",
        ratio >= BATCH_MIN_RATIO,
    )
    print()


# -- PostgreSQL helpers ----------------------------------------------------------------


def pg_reachable(admin_dsn: str) -> str | None:
    """None if the server answers, else why not."""
    try:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=3):
            return None
    except psycopg.Error as error:
        return str(error).strip()


@contextlib.contextmanager
def pg_database(admin_dsn: str, purpose: str) -> Iterator[str]:
    """A fresh database; yields its name and drops it after."""
    name = f"credits_bench_{purpose}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_params(admin_dsn: str) -> dict[str, str]:
    params = conninfo.conninfo_to_dict(admin_dsn)
    return {
        "host": str(params.get("host", "127.0.0.1")),
        "port": str(params.get("port", "5432")),
        "user": str(params.get("user", "postgres")),
    }


def sqlalchemy_url(admin_dsn: str, database: str) -> str:
    p = pg_params(admin_dsn)
    return f"postgresql+psycopg://{p['user']}@{p['host']}:{p['port']}/{database}"


def pg_dsn(admin_dsn: str, database: str) -> str:
    return conninfo.make_conninfo(admin_dsn, dbname=database)


def pg_execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement.encode())


def find_pgbench() -> str | None:
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))
    return str(candidates[-1]) if candidates else None


@attrs.frozen
class Throughput:
    tps: float
    busy: float  # share of the machine's CPU time busy during the run
    client_cpu_ms: float | None = None  # client processes' CPU per transaction
    errors: str = ""
    activity: str = ""  # what the clients' server sessions did, sampled


def pgbench(binary: str, admin_dsn: str, database: str, args: Sequence[str]) -> Throughput:
    p = pg_params(admin_dsn)
    command = [binary, "-h", p["host"], "-p", p["port"], "-U", p["user"], *args, database]
    pg_execute(pg_dsn(admin_dsn, database), "CHECKPOINT")
    before = cpu_ticks()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S, check=False
    )
    busy = busy_share(before, cpu_ticks())
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    found = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    check(found is not None, f"no tps in pgbench's output: {done.stdout}")
    assert found is not None  # narrowed for mypy; checked just above
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    errors = f"{failed.group(1)} failed" if failed and failed.group(1) != "0" else ""
    return Throughput(tps=float(found.group(1)), busy=busy, errors=errors)


class ActivitySampler:
    """What the server sessions of one database do, sampled from pg_stat_activity.

    Shows where an unlock's time goes: waiting for a row lock, "idle in transaction"
    (the server waits for the client, which holds its locks meanwhile), running on the
    server (WAL flushes counted apart), or idle between transactions (the client works).
    """

    INTERVAL_S = 0.02

    def __init__(self, admin_dsn: str, database: str) -> None:
        self._dsn, self._database = admin_dsn, database
        self._counts: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ActivitySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=PROCESS_TIMEOUT_S)

    def _run(self) -> None:
        query = (
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        with psycopg.connect(self._dsn, autocommit=True) as connection:
            while not self._stop.wait(self.INTERVAL_S):  # bounded by the run's end
                for state, kind, name in connection.execute(query, (self._database,)):
                    self._counts[_activity(state, kind, name)] += 1

    def summary(self) -> str:
        total = sum(self._counts.values())
        if not total:
            return "no samples"
        return ", ".join(f"{n / total:.0%} {what}" for what, n in self._counts.most_common())


def _activity(state: str | None, kind: str | None, name: str | None) -> str:
    if state == "idle in transaction":
        return "idle in transaction (waiting for its client)"
    if state == "idle":
        return "idle between transactions"
    if kind == "Lock":
        return f"waiting for a lock ({name})"
    if kind == "IO" and name and name.startswith("WAL"):
        return "flushing WAL"
    if kind is None:
        return "running"
    return f"{kind}:{name}"


# -- part 2: 8 client processes on PostgreSQL -------------------------------------------


@attrs.frozen
class ClientReport:
    charged: int  # timed unlocks that charged their datum
    elapsed_s: float
    cpu_s: float
    warm_charged: int
    errors: tuple[str, ...]


def client_process(
    url: str,
    account: str,
    tag: str,
    duration_s: float,
    warm_up: int,
    barrier: Barrier,
    results: Queue[ClientReport],
) -> None:
    """One client: warm up, wait for the others, then unlock new data until the deadline."""
    repository = SqlRepository.connect(url)
    try:
        service = make_service(repository, SystemClock())
        warm_charged = 0
        for contact in emails(f"warm-{tag}-", warm_up):
            warm_charged += service.unlock(account, [contact]).count(Outcome.CHARGED)
        barrier.wait(timeout=PROCESS_TIMEOUT_S)
        charged, n, errors = 0, 0, []
        started, cpu_started = time.perf_counter(), time.process_time()
        deadline = started + duration_s
        while time.perf_counter() < deadline:  # bounded by the deadline
            n += 1
            contact = Contact.email(f"{tag}-{n}@client.example")
            try:
                charged += service.unlock(account, [contact]).count(Outcome.CHARGED)
            except CreditsError as error:  # reported, never hidden
                errors.append(type(error).__name__)
        elapsed_s = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_started
        results.put(ClientReport(charged, elapsed_s, cpu_s, warm_charged, tuple(errors)))
    finally:
        repository.close()


def run_clients(
    url: str,
    accounts: Sequence[str],
    run_tag: str,
    duration_s: float,
    warm_up: int,
    sampler: ActivitySampler,
) -> tuple[Throughput, int]:
    """One client process per entry of `accounts` (spawned), all started together.

    Returns the throughput (the sum of each client's charges per second of its own run)
    and how many data the clients reported charged in all, warm-up included.
    """
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(accounts) + 1)
    results: Queue[ClientReport] = context.Queue()
    processes = [
        context.Process(
            target=client_process,
            args=(url, account, f"{run_tag}c{i}", duration_s, warm_up, barrier, results),
        )
        for i, account in enumerate(accounts)
    ]
    for process in processes:
        process.start()
    try:
        barrier.wait(timeout=PROCESS_TIMEOUT_S)  # every client connected and warm
        before = cpu_ticks()
        with sampler:
            reports = [results.get(timeout=duration_s + PROCESS_TIMEOUT_S) for _ in processes]
        busy = busy_share(before, cpu_ticks())
    finally:
        for process in processes:
            process.join(timeout=PROCESS_TIMEOUT_S)
            if process.is_alive():  # never leave a child behind
                process.kill()
    for process in processes:
        check(process.exitcode == 0, f"a client process exited with {process.exitcode}")
    timed = sum(r.charged for r in reports)
    errors = collections.Counter(e for r in reports for e in r.errors)
    figure = Throughput(
        tps=sum(r.charged / r.elapsed_s for r in reports),
        busy=busy,
        client_cpu_ms=1e3 * sum(r.cpu_s for r in reports) / max(timed, 1),
        errors=", ".join(f"{n} {name}" for name, n in errors.items()),
        activity=sampler.summary(),
    )
    return figure, timed + sum(r.warm_charged for r in reports)


def charged_in_database(engine: Engine, accounts: Sequence[str]) -> int:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT count(*) FROM credits_ownership WHERE account = ANY(:accounts)"),
            {"accounts": list(accounts)},
        ).scalar_one()
    return int(rows)


def pg_bench_init(binary: str, admin_dsn: str, database: str) -> None:
    p = pg_params(admin_dsn)
    command = [binary, "-h", p["host"], "-p", p["port"], "-U", p["user"], "-i", "-q"]
    command += ["-s", str(PGBENCH_SCALE), database]
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, timeout=PROCESS_TIMEOUT_S, check=True)
    pg_execute(
        pg_dsn(admin_dsn, database),
        "CREATE TABLE bench_hot (id int PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0))",
        "INSERT INTO bench_hot VALUES (1, 1000000000000)",
        "CREATE TABLE bench_owned (account int, datum text, PRIMARY KEY (account, datum))",
    )
    print(
        f"  baseline set-up: pgbench -i -s {PGBENCH_SCALE} in {time.perf_counter() - started:.1f} s"
    )


_HOT_SCRIPTS = {
    "guarded": "UPDATE bench_hot SET balance = balance - 1 WHERE id = 1 AND balance >= 1;\n",
    "anchor": (
        "\\set d random(1, 1000000000000)\n"
        "BEGIN;\n"
        "UPDATE bench_hot SET balance = balance - 1 WHERE id = 1 AND balance >= 1"
        " RETURNING balance;\n"
        "INSERT INTO bench_owned (account, datum) VALUES (1, :client_id || '-' || :d)"
        " ON CONFLICT DO NOTHING;\n"
        "END;\n"
    ),
}


def hot_script_args(workdir: Path, name: str, clients: int, duration_s: float) -> list[str]:
    path = workdir / f"pgbench-{name}.sql"
    path.write_text(_HOT_SCRIPTS[name])
    # -n: no vacuum of pgbench's own tables, which these scripts do not use.
    return ["-n", "-f", str(path), *client_args(clients, duration_s)]


def client_args(clients: int, duration_s: float) -> list[str]:
    return ["-c", str(clients), "-j", "2", "-T", str(max(1, round(duration_s)))]


def throughput_line(label: str, figure: Throughput) -> str:
    cpu = figure.client_cpu_ms
    extra = f"   clients' CPU {cpu:5.2f} ms/unlock" if cpu is not None else ""
    errors = f"   errors: {figure.errors}" if figure.errors else ""
    text = f"  {label:<54} {figure.tps:7.0f} TPS   CPUs busy {figure.busy:4.0%}{extra}{errors}"
    if figure.activity:
        text += f"\n      their server sessions, sampled: {figure.activity}"
    return text


def ratio_line(ours: Throughput, theirs: Throughput, what: str) -> str:
    ratio = ours.tps / theirs.tps
    return (
        f"  ratio {ratio:.2f}x {what}; target >= {CLIENTS_MIN_RATIO}x: "
        f"{verdict(ratio >= CLIENTS_MIN_RATIO)}"
    )


def one_client_context(service: CreditService, engine: Engine, account: str) -> None:
    for contact in emails("alone-warm-", 50):
        service.unlock(account, [contact])
    latencies: list[float] = []
    cpu_started = time.process_time()
    for contact in emails("alone-", 300):
        started = time.perf_counter()
        service.unlock(account, [contact])
        latencies.append(time.perf_counter() - started)
    cpu_ms = (time.process_time() - cpu_started) / len(latencies) * 1e3
    print(
        f"  context, one client alone: median {statistics.median(latencies) * 1e3:.2f} ms per"
        f" unlock, p90 {p90(latencies) * 1e3:.2f} ms, client CPU {cpu_ms:.2f} ms per unlock"
    )
    sent = statements_per_unlock(service, engine, account, 50)
    print(f"  context, what one unlock sends: {sent}")
    trips = float(sent.split()[0])
    record(
        "PostgreSQL: client CPU per single-contact unlock, one client alone",
        f"{cpu_ms:.2f} ms",
        "-",
        "-",
        f"<= {CLIENT_CPU_MAX_MS} ms",
        cpu_ms <= CLIENT_CPU_MAX_MS,
    )
    record(
        "PostgreSQL: round trips per single-contact unlock",
        f"{trips:g}",
        "pgbench tpcb-like: 7 per transaction",
        "-",
        f"<= {ROUND_TRIPS_MAX}",
        trips <= ROUND_TRIPS_MAX,
    )
    print("  context, pgbench tpcb-like sends 7 per transaction (BEGIN, 5 statements, END)")


def bench_pg_clients(
    admin_dsn: str, workdir: Path, clients: int, duration_s: float, warm_up: int
) -> None:
    print(f"== pg-clients: single-contact unlocks, {clients} client processes, {duration_s:g} s ==")
    binary = find_pgbench()
    if binary is None:
        print("  pgbench not found (`apt-get install -y postgresql-contrib`): baselines skipped")
    results: dict[str, Throughput] = {}
    with (
        pg_database(admin_dsn, "clients") as ours,
        pg_database(admin_dsn, "pgbench") as theirs,
    ):
        url, ours_dsn = sqlalchemy_url(admin_dsn, ours), pg_dsn(admin_dsn, ours)
        repository = SqlRepository.connect(url, migrate=True)
        try:
            service = make_service(repository, SystemClock())
            distinct = [f"client-{i}" for i in range(clients)]
            for account in [*distinct, "hot", "alone"]:
                service.subscribe(account, BIG_PLAN)
            one_client_context(service, repository.engine, "alone")
            if binary is not None:
                pg_bench_init(binary, admin_dsn, theirs)
                results["tpcb"] = pgbench(
                    binary, admin_dsn, theirs, client_args(clients, duration_s)
                )
            pg_execute(ours_dsn, "CHECKPOINT")
            results["distinct"], distinct_charged = run_clients(
                url, distinct, "d", duration_s, warm_up, ActivitySampler(admin_dsn, ours)
            )
            if binary is not None:
                args = hot_script_args(workdir, "guarded", clients, duration_s)
                results["guarded"] = pgbench(binary, admin_dsn, theirs, args)
            pg_execute(ours_dsn, "CHECKPOINT")
            results["hot"], hot_charged = run_clients(
                url, ["hot"] * clients, "h", duration_s, warm_up, ActivitySampler(admin_dsn, ours)
            )
            if binary is not None:
                args = hot_script_args(workdir, "anchor", clients, duration_s)
                results["anchor"] = pgbench(binary, admin_dsn, theirs, args)
            # What the clients say they charged is what the database holds: one
            # ownership row and one credit per charge, nothing lost or doubled (R12, R20).
            for accounts, charged in ((distinct, distinct_charged), (["hot"], hot_charged)):
                owned = charged_in_database(repository.engine, accounts)
                spent = sum(BIG_PLAN.monthly.email - service.balance(a).email for a in accounts)
                check(owned == spent == charged, f"{accounts}: {owned}, {spent}, {charged}")
        finally:
            repository.close()

    print(f"(a) {clients} distinct accounts:")
    if "tpcb" in results:
        label = f"pgbench tpcb-like, scale {PGBENCH_SCALE}, -c {clients} -j 2"
        print(throughput_line(label, results["tpcb"]))
    print(throughput_line("CreditService.unlock, one account per client", results["distinct"]))
    if "tpcb" in results:
        print(ratio_line(results["distinct"], results["tpcb"], "tpcb-like"))
        ratio = results["distinct"].tps / results["tpcb"].tps
        record(
            f"PostgreSQL: {clients} processes, one account each, single-contact unlocks",
            f"{results['distinct'].tps:,.0f}/s",
            f"pgbench tpcb-like -c {clients}: {results['tpcb'].tps:,.0f} TPS",
            f"{ratio:.2f}x",
            f">= {CLIENTS_MIN_RATIO}x",
            ratio >= CLIENTS_MIN_RATIO,
        )
    print("(b) one hot account:")
    if "guarded" in results:
        label = "pgbench: UPDATE ... WHERE id = 1 AND balance >= 1"
        print(throughput_line(label, results["guarded"]))
        label = "(context) BEGIN; that UPDATE; INSERT ON CONFLICT; END"
        print(throughput_line(label, results["anchor"]))
    print(throughput_line("CreditService.unlock, every client on one account", results["hot"]))
    if "guarded" in results:
        print(ratio_line(results["hot"], results["guarded"], "the guarded UPDATE"))
        ratio = results["hot"].tps / results["guarded"].tps
        record(
            f"PostgreSQL: {clients} processes on one hot account",
            f"{results['hot'].tps:,.0f}/s",
            f"guarded UPDATE -c {clients}: {results['guarded'].tps:,.0f} TPS",
            f"{ratio:.2f}x",
            f">= {CLIENTS_MIN_RATIO}x",
            ratio >= CLIENTS_MIN_RATIO,
        )
        context = results["hot"].tps / results["anchor"].tps
        print(f"  (context: {context:.2f}x the UPDATE + INSERT transaction)")
    print()


# -- part 3: one charge at 1,000 vs 1,000,000 entries ------------------------------------


def seed(service: CreditService, account: str, prefix: str, count: int) -> float:
    """Make `account` own `count` data through the facade; returns the seconds it took."""
    started = time.perf_counter()
    service.subscribe(account, BIG_PLAN)
    for start in range(0, count, SEED_BATCH):
        batch = emails(f"{prefix}{start // SEED_BATCH}x", min(SEED_BATCH, count - start))
        check(service.unlock(account, batch).count(Outcome.CHARGED) == len(batch), "seeding")
        if start and start % 200_000 == 0:
            print(f"    ... {start:,} in {time.perf_counter() - started:.0f} s", flush=True)
    return time.perf_counter() - started


def timed_unlocks(
    service: CreditService, accounts: Sequence[str], prefix: str, n: int
) -> dict[str, list[float]]:
    """`n` single-contact unlocks of new data per account, alternating accounts."""
    fresh = {account: emails(f"{prefix}-{account}-", n) for account in accounts}
    times: dict[str, list[float]] = {account: [] for account in accounts}
    gc.collect()
    for i in range(n):
        for account in accounts:
            started = time.perf_counter()
            result = service.unlock(account, [fresh[account][i]])
            times[account].append(time.perf_counter() - started)
            check(result.count(Outcome.CHARGED) == 1, "each timed unlock charges its datum")
    return times


def history_of(engine: Engine, account: str) -> tuple[int, int]:
    with engine.connect() as connection:
        entries = connection.execute(
            text("SELECT count(*) FROM credits_ledger WHERE account = :a"), {"a": account}
        ).scalar_one()
        owned = connection.execute(
            text("SELECT count(*) FROM credits_ownership WHERE account = :a"), {"a": account}
        ).scalar_one()
    return int(entries), int(owned)


def bench_scaling_on(
    backend: str, url: str, small_n: int, large_n: int, samples: int, warm_up: int
) -> None:
    repository = SqlRepository.connect(url, migrate=True)
    try:
        service = make_service(repository, SystemClock())
        small, large = "small", "large"
        seed(service, small, "s", small_n)
        timed_unlocks(service, [small], "warm-alone", warm_up)
        alone = timed_unlocks(service, [small], "alone", samples)[small]
        print(f"  {backend}: seeding {large_n:,} data through the facade ...", flush=True)
        seed_s = seed(service, large, "l", large_n)
        print(
            f"  {backend}: seeded {large_n:,} in {seed_s:.0f} s"
            f" ({large_n / seed_s:,.0f} data/s, unlocks of {SEED_BATCH:,})"
        )
        if backend == "postgresql":  # what autovacuum does after a bulk load, done now
            with repository.engine.connect() as connection:
                connection.execute(text("ANALYZE"))
                connection.commit()
        history = {account: history_of(repository.engine, account) for account in (small, large)}
        for account, (entries, owned) in history.items():
            print(f"    {account}: {entries:,} ledger entries, {owned:,} owned data")
        timed_unlocks(service, [small, large], "warm", warm_up)
        after = timed_unlocks(service, [small, large], "timed", samples)
        sent = {
            account: statements_per_unlock(service, repository.engine, account, 20)
            for account in (small, large)
        }
    finally:
        repository.close()

    def show(label: str, times: Sequence[float]) -> float:
        median = statistics.median(times)
        print(
            f"    {label:<40} median {median * 1e3:7.3f} ms   min {min(times) * 1e3:7.3f} ms"
            f"   p90 {p90(times) * 1e3:7.3f} ms"
        )
        return median

    print(f"  {backend}: one unlock of a new datum, {samples:,} per account, interleaved:")
    show(f"{small} (before {large} existed, context)", alone)
    small_med = show(f"{small} ({history[small][1]:,} data)", after[small])
    large_med = show(f"{large} ({history[large][1]:,} data)", after[large])
    ratio = large_med / small_med
    print(
        f"    ratio {large}/{small} (medians) {ratio:.2f}x; target <= {SCALING_MAX_RATIO}x: "
        f"{verdict(ratio <= SCALING_MAX_RATIO)}"
    )
    record(
        f"{backend}: one charge, account of {history[large][1]:,} vs {history[small][1]:,} data",
        f"{large_med * 1e3:.3f} ms",
        f"the small account: {small_med * 1e3:.3f} ms",
        f"{ratio:.2f}x",
        f"<= {SCALING_MAX_RATIO}x",
        ratio <= SCALING_MAX_RATIO,
    )
    for account, what in sent.items():
        print(f"    {account}: {what}")


def bench_scaling(
    backends: Sequence[str],
    admin_dsn: str | None,
    workdir: Path,
    small_n: int,
    large_n: int,
    samples: int,
    warm_up: int,
) -> None:
    print(f"== scaling: one charge, account of {small_n:,} vs {large_n:,} entries and data ==")
    for backend in backends:
        if backend == "sqlite":
            path = workdir / "scaling.db"
            try:
                bench_scaling_on(backend, sqlite_url(path), small_n, large_n, samples, warm_up)
            finally:
                for file in workdir.glob("scaling.db*"):
                    file.unlink()
        elif admin_dsn is None:
            print("  postgresql: skipped (no server)")
        else:
            with pg_database(admin_dsn, "scaling") as database:
                url = sqlalchemy_url(admin_dsn, database)
                bench_scaling_on(backend, url, small_n, large_n, samples, warm_up)
    print()


# -- command line ----------------------------------------------------------------------


def _at_least(low: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)
        if number < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {number}")
        return number

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parts = ["sqlite-batch", "pg-clients", "scaling", "all"]
    parser.add_argument("--part", choices=parts, default="all")
    parser.add_argument("--pg-dsn", default=PG_ADMIN_DSN, help="admin DSN of the server")
    parser.add_argument("--batch", type=_at_least(1), default=10_000, help="sqlite-batch size")
    parser.add_argument("--repeats", type=_at_least(1), default=5, help="sqlite-batch runs")
    parser.add_argument("--clients", type=_at_least(1), default=8)
    parser.add_argument("--duration-s", type=float, default=10.0, help="each pg-clients run")
    parser.add_argument("--warm-up", type=_at_least(0), default=50, help="untimed unlocks")
    parser.add_argument("--small", type=_at_least(1), default=1_000)
    parser.add_argument("--large", type=_at_least(1), default=1_000_000)
    parser.add_argument("--samples", type=_at_least(2), default=500, help="scaling unlocks")
    parser.add_argument(
        "--backends", default="sqlite,postgresql", help="scaling: sqlite and/or postgresql"
    )
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    if not set(backends) <= {"sqlite", "postgresql"}:
        parser.error(f"--backends takes sqlite and/or postgresql, got {args.backends!r}")
    if not 0 < args.duration_s <= 600:
        parser.error("--duration-s must be in (0, 600]")

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if os.name == "posix" else "?"
    print(
        f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs, load average {load}"
    )
    admin_dsn: str | None = args.pg_dsn
    wants_pg = args.part in ("pg-clients", "all") or (
        args.part == "scaling" and "postgresql" in backends
    )
    if wants_pg:
        why = pg_reachable(args.pg_dsn)
        if why is not None:
            print(f"PostgreSQL at {args.pg_dsn} unreachable ({why}): its figures are skipped")
            admin_dsn = None
        else:
            with psycopg.connect(args.pg_dsn, autocommit=True) as connection:
                settings = connection.execute(
                    "SELECT current_setting('server_version'),"
                    " current_setting('synchronous_commit'), current_setting('shared_buffers')"
                ).fetchone()
            print(f"PostgreSQL {settings}: (version, synchronous_commit, shared_buffers)")
    print()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-sql-") as folder:
        workdir = Path(folder)
        if args.part == "all":
            # The in-memory row of the table, measured as bench_core.py measures it.
            unlock_ns, loop_ns = bench_core.bench_batch(time.perf_counter_ns, 15, 5)
            ratio = unlock_ns / loop_ns
            record(
                "in memory: one unlock of 10,000 new emails (bench_core.py)",
                f"{unlock_ns / 1e6:.2f} ms",
                f"bare dict loop: {loop_ns / 1e6:.2f} ms",
                f"{ratio:.1f}x",
                f"<= {bench_core.BATCH_TARGET_RATIO:.0f}x",
                ratio <= bench_core.BATCH_TARGET_RATIO,
            )
        if args.part in ("sqlite-batch", "all"):
            bench_sqlite_batch(workdir, args.batch, args.repeats)
        if args.part in ("pg-clients", "all"):
            if admin_dsn is None:
                print("== pg-clients: skipped (no server) ==\n")
            else:
                bench_pg_clients(admin_dsn, workdir, args.clients, args.duration_s, args.warm_up)
        if args.part in ("scaling", "all"):
            bench_scaling(
                backends, admin_dsn, workdir, args.small, args.large, args.samples, args.warm_up
            )
    print_table()
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
