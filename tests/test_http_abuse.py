"""`credits serve` under abuse: each bound of adapters.api.server passed, on a real
uvicorn on 127.0.0.1, with raw sockets where a client would not behave (the issue "Fault
campaign ... a server that holds under abuse"); and the smaller findings of the same
campaign at the API boundary (R12 spellings, non-UTF-8 bodies, trailing slashes, query
strings in the access log, clients that leave mid-body).

Timeouts are set low here (a fraction of a second) so that a test waits for the server
to close a connection within a bounded time; nothing asserts how fast anything is.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from adapters.api import create_app
from adapters.api.server import ServerLimits, server_config
from adapters.cli.serve import LIMITS
from adapters.clock import ManualClock
from adapters.memory import InMemoryApiKeyStore, InMemoryRepository
from adapters.verifier import ScriptedVerifier
from credits_domain import ChargePolicy, CreditService
from http_api_support import PROBLEM, START, STARTUP_TIMEOUT_S, api_world, free_port, wait_listening

ACME = "acme"
UNLOCK = f"/v1/accounts/{ACME}/unlock"
CLOSE_WAIT_S = 10.0  # the bound on waiting for the server to close a connection
FAST = ServerLimits(header_timeout_s=0.3, body_timeout_s=0.3)


@contextmanager
def bounded_server(
    limits: ServerLimits,
    verifier: ScriptedVerifier | None = None,
    *,
    access_log: bool = False,
    ssl_files: tuple[Path, Path] | None = None,
) -> Iterator[tuple[int, str]]:
    """The API as `credits serve` runs it (server_config), on a free loopback port;
    yields the port and an API key of ACME, subscribed to boost."""
    clock = ManualClock(START)
    service = CreditService(
        repository=InMemoryRepository(),
        verifier=verifier or ScriptedVerifier(),
        clock=clock,
        policy=ChargePolicy(max_batch=1000),
    )
    keys = InMemoryApiKeyStore(clock=clock)
    service.subscribe(ACME, "boost")
    token = keys.create(ACME).token
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = server_config(
        create_app(service, keys, max_batch=50),
        limits=limits,
        access_log=access_log,
        log_level="info",
        ssl_certfile=None if ssl_files is None else ssl_files[0],
        ssl_keyfile=None if ssl_files is None else ssl_files[1],
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield port, token
    finally:
        server.should_exit = True
        thread.join(CLOSE_WAIT_S)
        sock.close()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=CLOSE_WAIT_S)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded wait: a
    server that keeps it open fails the test with a timeout)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def get(sock: socket.socket, path: str = "/openapi.json") -> bytes:
    """One keep-alive GET on `sock`; the answer's head and body."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


# -- R12 at the API boundary ---------------------------------------------------------------


def test_two_spellings_of_one_international_number_are_one_datum_charged_once() -> None:
    with api_world() as world, world.client_for(ACME) as acme:
        assert acme.post(f"/v1/accounts/{ACME}/subscription", json={"plan": "boost"})
        first = acme.post(
            UNLOCK, json={"contacts": [{"channel": "mobile", "value": "+44 7700 900123"}]}
        )
        second = acme.post(
            UNLOCK, json={"contacts": [{"channel": "mobile", "value": "+44 (0) 7700 900123"}]}
        )
    assert first.status_code == second.status_code == 200
    assert first.json()["items"][0]["value"] == "+447700900123"
    assert first.json()["charged"]["mobile"] == 1
    assert second.json()["items"][0]["value"] == "+447700900123"
    assert second.json()["charged"]["mobile"] == 0


# -- header size ---------------------------------------------------------------------------


def test_headers_above_the_bound_are_431_and_the_connection_closed() -> None:
    with bounded_server(FAST) as (port, _), connect(port) as sock:
        padding = "a" * 100_000
        # The server may refuse before all of it is sent.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(f"GET /openapi.json HTTP/1.1\r\nHost: x\r\nX-Pad: {padding}".encode())
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_headers_below_the_bound_are_served() -> None:
    with bounded_server(FAST) as (port, _), connect(port) as sock:
        padding = "a" * (FAST.max_header_bytes // 2)
        sock.sendall(f"GET /openapi.json HTTP/1.1\r\nX-Pad: {padding}\r\n".encode())
        sock.sendall(b"Host: x\r\nConnection: close\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200 ")


# -- time to receive a request -------------------------------------------------------------


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /openapi.json HT", b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n"],
    ids=["nothing", "half a request line", "headers never ended"],
)
def test_a_connection_that_never_finishes_its_headers_is_closed(sent: bytes) -> None:
    with bounded_server(FAST) as (port, _), connect(port) as sock:
        sock.sendall(sent)
        assert read_until_closed(sock) == b""


def test_headers_sent_a_byte_at_a_time_are_closed_in_bounded_time() -> None:
    # Each byte arrives well within any idle timeout; the bound is on the whole header.
    with bounded_server(FAST) as (port, _), connect(port) as sock:
        sent = 0
        try:
            for byte in b"GET /openapi.json HTTP/1.1\r\nX-Slow: " + b"a" * 10_000:
                sock.send(bytes([byte]))
                sent += 1
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert read_until_closed(sock) == b""
    assert sent < 10_000


def test_the_next_request_on_a_kept_alive_connection_has_the_same_bound() -> None:
    with bounded_server(FAST) as (port, _), connect(port) as sock:
        assert get(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /openapi.json HT")
        assert read_until_closed(sock) == b""


def test_a_body_that_never_arrives_is_closed_and_nothing_charged() -> None:
    verifier = ScriptedVerifier()
    with bounded_server(FAST, verifier) as (port, token), connect(port) as sock:
        sock.sendall(
            f"POST {UNLOCK} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            '{"contacts": ['.encode()
        )
        assert read_until_closed(sock) == b""
    assert verifier.calls == []


# -- connections and requests in flight ----------------------------------------------------


def test_connections_beyond_the_limit_get_503_with_retry_after_and_are_closed() -> None:
    limits = ServerLimits(max_connections=3)
    with bounded_server(limits) as (port, _):
        held = [connect(port) for _ in range(3)]
        try:
            for sock in held:  # each one is served: the server has set it up
                assert get(sock).startswith(b"HTTP/1.1 200 ")
            with connect(port) as extra:
                answer = read_until_closed(extra)
            assert answer.startswith(b"HTTP/1.1 503 ")
            assert b"\r\nRetry-After: 1\r\n" in answer
            # Still served on the connections within the limit.
            assert get(held[0]).startswith(b"HTTP/1.1 200 ")
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + CLOSE_WAIT_S
        while True:  # the server sees the three close soon after; then a new one is served
            with connect(port) as again:
                try:
                    if get(again).startswith(b"HTTP/1.1 200 "):
                        break
                except (ConnectionResetError, StopIteration):
                    pass
            assert time.monotonic() < deadline, "a connection was never served again"
            time.sleep(0.05)


def test_requests_in_flight_beyond_the_limit_get_503_with_retry_after() -> None:
    entered = threading.Semaphore(0)
    release = threading.Event()

    def hold(batch: object) -> None:
        entered.release()
        release.wait(CLOSE_WAIT_S)

    limits = ServerLimits(max_in_flight=2)
    verifier = ScriptedVerifier(before_answer=hold)
    with bounded_server(limits, verifier) as (port, token):
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}

        def unlock(value: str) -> httpx.Response:
            body = {"contacts": [{"channel": "email", "value": value}]}
            return httpx.post(base + UNLOCK, json=body, headers=headers, timeout=CLOSE_WAIT_S)

        answers: list[httpx.Response] = []
        workers = [
            threading.Thread(target=lambda v=v: answers.append(unlock(v)))
            for v in ("a@example.com", "b@example.com")
        ]
        for worker in workers:
            worker.start()
        try:
            for _ in workers:
                assert entered.acquire(timeout=CLOSE_WAIT_S)
            refused = unlock("c@example.com")
        finally:
            release.set()
            for worker in workers:
                worker.join(CLOSE_WAIT_S)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["type"] == PROBLEM + "too-many-requests"
        assert [a.status_code for a in answers] == [200, 200]
        assert unlock("c@example.com").status_code == 200  # served once the others ended


def test_the_cli_defaults_are_the_servers() -> None:
    server = ServerLimits()
    assert (
        LIMITS.max_header_bytes,
        LIMITS.header_timeout_s,
        LIMITS.body_timeout_s,
        LIMITS.keep_alive_s,
        LIMITS.max_connections,
        LIMITS.max_in_flight,
    ) == (
        server.max_header_bytes,
        server.header_timeout_s,
        server.body_timeout_s,
        server.keep_alive_s,
        server.max_connections,
        server.max_in_flight,
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"max_header_bytes": 10},
        {"header_timeout_s": 0},
        {"max_connections": 0},
        {"max_in_flight": True},
    ],
)
def test_limits_out_of_range_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be a number"):
        ServerLimits(**bad)  # type: ignore[arg-type]


# -- smaller findings ----------------------------------------------------------------------


def test_a_body_that_is_not_utf8_is_refused_and_nothing_charged() -> None:
    body = '{"contacts": [{"channel": "email", "value": "a@example.com"}]}'
    with api_world() as world, world.client_for(ACME) as acme:
        assert acme.post(f"/v1/accounts/{ACME}/subscription", json={"plan": "boost"})
        utf16 = acme.post(
            UNLOCK, content=body.encode("utf-16"), headers={"Content-Type": "application/json"}
        )
        assert utf16.status_code == 400
        assert utf16.json()["type"] == PROBLEM + "malformed-json"
        for charset in ("utf-16", "latin-1", '"UTF-32"'):
            named = acme.post(
                UNLOCK,
                content=body.encode(),
                headers={"Content-Type": f"application/json; charset={charset}"},
            )
            assert named.status_code == 415, charset
            assert named.json()["type"] == PROBLEM + "unsupported-media-type"
        assert world.verifier.calls == []
        utf8 = acme.post(
            UNLOCK,
            content=body.encode(),
            headers={"Content-Type": "application/json; charset=UTF-8"},
        )
        assert utf8.status_code == 200


def test_a_trailing_slash_is_404_never_a_redirect_to_the_named_host() -> None:
    with api_world() as world, world.client_for(ACME) as acme:
        answer = acme.get(f"/v1/accounts/{ACME}/balance/", headers={"Host": "evil.example"})
    assert answer.status_code == 404
    assert "location" not in answer.headers
    assert answer.json()["type"] == PROBLEM + "not-found"


def test_the_access_log_never_holds_a_query_strings_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    access = logging.getLogger("uvicorn.access")
    with bounded_server(FAST, access_log=True) as (port, _):
        access.addHandler(caplog.handler)  # uvicorn's loggers do not propagate to root
        try:
            with caplog.at_level(logging.INFO, logger="uvicorn.access"):
                for name in ("key", "api_key", "token"):
                    httpx.get(f"http://127.0.0.1:{port}/openapi.json?{name}=s3cr3t-{name}&x=1")
        finally:
            access.removeHandler(caplog.handler)
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert len(lines) == 3
    assert not any("s3cr3t" in line for line in lines)
    assert "/openapi.json?api_key=<redacted>&x=<redacted>" in lines[1]


def test_a_client_that_leaves_mid_body_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), bounded_server(FAST) as (port, token):
        with connect(port) as sock:
            sock.sendall(
                f"POST {UNLOCK} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                '{"contacts": ['.encode()
            )
            time.sleep(0.05)  # the app is reading the body when the client leaves
        deadline = time.monotonic() + CLOSE_WAIT_S
        while not any(r.name.startswith("adapters.api") for r in caplog.records):
            assert time.monotonic() < deadline, "the app never saw the client leave"
            time.sleep(0.02)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_files_are_passed_to_uvicorn(certificate: tuple[Path, Path]) -> None:
    cert, _ = certificate
    with bounded_server(FAST, ssl_files=certificate) as (port, _):
        context = ssl.create_default_context(cafile=str(cert))
        answer = httpx.get(f"https://127.0.0.1:{port}/openapi.json", verify=context)
        assert answer.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"http://127.0.0.1:{port}/openapi.json")  # no clear text


# -- credits serve -------------------------------------------------------------------------

CREDITS = Path(sys.executable).parent / "credits"


@contextmanager
def credits_serve(tmp_path: Path, *options: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """`credits serve --demo-verifier` on a new database in tmp_path, until it listens."""
    created = subprocess.run(
        [str(CREDITS), "keys", "create", ACME], cwd=tmp_path, capture_output=True, check=False
    )
    assert created.returncode == 0, created.stderr
    port = free_port()
    command = [str(CREDITS), "serve", "--demo-verifier", "--port", str(port), *options]
    server = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_listening(port, server)
        yield port, server
    finally:
        server.terminate()
        server.wait(CLOSE_WAIT_S)


def test_serve_beyond_the_loopback_without_tls_warns(tmp_path: Path) -> None:
    with credits_serve(tmp_path, "--host", "0.0.0.0") as (_, server):
        pass
    _, stderr = server.communicate()
    assert "warning: serving on 0.0.0.0 without TLS" in stderr


def test_serve_passes_the_tls_files_to_uvicorn_and_then_does_not_warn(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    tls = ("--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    with credits_serve(tmp_path, *tls, "--max-in-flight", "3") as (port, server):
        context = ssl.create_default_context(cafile=str(cert))
        answer = httpx.get(f"https://127.0.0.1:{port}/openapi.json", verify=context)
        assert answer.status_code == 200
    stdout, stderr = server.communicate()
    assert f"https://127.0.0.1:{port}" in stdout
    assert "warning" not in stderr


def test_serve_refuses_a_certificate_without_its_key(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(CREDITS), "serve", "--demo-verifier", "--ssl-certfile", "cert.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "give both --ssl-certfile and --ssl-keyfile" in done.stderr
