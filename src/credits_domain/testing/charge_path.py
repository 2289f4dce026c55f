"""The contract of the optional `ports.ChargePath` (set-based charging), and `ChosenPaths`,
a repository wrapper that picks, per phase, the path a service takes.

Subclass the contract in a test module, as `RepositoryContract` (a `Test*` class, and
`make_repository()` or a `repository` fixture)::

    class TestMyChargePath(ChargePathContract):
        def make_repository(self) -> Repository:
            return MyRepository(...)

The tests set up state through units of work (the aggregate path) and look at what a
one-call phase did through units of work and reads: both paths share storage, and a
request may reserve on one and settle on the other. They check:
- reserve: R12 (owned data reported, not held for), R2 (each datum priced in the pool
  its plan names), R15/R16 (a hold of min(cost, available) per pool, numbered as the
  Wallet numbers holds), R17 (the key recorded in flight with the hold);
- settle: one CHARGE entry per datum in order with running balances and full causes
  (R19), never dated before the account's last entry, ownership (R12), the hold
  released, the result stored on the key (R17); data bought meanwhile answer
  BoughtMeanwhile and change nothing;
- the fallbacks (None, and nothing changed) for every case the aggregate path must
  handle: no wallet, not active, a renewal due, an expired hold to release, a key seen
  before; at settle, the hold gone or expired, the key replayed or taken over;
- through the service, every mix of the two paths leaves the same state;
- leases (R16, R17), through the service on either path: a request abandoned between
  reserve and settle is taken over by a retry once its lease lapses, exactly once; a
  verifier slower than the lease keeps its request while a heartbeat renews it (and
  between verifier calls without one), never past hold_ttl_s; a first attempt that
  answers after its lease lapsed and a retry took over charges nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs
import pytest

from credits_domain.charging import (
    Candidates,
    ChargeRequest,
    ChargeResult,
    ItemResult,
    Outcome,
    datum_key,
)
from credits_domain.contact import Channel, Contact
from credits_domain.dedup import Ownership
from credits_domain.errors import ConcurrencyConflict, HoldExpired, RequestInFlight
from credits_domain.ledger import Cause, EntryKind, LedgerEntry, Operation
from credits_domain.plans import Credits, Plan, Price
from credits_domain.policy import ChargePolicy
from credits_domain.ports import (
    BoughtMeanwhile,
    ChargePath,
    FastReservation,
    IdempotencyRecord,
    Repository,
    Settled,
    UnitOfWork,
)
from credits_domain.service import CreditService
from credits_domain.testing.contract import T0
from credits_domain.verdict import Verdict
from credits_domain.wallet import Status, Tally, Wallet

TTL = timedelta(minutes=15)
LATER = T0 + timedelta(minutes=1)
SMALL = Plan(name="small", monthly=Credits(email=5, mobile=1))
# R2: a mobile number priced at 15 EMAIL credits; the MOBILE pool is empty.
CROSS = Plan(
    name="cross",
    monthly=Credits(email=20),
    prices={
        Channel.EMAIL: Price(pool=Channel.EMAIL),
        Channel.MOBILE: Price(pool=Channel.EMAIL, credits=15),
    },
)
E1, E2, E3, E4, E5, E6 = (Contact.email(f"e{n}@corp.com") for n in range(1, 7))
M1, M2 = Contact.mobile("+15550000001"), Contact.mobile("+15550000002")


class ChosenPaths:
    """The repository under test, as a service sees it, with the one-call path of each
    phase on or off: off, a phase answers None and the service takes units of work.
    `alternate=True` cycles through the four mixes, one request after another."""

    def __init__(
        self,
        repository: Repository,
        *,
        reserve: bool = True,
        settle: bool = True,
        alternate: bool = False,
    ) -> None:
        self._repository = repository
        self._fast: ChargePath | None = repository if isinstance(repository, ChargePath) else None
        self._reserve, self._settle, self._alternate = reserve, settle, alternate
        self._turn = -1

    def __getattr__(self, name: str) -> Any:  # every other call of the Repository port
        return getattr(self._repository, name)

    def reserve_fast(
        self, request: ChargeRequest, *, now: datetime, expires_at: datetime
    ) -> FastReservation | None:
        if self._alternate:
            self._turn += 1
            self._reserve, self._settle = self._turn % 4 in (0, 1), self._turn % 4 in (0, 2)
        if self._fast is None or not self._reserve:
            return None
        return self._fast.reserve_fast(request, now=now, expires_at=expires_at)

    def settle_fast(
        self,
        request: ChargeRequest,
        *,
        now: datetime,
        hold_id: str | None,
        charged: Candidates,
        result: ChargeResult,
    ) -> Settled | BoughtMeanwhile | None:
        if self._fast is None or not self._settle:
            return None
        return self._fast.settle_fast(
            request, now=now, hold_id=hold_id, charged=charged, result=result
        )


class _Fixed:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


class _Script:
    def __init__(self, script: dict[Contact, Verdict]) -> None:
        self.script = script

    def verify(self, contacts: Sequence[Contact]) -> list[Verdict]:
        return [self.script.get(c, Verdict.VALID) for c in contacts]


class _Died(BaseException):
    """The process dies during verification: nothing may swallow it."""


class _Hooked:
    """Runs `hook` inside every verifier call (a test acts while the verifier works), then
    answers VALID for everything but what `script` says."""

    def __init__(self, hook: Callable[[], object], script: dict[Contact, Verdict] | None = None):
        self.hook, self.script = hook, script or {}

    def verify(self, contacts: Sequence[Contact]) -> list[Verdict]:
        self.hook()
        return [self.script.get(c, Verdict.VALID) for c in contacts]


class _Beats:
    """A Heartbeat (ports.Heartbeat) the test drives: `tick()` runs each beat under way once."""

    def __init__(self) -> None:
        self.beats: list[Callable[[], bool]] = []
        self.intervals_s: list[float] = []

    @contextlib.contextmanager
    def beating(self, interval_s: float, beat: Callable[[], bool]) -> Iterator[None]:
        self.intervals_s.append(interval_s)
        self.beats.append(beat)
        try:
            yield
        finally:
            if beat in self.beats:
                self.beats.remove(beat)

    def tick(self) -> None:
        for beat in list(self.beats):
            if not beat():
                self.beats.remove(beat)


LEASE_S = 30
SECOND = timedelta(seconds=1)
PATHS = pytest.mark.parametrize(
    "one_call", [True, False], ids=["one-call-path", "units-of-work-path"]
)


def _request(
    contacts: Sequence[Contact],
    *,
    key: str | None = None,
    operation: Operation = Operation.UNLOCK,
    destination: str | None = None,
    account: str = "acct",
) -> ChargeRequest:
    return ChargeRequest.of(
        account=account,
        operation=operation,
        contacts=contacts,
        destination=destination,
        idempotency_key=key,
    )


def _charged(contacts: Sequence[Contact], plan: Plan = SMALL) -> Candidates:
    chosen = tuple(contacts)
    return Candidates.of(contacts=chosen, keys=tuple(map(datum_key, chosen)), prices=plan.prices)


def _result(request: ChargeRequest) -> ChargeResult:
    return ChargeResult(
        operation=request.operation,
        items=[ItemResult(contact=c, outcome=Outcome.NOT_VERIFIED) for c in request.contacts],
        idempotency_key=request.idempotency_key,
    )


def _grant(wallet: Wallet) -> None:
    """An expiring grant (R23): charges must draw on it, which only the Wallet does."""
    cause = Cause(operation=Operation.GRANT, note="promo")
    wallet.top_up(Channel.EMAIL, 5, T0, cause, expires_at=T0 + timedelta(days=7))


def _state(wallet: Wallet | None) -> dict[str, object] | None:
    if wallet is None:
        return None
    state = attrs.asdict(wallet, recurse=False)
    state.pop("pending_entries")
    return state


@attrs.frozen
class _Snapshot:
    wallet: dict[str, object] | None
    entries: list[LedgerEntry]
    owned: dict[Contact, Ownership]
    record: IdempotencyRecord | None


class ChargePathContract:
    """Tests of ports.ChargePath. Subclasses provide `make_repository()`."""

    def make_repository(self) -> Repository:
        raise NotImplementedError("say how to build the repository under test")

    @pytest.fixture
    def repository(self) -> Iterator[Repository]:
        repo = self.make_repository()
        yield repo
        close = getattr(repo, "close", None)
        if callable(close):
            close()

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _path(repository: Repository) -> ChargePath:
        assert isinstance(repository, ChargePath), "the repository offers set-based charging"
        return repository

    @staticmethod
    def _open(repository: Repository, plan: Plan = SMALL, account: str = "acct") -> None:
        with repository.unit_of_work() as uow:
            uow.add_wallet(Wallet.open(account, plan, T0))
            uow.commit()

    @staticmethod
    def _change(repository: Repository, change: Callable[[Wallet], object]) -> None:
        with repository.unit_of_work() as uow:
            wallet = uow.load_wallet("acct")
            assert wallet is not None
            change(wallet)
            uow.save_wallet(wallet)
            uow.commit()

    @staticmethod
    def _in_unit(repository: Repository, work: Callable[[UnitOfWork], object]) -> None:
        with repository.unit_of_work() as uow:
            work(uow)
            uow.commit()

    @classmethod
    def _own(cls, repository: Repository, contacts: Iterable[Contact], entry_seq: int) -> None:
        """Record that account "acct" owns `contacts`, one credit each (R12)."""
        cls._in_unit(
            repository,
            lambda uow: uow.dedup.add(
                [
                    Ownership(
                        account="acct",
                        contact=c,
                        pool=c.channel,
                        credits=1,
                        charged_at=T0,
                        entry_seq=entry_seq,
                    )
                    for c in contacts
                ]
            ),
        )

    @staticmethod
    def _wallet(repository: Repository) -> Wallet:
        with repository.unit_of_work() as uow:
            wallet = uow.load_wallet("acct")
        assert wallet is not None
        return wallet

    @staticmethod
    def _snapshot(
        repository: Repository, contacts: Sequence[Contact] = (E1, E2, M1), key: str = "k"
    ) -> _Snapshot:
        with repository.unit_of_work() as uow:
            wallet = uow.load_wallet("acct")
            owned = dict(uow.dedup.owned("acct", contacts))
            record = uow.idempotency.get("acct", key)
        return _Snapshot(_state(wallet), list(repository.entries("acct")), owned, record)

    def _reserve(
        self, repository: Repository, request: ChargeRequest, now: datetime = T0
    ) -> FastReservation:
        reserved = self._path(repository).reserve_fast(request, now=now, expires_at=now + TTL)
        assert reserved is not None, "an active wallet with nothing to catch up reserves"
        return reserved

    # -- the port ------------------------------------------------------------------------

    def test_the_repository_offers_set_based_charging(self, repository: Repository) -> None:
        assert isinstance(repository, ChargePath)

    # -- reserve (R2, R12, R15, R16, R17) -------------------------------------------------

    def test_reserve_holds_what_the_new_data_cost_up_to_what_is_available(
        self, repository: Repository
    ) -> None:
        """R15, R16: per pool, min(cost of the request's new data, available credits);
        holds are numbered as the Wallet numbers them, and count against what is available."""
        self._open(repository)  # 5 email + 1 mobile
        first = self._reserve(repository, _request([E1, E2, E1, M1, M2]))
        assert (first.hold_id, first.capacity) == ("acct#0", Credits(email=2, mobile=1))
        assert (first.owned, dict(first.prices)) == (frozenset(), dict(SMALL.prices))
        second = self._reserve(repository, _request([E3, E4, E5, E6]), now=LATER)
        assert (second.hold_id, second.capacity) == ("acct#1", Credits(email=3))
        nothing = self._reserve(repository, _request([M2]))
        assert (nothing.hold_id, nothing.capacity) == (None, Credits())
        wallet = self._wallet(repository)
        holds = {h.hold_id: (h.credits, h.created_at, h.expires_at) for h in wallet.holds.values()}
        assert holds == {
            "acct#0": (Credits(email=2, mobile=1), T0, T0 + TTL),
            "acct#1": (Credits(email=3), LATER, LATER + TTL),
        }
        assert (wallet.available(Channel.EMAIL), wallet.available(Channel.MOBILE)) == (0, 0)
        assert (wallet.balance(Channel.EMAIL), wallet.next_hold_no) == (5, 2)
        assert len(repository.entries("acct")) == 2  # holding writes no ledger entry

    def test_reserve_prices_each_datum_in_the_pool_its_plan_names(
        self, repository: Repository
    ) -> None:
        """R2: a mobile number at 15 EMAIL credits is held for in the EMAIL pool."""
        self._open(repository, CROSS)  # 20 email
        reserved = self._reserve(repository, _request([M1, E1]))
        assert reserved.capacity == Credits(email=16)
        assert dict(reserved.prices) == dict(CROSS.prices)
        short = self._reserve(repository, _request([M2]))
        assert short.capacity == Credits(email=4)

    def test_reserve_reports_owned_data_and_holds_only_for_the_new(
        self, repository: Repository
    ) -> None:
        """R12: data the account owns are reported, and cost nothing to hold."""
        self._open(repository)
        self._own(repository, (E1, M1), entry_seq=9)
        reserved = self._reserve(repository, _request([E1, E2, M1, E1]))
        assert reserved.owned == frozenset({E1, M1})
        assert reserved.capacity == Credits(email=1)
        everything_owned = self._reserve(repository, _request([M1, E1]))
        assert (everything_owned.owned, everything_owned.hold_id) == (frozenset({E1, M1}), None)

    def test_reserve_records_the_key_in_flight_with_its_hold(self, repository: Repository) -> None:
        """R17: the first request under a key is recorded, unfinished, with its hold."""
        self._open(repository)
        request = _request([E1, E2], key="k", operation=Operation.EXPORT, destination="csv")
        reserved = self._reserve(repository, request)
        with repository.unit_of_work() as uow:
            record = uow.idempotency.get("acct", "k")
        assert record == IdempotencyRecord(
            account="acct",
            key="k",
            fingerprint=request.fingerprint,
            hold_id=reserved.hold_id,
            created_at=T0,
        )
        assert reserved.hold_id == "acct#0"
        self._change(repository, lambda wallet: wallet.holds.clear())
        free = self._reserve(repository, _request([M1, M2, E3], key="k2"), now=LATER)
        with repository.unit_of_work() as uow:
            record = uow.idempotency.get("acct", "k2")
        assert record is not None and record.hold_id == free.hold_id == "acct#1"

    @pytest.mark.parametrize(
        "case",
        [
            "no-wallet",
            "paused",
            "lapsed",
            "renewal-due",
            "expired-hold",
            "key-in-flight",
            "expiring-grant",
        ],
    )
    def test_reserve_leaves_to_units_of_work_what_the_aggregate_must_handle(
        self, repository: Repository, case: str
    ) -> None:
        """Renewals (R3..R7), lapse and pause (R6), releasing an expired hold (R16), an
        idempotency key seen before (R17) and an expiring grant to draw on (R23) need the
        Wallet: None, and nothing changed."""
        now = T0 + timedelta(days=1)
        if case != "no-wallet":
            self._open(repository)
        if case == "paused":
            self._change(repository, lambda wallet: wallet.pause())
        elif case == "lapsed":
            now = T0 + timedelta(days=40)
            self._change(repository, lambda wallet: (wallet.cancel(), wallet.catch_up(now)))
        elif case == "renewal-due":
            now = T0 + timedelta(days=40)
        elif case == "expired-hold":  # a hold is released at its expiry instant exactly
            self._change(repository, lambda wallet: wallet.place_hold(Credits(email=1), T0, 60))
            now = T0 + timedelta(seconds=60)
        elif case == "key-in-flight":
            self._reserve(repository, _request([E1], key="k"))
        elif case == "expiring-grant":
            self._change(repository, _grant)
        before = self._snapshot(repository)
        request = _request([E1, E2, M1], key="k")
        assert self._path(repository).reserve_fast(request, now=now, expires_at=now + TTL) is None
        assert self._snapshot(repository) == before

    def test_reserve_leaves_a_finished_key_to_units_of_work(self, repository: Repository) -> None:
        """R17: a repeat of a finished request is replayed by the aggregate path."""
        self._open(repository)
        request = _request([E1], key="k")
        reserved = self._reserve(repository, request)
        path = self._path(repository)
        assert isinstance(
            path.settle_fast(
                request,
                now=T0,
                hold_id=reserved.hold_id,
                charged=_charged([E1]),
                result=_result(request),
            ),
            Settled,
        )
        before = self._snapshot(repository)
        assert path.reserve_fast(request, now=LATER, expires_at=LATER + TTL) is None
        assert self._snapshot(repository) == before

    # -- settle (R12, R15..R17, R19) ------------------------------------------------------

    def test_settle_charges_each_datum_in_order_and_releases_the_hold(
        self, repository: Repository
    ) -> None:
        """R19: one CHARGE entry per datum, in order, with running balances and the full
        cause; R12: ownership of each, pointing at its entry; R16: the hold released; R17:
        the result stored on the key; the wallet moves on (a unit of work that loaded it
        before can no longer save it)."""
        self._open(repository, CROSS)  # 20 email; a mobile costs 15 of them
        request = _request([E1, M1, E2, E1], key="k", operation=Operation.EXPORT, destination="csv")
        reserved = self._reserve(repository, request)
        assert reserved.capacity == Credits(email=17)
        with repository.unit_of_work() as uow:
            stale = uow.load_wallet("acct")
        assert stale is not None
        result = _result(request)
        answer = self._path(repository).settle_fast(
            request,
            now=LATER,
            hold_id=reserved.hold_id,
            charged=_charged([E1, M1, E2], CROSS),
            result=result,
        )
        assert isinstance(answer, Settled)
        charges = list(repository.entries("acct", after_seq=0))
        expected = [(E1, 1, 19, 1), (M1, 15, 4, 2), (E2, 1, 3, 3)]
        assert charges == [
            LedgerEntry(
                account="acct",
                seq=seq,
                kind=EntryKind.CHARGE,
                pool=Channel.EMAIL,
                amount=-credits,
                at=LATER,
                balance_after=after,
                cause=Cause(
                    operation=Operation.EXPORT,
                    datum=str(contact),
                    plan="cross",
                    period=0,
                    idempotency_key="k",
                    destination="csv",
                ),
            )
            for contact, credits, after, seq in expected
        ]
        snapshot = self._snapshot(repository, [E1, M1, E2, E3])
        assert snapshot.owned == {
            contact: Ownership(
                account="acct",
                contact=contact,
                pool=Channel.EMAIL,
                credits=credits,
                charged_at=LATER,
                entry_seq=seq,
            )
            for contact, credits, _, seq in expected
        }
        assert snapshot.record == IdempotencyRecord(
            account="acct",
            key="k",
            fingerprint=request.fingerprint,
            hold_id=None,
            created_at=LATER,
            result=result,
        )
        wallet = self._wallet(repository)
        assert (wallet.balance(Channel.EMAIL), wallet.holds, wallet.next_seq) == (3, {}, 4)
        last = repository.last_entry("acct", Channel.EMAIL, LATER)
        assert last is not None and last.seq == 3
        with pytest.raises(ConcurrencyConflict), repository.unit_of_work() as uow:
            stale.pause()
            uow.save_wallet(stale)
            uow.commit()

    def test_settle_charges_what_it_is_given_and_releases_the_whole_hold(
        self, repository: Repository
    ) -> None:
        """R10, R16: data that failed verification are not charged; their credits go back."""
        self._open(repository)
        request = _request([E1, E2, E3])
        reserved = self._reserve(repository, request)
        answer = self._path(repository).settle_fast(
            request,
            now=T0,
            hold_id=reserved.hold_id,
            charged=_charged([E2]),
            result=_result(request),
        )
        assert isinstance(answer, Settled)
        assert [e.cause.datum for e in repository.entries("acct", after_seq=1)] == [str(E2)]
        wallet = self._wallet(repository)
        assert (wallet.balance(Channel.EMAIL), wallet.available(Channel.EMAIL)) == (4, 4)
        nothing = _request([M1])
        held = self._reserve(repository, nothing)
        answer = self._path(repository).settle_fast(
            nothing, now=T0, hold_id=held.hold_id, charged=_charged([]), result=_result(nothing)
        )
        assert isinstance(answer, Settled)
        wallet = self._wallet(repository)
        assert (wallet.holds, wallet.next_seq, wallet.balance(Channel.MOBILE)) == ({}, 3, 1)

    def test_settle_never_dates_a_charge_before_the_last_entry(
        self, repository: Repository
    ) -> None:
        """R19, R21: the ledger is in time order as well as in seq order."""
        self._open(repository)
        request = _request([E1])
        reserved = self._reserve(repository, request)
        later = T0 + timedelta(hours=1)
        self._change(
            repository,
            lambda wallet: wallet.top_up(
                Channel.EMAIL, 2, later, Cause(operation=Operation.GRANT, note="goodwill")
            ),
        )
        self._path(repository).settle_fast(
            request,
            now=LATER,
            hold_id=reserved.hold_id,
            charged=_charged([E1]),
            result=_result(request),
        )
        charge = repository.entries("acct")[-1]
        assert (charge.kind, charge.at, charge.balance_after) == (EntryKind.CHARGE, later, 6)
        with repository.unit_of_work() as uow:
            assert uow.dedup.owned("acct", [E1])[E1].charged_at == later

    def test_settle_of_data_bought_meanwhile_changes_nothing(self, repository: Repository) -> None:
        """R12: a datum a concurrent request bought since the reserve is named, and
        nothing is charged: the service decides again, with that datum free."""
        self._open(repository)
        request = _request([E1, E2, M1], key="k")
        reserved = self._reserve(repository, request)
        self._own(repository, (E2, M1), entry_seq=7)
        before = self._snapshot(repository)
        answer = self._path(repository).settle_fast(
            request,
            now=LATER,
            hold_id=reserved.hold_id,
            charged=_charged([E1, E2, M1]),
            result=_result(request),
        )
        assert answer == BoughtMeanwhile(contacts=frozenset({E2, M1}))
        assert self._snapshot(repository) == before

    @pytest.mark.parametrize(
        "case",
        [
            "hold-released",
            "hold-expired",
            "key-replayed",
            "key-taken-over",
            "key-unknown",
            "paused",
            "renewal-due",
            "expiring-grant",
            "low-balance",
            "low-balance-threshold-set-meanwhile",
            "depleted",
            "guarantee-minimum",
        ],
    )
    def test_settle_leaves_to_units_of_work_what_the_aggregate_must_handle(
        self, repository: Repository, case: str
    ) -> None:
        """R16: a hold gone or expired means HoldExpired; R17: a key replayed or taken over
        by a retry means the stored result or HoldExpired; R3..R7: a renewal first. The
        aggregate path says which: None, and nothing changed."""
        self._open(repository)
        request = _request([E1, E2], key="k")
        reserved = self._reserve(repository, request)
        hold_id, now = reserved.hold_id, LATER
        assert hold_id is not None
        if case == "hold-released":
            self._change(repository, lambda wallet: wallet.release_hold(hold_id))
        elif case == "hold-expired":
            now = T0 + TTL
        elif case == "key-replayed":
            self._in_unit(
                repository,
                lambda uow: uow.idempotency.put(
                    IdempotencyRecord(
                        account="acct",
                        key="k",
                        fingerprint=request.fingerprint,
                        hold_id=None,
                        created_at=T0,
                        result=_result(request),
                    )
                ),
            )
        elif case == "key-taken-over":
            self._in_unit(
                repository,
                lambda uow: uow.idempotency.put(
                    IdempotencyRecord(
                        account="acct",
                        key="k",
                        fingerprint=request.fingerprint,
                        hold_id="acct#9",
                        created_at=T0,
                    )
                ),
            )
        elif case == "key-unknown":
            request = attrs.evolve(request, idempotency_key="never-reserved")
        elif case == "paused":
            self._change(repository, lambda wallet: wallet.pause())
        elif case == "renewal-due":
            now = T0 + timedelta(days=40)
        elif case == "expiring-grant":  # granted between reserve and settle (R23)
            self._change(repository, _grant)
        charged = [E1]
        settling_hold: str | None = hold_id
        if case == "low-balance":  # R24: 5 - 1 = 4, at the threshold: credits.low
            self._change(repository, lambda wallet: wallet.set_low_threshold(Channel.EMAIL, 4))
        elif case == "low-balance-threshold-set-meanwhile":  # what the settle sees counts
            self._change(repository, lambda wallet: wallet.set_low_threshold(Channel.EMAIL, 9))
        elif case == "guarantee-minimum":  # R25: the 100th email, 2 bounces: a breach
            tally = Tally(emails=99, bounces=2)
            self._change(repository, lambda wallet: wallet.tallies.update({0: tally}))
        elif case == "depleted":  # R24: 5 - 5 = 0, even under a threshold of 0
            self._change(repository, lambda wallet: wallet.set_low_threshold(Channel.EMAIL, 0))
            request = _request([E1, E2, E3, E4, E5], key="k")
            self._change(repository, lambda wallet: wallet.release_hold(hold_id))
            settling_hold = self._reserve(
                repository, attrs.evolve(request, idempotency_key="k2")
            ).hold_id
            request, charged = attrs.evolve(request, idempotency_key=None), [E1, E2, E3, E4, E5]
        before = self._snapshot(repository)
        answer = self._path(repository).settle_fast(
            request,
            now=now,
            hold_id=settling_hold,
            charged=_charged(charged),
            result=_result(request),
        )
        assert answer is None
        assert self._snapshot(repository) == before

    def test_settle_charges_in_one_call_while_every_pool_stays_above_its_threshold(
        self, repository: Repository
    ) -> None:
        """R24: a charge leaving each pool it charges above its low threshold fires no
        event, so the one-call settle takes it; the next one, reaching the threshold,
        is left to the Wallet, which writes credits.low with it."""
        self._open(repository)  # 5 email
        self._change(repository, lambda wallet: wallet.set_low_threshold(Channel.EMAIL, 3))
        first = _request([E1])
        reserved = self._reserve(repository, first)
        answer = self._path(repository).settle_fast(
            first,
            now=LATER,
            hold_id=reserved.hold_id,
            charged=_charged([E1]),
            result=_result(first),
        )
        assert isinstance(answer, Settled)  # 4 > 3
        second = _request([E2])
        reserved = self._reserve(repository, second)
        before = self._snapshot(repository, [E2])
        answer = self._path(repository).settle_fast(
            second,
            now=LATER,
            hold_id=reserved.hold_id,
            charged=_charged([E2]),
            result=_result(second),
        )
        assert answer is None  # 3 <= 3: the Wallet's
        assert self._snapshot(repository, [E2]) == before
        assert list(repository.events("acct", limit=9)) == []

    @pytest.mark.parametrize(
        "before", [Tally(emails=100, bounces=5), Tally(emails=99, bounces=1)], ids=str
    )
    def test_settle_in_one_call_counts_the_emails_of_the_period(
        self, repository: Repository, before: Tally
    ) -> None:
        """R25: the one-call settle adds its emails to the period's count, which the
        Wallet reads to decide guarantee.breached; it charges on past the minimum, or
        reaching it within 1% of bounces (no breach either way)."""
        self._open(repository, CROSS)
        self._change(repository, lambda wallet: wallet.tallies.update({0: before}))
        request = _request([E1, M1, E2])
        reserved = self._reserve(repository, request)
        answer = self._path(repository).settle_fast(
            request,
            now=LATER,
            hold_id=reserved.hold_id,
            charged=_charged([E1, M1, E2], CROSS),
            result=_result(request),
        )
        assert isinstance(answer, Settled)
        after = attrs.evolve(before, emails=before.emails + 2)
        assert self._wallet(repository).tallies == {0: after}
        assert list(repository.events("acct", limit=9)) == []

    # -- both paths, through the service ----------------------------------------------------

    @pytest.mark.parametrize(
        ("reserve", "settle"),
        [(True, True), (True, False), (False, True)],
        ids=["one-call", "reserve-in-one-call", "settle-in-one-call"],
    )
    def test_every_mix_of_paths_leaves_what_units_of_work_leave(
        self, repository: Repository, reserve: bool, settle: bool
    ) -> None:
        """The same requests, one account taking units of work only and another the mix:
        the same answers, ledger, ownership, wallet and idempotency records."""
        script = {E2: Verdict.INVALID, M2: Verdict.UNKNOWN}
        plan = Plan(name="mix", monthly=Credits(email=4, mobile=1))
        results: dict[str, list[ChargeResult]] = {}
        for account, chosen in (
            ("units", ChosenPaths(repository, reserve=False, settle=False)),
            ("mixed", ChosenPaths(repository, reserve=reserve, settle=settle)),
        ):
            service = CreditService(repository=chosen, verifier=_Script(script), clock=_Fixed(T0))
            service.subscribe(account, plan)
            results[account] = [
                service.unlock(account, [E1, E2, E1, M1, M2], idempotency_key="k1"),
                service.export(account, [E1, E3, E4, E5, E6], destination="csv"),
                service.enrich(account, [M1, E6], idempotency_key="k2"),
                service.unlock(account, [E1, E2, E1, M1, M2], idempotency_key="k1"),
            ]
        assert results["units"] == results["mixed"]
        assert results["mixed"][-1].replayed
        assert results["mixed"][1].count(Outcome.INSUFFICIENT_CREDITS) == 1
        assert self._stored("mixed", repository) == self._stored("units", repository)

    # -- leases, through the service (R16, R17) ------------------------------------------

    @staticmethod
    def _service(
        repository: Repository,
        one_call: bool,
        clock: _Fixed,
        verifier: object,
        *,
        heartbeat: _Beats | None = None,
        policy: ChargePolicy | None = None,
    ) -> CreditService:
        return CreditService(
            repository=ChosenPaths(repository, reserve=one_call, settle=one_call),
            verifier=verifier,  # type: ignore[arg-type]
            clock=clock,
            policy=policy or ChargePolicy(lease_s=LEASE_S),
            heartbeat=heartbeat,
        )

    def _charges(self, repository: Repository) -> list[str | None]:
        return [e.cause.datum for e in repository.entries("acct") if e.kind is EntryKind.CHARGE]

    @PATHS
    def test_an_abandoned_request_is_taken_over_once_its_lease_lapses(
        self, repository: Repository, one_call: bool
    ) -> None:
        """Cut between reserve and settle: every retry is RequestInFlight, told how long
        the lease has left, until it lapses; then the retry runs the request, once."""
        clock = _Fixed(T0)

        def die() -> None:
            raise _Died

        retry = self._service(repository, one_call, clock, _Script({}))
        retry.subscribe("acct", SMALL)
        with pytest.raises(_Died):
            self._service(repository, one_call, clock, _Hooked(die)).unlock(
                "acct", [E1, E2], idempotency_key="k"
            )
        for waited_s, left_s in ((0, LEASE_S), (10, LEASE_S - 10), (LEASE_S - 1, 1)):
            clock.at = T0 + waited_s * SECOND
            with pytest.raises(RequestInFlight) as refused:
                retry.unlock("acct", [E1, E2], idempotency_key="k")
            assert refused.value.retry_after_s == left_s
        clock.at = T0 + (LEASE_S + 1) * SECOND
        done = retry.unlock("acct", [E1, E2], idempotency_key="k")
        assert (done.replayed, done.charged_credits) == (False, Credits(email=2))
        again = retry.unlock("acct", [E1, E2], idempotency_key="k")
        assert again.replayed and again.items == done.items
        balance = retry.balance("acct")
        assert (balance.email, balance.email_available) == (3, 3)  # no hold left behind
        assert self._charges(repository) == ["email:e1@corp.com", "email:e2@corp.com"]

    @PATHS
    def test_a_verifier_slower_than_the_lease_keeps_its_request_while_it_beats(
        self, repository: Repository, one_call: bool
    ) -> None:
        """With a heartbeat renewing the lease, a verification of twice the lease settles,
        and a retry meanwhile is RequestInFlight, never a takeover."""
        clock, beats = _Fixed(T0), _Beats()
        refused: list[RequestInFlight] = []
        retry = self._service(repository, one_call, clock, _Script({}))

        def slow() -> None:
            for _ in range(6):
                clock.at += 10 * SECOND
                beats.tick()
                try:
                    retry.unlock("acct", [E1, E2], idempotency_key="k")
                except RequestInFlight as error:
                    refused.append(error)

        worker = self._service(repository, one_call, clock, _Hooked(slow), heartbeat=beats)
        worker.subscribe("acct", SMALL)
        done = worker.unlock("acct", [E1, E2], idempotency_key="k")
        assert (done.replayed, done.charged_credits) == (False, Credits(email=2))
        assert len(refused) == 6 and beats.intervals_s == [LEASE_S / 3]
        assert retry.unlock("acct", [E1, E2], idempotency_key="k").replayed
        assert self._charges(repository) == ["email:e1@corp.com", "email:e2@corp.com"]

    @PATHS
    def test_a_heartbeat_never_keeps_a_hold_past_its_longest_life(
        self, repository: Repository, one_call: bool
    ) -> None:
        """hold_ttl_s bounds a hold, renewals included: past it, HoldExpired, no charge."""
        clock, beats = _Fixed(T0), _Beats()

        def slow() -> None:
            for _ in range(7):
                clock.at += 10 * SECOND
                beats.tick()

        policy = ChargePolicy(lease_s=LEASE_S, hold_ttl_s=60)
        worker = self._service(
            repository, one_call, clock, _Hooked(slow), heartbeat=beats, policy=policy
        )
        worker.subscribe("acct", SMALL)
        with pytest.raises(HoldExpired):
            worker.unlock("acct", [E1, E2], idempotency_key="k")
        assert not beats.beats  # it stopped beating at the hold's longest life
        assert self._charges(repository) == []
        assert worker.balance("acct").email_available == 5

    @PATHS
    def test_without_a_heartbeat_the_lease_is_renewed_between_verifier_calls(
        self, repository: Repository, one_call: bool
    ) -> None:
        """Two verifier rounds of 20 s each (the hold pays for 5 of 7 data; 2 INVALID free
        credits for the last 2): renewed between them, the request settles at 40 s."""
        clock = _Fixed(T0)

        def slow() -> None:
            clock.at += 20 * SECOND

        data = [E1, E2, E3, E4, E5, E6, Contact.email("e7@corp.com")]
        script = {E1: Verdict.INVALID, E2: Verdict.INVALID}
        worker = self._service(repository, one_call, clock, _Hooked(slow, script))
        worker.subscribe("acct", SMALL)
        done = worker.unlock("acct", data)
        assert done.charged_credits == Credits(email=5)
        assert clock.at == T0 + 40 * SECOND

    @PATHS
    def test_a_first_attempt_answered_after_a_takeover_charges_nothing(
        self, repository: Repository, one_call: bool
    ) -> None:
        """The verifier answers the first attempt after its lease lapsed, and a retry took
        the request over and finished meanwhile: the retry charges; the late first attempt
        charges nothing and answers the retry's result, replayed (R17). Had nothing taken
        it over, it would be HoldExpired (its lease lapsed), charging nothing as well."""
        clock = _Fixed(T0)
        retry = self._service(repository, one_call, clock, _Script({}))
        taken_over: list[ChargeResult] = []

        def late() -> None:
            clock.at += (LEASE_S + 1) * SECOND
            taken_over.append(retry.unlock("acct", [E1, E2], idempotency_key="k"))

        retry.subscribe("acct", SMALL)
        first = self._service(repository, one_call, clock, _Hooked(late)).unlock(
            "acct", [E1, E2], idempotency_key="k"
        )
        assert taken_over[0].charged_credits == Credits(email=2)
        assert first.replayed and first.items == taken_over[0].items
        clock.at += (LEASE_S + 1) * SECOND
        with pytest.raises(HoldExpired):  # late, and nobody took it over
            self._service(repository, one_call, clock, _Hooked(late)).unlock(
                "acct", [E3], idempotency_key="k2"
            )
        again = retry.unlock("acct", [E1, E2], idempotency_key="k")
        assert again.replayed and again.items == taken_over[0].items
        assert self._charges(repository) == ["email:e1@corp.com", "email:e2@corp.com"]
        assert retry.balance("acct").email_available == 3

    @staticmethod
    def _stored(account: str, repository: Repository) -> tuple[object, ...]:
        """What the account left in storage, with the account's name taken out."""
        everyone = [E1, E2, E3, E4, E5, E6, M1, M2]
        with repository.unit_of_work() as uow:
            wallet = uow.load_wallet(account)
            assert wallet is not None and wallet.status is Status.ACTIVE
            state = _state(wallet)
            assert state is not None
            for name in ("account", "version", "holds"):
                state.pop(name)
            owned = {
                c: attrs.evolve(o, account="")
                for c, o in uow.dedup.owned(account, everyone).items()
            }
            records = [uow.idempotency.get(account, key) for key in ("k1", "k2")]
        keys = [None if r is None else attrs.evolve(r, account="") for r in records]
        entries = [attrs.evolve(e, account="") for e in repository.entries(account)]
        # R24: the same events (the id is the account's and the seq's: left out).
        events = [(e.seq, e.type, e.at, dict(e.data)) for e in repository.events(account, limit=99)]
        return state, wallet.holds == {}, owned, keys, entries, events
