"""Webhook test support: a real receiver on 127.0.0.1 for the delivery tests (the stdlib
ThreadingHTTPServer in a thread, answering what a test scripted, a status after an
optional delay, and keeping every request it got, so that a test can verify signatures
with the `standardwebhooks` package afterwards); and `ListSource`, an outbox in a list."""

from __future__ import annotations

import collections
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import attrs

from credits_domain.events import Event, EventType

MAX_BODY_BYTES = 1024 * 1024
MAX_DELAY_S = 30.0  # a delayed answer ends at the latest then; stop() ends it at once


@attrs.frozen(kw_only=True)
class Reply:
    """A status, after `delay_s`, or once `gate` is set (at most `MAX_DELAY_S`)."""

    status: int = 204
    delay_s: float = 0.0
    gate: threading.Event | None = attrs.field(default=None, eq=False)


@attrs.frozen(kw_only=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class Receiver:
    """`with Receiver() as receiver:` ... `receiver.url`; `script(...)` queues replies
    for the next requests (then `default`)."""

    def __init__(self, default: Reply = Reply()) -> None:
        self.default = default
        self._script: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(min(length, MAX_BODY_BYTES))
                reply = receiver._next(
                    Received(
                        path=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=body,
                    )
                )
                if reply.delay_s and receiver._stopping.wait(min(reply.delay_s, MAX_DELAY_S)):
                    return
                if reply.gate is not None:
                    for _ in range(int(MAX_DELAY_S / 0.05)):  # bounded; stop() ends it too
                        if reply.gate.wait(0.05) or receiver._stopping.is_set():
                            break
                self.send_response(reply.status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _next(self, received: Received) -> Reply:
        with self._lock:
            self.received.append(received)
            return self._script.popleft() if self._script else self.default

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks"

    def seqs(self) -> list[int]:
        import json

        with self._lock:
            return [json.loads(r.body)["data"]["seq"] for r in self.received]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class ListSource:
    """An outbox in memory (the `EventSource` port): `emit()` appends an event to an
    account's list, numbered 1, 2, 3, ..."""

    def __init__(self) -> None:
        self._events: dict[str, list[Event]] = {}
        self.calls = 0

    def emit(self, account: str, at: datetime, type: EventType = EventType.CREDITS_LOW) -> Event:
        events = self._events.setdefault(account, [])
        event = Event(
            account=account, seq=len(events) + 1, type=type, at=at, data={"pool": "email"}
        )
        events.append(event)
        return event

    def events(
        self, account: str, *, after_seq: int | None = None, limit: int = 100
    ) -> list[Event]:
        self.calls += 1
        after = 0 if after_seq is None else after_seq
        return [e for e in self._events.get(account, []) if e.seq > after][:limit]
