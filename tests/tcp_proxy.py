"""A TCP proxy on 127.0.0.1 that a test can cut, to make a real server unreachable
without touching it (the PostgreSQL server is shared by everyone's tests).

    with TcpProxy("127.0.0.1", 5432) as proxy:   # connect to 127.0.0.1:proxy.port
        ...
        proxy.cut()      # every connection through it dies; new ones are refused
        proxy.resume()   # listens again on the same port

`closed_port()` is the other way to be unreachable: a port bound but not listening, so
that a connection to it is refused at once, for as long as the context lasts.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self

ACCEPT_POLL_S = 0.05  # how often the accept loop looks whether it should stop
JOIN_TIMEOUT_S = 10.0


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stop = threading.Event()
        self.port = 0
        self.accepted = 0  # connections accepted so far, for tests to see traffic went through
        # A trap on what the client sends: the first message holding `_trap_bytes` is
        # dropped ("before": the server never sees it) or forwarded and then the
        # connection cut before any answer comes back ("after": the ambiguous commit).
        self._trap_bytes: bytes | None = None
        self._trap_when = "after"
        self.sprung = 0
        self.resume()

    def trap(self, needle: bytes, *, when: str) -> None:
        """Arm the trap for the next client message that holds `needle` (once)."""
        if when not in ("before", "after"):
            raise ValueError(f"when is 'before' or 'after', got {when!r}")
        with self._lock:
            self._trap_bytes, self._trap_when = needle, when

    def resume(self) -> None:
        """Listen (again, on the same port once it has one)."""
        assert self._listener is None, "the proxy is listening already"
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(ACCEPT_POLL_S)
        self.port = listener.getsockname()[1]
        self._stop = threading.Event()
        self._listener = listener
        self._acceptor = self._start(self._accept_loop, listener, self._stop)

    def cut(self) -> None:
        """Stop listening and kill every connection through the proxy, both ways."""
        listener, self._listener = self._listener, None
        self._stop.set()
        if listener is not None:
            # Until the accept loop lets go of it, the kernel keeps the port listening.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
            if self._acceptor is not None:
                self._acceptor.join(timeout=JOIN_TIMEOUT_S)
                assert not self._acceptor.is_alive(), "the proxy's accept loop did not stop"
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.cut()
        for thread in self._threads:
            thread.join(timeout=JOIN_TIMEOUT_S)
        alive = [thread.name for thread in self._threads if thread.is_alive()]
        assert not alive, f"proxy threads still running: {alive}"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self, target: Callable[..., None], *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def _accept_loop(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by cut()
            try:
                upstream = socket.create_connection(self._target, timeout=JOIN_TIMEOUT_S)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if stop.is_set():  # cut while connecting upstream
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
                self.accepted += 1
            self._start(self._pump, client, upstream, True)
            self._start(self._pump, upstream, client, False)

    def _sprung(self, data: bytes) -> str | None:
        with self._lock:
            if self._trap_bytes is None or self._trap_bytes not in data:
                return None
            self._trap_bytes = None
            self.sprung += 1
            return self._trap_when

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while data := source.recv(65536):
                when = self._sprung(data) if upstream else None
                if when is not None:
                    # The client hears nothing more, not even an answer to this message.
                    with contextlib.suppress(OSError):
                        source.shutdown(socket.SHUT_RDWR)
                    if when == "after":
                        # The server reads it to the end (and commits), then sees EOF.
                        sink.sendall(data)
                        sink.shutdown(socket.SHUT_WR)
                    else:
                        sink.shutdown(socket.SHUT_RDWR)  # never seen: rolled back
                    break
                sink.sendall(data)
        except OSError:
            pass  # cut, or the other side went away
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 where a connection is refused: bound by us, never listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()
