"""Hypothesis strategies for the credit domain, for our tests and for third parties."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import attrs
from hypothesis import strategies as st

from credits_domain.contact import Channel, Contact
from credits_domain.plans import PLANS, Credits, Plan, Price
from credits_domain.testing.model import RawContact
from credits_domain.verdict import Verdict

_LOCAL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12)
_DOMAINS = st.sampled_from(["corp.com", "example.org", "acme.io", "mail.globex.net"])


def raw_emails() -> st.SearchStrategy[str]:
    """Email addresses as a user might type them: any case, stray outer spaces (R12)."""

    def dress(local: str, domain: str, upper: list[bool], pad: tuple[str, str]) -> str:
        text = f"{local}@{domain}"
        cased = "".join(ch.upper() if up else ch for ch, up in zip(text, upper, strict=False))
        return pad[0] + cased + text[len(cased) :] + pad[1]

    return st.builds(
        dress,
        _LOCAL.filter(lambda s: s[0] not in "._-"),
        _DOMAINS,
        st.lists(st.booleans(), max_size=30),
        st.tuples(st.sampled_from(["", " ", "\t"]), st.sampled_from(["", " ", "  "])),
    )


def raw_mobiles() -> st.SearchStrategy[str]:
    """E.164 numbers, with whitespace around some (R12): what the core accepts; other
    spellings are parsed at the boundary (adapters.phones)."""
    return st.builds(
        lambda digits, pad: f"{pad[0]}+{digits}{pad[1]}",
        st.from_regex(r"[1-9][0-9]{6,14}", fullmatch=True),
        st.tuples(st.sampled_from(["", " ", "\t"]), st.sampled_from(["", " ", "\n"])),
    )


def emails() -> st.SearchStrategy[Contact]:
    return raw_emails().map(Contact.email)


def mobiles() -> st.SearchStrategy[Contact]:
    return raw_mobiles().map(Contact.mobile)


def contacts(channel: Channel | None = None) -> st.SearchStrategy[Contact]:
    """Any contact, or contacts of one channel."""
    if channel is Channel.EMAIL:
        return emails()
    if channel is Channel.MOBILE:
        return mobiles()
    return st.one_of(emails(), mobiles())


def contact_universe(size: int = 8) -> list[Contact]:
    """A small fixed set of contacts: drawing requests from it forces duplicates (R12)."""
    emails_ = [Contact.email(f"person{i}@corp.com") for i in range(size - size // 3)]
    mobiles_ = [Contact.mobile(f"+4420794600{i:02d}") for i in range(size // 3)]
    return emails_ + mobiles_


def requests(universe: Sequence[Contact], max_size: int = 8) -> st.SearchStrategy[list[Contact]]:
    """A charging request's contacts, drawn with repetition from `universe`."""
    return st.lists(st.sampled_from(list(universe)), min_size=0, max_size=max_size)


def verdicts() -> st.SearchStrategy[Verdict]:
    return st.sampled_from(list(Verdict))


def plans(*, max_allowance: int = 50, name: str | None = None) -> st.SearchStrategy[Plan]:
    """Plans as data (R2, R3, R5): small allowances, mobile priced in either pool, optional cap."""
    price_of_mobile = st.one_of(
        st.just(Price(pool=Channel.MOBILE)),
        st.builds(lambda n: Price(pool=Channel.EMAIL, credits=n), st.integers(1, 15)),
    )
    credits = st.builds(
        Credits, email=st.integers(0, max_allowance), mobile=st.integers(0, max_allowance)
    )
    return st.builds(
        lambda n, monthly, mobile_price, cap: Plan(
            name=name or f"plan-{n}",
            monthly=monthly,
            prices={Channel.EMAIL: Price(pool=Channel.EMAIL), Channel.MOBILE: mobile_price},
            rollover_cap=cap,
        ),
        st.integers(0, 999),
        credits,
        price_of_mobile,
        st.none() | credits,
    )


def shipped_plans() -> st.SearchStrategy[Plan]:
    return st.sampled_from(list(PLANS.values()))


def instants(
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC), span: timedelta = timedelta(days=3 * 365)
) -> st.SearchStrategy[datetime]:
    """Timezone-aware UTC instants, with day-of-month 28..31 over-represented (R4)."""
    month_ends = st.builds(
        lambda y, m, d, s: datetime(y, m, 1, tzinfo=UTC) + timedelta(days=d - 1, seconds=s),
        st.integers(start.year, start.year + 2),
        st.integers(1, 12),
        st.integers(28, 31),
        st.integers(0, 86_399),
    ).filter(lambda at: at.day >= 28)
    spread = st.integers(0, int(span.total_seconds())).map(lambda s: start + timedelta(seconds=s))
    return st.one_of(month_ends, spread)


@attrs.frozen(kw_only=True)
class Step:
    """One operation of a generated scenario (for property tests without the state machine)."""

    kind: str  # "unlock" | "export" | "enrich" | "advance_days"
    contacts: tuple[Contact, ...] = ()
    days: int = 0


def scenarios(universe: Sequence[Contact], *, max_steps: int = 20) -> st.SearchStrategy[list[Step]]:
    """Sequences of charging operations and clock advances."""
    charge = st.builds(
        lambda kind, cs: Step(kind=kind, contacts=tuple(cs)),
        st.sampled_from(["unlock", "export", "enrich"]),
        requests(universe),
    )
    advance = st.builds(lambda d: Step(kind="advance_days", days=d), st.integers(1, 45))
    return st.lists(st.one_of(charge, charge, advance), max_size=max_steps)


def spellings(contact: Contact) -> st.SearchStrategy[RawContact]:
    """A datum as callers type it (R12): an email in any case with stray outer spaces or
    tabs; a mobile number in E.164, as the core takes it."""
    if contact.channel is Channel.MOBILE:
        return st.just(RawContact(Channel.MOBILE, contact.value))

    def dress(upper: list[bool], pad: tuple[str, str]) -> RawContact:
        cased = "".join(
            ch.upper() if up else ch for ch, up in zip(contact.value, upper, strict=False)
        )
        return RawContact(Channel.EMAIL, pad[0] + cased + contact.value[len(cased) :] + pad[1])

    return st.builds(
        dress,
        st.lists(st.booleans(), max_size=len(contact.value)),
        st.tuples(st.sampled_from(["", "", " ", "\t"]), st.sampled_from(["", "", " ", "  "])),
    )


def raw_requests(
    universe: Sequence[Contact], max_size: int = 8
) -> st.SearchStrategy[list[RawContact]]:
    """A request's data as typed, drawn with repetition from `universe`, each spelled anew:
    the same datum twice in one request may be spelled two ways (R12)."""
    return st.lists(
        st.sampled_from(list(universe)).flatmap(spellings), min_size=0, max_size=max_size
    )
