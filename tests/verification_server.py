"""A real verification service on 127.0.0.1 speaking our protocol, scripted by tests.

Used by tests/test_http_verifier.py (in a thread) and bench/bench_verifier.py (in a child
process: `python tests/verification_server.py --delay-s 0.05` prints "PORT <n>", then
serves until stdin closes). It is a real HTTP/1.1 server (stdlib ThreadingHTTPServer,
keep-alive), not a mocked transport: the client's sockets, timeouts and pool are real.

What it answers is set per test: `default` is the reply to every request, and `script()`
queues replies for the next requests. A reply is one of: an answer (per value, see
`answer_for`), a status (500, 503 with Retry-After, ...), garbage, a wrong number of
results, or nothing at all (read the request, then hang until the server stops). Any
reply may be delayed. It counts requests and the largest number in flight at once.
"""

from __future__ import annotations

import argparse
import collections
import enum
import json
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import attrs

# A hanging reply ends at the latest after this long, so a forgotten server cannot
# keep a thread forever; stop() ends it at once.
HANG_LIMIT_S = 30.0
MAX_REQUEST_BYTES = 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The stdlib's backlog of 5 would drop a burst of new connections (the client then
    # waits a SYN retransmit, about a second); a real service listens with a deep queue.
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gives up (timeout, unread error body) resets its keep-alive
        # connection: normal for this server's clients, so not worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class Kind(enum.Enum):
    ANSWER = "answer"
    STATUS = "status"
    GARBAGE = "garbage"
    WRONG_LENGTH = "wrong_length"
    HANG = "hang"


@attrs.frozen(kw_only=True)
class Reply:
    kind: Kind = Kind.ANSWER
    status: int = 200
    delay_s: float = 0.0
    retry_after: str | None = None


ANSWER = Reply()
GARBAGE = Reply(kind=Kind.GARBAGE)
WRONG_LENGTH = Reply(kind=Kind.WRONG_LENGTH)
HANG = Reply(kind=Kind.HANG)


def status(code: int, *, retry_after: str | None = None) -> Reply:
    return Reply(kind=Kind.STATUS, status=code, retry_after=retry_after)


def native_email_answer(value: str) -> dict[str, Any]:
    """Our protocol, decided by the local part's prefix: invalid*, catchall*,
    disposable*, unknown*, nosecond* (second_provider missing); else all checks pass."""
    local = value.split("@", 1)[0]
    checks = {"syntax": "pass", "mailbox": "pass", "second_provider": "pass"}
    if local.startswith("invalid"):
        checks["mailbox"] = "fail"
    if local.startswith("unknown"):
        checks["mailbox"] = "unknown"
    if local.startswith("nosecond"):
        del checks["second_provider"]
    return {
        "checks": checks,
        "catch_all": local.startswith("catchall"),
        "disposable": local.startswith("disposable"),
    }


class VerificationServer:
    """Start with `with VerificationServer() as server:`; `server.url` is its base URL."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._queue: collections.deque[Reply] = collections.deque()
        self.default: Reply = ANSWER
        # Per-value answers (the value is echoed unless the answer has its own echo).
        self.answers: dict[str, dict[str, Any]] = {}
        self._requests = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self.bodies: list[Any] = []
        self._httpd = _Server(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def script(self, *replies: Reply) -> None:
        """The next requests get these replies, in order; later ones get `default`."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    def answer_for(self, item: Mapping[str, Any]) -> dict[str, Any]:
        value = str(item.get("value"))
        answer = self.answers.get(value)
        if answer is None:
            if item.get("channel") == "mobile":
                answer = {"line_type": "mobile", "reachable": True}
            else:
                answer = native_email_answer(value)
        if not ({"value", "address", "email"} & answer.keys()):
            answer = {"value": value, **answer}
        return answer

    # -- called by the handler ---------------------------------------------------------

    def _enter(self) -> Reply:
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            return self._queue.popleft() if self._queue else self.default

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _record(self, body: Any) -> None:
        with self._lock:
            self.bodies.append(body)


def _make_handler(server: VerificationServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real service would
        # Headers and body go out in two writes; with Nagle on, the body waits for the
        # client's delayed ACK (~40 ms a request). Real servers set TCP_NODELAY too.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read counters, not logs."""

        def _send(self, code: int, body: bytes, headers: Mapping[str, str] = {}) -> None:
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            reply = server._enter()
            try:
                length = min(int(self.headers.get("content-length", "0")), MAX_REQUEST_BYTES)
                request = json.loads(self.rfile.read(length) or b"null")
                server._record(request)
                if reply.delay_s and server._stop.wait(reply.delay_s):
                    return
                if reply.kind is Kind.HANG:
                    server._stop.wait(HANG_LIMIT_S)
                    self.close_connection = True
                    return
                if reply.kind is Kind.STATUS:
                    headers = (
                        {} if reply.retry_after is None else {"retry-after": reply.retry_after}
                    )
                    self._send(reply.status, b'{"error": "scripted"}', headers)
                    return
                if reply.kind is Kind.GARBAGE:
                    self._send(200, b'{"results": [{"value": "oops"')
                    return
                items = request.get("items", []) if isinstance(request, dict) else []
                results = [server.answer_for(item) for item in items]
                if reply.kind is Kind.WRONG_LENGTH:
                    results = results[:-1]
                self._send(200, json.dumps({"results": results}).encode())
            finally:
                server._leave()

    return Handler


@contextmanager
def refused_url() -> Iterator[str]:
    """A URL on 127.0.0.1 where nothing listens: a bound socket that never listens keeps
    the port reserved (no other test can take it) and refuses every connection."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def main() -> None:
    """Serve answers delayed by --delay-s until stdin closes (for benchmarks)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay-s", type=float, default=0.05)
    args = parser.parse_args()
    with VerificationServer() as server:
        server.default = Reply(delay_s=args.delay_s)
        print(f"PORT {server.port}", flush=True)
        sys.stdin.read()  # the parent closes our stdin to stop us


if __name__ == "__main__":
    main()
