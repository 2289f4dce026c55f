"""The Heartbeat port on a thread: renews a request's lease while its verifier call runs.

One short-lived daemon thread per verifier call that holds credits, at most `max_threads`
at once (beyond that, a call goes without a heartbeat, and its lease is renewed between
verifier calls only), each beating at most `max_beats` times. Leaving the block stops the
thread and waits for a beat under way.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

from credits_domain import InvalidRequest

log = logging.getLogger(__name__)


class ThreadHeartbeat:
    """ports.Heartbeat: a thread that calls `beat` every `interval_s` during a block."""

    def __init__(self, *, max_threads: int = 256, max_beats: int = 10_000) -> None:
        if max_threads < 1 or max_beats < 1:
            raise InvalidRequest(
                f"max_threads and max_beats must be >= 1, got {max_threads} and {max_beats}"
            )
        self._slots = threading.BoundedSemaphore(max_threads)
        self._max_beats = max_beats
        self.beats = 0  # how many beats ran, in all (for tests and operators)
        self._count = threading.Lock()

    @contextlib.contextmanager
    def beating(self, interval_s: float, beat: Callable[[], bool]) -> Iterator[None]:
        if not interval_s > 0:
            raise InvalidRequest(f"a heartbeat's interval must be > 0 s, got {interval_s!r}")
        if not self._slots.acquire(blocking=False):
            log.warning("heartbeat: every slot busy; this call's lease renews between calls")
            yield
            return
        stop = threading.Event()

        def run() -> None:
            try:
                for _ in range(self._max_beats):
                    if stop.wait(interval_s):
                        return
                    with self._count:
                        self.beats += 1
                    if not beat():
                        return
            except Exception:  # a bug in beat: no lease renewal, the request goes on
                log.exception("heartbeat: a beat failed; the lease is no longer renewed")

        thread = threading.Thread(target=run, name="credits-heartbeat", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # the machine's thread limit: go on without a heartbeat
            self._slots.release()
            log.warning("heartbeat: no thread to start; this call's lease renews between calls")
            yield
            return
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self._slots.release()
