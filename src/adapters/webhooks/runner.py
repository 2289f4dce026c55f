"""`WebhookRunner`: delivery passes, one after another, in a background thread.

`credits serve` starts one beside the HTTP API: passes read the outbox and the endpoint
store on their own connections, so a slow or dead endpoint holds up only its own
deliveries, never a charge. Each pass is bounded (`DeliveryLimits`); the thread waits
`interval_s` between passes, and `stop()` ends it after the request in flight (at most
one `timeout_s`): a pass given the runner's `stopping` ends before its next request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

from adapters.webhooks.delivery import PassReport
from credits_domain import InvalidRequest

log = logging.getLogger("credits.webhooks")

MAX_INTERVAL_S: Final = 3_600.0


class WebhookRunner:
    """Runs `one_pass(after_id)` every `interval_s` seconds until stopped; a pass that
    covered its full quota of endpoints is followed at once by the next, from where it
    stopped, so that every due endpoint is reached in turn."""

    def __init__(
        self,
        one_pass: Callable[[str | None], PassReport],
        *,
        interval_s: float = 1.0,
        max_passes: int | None = None,
    ) -> None:
        if not 0 < interval_s <= MAX_INTERVAL_S:
            raise InvalidRequest(f"interval_s must be in (0, {MAX_INTERVAL_S}], got {interval_s}")
        self._one_pass = one_pass
        self._interval_s = interval_s
        self._max_passes = max_passes
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0
        self.delivered = 0
        self.failed = 0
        self.errors = 0

    def stopping(self) -> bool:
        """Whether `stop()` was called: a pass in progress ends before its next request."""
        return self._stopping.is_set()

    def start(self) -> None:
        if self._thread is not None:
            raise InvalidRequest("this runner was started already")
        self._thread = threading.Thread(target=self._run, name="credits-webhooks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        after_id: str | None = None
        while not self._stopping.is_set():
            if self._max_passes is not None and self.passes >= self._max_passes:
                return
            try:
                report = self._one_pass(after_id)
            except Exception:  # a database or a bug: logged, and the next pass tries again
                self.errors += 1
                log.exception("a webhook delivery pass failed")
                after_id = None
            else:
                self.delivered += report.delivered
                self.failed += report.failed
                after_id = report.last_endpoint_id
            self.passes += 1
            if after_id is None:
                self._stopping.wait(self._interval_s)

    def join(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the thread to end by itself (after `max_passes`)."""
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self._thread is None or not self._thread.is_alive()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Ask the thread to end and wait up to `timeout_s`; True once it has ended."""
        self._stopping.set()
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
