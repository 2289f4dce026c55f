"""The Clock port: the machine's clock, and a clock that moves only when told to."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from credits_domain.periods import require_utc


class ManualClock:
    """A clock that moves only when told to; for tests and replays."""

    def __init__(self, start: datetime) -> None:
        self._now = require_utc(start, "start")
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError(f"a clock never goes back; got {delta}")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, at: datetime) -> None:
        at = require_utc(at, "at")
        with self._lock:
            if at < self._now:
                raise ValueError(f"a clock never goes back; {at} is before {self._now}")
            self._now = at


class SystemClock:
    """The machine's clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)
