"""The API under uvicorn, bounded: what `credits serve` runs (`server_config`).

uvicorn (0.54, h11) leaves a few doors open that a server facing the network must close:
- a connection that sends nothing, or half a request line and then one byte a minute,
  is never closed: its keep-alive timer starts only after a first answer, and any byte
  cancels it. `_GuardedH11` closes a connection whose request headers are not complete
  `header_timeout_s` after it opened (or after the answer before), and one whose body is
  not complete `body_timeout_s` after its headers.
- headers above h11's buffer bound are answered 400 "Invalid HTTP request"; they are
  431 Request Header Fields Too Large here (h11's own hint), and the connection closed.
- `limit_concurrency` counts connections and requests together, and its 503 has no
  Retry-After. Here connections beyond `max_connections` get a 503 with Retry-After and
  are closed at once (before any byte is read, so an idle one costs nothing more), and
  requests beyond `max_in_flight` get the API's own 503 problem (`InFlightLimit`).
- the access log writes the query string, where a client may have put its API key
  (?api_key=...): `RedactQuery` writes the parameters' names, never their values.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Final

import attrs
import h11
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from adapters.api.problems import TOO_MANY_REQUESTS, problem_response

ACCESS_LOGGER: Final = "uvicorn.access"


def _at_least(minimum: float) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise ValueError(f"{attribute.name} must be a number >= {minimum}, got {value!r}")

    return check


@attrs.frozen(kw_only=True)
class ServerLimits:
    """The bounds of one server. The defaults suit one process behind a load balancer."""

    max_header_bytes: int = attrs.field(default=16_384, validator=_at_least(1024))
    header_timeout_s: float = attrs.field(default=10.0, validator=_at_least(0.01))
    body_timeout_s: float = attrs.field(default=30.0, validator=_at_least(0.01))
    keep_alive_s: int = attrs.field(default=5, validator=_at_least(1))
    max_connections: int = attrs.field(default=256, validator=_at_least(1))
    # Starlette's thread pool runs 40 requests at once: beyond that they would only wait,
    # each holding its body, where a client told to retry holds nothing.
    max_in_flight: int = attrs.field(default=40, validator=_at_least(1))


class InFlightLimit:
    """ASGI middleware: at most `limit` HTTP requests at once; beyond, 503 Retry-After."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0  # one event loop: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            logging.getLogger(__name__).warning("%d requests in flight: 503", self.in_flight)
            response = problem_response(
                TOO_MANY_REQUESTS,
                f"more than {self.limit} requests in flight; retry after the Retry-After seconds",
                instance=scope["path"],
            )
            await response(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class RedactQuery(logging.Filter):
    """Keeps query values out of uvicorn's access log: `/x?api_key=...` is logged
    `/x?api_key=<redacted>`; a key sent in the URL must not end up in log files."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, mark, query = args[2].partition("?")
            if mark:
                names = (part.partition("=")[0] for part in query.split("&"))
                redacted = "&".join(f"{name}=<redacted>" for name in names)
                record.args = (*args[:2], f"{path}?{redacted}", *args[3:])
        return True


_OVER_CONNECTIONS: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Retry-After: 1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 29\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"Too many connections; retry.\n"
)


class _Connection(h11.Connection):
    """h11's connection, remembering the status its last protocol error suggests."""

    error_status: int = 400

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error_status = exc.error_status_hint
            raise


def guarded_protocol(limits: ServerLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the limits of the module's docstring."""

    class _GuardedH11(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._guarded = _Connection(h11.SERVER, limits.max_header_bytes)
            self.conn = self._guarded
            self._refused = False
            self._deadline: asyncio.TimerHandle | None = None
            self._reading_body = False

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.transport.is_closing() or self.conn.their_state is h11.DONE:
                return
            # No answer is attempted: mid-request, h11 cannot frame one, and the client
            # that stalls is not reading it anyway.
            what = "body" if self._reading_body else "headers"
            self.logger.info("closed a connection whose request %s were too slow", what)
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= limits.max_connections:
                self.logger.warning("%d connections open: 503", len(self.connections))
                self._refused = True
                transport.write(_OVER_CONNECTIONS)
                transport.close()
                return
            super().connection_made(transport)
            self._arm(limits.header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if not self._refused:  # a refused one was never set up
                super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.SEND_BODY and not self._reading_body:
                self._reading_body = True
                self._arm(limits.body_timeout_s)
            elif state is h11.DONE:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                # The next request on this connection: its headers have the same bound.
                self._reading_body = False
                self._arm(limits.header_timeout_s)

        def send_400_response(self, msg: str) -> None:
            if self._guarded.error_status != 431:
                super().send_400_response(msg)
                return
            body = b"Request header fields too large.\n"
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            self.transport.close()

    return _GuardedH11


def server_config(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServerLimits | None = None,
    access_log: bool = True,
    log_level: str = "info",
    ssl_certfile: str | os.PathLike[str] | None = None,
    ssl_keyfile: str | os.PathLike[str] | None = None,
) -> uvicorn.Config:
    """uvicorn's configuration of `app` with `limits` (default: `ServerLimits()`)."""
    bounds = limits if limits is not None else ServerLimits()
    config = uvicorn.Config(
        InFlightLimit(app, bounds.max_in_flight),
        host=host,
        port=port,
        http=guarded_protocol(bounds),
        lifespan="off",
        access_log=access_log,
        log_level=log_level,
        timeout_keep_alive=bounds.keep_alive_s,
        h11_max_incomplete_event_size=bounds.max_header_bytes,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    access = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactQuery) for f in access.filters):
        access.addFilter(RedactQuery())
    return config
