"""Monthly billing periods from an anchor instant (R4)."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

import attrs

from credits_domain.errors import InvalidRequest


def require_utc(at: datetime, what: str = "instant") -> datetime:
    """All instants are timezone-aware; they are normalised to UTC."""
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise InvalidRequest(f"{what} must be a timezone-aware datetime, got {at!r}")
    return at.astimezone(UTC)


def add_months(anchor: datetime, months: int) -> datetime:
    """The anchor's day of month, `months` later, clamped to that month's end (R4).

    Always counted from the anchor, never from the previous boundary, so that
    Jan 31 -> Feb 28/29 -> Mar 31.
    """
    month0 = anchor.month - 1 + months
    year = anchor.year + month0 // 12
    month = month0 % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


@attrs.frozen(kw_only=True)
class Period:
    """Billing period number `index` of a subscription: [start, end)."""

    index: int
    start: datetime
    end: datetime

    @classmethod
    def of(cls, anchor: datetime, index: int) -> Period:
        return cls(index=index, start=add_months(anchor, index), end=add_months(anchor, index + 1))

    @property
    def length_s(self) -> int:
        return int((self.end - self.start).total_seconds())
