"""Durability: PostgreSQL itself is killed (SIGKILL, every process of it) in the middle of
a load, restarted (crash recovery replays its WAL), and the requests that got no answer
are retried with their keys. Nothing acknowledged is lost, nothing is charged twice
(R12, R17, R19, R20).

The server killed is a private one: a cluster made for this test with the machine's own
initdb, in a temporary folder, on a free port (the shared server on 5432 is never touched).
It runs as the `postgres` user, which needs root to switch to; under CI=true a machine
without initdb or root fails the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.clock import ManualClock
from adapters.sql import SqlRepository
from adapters.verifier import ScriptedVerifier
from credits_domain import (
    ChargePolicy,
    ChargeResult,
    Contact,
    Credits,
    CreditService,
    EntryKind,
    Outcome,
    Plan,
    RequestInFlight,
    StorageUnavailable,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
PLAN = Plan(name="bulk", monthly=Credits(email=100_000, mobile=0))
KILL_AFTER = 40  # acknowledged requests before the server is killed
MAX_REQUESTS = 2_000  # the load stops by itself long before this
STEP_TIMEOUT_S = 60


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_cluster(tmp_path: Path) -> Iterator[tuple[str, Path, int]]:
    bin_dir = _binaries()
    usable = bin_dir is not None and os.geteuid() == 0 and shutil.which("runuser")
    if not usable:
        why = "needs PostgreSQL's initdb and root (to run it as the postgres user)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but this test {why}")
        pytest.skip(why)
    assert bin_dir is not None
    # Not under pytest's tmp_path: the postgres user cannot enter root's private folders.
    folder = Path(tempfile.mkdtemp(prefix="credits-pg-kill-"))
    shutil.chown(folder, "postgres")
    data, port = folder / "data", _free_port()

    def as_postgres(*command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            check=True,
            capture_output=True,
            timeout=STEP_TIMEOUT_S,
        )

    as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    options = f"-p {port} -c unix_socket_directories='' -c listen_addresses=127.0.0.1 -c fsync=on"
    start = [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log")]
    as_postgres(*start, "-w", "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", data, port
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def kill_everything(data: Path) -> None:
    """SIGKILL the postmaster and every backend of the cluster: a crash, not a shutdown."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(
        ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
    ).stdout.split()
    for pid in [postmaster, *map(int, children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while any(_alive(pid) for pid in [postmaster, *map(int, children)]):
        assert time.monotonic() < deadline, "the killed server did not die"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for us: its parent (pg_ctl's shell) reaps it.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


def restart(data: Path, port: int) -> None:
    bin_dir = _binaries()
    assert bin_dir is not None
    # The killed postmaster may linger as a zombie (a container's init need not reap
    # it), and PostgreSQL takes a live PID in its lock file for a running server. After a
    # real crash the machine's process table holds no such PID: remove the stale file.
    pid_file = data / "postmaster.pid"
    if pid_file.exists() and not _alive(int(pid_file.read_text().split()[0])):
        pid_file.unlink()
    folder = data.parent
    options = f"-p {port} -c unix_socket_directories='' -c listen_addresses=127.0.0.1 -c fsync=on"
    done = subprocess.run(
        ["runuser", "-u", "postgres", "--", str(bin_dir / "pg_ctl"), "-D", str(data),
         "-o", options, "-l", str(folder / "log"), "-w", "start"],
        check=False, capture_output=True, text=True, timeout=STEP_TIMEOUT_S,
    )  # fmt: skip
    log = (folder / "log").read_text(errors="replace")[-2_000:]
    assert done.returncode == 0, f"restart failed: {done.stdout} {done.stderr} {log}"


def test_a_killed_server_loses_nothing_it_acknowledged(tmp_path: Path) -> None:
    with private_cluster(tmp_path) as (url, data, port):
        repository = SqlRepository.connect(url, migrate=True)
        clock = ManualClock(START)
        service = CreditService(repository=repository, verifier=ScriptedVerifier(), clock=clock)
        service.subscribe("acme", PLAN)
        acknowledged: dict[str, ChargeResult] = {}
        unanswered: dict[str, list[Contact]] = {}
        enough = threading.Event()

        def load() -> None:
            for n in range(MAX_REQUESTS):
                key, batch = f"req-{n}", [Contact.email(f"lead{n}-{i}@corp.com") for i in range(3)]
                try:
                    acknowledged[key] = service.unlock("acme", batch, idempotency_key=key)
                except StorageUnavailable:
                    unanswered[key] = batch
                    return  # the server is gone: this client stops, as a crashed one would
                if len(acknowledged) == KILL_AFTER:
                    enough.set()

        client = threading.Thread(target=load, name="load")
        client.start()
        assert enough.wait(STEP_TIMEOUT_S), "the load never got going"
        kill_everything(data)
        client.join(STEP_TIMEOUT_S)
        assert not client.is_alive(), "the client hung on a dead server"
        assert len(unanswered) == 1, "the client stopped at the request the crash cut"
        restart(data, port)

        for key, batch in unanswered.items():  # the retries, with the same keys (R17)
            try:
                acknowledged[key] = service.unlock("acme", batch, idempotency_key=key)
            except RequestInFlight:
                # The crash came between reserve and settle: the hold outlives it until
                # its expiry (R16), then the retry takes the request over.
                clock.advance(timedelta(seconds=ChargePolicy().hold_ttl_s + 1))
                acknowledged[key] = service.unlock("acme", batch, idempotency_key=key)
        entries = list(service.statement("acme"))
        charged = [e.cause.datum for e in entries if e.kind is EntryKind.CHARGE]
        assert len(charged) == len(set(charged)), "a datum was charged twice (R12)"
        told = {
            str(item.contact)
            for result in acknowledged.values()
            for item in result.items
            if item.outcome is Outcome.CHARGED
        }
        assert told == set(charged), "what was acknowledged is what the ledger holds"
        assert len(told) == 3 * len(acknowledged)
        balance = service.balance("acme")
        assert balance.email == balance.email_available == PLAN.monthly.email - len(charged)
        repository.close()
