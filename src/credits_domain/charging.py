"""The outcome of a charging request, and the pure settlement rule of R10, R12, R15."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping, Sequence

import attrs

from credits_domain.contact import Channel, Contact
from credits_domain.ledger import Operation
from credits_domain.plans import Credits, Price
from credits_domain.policy import ChargePolicy
from credits_domain.verdict import Verdict


class Outcome(enum.Enum):
    __hash__ = object.__hash__  # singletons compared by identity

    CHARGED = "charged"
    ALREADY_OWNED = "already_owned"  # R12: free
    DUPLICATE_IN_REQUEST = "duplicate_in_request"  # R12: free, charged once at its first place
    NOT_VERIFIED = "not_verified"  # R10: free, with the verdict
    INSUFFICIENT_CREDITS = "insufficient_credits"  # R15: free, not revealed, not owned


@attrs.frozen(kw_only=True)
class ItemResult:
    """What happened to one contact of a request, in request order."""

    contact: Contact
    outcome: Outcome
    verdict: Verdict | None = None  # None when it was not (or need not be) verified
    pool: Channel | None = None  # the pool charged, when CHARGED
    credits: int = 0  # credits charged, when CHARGED

    @property
    def revealed(self) -> bool:
        """May the datum be handed out as verified? (R10, R15)"""
        return self.outcome in (Outcome.CHARGED, Outcome.ALREADY_OWNED)


@attrs.frozen(kw_only=True)
class ChargeResult:
    """The answer to unlock/export/enrich: one item per contact, in order."""

    operation: Operation
    items: tuple[ItemResult, ...]
    idempotency_key: str | None = None
    replayed: bool = False  # True when an idempotent repeat returned the stored result

    def charged(self, pool: Channel) -> int:
        """Credits taken from `pool` by this request."""
        return sum(item.credits for item in self.items if item.pool is pool)

    @property
    def charged_credits(self) -> Credits:
        return Credits(email=self.charged(Channel.EMAIL), mobile=self.charged(Channel.MOBILE))

    def count(self, outcome: Outcome) -> int:
        return sum(1 for item in self.items if item.outcome is outcome)


def fingerprint(operation: Operation, contacts: Sequence[Contact], destination: str | None) -> str:
    """A stable digest of a request's payload, for R17 (operation, data, destination)."""
    digest = hashlib.sha256()
    digest.update(f"{operation.value}\x1f{destination or ''}\x1e".encode())
    for contact in contacts:
        digest.update(f"{contact.channel.value}\x1f{contact.value}\x1e".encode())
    return digest.hexdigest()


@attrs.frozen(kw_only=True)
class Candidate:
    """A contact of a request that the account does not own yet, with its price."""

    contact: Contact
    price: Price


@attrs.frozen(kw_only=True)
class Settlement:
    """Decision for each candidate so far, and which still need a verdict to decide."""

    decided: Mapping[Contact, Outcome]
    to_verify: tuple[Contact, ...]

    @property
    def complete(self) -> bool:
        return not self.to_verify


def settle(
    candidates: Sequence[Candidate],
    verdicts: Mapping[Contact, Verdict],
    owned: Iterable[Contact],
    capacity: Credits,
    policy: ChargePolicy,
) -> Settlement:
    """Decide candidates in request order against the credits held for the request (R15).

    Walks the request in order with what is left of the hold in each pool. A candidate
    whose price fits what is left is charged if its verdict is billable and free with
    NOT_VERIFIED otherwise (R10); one whose price does not fit is INSUFFICIENT_CREDITS
    (R15), even if an earlier round happened to verify it. A candidate not
    verified yet is sent for verification if its price fits what is left, counting the
    candidates before it that are still being verified as if they will be charged. A
    candidate that does not fit is refused for lack of credits only once every candidate
    before it in its pool is decided; otherwise it waits for the next round, where the
    credits of data that failed verification serve it.
    """
    owned_set = owned if isinstance(owned, (set, frozenset)) else set(owned)
    left = {pool: capacity.of(pool) for pool in Channel}
    waiting = dict.fromkeys(Channel, False)
    decided: dict[Contact, Outcome] = {}
    to_verify: list[Contact] = []
    for candidate in candidates:
        contact, pool, cost = candidate.contact, candidate.price.pool, candidate.price.credits
        if contact in owned_set:
            decided[contact] = Outcome.ALREADY_OWNED
            continue
        verdict = verdicts.get(contact)
        if cost <= left[pool]:
            if verdict is None:
                left[pool] -= cost
                to_verify.append(contact)
                waiting[pool] = True
            elif policy.billable(verdict):
                left[pool] -= cost
                decided[contact] = Outcome.CHARGED
            else:
                decided[contact] = Outcome.NOT_VERIFIED
        elif not waiting[pool]:
            # Beyond the balance, whatever its verdict, if it was verified early (R15).
            decided[contact] = Outcome.INSUFFICIENT_CREDITS
    return Settlement(decided=decided, to_verify=tuple(to_verify))
