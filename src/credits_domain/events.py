"""Events (R24): what a customer's systems care about, written with the change it reports.

An event is stored in the same unit of work as the state change it describes (an outbox):
there is no event without its change and no change without its event. Events of one
account are numbered by `seq`, 1, 2, 3, ... with no gaps, in the order of the changes;
webhook delivery (adapters.webhooks) sends them in that order, at least once, and names
each by its `id`, the same on every retry.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

import attrs

from credits_domain.limits import check_account
from credits_domain.periods import require_utc


class EventType(enum.Enum):
    """The kinds of event (R24); the value is the `type` a webhook carries."""

    __hash__ = object.__hash__  # singletons compared by identity

    CREDITS_LOW = "credits.low"  # a pool's available balance fell to its threshold or below
    CREDITS_DEPLETED = "credits.depleted"  # a pool's available balance reached zero
    PERIOD_RENEWED = "period.renewed"
    PLAN_CHANGED = "plan.changed"
    SUBSCRIPTION_LAPSED = "subscription.lapsed"
    GRANT_EXPIRED = "grant.expired"
    CHARGE_REFUNDED = "charge.refunded"
    GUARANTEE_BREACHED = "guarantee.breached"


def _positive_seq(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{attribute.name} must be an int of at least 1, got {value!r}")


def _utc(instance: object, attribute: attrs.Attribute[Any], value: datetime) -> None:
    require_utc(value, attribute.name)


def _frozen_data(data: Mapping[str, object]) -> Mapping[str, object]:
    return MappingProxyType(dict(data))


@attrs.frozen(kw_only=True)
class Event:
    """One event of one account: `seq` orders an account's events; `data` is JSON-ready
    (strings, ints, bools, None, and lists or mappings of them)."""

    account: str = attrs.field(validator=lambda _i, _a, v: check_account(v))
    seq: int = attrs.field(validator=_positive_seq)
    type: EventType = attrs.field(validator=attrs.validators.instance_of(EventType))
    at: datetime = attrs.field(validator=_utc)
    data: Mapping[str, object] = attrs.field(converter=_frozen_data, factory=dict)

    @property
    def id(self) -> str:
        """The same on every retry and in every store, and safe in an HTTP header whatever
        the account id holds: derived from the account and the seq alone."""
        digest = hashlib.sha256(f"{self.account}\0{self.seq}".encode()).hexdigest()
        return f"evt_{digest[:32]}"
