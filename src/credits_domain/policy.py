"""ChargePolicy: the knobs of charging that an operator may set (R10, R15, R16, R18)."""

from __future__ import annotations

from typing import Any

import attrs

from credits_domain.errors import InvalidRequest
from credits_domain.verdict import Verdict


def _positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest(f"{attribute.name} must be a whole number >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class ChargePolicy:
    """Which verdicts are billable and the limits of the charging pipeline.

    - R10: only VALID is billable; `bill_catch_all=True` also bills CATCH_ALL.
    - R15: items settle in request order and a pool never goes below zero; this is not
      a setting: there is no overdraft.
    - R16: a hold is placed for `lease_s`, and the worker renews that lease while it
      verifies (a heartbeat, ports.Heartbeat); a hold whose lease lapsed is released
      unsettled, and a retry with the request's idempotency key takes the request over.
      `hold_ttl_s` is the longest a hold lives in all, renewals included.
    - R18: `refund_window_s` is how long after a charge a bounce is refunded.
    - `max_batch` bounds the contacts of one request; `max_conflict_retries` bounds how
      often a transaction that lost a race is retried.
    """

    bill_catch_all: bool = False
    hold_ttl_s: int = attrs.field(default=15 * 60, validator=_positive)
    refund_window_s: int = attrs.field(default=30 * 24 * 3600, validator=_positive)
    max_batch: int = attrs.field(default=10_000, validator=_positive)
    max_conflict_retries: int = attrs.field(default=8, validator=_positive)
    lease_s: int = attrs.field(default=30, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.lease_s > self.hold_ttl_s:
            raise InvalidRequest(
                f"lease_s ({self.lease_s}) must not exceed hold_ttl_s ({self.hold_ttl_s}), "
                "the longest a hold lives in all; lower lease_s or raise hold_ttl_s"
            )

    def billable(self, verdict: Verdict) -> bool:
        return verdict is Verdict.VALID or (self.bill_catch_all and verdict is Verdict.CATCH_ALL)
