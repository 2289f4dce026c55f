"""Channels and contacts, with the canonical form that R12 deduplicates on."""

from __future__ import annotations

import enum
import re
from typing import Any

import attrs

from credits_domain.errors import MalformedContact


class Channel(enum.Enum):
    """The two pools of an account (R1); a contact datum belongs to one channel."""

    EMAIL = "email"
    MOBILE = "mobile"

    # Members are singletons compared by identity: the C-level identity hash is correct
    # and avoids Enum.__hash__'s Python call on every dict lookup of a Contact.
    __hash__ = object.__hash__


_EMAIL = re.compile(
    r"^[^@\s]{1,64}@(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9-]{2,63}$"
)
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_PHONE_NOISE = str.maketrans("", "", " -.()\t")


def canonical_email(raw: object) -> str:
    """Trim and lower-case (R12); refuse anything that is not one address."""
    if not isinstance(raw, str):
        raise MalformedContact("email", raw, "not a string")
    value = raw.strip().lower()
    if not value:
        raise MalformedContact("email", raw, "empty")
    if not value.isprintable():
        raise MalformedContact("email", raw, "contains control characters")
    if not _EMAIL.match(value):
        raise MalformedContact("email", raw, "expected local@domain.tld")
    return value


def canonical_mobile(raw: object) -> str:
    """E.164: `+` and 7 to 15 digits; spaces, dashes, dots and parentheses are dropped.

    National formats ("020 7946 0958") are parsed into E.164 at the boundary, by an
    adapter that knows the caller's region; the core accepts only international form.
    """
    if not isinstance(raw, str):
        raise MalformedContact("mobile", raw, "not a string")
    value = raw.strip().translate(_PHONE_NOISE)
    if not _E164.match(value):
        raise MalformedContact(
            "mobile", raw, "expected E.164: '+', then 7 to 15 digits, the first not 0"
        )
    return value


_CANONICAL = {Channel.EMAIL: canonical_email, Channel.MOBILE: canonical_mobile}


def _check_canonical(instance: Contact, attribute: attrs.Attribute[Any], value: str) -> None:
    if _CANONICAL[instance.channel](value) != value:
        raise MalformedContact(
            instance.channel.value, value, "not canonical; build it with Contact.email()/mobile()"
        )


@attrs.frozen(order=True, cache_hash=True)
class Contact:
    """One datum in canonical form. Equal data compare and hash equal (R12).

    Build it with `Contact.email(raw)`, `Contact.mobile(raw)` or `Contact.of(channel, raw)`;
    the plain constructor accepts only values that are already canonical.
    """

    channel: Channel = attrs.field(validator=attrs.validators.instance_of(Channel))
    value: str = attrs.field(validator=_check_canonical)

    @classmethod
    def email(cls, raw: str) -> Contact:
        return cls(Channel.EMAIL, canonical_email(raw))

    @classmethod
    def mobile(cls, raw: str) -> Contact:
        return cls(Channel.MOBILE, canonical_mobile(raw))

    @classmethod
    def of(cls, channel: Channel, raw: str) -> Contact:
        return cls(channel, _CANONICAL[channel](raw))

    def __str__(self) -> str:
        return f"{self.channel.value}:{self.value}"
