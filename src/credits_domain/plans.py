"""Plans and the shipped catalogue (R2, R3, R5). A catalogue is data: load your own."""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

import attrs

from credits_domain.contact import Channel
from credits_domain.errors import InvalidPlan, UnknownPlan

# One amount (an allowance, a price, a top-up) is at most a trillion credits, so that a
# balance stays far inside the 64-bit integers storage holds, whatever the renewals.
MAX_CREDITS = 10**12


def _non_negative_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_CREDITS:
        raise InvalidPlan(
            f"{attribute.name} must be a whole number from 0 to {MAX_CREDITS} (R1), got {value!r}"
        )


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_CREDITS:
        raise InvalidPlan(
            f"{attribute.name} must be a whole number from 1 to {MAX_CREDITS}, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class Credits:
    """A whole, non-negative number of credits in each pool (R1)."""

    email: int = attrs.field(default=0, validator=_non_negative_int)
    mobile: int = attrs.field(default=0, validator=_non_negative_int)

    def of(self, pool: Channel) -> int:
        return self.email if pool is Channel.EMAIL else self.mobile

    @classmethod
    def from_pools(cls, pools: Mapping[Channel, int]) -> Credits:
        return cls(email=pools.get(Channel.EMAIL, 0), mobile=pools.get(Channel.MOBILE, 0))


@attrs.frozen(kw_only=True)
class Price:
    """What one verified datum costs, and which pool pays (R2)."""

    pool: Channel = attrs.field(validator=attrs.validators.instance_of(Channel))
    credits: int = attrs.field(default=1, validator=_positive_int)


def _default_prices() -> Mapping[Channel, Price]:
    return types.MappingProxyType(
        {Channel.EMAIL: Price(pool=Channel.EMAIL), Channel.MOBILE: Price(pool=Channel.MOBILE)}
    )


def _frozen_prices(value: Mapping[Channel, Price]) -> Mapping[Channel, Price]:
    return types.MappingProxyType(dict(value))


def _check_prices(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Mapping) or set(value) != set(Channel):
        raise InvalidPlan("prices must give one Price for each Channel (R2)")
    for price in value.values():
        if not isinstance(price, Price):
            raise InvalidPlan(f"prices must be Price values, got {price!r}")


def _check_name(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise InvalidPlan(f"a plan name must be a non-empty trimmed string, got {value!r}")


@attrs.frozen(kw_only=True)
class Plan:
    """A plan: monthly allowance per pool (R3), price list (R2), optional rollover cap (R5).

    >>> Plan(name="mobile-heavy", monthly=Credits(email=20_000),
    ...      prices={Channel.EMAIL: Price(pool=Channel.EMAIL),
    ...              Channel.MOBILE: Price(pool=Channel.EMAIL, credits=15)}).name
    'mobile-heavy'
    """

    name: str = attrs.field(validator=_check_name)
    monthly: Credits = attrs.field(validator=attrs.validators.instance_of(Credits))
    prices: Mapping[Channel, Price] = attrs.field(
        factory=_default_prices, converter=_frozen_prices, validator=_check_prices
    )
    rollover_cap: Credits | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(Credits))
    )

    def price_of(self, channel: Channel) -> Price:
        return self.prices[channel]


def _shipped(name: str, email: int, mobile: int) -> Plan:
    return Plan(name=name, monthly=Credits(email=email, mobile=mobile))


# R3: boost's figures and all mobile figures are published; ignite's and power's email
# figures are derived as on boost, where mobile = floor(email / 15).
PLANS: Mapping[str, Plan] = types.MappingProxyType(
    {
        "ignite": _shipped("ignite", 5_000, 333),
        "boost": _shipped("boost", 12_000, 800),
        "power": _shipped("power", 30_000, 2_000),
    }
)


def resolve_plan(plan: str | Plan, catalogue: Mapping[str, Plan]) -> Plan:
    """A Plan as given, or the catalogue's plan of that name."""
    if isinstance(plan, Plan):
        return plan
    if isinstance(plan, str):
        found = catalogue.get(plan)
        if found is None:
            raise UnknownPlan(plan, list(catalogue))
        return found
    raise InvalidPlan(f"plan must be a plan name or a Plan, got {plan!r}")
