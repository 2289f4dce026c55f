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
    """E.164 exactly: `+`, then 7 to 15 digits, the first not 0 (R12); whitespace around
    it is trimmed, as around an email, and nothing else is changed.

    Any other spelling is refused, not guessed at: "+44 7700 900123" (spaces, dashes,
    dots, parentheses) and "+44 (0) 7700 900123" (a trunk prefix, which dropping the
    punctuation would turn into another number) are parsed into E.164 at the boundary
    (`adapters.phones.parse_phone`), as national formats are, by an adapter that knows
    the caller's region.
    """
    if not isinstance(raw, str):
        raise MalformedContact("mobile", raw, "not a string")
    value = raw.strip()
    if not _E164.match(value):
        raise MalformedContact(
            "mobile",
            raw,
            "expected E.164 exactly: '+', then 7 to 15 digits, the first not 0, with "
            "nothing between them; parse other notations at the boundary "
            "(adapters.phones.parse_phone)",
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
