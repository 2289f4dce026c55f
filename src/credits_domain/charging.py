"""A charging request, its outcome, and the pure rules that decide and assemble it
(R10, R12, R15, R17): `settle` decides each new datum, `charge_result` answers the request.

A batch travels as columns, not as objects per datum: the request's contacts and their
keys (`datum_key`), the candidates' verdicts, the settlement's outcomes, each a tuple or
list in request order. A batch of 10,000 may cost little more than a few C-level passes
over its columns; an object per datum (`Candidate`, `ItemResult`) is built only when a
caller reads one.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import cast, overload

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
    MEMBER_ALLOWANCE_EXCEEDED = "member_allowance_exceeded"  # R22: free, like R15's


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


class _Rows:
    """How a ChargeResult holds its items: as given, or as columns built into items when
    first read. Two holders of the same items are equal, whichever way they hold them."""

    __slots__ = ()

    def items(self) -> tuple[ItemResult, ...]:
        raise NotImplementedError

    def count(self, outcome: Outcome) -> int:
        raise NotImplementedError

    def charged(self, pool: Channel) -> int:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Rows):
            return NotImplemented
        return self is other or self.items() == other.items()

    def __hash__(self) -> int:
        return hash(self.items())


class _GivenItems(_Rows):
    __slots__ = ("_items",)

    def __init__(self, items: tuple[ItemResult, ...]) -> None:
        self._items = items

    def items(self) -> tuple[ItemResult, ...]:
        return self._items

    def count(self, outcome: Outcome) -> int:
        return sum(1 for item in self._items if item.outcome is outcome)

    def charged(self, pool: Channel) -> int:
        return sum(item.credits for item in self._items if item.pool is pool)


class _Columns(_Rows):
    """Items as columns in request order; a CHARGED item's pool and credits are its
    channel's price. Counting and totals read the columns; items are built once, when
    read (a benign race: two threads would build equal tuples)."""

    __slots__ = ("_built", "_contacts", "_outcomes", "_prices", "_totals", "_verdicts")

    def __init__(
        self,
        contacts: tuple[Contact, ...],
        outcomes: tuple[Outcome, ...],
        verdicts: tuple[Verdict | None, ...],
        prices: Mapping[Channel, Price],
        totals: Credits,
    ) -> None:
        invariant(len(contacts) == len(outcomes) == len(verdicts), "one item per contact")
        self._contacts = contacts
        self._outcomes = outcomes
        self._verdicts = verdicts
        self._prices = dict(prices)  # a plain dict: a result pickles, as before
        self._totals = totals
        self._built: tuple[ItemResult, ...] | None = None

    def items(self) -> tuple[ItemResult, ...]:
        built = self._built
        if built is None:
            charged, prices = Outcome.CHARGED, self._prices
            built = self._built = tuple(
                ItemResult(
                    contact=contact,
                    outcome=outcome,
                    verdict=verdict,
                    pool=prices[contact.channel].pool,
                    credits=prices[contact.channel].credits,
                )
                if outcome is charged
                else ItemResult(contact=contact, outcome=outcome, verdict=verdict)
                for contact, outcome, verdict in zip(
                    self._contacts, self._outcomes, self._verdicts, strict=True
                )
            )
        return built

    def count(self, outcome: Outcome) -> int:
        return self._outcomes.count(outcome)

    def charged(self, pool: Channel) -> int:
        return self._totals.of(pool)


def _rows(items: Iterable[ItemResult] | _Rows) -> _Rows:
    return items if isinstance(items, _Rows) else _GivenItems(tuple(items))


@attrs.frozen(kw_only=True, repr=False)
class ChargeResult:
    """The answer to unlock/export/enrich: one item per contact, in order.

    Build it from its items: `ChargeResult(operation=..., items=...)`. `charge_result`
    builds it from the batch's columns instead; its items are then built when first read,
    so that counting outcomes or reading totals costs no object per datum. Items, counts,
    totals, equality and hashing are the same either way, and `attrs.evolve` keeps them.
    """

    operation: Operation
    _items: _Rows = attrs.field(converter=_rows)  # passed as `items`
    idempotency_key: str | None = None
    replayed: bool = False  # True when an idempotent repeat returned the stored result

    @property
    def items(self) -> tuple[ItemResult, ...]:
        return self._items.items()

    def charged(self, pool: Channel) -> int:
        """Credits taken from `pool` by this request."""
        return self._items.charged(pool)

    @property
    def charged_credits(self) -> Credits:
        return Credits(email=self.charged(Channel.EMAIL), mobile=self.charged(Channel.MOBILE))

    def count(self, outcome: Outcome) -> int:
        return self._items.count(outcome)

    def __repr__(self) -> str:
        return (
            f"ChargeResult(operation={self.operation!r}, items={self.items!r}, "
            f"idempotency_key={self.idempotency_key!r}, replayed={self.replayed!r})"
        )


def datum_key(contact: Contact) -> str:
    """The key of a datum in a batch's columns and in storage's indexes: its canonical value.

    The value alone names the datum (R12): an email's always holds an "@" and an E.164
    number's never does, so the values of the two channels never coincide. A str hashes
    once and compares in C, where a Contact's hash is a Python call, and a batch probes
    each of its data in several sets and dicts.
    """
    return contact.value


def fingerprint(
    operation: Operation,
    contacts: Sequence[Contact],
    destination: str | None,
    member: str | None = None,
) -> str:
    """A stable digest of a request's payload, for R17 (operation, data, destination, and
    the team member asking, R22; a request without one digests as before)."""
    digest = hashlib.sha256()
    digest.update(f"{operation.value}\x1f{destination or ''}\x1e".encode())
    if member is not None:
        digest.update(f"member\x1f{member}\x1e".encode())
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
    keys: tuple[str, ...]  # datum_key of each contact, aligned with `contacts`
    unique: tuple[Contact, ...]  # first occurrences, in order: they are the ones that pay (R12)
    unique_keys: tuple[str, ...]  # datum_key of each of `unique`, aligned
    destination: str | None = None
    idempotency_key: str | None = None
    fingerprint: str = ""  # R17's digest; empty without a key, as nothing compares it then
    member: str | None = None  # R22: the team member asking, if any

    @classmethod
    def of(
        cls,
        *,
        account: str,
        operation: Operation,
        contacts: Sequence[Contact],
        destination: str | None,
        idempotency_key: str | None,
        member: str | None = None,
    ) -> ChargeRequest:
        asked = tuple(contacts)
        keys = tuple([contact.value for contact in asked])  # datum_key, inlined: per datum
        unique, unique_keys = asked, keys
        if len(set(keys)) != len(keys):
            # Equal keys are equal contacts: keeping the last object of each is harmless.
            first = dict(zip(keys, asked, strict=True))
            unique, unique_keys = tuple(first.values()), tuple(first)
        return cls(
            account=account,
            operation=operation,
            contacts=asked,
            keys=keys,
            unique=unique,
            unique_keys=unique_keys,
            destination=destination,
            idempotency_key=idempotency_key,
            fingerprint=(
                fingerprint(operation, asked, destination, member) if idempotency_key else ""
            ),
            member=member,
        )


@attrs.frozen(kw_only=True)
class Candidate:
    """A contact of a request that the account does not own yet, with its price."""

    contact: Contact
    price: Price


@attrs.frozen(kw_only=True)
class Candidates(Sequence[Candidate]):
    """The data of a request that the account does not own yet, in request order, as
    columns: contacts and their keys, each priced by its channel's price (R2), and what
    they cost together per pool. Read as a sequence, it yields `Candidate`s, built once.

    Build it with `Candidates.of`.
    """

    contacts: tuple[Contact, ...]
    keys: tuple[str, ...]  # datum_key of each contact, aligned
    prices: Mapping[Channel, Price]  # the price of each channel (the plan's, R2)
    cost: Credits  # what they all cost together, per pool
    # The Candidate objects, once a reader asked for them (an adapter that reads them
    # as objects may go over them several times): built once, on the first read.
    _built: list[tuple[Candidate, ...]] = attrs.field(
        init=False, factory=list, eq=False, repr=False
    )

    @classmethod
    def of(
        cls,
        *,
        contacts: tuple[Contact, ...],
        keys: tuple[str, ...],
        prices: Mapping[Channel, Price],
    ) -> Candidates:
        invariant(len(contacts) == len(keys), "one key per contact")
        channels = [contact.channel for contact in contacts]
        cost = dict.fromkeys(Channel, 0)
        for channel in Channel:
            price = prices[channel]
            cost[price.pool] += channels.count(channel) * price.credits
        return cls(contacts=contacts, keys=keys, prices=prices, cost=Credits.from_pools(cost))

    @classmethod
    def among(
        cls, request: ChargeRequest, *, owned: AbstractSet[str], prices: Mapping[Channel, Price]
    ) -> Candidates:
        """The request's data (first occurrences, R12) whose keys are not in `owned`."""
        if not owned:
            return cls.of(contacts=request.unique, keys=request.unique_keys, prices=prices)
        picks = [key not in owned for key in request.unique_keys]
        return cls.of(
            contacts=tuple(itertools.compress(request.unique, picks)),
            keys=tuple(itertools.compress(request.unique_keys, picks)),
            prices=prices,
        )

    def __len__(self) -> int:
        return len(self.contacts)

    @overload
    def __getitem__(self, index: int) -> Candidate: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Candidate]: ...

    def __getitem__(self, index: int | slice) -> Candidate | Sequence[Candidate]:
        return self._candidates()[index]

    def __iter__(self) -> Iterator[Candidate]:
        return iter(self._candidates())

    def _candidates(self) -> tuple[Candidate, ...]:
        if not self._built:
            prices = self.prices
            self._built.append(
                tuple(Candidate(contact=c, price=prices[c.channel]) for c in self.contacts)
            )
        return self._built[0]


@attrs.frozen(kw_only=True)
class Settlement:
    """What `settle` decided for each candidate, in candidate order (None: not decided
    yet), and which candidates, by index, still need a verdict to decide."""

    outcomes: tuple[Outcome | None, ...]
    to_verify: tuple[int, ...]

    @property
    def complete(self) -> bool:
        return not self.to_verify

    def charged(self, candidates: Candidates) -> Candidates:
        """The candidates decided CHARGED, in request order."""
        invariant(len(self.outcomes) == len(candidates), "one outcome per candidate")
        chosen = self.outcomes.count(Outcome.CHARGED)
        if chosen == len(candidates):
            return candidates
        picks = [outcome is Outcome.CHARGED for outcome in self.outcomes]
        return Candidates.of(
            contacts=tuple(itertools.compress(candidates.contacts, picks)),
            keys=tuple(itertools.compress(candidates.keys, picks)),
            prices=candidates.prices,
        )


def _fits(cost: Credits, capacity: Credits) -> bool:
    return cost.email <= capacity.email and cost.mobile <= capacity.mobile


def settle(
    candidates: Candidates,
    verdicts: Sequence[Verdict | None],
    owned: AbstractSet[str],
    capacity: Credits,
    policy: ChargePolicy,
    limit: Credits | None = None,
) -> Settlement:
    """Decide candidates in request order against the credits held for the request (R15).

    `limit` is what a team member's allowance left them at the reserve, per pool (R22;
    None: no allowance); the hold is within it. A candidate refused because its price does
    not fit what is left of the hold is MEMBER_ALLOWANCE_EXCEEDED when it does not fit
    what is left of the limit either (past both: the allowance), else INSUFFICIENT_CREDITS.

    `verdicts` holds each candidate's verdict so far (None: not verified), `owned` the keys
    of data learned owned since the reserve. Walks the request in order with what is left
    of the hold in each pool. A candidate owned by now is ALREADY_OWNED (R12). A candidate
    whose price fits what is left is charged if its verdict is billable and free with
    NOT_VERIFIED otherwise (R10); one whose price does not fit is INSUFFICIENT_CREDITS
    (R15), even if an earlier round happened to verify it. A candidate not
    verified yet is sent for verification if its price fits what is left, counting the
    candidates before it that are still being verified as if they will be charged. A
    candidate that does not fit is refused for lack of credits only once every candidate
    before it in its pool is decided; otherwise it waits for the next round, where the
    credits of data that failed verification serve it.
    """
    size = len(candidates)
    invariant(len(verdicts) == size, "one verdict (or None) per candidate")
    if _fits(candidates.cost, capacity) and (not owned or owned.isdisjoint(candidates.keys)):
        # What the walk below answers when the hold covers every candidate and their
        # verdicts are all missing or all billable (so each price fits what is left at
        # its turn), in C-level passes instead of a Python step per datum.
        unverified = verdicts.count(None)
        if unverified == size:
            return Settlement(outcomes=(None,) * size, to_verify=tuple(range(size)))
        billable = verdicts.count(Verdict.VALID)
        if policy.bill_catch_all:
            billable += verdicts.count(Verdict.CATCH_ALL)
        if billable == size:
            return Settlement(outcomes=(Outcome.CHARGED,) * size, to_verify=())
    return _walk(candidates, verdicts, owned, capacity, policy, limit)


def _walk(
    candidates: Candidates,
    verdicts: Sequence[Verdict | None],
    owned: AbstractSet[str],
    capacity: Credits,
    policy: ChargePolicy,
    limit: Credits | None = None,
) -> Settlement:
    """`settle`'s rule, one step per candidate."""
    cost_of = {channel: (price.pool, price.credits) for channel, price in candidates.prices.items()}
    left = {pool: capacity.of(pool) for pool in Channel}
    # R22: what is left of the member's allowance (None: no allowance in that pool).
    allowed: dict[Channel, int | None] = {
        pool: None if limit is None else limit.of(pool) for pool in Channel
    }
    waiting = dict.fromkeys(Channel, False)
    outcomes: list[Outcome | None] = []
    to_verify: list[int] = []
    for index, (contact, key, verdict) in enumerate(
        zip(candidates.contacts, candidates.keys, verdicts, strict=True)
    ):
        if key in owned:
            outcomes.append(Outcome.ALREADY_OWNED)
            continue
        pool, cost = cost_of[contact.channel]
        if cost <= left[pool]:
            if verdict is None or policy.billable(verdict):
                left[pool] -= cost
                room = allowed[pool]
                allowed[pool] = None if room is None else room - cost
            if verdict is None:
                to_verify.append(index)
                waiting[pool] = True
                outcomes.append(None)
            elif policy.billable(verdict):
                outcomes.append(Outcome.CHARGED)
            else:
                outcomes.append(Outcome.NOT_VERIFIED)
        elif not waiting[pool]:
            # Beyond the balance, whatever its verdict, if it was verified early (R15);
            # beyond the member's allowance first, if it is past that too (R22).
            room = allowed[pool]
            beyond = room is not None and cost > room
            outcomes.append(
                Outcome.MEMBER_ALLOWANCE_EXCEEDED if beyond else Outcome.INSUFFICIENT_CREDITS
            )
        else:
            outcomes.append(None)  # waits for the verdicts before it
    return Settlement(outcomes=tuple(outcomes), to_verify=tuple(to_verify))


def charge_result(
    request: ChargeRequest,
    candidates: Candidates,
    settlement: Settlement,
    verdicts: Sequence[Verdict | None],
    owned: AbstractSet[str],
) -> ChargeResult:
    """The answer to a settled request: one item per contact, in request order.

    `verdicts` are the candidates' (None: never verified), `owned` the keys of the data
    known to be owned. The first occurrence of a contact gets its outcome: CHARGED with
    its verdict and what it cost, ALREADY_OWNED if `owned` holds it (R12), otherwise what
    `settle` decided with the verdict if it has one (NOT_VERIFIED, R10;
    INSUFFICIENT_CREDITS, R15). A repeat is DUPLICATE_IN_REQUEST (R12). The result keeps
    these as columns; its items are built when read.
    """
    invariant(settlement.complete, "a result is assembled only once every datum is decided")
    invariant(len(verdicts) == len(candidates), "one verdict (or None) per candidate")
    decided = settlement.outcomes
    totals = settlement.charged(candidates).cost
    if (
        len(candidates) == len(request.contacts)  # no repeat, nothing owned at the reserve
        and not decided.count(Outcome.ALREADY_OWNED)
        and (not owned or owned.isdisjoint(candidates.keys))
    ):
        # Every contact is its own candidate: the settlement's columns are the answer's.
        outcomes: tuple[Outcome | None, ...] = decided
        answered: tuple[Verdict | None, ...] = tuple(verdicts)
    else:
        outcomes, answered = _assemble(request, candidates, decided, verdicts, owned)
    invariant(None not in outcomes, "a complete settlement decides every candidate")
    return ChargeResult(
        operation=request.operation,
        items=_Columns(
            request.contacts,
            cast("tuple[Outcome, ...]", outcomes),
            answered,
            candidates.prices,
            totals,
        ),
        idempotency_key=request.idempotency_key,
    )


def _assemble(
    request: ChargeRequest,
    candidates: Candidates,
    decided: tuple[Outcome | None, ...],
    verdicts: Sequence[Verdict | None],
    owned: AbstractSet[str],
) -> tuple[tuple[Outcome | None, ...], tuple[Verdict | None, ...]]:
    """`charge_result`'s columns, one step per contact: repeats and owned data."""
    index = dict(zip(candidates.keys, range(len(candidates)), strict=True))  # -1: none
    outcomes: list[Outcome | None] = []
    answered: list[Verdict | None] = []
    seen: set[str] = set()
    for key in request.keys:
        if key in seen:
            outcomes.append(Outcome.DUPLICATE_IN_REQUEST)
            answered.append(None)
            continue
        seen.add(key)
        at = index.get(key, -1)
        if at >= 0 and decided[at] is Outcome.CHARGED:
            outcomes.append(Outcome.CHARGED)
            answered.append(verdicts[at])
        elif key in owned:
            outcomes.append(Outcome.ALREADY_OWNED)
            answered.append(None)
        else:
            invariant(at >= 0, "a datum of the request is owned or a candidate")
            outcomes.append(decided[at])
            answered.append(verdicts[at])
    return tuple(outcomes), tuple(answered)
