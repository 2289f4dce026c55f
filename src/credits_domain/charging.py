"""A charging request, its outcome, and the pure rules that decide and assemble it
(R10, R12, R15, R17): `settle` decides each new datum, `charge_result` answers the request.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence

import attrs

from credits_domain.contact import Channel, Contact
from credits_domain.errors import invariant
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
class ChargeRequest:
    """One unlock, export or enrich request, as it travels through reserve, verify, settle.

    Build it with `ChargeRequest.of`, from contacts already checked by the caller.
    """

    account: str
    operation: Operation
    contacts: tuple[Contact, ...]  # as asked, in order, repeats included
    unique: tuple[Contact, ...]  # first occurrences, in order: they are the ones that pay (R12)
    destination: str | None = None
    idempotency_key: str | None = None
    fingerprint: str = ""  # R17's digest; empty without a key, as nothing compares it then

    @classmethod
    def of(
        cls,
        *,
        account: str,
        operation: Operation,
        contacts: Sequence[Contact],
        destination: str | None,
        idempotency_key: str | None,
    ) -> ChargeRequest:
        return cls(
            account=account,
            operation=operation,
            contacts=tuple(contacts),
            unique=tuple(dict.fromkeys(contacts)),
            destination=destination,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint(operation, contacts, destination) if idempotency_key else "",
        )


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

    def charged(self, candidates: Iterable[Candidate]) -> list[Candidate]:
        """The candidates decided CHARGED, in request order."""
        return [c for c in candidates if self.decided[c.contact] is Outcome.CHARGED]


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


def charge_result(
    request: ChargeRequest,
    candidates: Sequence[Candidate],
    settlement: Settlement,
    verdicts: Mapping[Contact, Verdict],
    owned: Collection[Contact],
) -> ChargeResult:
    """The answer to a settled request: one item per contact, in request order.

    The first occurrence of a contact gets its outcome: CHARGED with its verdict and what
    it cost, ALREADY_OWNED if `owned` holds it (R12), otherwise what `settle` decided with
    the verdict if it has one (NOT_VERIFIED, R10; INSUFFICIENT_CREDITS, R15). A repeat is
    DUPLICATE_IN_REQUEST (R12).
    """
    invariant(settlement.complete, "a result is assembled only once every datum is decided")
    prices = {c.contact: c.price for c in settlement.charged(candidates)}
    items: list[ItemResult] = []
    seen: set[Contact] = set()
    for contact in request.contacts:
        if contact in seen:
            items.append(ItemResult(contact=contact, outcome=Outcome.DUPLICATE_IN_REQUEST))
            continue
        seen.add(contact)
        price = prices.get(contact)
        if price is not None:
            item = ItemResult(
                contact=contact,
                outcome=Outcome.CHARGED,
                verdict=verdicts[contact],
                pool=price.pool,
                credits=price.credits,
            )
        elif contact in owned:
            item = ItemResult(contact=contact, outcome=Outcome.ALREADY_OWNED)
        else:
            item = ItemResult(
                contact=contact,
                outcome=settlement.decided[contact],
                verdict=verdicts.get(contact),
            )
        items.append(item)
    return ChargeResult(
        operation=request.operation, items=tuple(items), idempotency_key=request.idempotency_key
    )
