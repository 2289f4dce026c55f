"""The published contract of test mode (`credits serve --test-mode`), defined once.

A sandbox is what a payment API's test mode is: accounts made on demand, each with a clock
of its own that the client moves, custom plans, and a verifier whose verdict is chosen by
magic contact values, like a payment sandbox's test card numbers. The server's test
verifier (`adapters.verifier.SandboxVerifier`) and the HTTP harness
(`credits_domain.testing.http`) both read the rule from here, and the README's table is
checked against it.

| contact                                   | verdict      |
|-------------------------------------------|--------------|
| an email at `invalid.example`             | `invalid`    |
| an email at `unknown.example`             | `unknown`    |
| an email at `catch-all.example`           | `catch_all`  |
| an email at `disposable.example`          | `disposable` |
| a mobile number ending in `0000`          | `invalid`    |
| a mobile number ending in `0001`          | `unknown`    |
| anything else                             | `valid`      |

Only `valid` is billable (R10), so the others are answered NOT_VERIFIED, free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from credits_domain.contact import Channel, Contact
from credits_domain.verdict import Verdict

MAGIC_EMAIL_DOMAINS: Final[Mapping[str, Verdict]] = {
    "invalid.example": Verdict.INVALID,
    "unknown.example": Verdict.UNKNOWN,
    "catch-all.example": Verdict.CATCH_ALL,
    "disposable.example": Verdict.DISPOSABLE,
}
"""An email at one of these domains gets this verdict in test mode."""
MAGIC_MOBILE_ENDINGS: Final[Mapping[str, Verdict]] = {
    "0000": Verdict.INVALID,
    "0001": Verdict.UNKNOWN,
}
"""A mobile number (E.164) ending in these digits gets this verdict in test mode."""

MAX_SANDBOX_PLANS: Final = 8
"""Custom plans one sandbox account may bring (besides the shipped catalogue)."""
MAX_CLOCK_ADVANCE_S: Final = 366 * 86_400
"""Seconds a sandbox account's clock moves in one call at most: a year, so that one
request catches up at most thirteen renewals."""
DEFAULT_MAX_SANDBOX_ACCOUNTS: Final = 10_000
"""Sandbox accounts one test-mode server makes at most, unless told otherwise."""


def sandbox_verdict(contact: Contact) -> Verdict:
    """The verdict test mode gives `contact` (a canonical contact): see the table above."""
    if contact.channel is Channel.EMAIL:
        domain = contact.value.rpartition("@")[2]
        return MAGIC_EMAIL_DOMAINS.get(domain, Verdict.VALID)
    return MAGIC_MOBILE_ENDINGS.get(contact.value[-4:], Verdict.VALID)
