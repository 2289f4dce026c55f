"""Shared set-up of the HTTP API tests: the app under a real uvicorn on 127.0.0.1.

`serve(app)` binds a socket on a free loopback port itself (so no other process can
take the port between choosing and binding it), runs uvicorn's Server on it in a
thread, waits for `started`, and stops the server on exit. `ApiWorld` is one complete
in-memory set-up: service, clock, verifier, key store, and a client per account;
`wait_listening` waits for a server process to listen.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import attrs
import httpx
import uvicorn
from starlette.types import ASGIApp

from adapters.api import create_app
from adapters.clock import ManualClock
from adapters.memory import InMemoryApiKeyStore, InMemoryRepository
from adapters.verifier import ScriptedVerifier
from credits_domain import ApiKeyStore, ChargePolicy, CreditService, Repository

START = datetime(2025, 1, 31, 9, 0, tzinfo=UTC)
STARTUP_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 10.0
PROBLEM = "https://credits-domain.dev/problems/"


@contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Run `app` under uvicorn on a free 127.0.0.1 port; yield its base URL."""
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they
    # are TCP; without it Nagle's algorithm and delayed ACKs add 40 ms to each answer.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(SHUTDOWN_TIMEOUT_S)
        sock.close()


def free_port() -> int:
    """A loopback port free now (for a server process, which binds it itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(
    port: int, process: subprocess.Popen[str], timeout_s: float = STARTUP_TIMEOUT_S
) -> None:
    """Wait until `process` (a server started by a test) accepts connections on `port`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, f"the server did not listen on {port}"
            time.sleep(0.05)


def client(base_url: str, token: str | None) -> httpx.Client:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=base_url, headers=headers, timeout=CLIENT_TIMEOUT_S)


@attrs.define
class ApiWorld:
    """One served API on an in-memory repository, with a manual clock."""

    base_url: str
    service: CreditService
    repository: Repository
    clock: ManualClock
    verifier: ScriptedVerifier
    keys: ApiKeyStore

    def client_for(self, account: str) -> httpx.Client:
        return client(self.base_url, self.keys.create(account).token)

    def anonymous(self) -> httpx.Client:
        return client(self.base_url, None)


@contextmanager
def api_world(
    *,
    verifier: ScriptedVerifier | None = None,
    max_batch: int = 50,
    repository: Repository | None = None,
    keys: ApiKeyStore | None = None,
) -> Iterator[ApiWorld]:
    clock = ManualClock(START)
    repo: Repository = repository if repository is not None else InMemoryRepository()
    scripted = verifier if verifier is not None else ScriptedVerifier()
    service = CreditService(
        repository=repo, verifier=scripted, clock=clock, policy=ChargePolicy(max_batch=1000)
    )
    store = keys if keys is not None else InMemoryApiKeyStore(clock=clock)
    with serve(create_app(service, store, max_batch=max_batch)) as base_url:
        yield ApiWorld(
            base_url=base_url,
            service=service,
            repository=repo,
            clock=clock,
            verifier=scripted,
            keys=store,
        )
