"""The DedupRegistry's record: which data an account owns, and at what price (R12, R18).

The registry itself is a port (`ports.DedupRegistry`): an account may own millions of
data, so the core asks only about the contacts of one request, never loads them all.
"""

from __future__ import annotations

from datetime import datetime

import attrs

from credits_domain.contact import Channel, Contact


@attrs.frozen(kw_only=True)
class Ownership:
    """The account paid for `contact` once (R12); a refunded datum stays owned (R18)."""

    account: str
    contact: Contact
    pool: Channel
    credits: int
    charged_at: datetime
    entry_seq: int
    refunded_at: datetime | None = None
    grant: int | None = None  # R23: the expiring grant that paid for it (R18 refunds to it)
    member: str | None = None  # R22: the team member who charged it
