"""A small webhook receiver on 127.0.0.1, for `credits demo`: the stdlib HTTP server in a
thread, on an ephemeral port, that checks each request as a customer's receiver would
(Standard Webhooks: the HMAC-SHA256 of `id.timestamp.body` under the endpoint's secret,
and the timestamp within 5 minutes of the receiver's clock) and keeps what it got.

It is what a reader of the demo would write, not a server for production: one endpoint,
bodies of at most `MAX_BODY_BYTES`, at most `MAX_KEPT` requests kept, a bounded stop."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import attrs

from adapters.webhooks.endpoints import secret_key

MAX_BODY_BYTES = 64 * 1024
MAX_KEPT = 1_000
TOLERANCE_S = 5 * 60  # as the Standard Webhooks libraries check it
STOP_WAIT_S = 5.0


@attrs.frozen(kw_only=True)
class Got:
    """One request as the receiver saw it, after checking it."""

    webhook_id: str
    type: str
    seq: int
    account: str
    verified: bool  # the signature matched and the timestamp was fresh


def verify(secret: str, headers: dict[str, str], body: bytes, now_s: int) -> bool:
    """Does one of the request's `v1,` signatures match, with a fresh timestamp?"""
    msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not stamp.isdigit() or abs(int(stamp) - now_s) > TOLERANCE_S:
        return False
    signed = f"{msg_id}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(secret_key(secret), signed, hashlib.sha256).digest())
    offered = headers.get("webhook-signature", "").split()
    return any(
        hmac.compare_digest(part.removeprefix("v1,").encode(), expected)
        for part in offered[:10]  # a bounded list of signatures
        if part.startswith("v1,")
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class DemoReceiver:
    """`with DemoReceiver(now) as receiver:` ... `receiver.url`; set `receiver.secret` to
    the endpoint's signing secret once it is registered; `receiver.got` lists requests."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self.secret: str | None = None
        self.got: list[Got] = []
        self._now = now
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0") or 0)
                body = self.rfile.read(min(length, MAX_BODY_BYTES))
                headers = {k.lower(): v for k, v in self.headers.items()}
                ok = receiver._take(headers, body)
                self.send_response(204 if ok else 400)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the demo prints what arrived, not an access log

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _take(self, headers: dict[str, str], body: bytes) -> bool:
        secret = self.secret
        now_s = int(self._now().timestamp())
        verified = secret is not None and verify(secret, headers, body, now_s)
        try:
            payload = json.loads(body)
            data = payload["data"]
            got = Got(
                webhook_id=headers.get("webhook-id", ""),
                type=str(payload["type"]),
                seq=int(data["seq"]),
                account=str(data["account"]),
                verified=verified,
            )
        except (ValueError, KeyError, TypeError):
            return False
        with self._lock:
            if len(self.got) < MAX_KEPT:
                self.got.append(got)
        return verified

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(STOP_WAIT_S)
