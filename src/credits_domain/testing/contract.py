"""The contracts every Repository and ApiKeyStore adapter passes (eventsourcing's shape).

Subclass one in a test module named `test_*.py`, as a class named `Test*`, and say how to
build the adapter; pytest collects the inherited tests::

    class TestMyRepository(RepositoryContract):
        def make_repository(self) -> Repository:
            return MyRepository.connect(...)

    class TestMyKeys(ApiKeyStoreContract):
        def make_key_store(self, clock: Clock) -> ApiKeyStore:
            return MyKeyStore(..., clock=clock)

or, when building it needs fixtures, override the `repository` (`key_store`) fixture
instead. The classes are not named Test*, so pytest does not collect them on their own.

Every call of every port is tested on its error paths too, so that adapters fail alike:
the same arguments refused with the same error class (`ports` says which).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from credits_domain.charging import ChargeResult, ItemResult, Outcome
from credits_domain.contact import Channel, Contact
from credits_domain.dedup import Ownership
from credits_domain.errors import (
    AlreadyRefunded,
    ConcurrencyConflict,
    InvalidRequest,
    NotCharged,
    UnknownApiKey,
)
from credits_domain.events import Event, EventType
from credits_domain.keys import key_id_of
from credits_domain.ledger import Cause, EntryKind, LedgerEntry, Operation
from credits_domain.plans import PLANS, Credits, Plan, Price
from credits_domain.ports import ApiKeyStore, Clock, IdempotencyRecord, Repository, UnitOfWork
from credits_domain.service import CreditService
from credits_domain.verdict import Verdict
from credits_domain.wallet import Status, Wallet

T0 = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
NAIVE = datetime(2025, 1, 31, 12, 0)
PLUS_TWO = timezone(timedelta(hours=2))
THREAD_TIMEOUT_S = 120  # a hung worker fails the test instead of hanging the run
# How long the first of two overlapping units of work waits for the second to read: a
# correct adapter keeps the second waiting, so this is paid once per adapter.
OVERLAP_WAIT_S = 0.3
# Account ids the core refuses (`credits_domain.limits.check_account`): every call that
# takes an account refuses them alike, before storage sees them (PostgreSQL text cannot
# hold a NUL; a column holds 200 characters).
BAD_ACCOUNTS = ["", " padded", "nul\x00", "x" * 201, 42]
BAD_KEYS: list[object] = ["", "k" * 256, "tab\t", None, 7]
BAD_LIMITS: list[object] = [-1, 2**63, "2", 2.0, True, None]
BAD_SEQS: list[object] = [-2, 2**63, "0", 0.5, False, None]
ODD_PLAN = Plan(
    name="odd",
    monthly=Credits(email=40, mobile=0),
    prices={
        Channel.EMAIL: Price(pool=Channel.EMAIL),
        Channel.MOBILE: Price(pool=Channel.EMAIL, credits=15),
    },
    rollover_cap=Credits(email=100, mobile=0),
)


class _FixedClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


class _AllValid:
    def verify(self, contacts: object) -> list[Verdict]:
        return [Verdict.VALID for _ in contacts]  # type: ignore[attr-defined]


def _wallet(account: str = "acct", plan: Plan = PLANS["boost"], at: datetime = T0) -> Wallet:
    return Wallet.open(account, plan, at)


def _state(wallet: Wallet) -> dict[str, object]:
    state = attrs.asdict(wallet, recurse=False)
    state.pop("version")
    state.pop("pending_entries")
    return state


class RepositoryContract:
    """Tests of the Repository port. Subclasses provide `make_repository()`."""

    def make_repository(self) -> Repository:
        raise NotImplementedError("say how to build the repository under test")

    @pytest.fixture
    def repository(self) -> Iterator[Repository]:
        repo = self.make_repository()
        yield repo
        close = getattr(repo, "close", None)
        if callable(close):
            close()

    # -- wallets -------------------------------------------------------------------------

    def test_unknown_account_loads_as_none(self, repository: Repository) -> None:
        with repository.unit_of_work() as uow:
            assert uow.load_wallet("nobody") is None

    def test_wallet_round_trips_every_field(self, repository: Repository) -> None:
        wallet = _wallet(plan=ODD_PLAN)
        wallet.place_hold(Credits(email=3), T0, 60)
        wallet.pending_plan = PLANS["ignite"]
        wallet.cancel()
        wallet.set_low_threshold(Channel.MOBILE, 7)  # R24
        wallet.next_event_seq = 5
        with repository.unit_of_work() as uow:
            uow.add_wallet(wallet)
            uow.commit()
        with repository.unit_of_work() as uow:
            loaded = uow.load_wallet("acct")
        assert loaded is not None
        assert _state(loaded) == _state(wallet)
        assert loaded.pending_entries == []

    def test_adding_an_existing_account_conflicts(self, repository: Repository) -> None:
        with repository.unit_of_work() as uow:
            uow.add_wallet(_wallet())
            uow.commit()
        with pytest.raises(ConcurrencyConflict), repository.unit_of_work() as uow:
            uow.add_wallet(_wallet())
            uow.commit()

    def test_no_commit_means_nothing_happened(self, repository: Repository) -> None:
        with repository.unit_of_work() as uow:
            uow.add_wallet(_wallet())
        with repository.unit_of_work() as uow:
            assert uow.load_wallet("acct") is None
        assert list(repository.entries("acct")) == []

    def test_an_exception_rolls_everything_back(self, repository: Repository) -> None:
        with repository.unit_of_work() as uow:
            uow.add_wallet(_wallet())
            uow.commit()
        contact = Contact.email("a@corp.com")
        with pytest.raises(RuntimeError), repository.unit_of_work() as uow:
            wallet = uow.load_wallet("acct")
            assert wallet is not None
            entry = wallet.charge(Channel.EMAIL, 1, T0, Cause(operation=Operation.UNLOCK))
            uow.dedup.add([_ownership(contact, entry.seq)])
            uow.idempotency.put(_record("k"))
            self._spend_to_low(wallet, T0)  # R24: events go with the change, or neither
            uow.save_wallet(wallet)
            raise RuntimeError("boom")
        assert list(repository.events("acct", limit=10)) == []
        with repository.unit_of_work() as uow:
            again = uow.load_wallet("acct")
            assert again is not None
            assert again.balance(Channel.EMAIL) == 12_000
            assert again.next_event_seq == 1
            assert uow.dedup.owned("acct", [contact]) == {}
            assert uow.idempotency.get("acct", "k") is None
        assert [e.kind for e in repository.entries("acct")] == [EntryKind.GRANT, EntryKind.GRANT]

    def test_saved_state_is_what_the_next_unit_sees(self, repository: Repository) -> None:
        with repository.unit_of_work() as uow:
            uow.add_wallet(_wallet())
            uow.commit()
        with repository.unit_of_work() as uow:
            wallet = uow.load_wallet("acct")
            assert wallet is not None
            wallet.pause()
            wallet.charge(Channel.MOBILE, 5, T0, Cause(operation=Operation.UNLOCK))
            uow.save_wallet(wallet)
            uow.commit()
        with repository.unit_of_work() as uow:
            loaded = uow.load_wallet("acct")
            assert loaded is not None
            assert loaded.status is Status.PAUSED
            assert loaded.balance(Channel.MOBILE) == 795
            assert loaded.next_seq == 3

    # -- events (R24): the outbox -----------------------------------------------------------

    @staticmethod
    def _spend_to_low(wallet: Wallet, at: datetime) -> list[Event]:
        """Charge the email pool down to zero: credits.low, then credits.depleted."""
        wallet.set_low_threshold(Channel.EMAIL, 2)
        wallet.charge(Channel.EMAIL, wallet.balance(Channel.EMAIL) - 2, at, _cause())
        wallet.charge(Channel.EMAIL, 2, at, _cause())
        return list(wallet.pending_events)

    def test_events_are_written_with_the_wallet(self, repository: Repository) -> None:
        _committed(repository, _wallet())
        with repository.unit_of_work() as uow:
            wallet = uow.load_wallet("acct")
            assert wallet is not None
            made = self._spend_to_low(wallet, T0)
            uow.save_wallet(wallet)
            assert wallet.pending_events == []
            assert list(repository.events("acct", limit=10)) == []  # not yet committed
            uow.commit()
        assert [e.type for e in made] == [EventType.CREDITS_LOW, EventType.CREDITS_DEPLETED]
        assert list(repository.events("acct", limit=10)) == made
        assert [e.seq for e in made] == [1, 2]
        with repository.unit_of_work() as uow:
            loaded = uow.load_wallet("acct")
            assert loaded is not None
            assert loaded.next_event_seq == 3
            assert loaded.low_threshold(Channel.EMAIL) == 2

    def test_events_page_by_seq(self, repository: Repository) -> None:
        wallet = _wallet()
        for i in range(5):
            wallet.emit(EventType.PLAN_CHANGED, T0 + timedelta(seconds=i), {"n": i})
        _committed(repository, wallet)
        assert [e.seq for e in repository.events("acct", limit=2)] == [1, 2]
        assert [e.seq for e in repository.events("acct", after_seq=2, limit=2)] == [3, 4]
        assert [e.data["n"] for e in repository.events("acct", after_seq=3, limit=9)] == [3, 4]
        assert repository.events("acct", after_seq=2**63 - 1, limit=9) == []
        assert repository.events("acct", limit=0) == []
        assert repository.events("nobody", limit=9) == []

    @pytest.mark.parametrize("limit", BAD_LIMITS)
    def test_an_events_limit_must_be_a_whole_number_in_range(
        self, repository: Repository, limit: Any
    ) -> None:
        with pytest.raises(InvalidRequest, match="limit"):
            repository.events("acct", limit=limit)

    @pytest.mark.parametrize("after_seq", [-1, 2**63, "0", 0.5, False, None])
    def test_an_events_cursor_must_be_a_whole_number_in_range(
        self, repository: Repository, after_seq: Any
    ) -> None:
        with pytest.raises(InvalidRequest, match="after_seq"):
            repository.events("acct", after_seq=after_seq, limit=1)

    def test_two_writers_of_one_event_seq_conflict(self, repository: Repository) -> None:
        """As the ledger's key: a stale wallet's events are refused with it."""
        wallet = _wallet()
        wallet.emit(EventType.PLAN_CHANGED, T0, {})
        _committed(repository, wallet)
        stale = _wallet()
        stale.entries_saved()
        stale.next_seq = 2**40  # its ledger entries are no conflict; its event seq is
        stale.emit(EventType.PLAN_CHANGED, T0, {})
        with pytest.raises(ConcurrencyConflict), repository.unit_of_work() as uow:
            loaded = uow.load_wallet("acct")
            assert loaded is not None
            stale.version = loaded.version
            uow.save_wallet(stale)
            uow.commit()
        assert [e.seq for e in repository.events("acct", limit=9)] == [1]

    # -- ledger (R19, R21) ---------------------------------------------------------------

    def _seed_ledger(self, repository: Repository, n_charges: int) -> list[LedgerEntry]:
        wallet = _wallet()
        with repository.unit_of_work() as uow:
            uow.add_wallet(wallet)
            uow.commit()
        made: list[LedgerEntry] = []
        for i in range(n_charges):
            with repository.unit_of_work() as uow:
                loaded = uow.load_wallet("acct")
                assert loaded is not None
                pool = Channel.EMAIL if i % 3 else Channel.MOBILE
                cause = Cause(
                    operation=Operation.EXPORT,
                    datum=f"email:p{i}@corp.com",
                    plan="boost",
                    period=0,
                    idempotency_key=f"key-{i}",
                    destination="hubspot",
                    note="n",
                )
                made.append(loaded.charge(pool, 1, T0 + timedelta(hours=i), cause))
                uow.save_wallet(loaded)
                uow.commit()
        return made

    def test_entries_round_trip_in_order(self, repository: Repository) -> None:
        made = self._seed_ledger(repository, 5)
        entries = list(repository.entries("acct"))
        assert [e.seq for e in entries] == list(range(7))
        assert entries[2:] == made
        assert all(e.at.tzinfo is not None and e.at.utcoffset() == timedelta(0) for e in entries)

    def test_entries_page_by_seq_and_by_time(self, repository: Repository) -> None:
        self._seed_ledger(repository, 6)
        first = repository.entries("acct", limit=3)
        rest = repository.entries("acct", after_seq=first[-1].seq, limit=100)
        assert [e.seq for e in [*first, *rest]] == list(range(8))
        window = repository.entries(
            "acct", since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3)
        )
        assert [e.at for e in window] == [T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
        assert list(repository.entries("other")) == []

    def test_last_entry_reads_a_past_balance(self, repository: Repository) -> None:
        self._seed_ledger(repository, 6)
        at = T0 + timedelta(hours=4, minutes=30)
        email = repository.last_entry("acct", Channel.EMAIL, at)
        mobile = repository.last_entry("acct", Channel.MOBILE, at)
        assert email is not None and mobile is not None
        assert (email.seq, email.balance_after) == (6, 11_997)
        assert (mobile.seq, mobile.balance_after) == (5, 798)
        assert repository.last_entry("acct", Channel.EMAIL, T0 - timedelta(seconds=1)) is None

    # -- ownership (R12, R18) ------------------------------------------------------------

    def test_ownership_is_found_only_for_the_contacts_asked(self, repository: Repository) -> None:
        a, b, c = (
            Contact.email("a@corp.com"),
            Contact.mobile("+442079460000"),
            Contact.email("c@corp.com"),
        )
        with repository.unit_of_work() as uow:
            uow.dedup.add([_ownership(a, 1), _ownership(b, 2, pool=Channel.EMAIL, credits=15)])
            uow.commit()
        with repository.unit_of_work() as uow:
            found = uow.dedup.owned("acct", [b, c])
            assert set(found) == {b}
            assert found[b] == _ownership(b, 2, pool=Channel.EMAIL, credits=15)
            assert uow.dedup.owned("other", [a, b]) == {}

    def test_owning_a_datum_twice_conflicts(self, repository: Repository) -> None:
        a = Contact.email("a@corp.com")
        with repository.unit_of_work() as uow:
            uow.dedup.add([_ownership(a, 1)])
            uow.commit()
        with pytest.raises(ConcurrencyConflict), repository.unit_of_work() as uow:
            uow.dedup.add([_ownership(a, 2)])
            uow.commit()

    def test_refund_mark_persists(self, repository: Repository) -> None:
        a = Contact.email("a@corp.com")
        with repository.unit_of_work() as uow:
            uow.dedup.add([_ownership(a, 1)])
            uow.commit()
        with repository.unit_of_work() as uow:
            uow.dedup.mark_refunded("acct", a, T0 + timedelta(days=2))
            uow.commit()
        with repository.unit_of_work() as uow:
            assert uow.dedup.owned("acct", [a])[a].refunded_at == T0 + timedelta(days=2)

    # -- idempotency (R17) ---------------------------------------------------------------

    def test_idempotency_records_round_trip(self, repository: Repository) -> None:
        pending = _record("k", hold_id="acct#0")
        with repository.unit_of_work() as uow:
            uow.idempotency.put(pending)
            uow.commit()
        with repository.unit_of_work() as uow:
            assert uow.idempotency.get("acct", "k") == pending
            assert uow.idempotency.get("other", "k") is None
        a, m = Contact.email("a@corp.com"), Contact.mobile("+15550000001")
        result = ChargeResult(
            operation=Operation.EXPORT,
            idempotency_key="k",
            items=(
                ItemResult(
                    contact=a,
                    outcome=Outcome.CHARGED,
                    verdict=Verdict.VALID,
                    pool=Channel.EMAIL,
                    credits=1,
                ),
                ItemResult(
                    contact=m,
                    outcome=Outcome.CHARGED,
                    verdict=Verdict.VALID,
                    pool=Channel.EMAIL,
                    credits=15,
                ),
                ItemResult(contact=a, outcome=Outcome.DUPLICATE_IN_REQUEST),
                ItemResult(
                    contact=Contact.email("b@corp.com"),
                    outcome=Outcome.NOT_VERIFIED,
                    verdict=Verdict.CATCH_ALL,
                ),
                ItemResult(contact=Contact.email("c@corp.com"), outcome=Outcome.ALREADY_OWNED),
                ItemResult(
                    contact=Contact.email("d@corp.com"), outcome=Outcome.INSUFFICIENT_CREDITS
                ),
            ),
        )
        done = attrs.evolve(pending, hold_id=None, result=result)
        with repository.unit_of_work() as uow:
            uow.idempotency.put(done)
            uow.commit()
        with repository.unit_of_work() as uow:
            assert uow.idempotency.get("acct", "k") == done

    # -- renewals ------------------------------------------------------------------------

    # -- leases (R16): Repository.renew_hold ---------------------------------------------

    def _hold_placed(self, repository: Repository, lease_s: int = 30) -> str:
        """A wallet with one hold, placed at T0 for `lease_s`; its id."""
        wallet = _wallet()
        hold = wallet.place_hold(Credits(email=2), T0, lease_s)
        with repository.unit_of_work() as uow:
            uow.add_wallet(wallet)
            uow.commit()
        return hold.hold_id

    @staticmethod
    def _holds(repository: Repository, account: str = "acct") -> dict[str, datetime]:
        with repository.unit_of_work() as uow:
            wallet = uow.load_wallet(account)
        assert wallet is not None
        return {hold_id: hold.expires_at for hold_id, hold in wallet.holds.items()}

    def test_a_renewal_moves_a_live_hold_on_and_never_back(self, repository: Repository) -> None:
        hold_id = self._hold_placed(repository)
        s = timedelta(seconds=1)
        assert repository.renew_hold("acct", hold_id, now=T0 + 10 * s, expires_at=T0 + 40 * s)
        assert self._holds(repository) == {hold_id: T0 + 40 * s}
        # An earlier expiry is not a renewal: the hold is live, and keeps the later one.
        assert repository.renew_hold("acct", hold_id, now=T0 + 20 * s, expires_at=T0 + 35 * s)
        assert self._holds(repository) == {hold_id: T0 + 40 * s}
        # Live until its expiry, exclusive: renewed one second before it, not at it.
        at = T0 + 39 * s
        assert repository.renew_hold("acct", hold_id, now=at, expires_at=at + 30 * s)
        assert self._holds(repository) == {hold_id: at + 30 * s}

    def test_a_renewal_never_brings_back_a_lapsed_or_released_hold(
        self, repository: Repository
    ) -> None:
        hold_id = self._hold_placed(repository)
        lapsed_at = T0 + timedelta(seconds=30)
        later = lapsed_at + timedelta(seconds=30)
        assert not repository.renew_hold("acct", hold_id, now=lapsed_at, expires_at=later)
        assert self._holds(repository) == {hold_id: lapsed_at}  # unchanged, still lapsed
        with repository.unit_of_work() as uow:
            wallet = uow.load_wallet("acct")
            assert wallet is not None
            wallet.release_hold(hold_id)
            uow.save_wallet(wallet)
            uow.commit()
        assert not repository.renew_hold("acct", hold_id, now=T0, expires_at=later)
        assert self._holds(repository) == {}
        assert not repository.renew_hold("acct", "acct#9", now=T0, expires_at=later)
        assert not repository.renew_hold("nobody", hold_id, now=T0, expires_at=later)

    def test_a_renewal_leaves_the_wallet_at_its_version_and_a_save_keeps_it(
        self, repository: Repository
    ) -> None:
        """A renewal never makes a writer of the account conflict: the wallet's version
        is unchanged, so a wallet loaded before the renewal still saves, and saving it
        keeps the renewed expiry (a stored hold is never rewritten)."""
        hold_id = self._hold_placed(repository)
        with repository.unit_of_work() as uow:
            before = uow.load_wallet("acct")
        assert before is not None
        renewed_to = T0 + timedelta(seconds=50)
        assert repository.renew_hold("acct", hold_id, now=T0, expires_at=renewed_to)
        with repository.unit_of_work() as uow:
            before.top_up(Channel.EMAIL, 5, T0, Cause(operation=Operation.GRANT, plan="boost"))
            uow.save_wallet(before)
            uow.commit()
        assert self._holds(repository) == {hold_id: renewed_to}

    def test_a_renewal_refuses_what_every_call_refuses(self, repository: Repository) -> None:
        hold_id = self._hold_placed(repository)
        later = T0 + timedelta(seconds=60)
        not_an_id: Any = 7
        for account, hold, now, expires_at in (
            ("acct", hold_id, NAIVE, later),
            ("acct", hold_id, T0, NAIVE),
            (" padded", hold_id, T0, later),
            ("acct", not_an_id, T0, later),
        ):
            with pytest.raises(InvalidRequest):
                repository.renew_hold(account, hold, now=now, expires_at=expires_at)
        assert self._holds(repository) == {hold_id: T0 + timedelta(seconds=30)}

    def test_due_accounts_are_bounded_and_exclude_lapsed(self, repository: Repository) -> None:
        with repository.unit_of_work() as uow:
            for i in range(5):
                uow.add_wallet(_wallet(f"a{i}", at=T0 + timedelta(days=i)))
            lapsed = _wallet("gone")
            lapsed.cancel()
            lapsed.catch_up(T0 + timedelta(days=40))
            uow.add_wallet(lapsed)
            uow.commit()
        at = T0 + timedelta(days=30)  # Feb 28 is the first boundary of a Jan 31 anchor
        due = repository.due_accounts(at, 10)
        assert set(due) <= {f"a{i}" for i in range(5)} and "a0" in due
        assert len(repository.due_accounts(T0 + timedelta(days=60), 2)) == 2
        assert repository.due_accounts(T0, 10) == []

    # -- what adapters really get wrong: long ledgers, exact instants, odd ids, races --

    def _seed_long_ledger(
        self, repository: Repository, n_charges: int, account: str = "acct"
    ) -> list[LedgerEntry]:
        """A ledger of two grants and `n_charges` charges saved in one unit of work, two
        entries per instant (ties at an instant are where an off-by-one shows)."""
        wallet = _wallet(account)
        for i in range(n_charges):
            pool = Channel.MOBILE if i % 5 == 0 else Channel.EMAIL
            cause = Cause(operation=Operation.UNLOCK, datum=f"email:l{i}@corp.com")
            wallet.charge(pool, 1, T0 + timedelta(minutes=(i + 1) // 2), cause)
        made = list(wallet.pending_entries)
        with repository.unit_of_work() as uow:
            uow.add_wallet(wallet)
            uow.commit()
        return made

    @pytest.mark.parametrize("n_charges", [9, 10, 11, 1_000])
    def test_a_long_ledger_reads_in_seq_order_page_by_page(
        self, repository: Repository, n_charges: int
    ) -> None:
        # Ledgers of 11, 12, 13 and 1,002 entries: past ten, seqs sorted as text would read
        # 0, 1, 10, 11, 2, ...; past a page of 1,000, a statement needs a second page.
        made = self._seed_long_ledger(repository, n_charges)
        total = len(made)
        assert [e.seq for e in repository.entries("acct", limit=total + 1)] == list(range(total))
        assert list(repository.entries("acct", limit=total)) == made
        for limit in sorted({1, 2, 3, 10, 11, total - 1, total, total + 1} - {0}):
            pages: list[LedgerEntry] = []
            after = -1
            while True:
                page = list(repository.entries("acct", after_seq=after, limit=limit))
                assert all(e.seq > after for e in page), f"a page after seq {after} repeats it"
                assert len(page) == min(limit, total - len(pages)), (limit, after, len(page))
                pages += page
                if len(page) < limit:
                    break
                after = page[-1].seq
            assert [e.seq for e in pages] == list(range(total)), f"pages of {limit}"
        for after in (-1, 0, 9, 10, total - 2, total - 1):
            assert [e.seq for e in repository.entries("acct", after_seq=after, limit=3)] == list(
                range(after + 1, min(after + 4, total))
            )

    def test_entries_and_past_balances_at_exact_instants(self, repository: Repository) -> None:
        made = self._seed_long_ledger(repository, 12)
        instants = sorted({e.at for e in made})
        probes = [
            *instants,
            *(at + timedelta(seconds=30) for at in instants),
            *(at - timedelta(microseconds=1) for at in instants),
        ]
        for since in [None, *probes]:
            for until in [None, *probes[::3]]:
                expected = [
                    e.seq
                    for e in made
                    if (since is None or since <= e.at) and (until is None or e.at < until)
                ]
                read = repository.entries("acct", since=since, until=until, limit=100)
                assert [e.seq for e in read] == expected, f"since={since} until={until}"
        for at in probes:
            for pool in Channel:
                mine = [e for e in made if e.pool is pool and e.at <= at]
                found = repository.last_entry("acct", pool, at)
                assert found == (mine[-1] if mine else None), f"last {pool} entry at {at}"

    def test_a_renewal_due_exactly_now_is_due(self, repository: Repository) -> None:
        wallet = _wallet("due")
        boundary = wallet.next_boundary_at
        assert boundary is not None
        with repository.unit_of_work() as uow:
            uow.add_wallet(wallet)
            uow.add_wallet(_wallet("later", at=T0 + timedelta(microseconds=1)))
            uow.commit()
        assert repository.due_accounts(boundary - timedelta(microseconds=1), 10) == []
        assert repository.due_accounts(boundary, 10) == ["due"]
        assert repository.due_accounts(boundary + timedelta(microseconds=1), 10) == [
            "due",
            "later",
        ]

    def test_accounts_with_separator_characters_keep_to_themselves(
        self, repository: Repository
    ) -> None:
        # Storage keys built by joining an id with ":" or "/" without escaping it let one
        # account read another's rows; percent-encoding without escaping "%" does too.
        ids = ["a", "a:b", "a:", "a/b", "a%3Ab", "a%2Fb", "ü:", "a b", "b"]
        for n, account in enumerate(ids):
            self._seed_long_ledger(repository, n, account)
        contact = Contact.email("shared@corp.com")
        with repository.unit_of_work() as uow:
            for n, account in enumerate(ids):
                uow.dedup.add([attrs.evolve(_ownership(contact, n + 2), account=account)])
                uow.idempotency.put(
                    attrs.evolve(_record("same-key"), account=account, fingerprint=f"{n:064d}")
                )
            uow.commit()
        with repository.unit_of_work() as uow:
            uow.dedup.mark_refunded("a", contact, T0 + timedelta(days=1))
            uow.commit()
        for n, account in enumerate(ids):
            read = repository.entries(account, limit=100)
            assert {e.account for e in read} == {account}, account
            assert [e.seq for e in read] == list(range(n + 2)), account
            for pool in Channel:
                last = [e for e in read if e.pool is pool][-1]
                assert repository.last_entry(account, pool, T0 + timedelta(days=1)) == last
            owned = repository.owned(account, limit=10)
            assert [(r.account, r.entry_seq) for r in owned] == [(account, n + 2)]
            assert (owned[0].refunded_at is not None) is (account == "a"), account
            with repository.unit_of_work() as uow:
                record = uow.idempotency.get(account, "same-key")
                assert record is not None and record.account == account
                assert record.fingerprint == f"{n:064d}", account
        assert list(repository.accounts(limit=100)) == sorted(ids)

    def test_one_idempotency_key_on_two_accounts_is_two_records(
        self, repository: Repository
    ) -> None:
        first = _record("k", hold_id="acct#0")
        other = attrs.evolve(_record("k"), account="acct:2", fingerprint="0" * 64)
        with repository.unit_of_work() as uow:
            uow.idempotency.put(first)
            uow.commit()
        with repository.unit_of_work() as uow:
            assert uow.idempotency.get("acct:2", "k") is None
            uow.idempotency.put(other)
            uow.commit()
        with repository.unit_of_work() as uow:
            assert uow.idempotency.get("acct", "k") == first
            assert uow.idempotency.get("acct:2", "k") == other

    def test_a_refund_mark_persists_with_the_wallet_saved_beside_it(
        self, repository: Repository
    ) -> None:
        # As report_bounce does it: load the wallet, read the ownership, mark it refunded,
        # credit the refund, save the wallet, commit, in one unit of work.
        with repository.unit_of_work() as uow:
            uow.add_wallet(_wallet())
            uow.dedup.add([_ownership(A, 2)])
            uow.commit()
        for attempt in range(2):
            with repository.unit_of_work() as uow:
                wallet = uow.load_wallet("acct")
                assert wallet is not None
                record = uow.dedup.owned("acct", [A])[A]
                if attempt:
                    assert record.refunded_at == T0 + timedelta(days=1)
                    with pytest.raises(AlreadyRefunded):
                        uow.dedup.mark_refunded("acct", A, T0 + timedelta(days=2))
                    continue
                uow.dedup.mark_refunded("acct", A, T0 + timedelta(days=1))
                wallet.refund(
                    Channel.EMAIL, 1, T0 + timedelta(days=1), Cause(operation=Operation.BOUNCE)
                )
                uow.save_wallet(wallet)
                uow.commit()
        assert [r.refunded_at for r in repository.owned("acct", limit=10)] == [
            T0 + timedelta(days=1)
        ]

    @pytest.mark.parametrize("same_datum", [True, False], ids=["same-datum", "other-data"])
    def test_overlapping_units_of_work_tell_callers_what_the_ledger_shows(
        self, repository: Repository, same_datum: bool
    ) -> None:
        # Two units of work charge at once, the second starting once the first has read
        # the wallet and found its datum unowned. A correct adapter makes the second wait
        # (or conflict) until the first ends; one that checks, then writes, lets both
        # charge on what they read: what the callers are told, the ledger's charges, the
        # ownership records and the balance part ways.
        with repository.unit_of_work() as uow:
            uow.add_wallet(_wallet())
            uow.commit()
        first_read, first_wrote, second_wrote = (threading.Event() for _ in range(3))
        told: list[Contact] = []
        errors: list[BaseException] = []

        def charge(contact: Contact, *, first: bool) -> None:
            for _ in range(20):  # a lost race is retried, as the service does
                try:
                    with repository.unit_of_work() as uow:
                        wallet = uow.load_wallet("acct")
                        assert wallet is not None
                        owned = uow.dedup.owned("acct", [contact])
                        if first:  # let the second read and write, if the adapter lets it
                            first_read.set()
                            second_wrote.wait(OVERLAP_WAIT_S)
                        if owned:
                            return
                        entry = wallet.charge(
                            Channel.EMAIL,
                            1,
                            T0,
                            Cause(operation=Operation.UNLOCK, datum=str(contact)),
                        )
                        uow.dedup.add([_ownership(contact, entry.seq)])
                        uow.save_wallet(wallet)
                        if first:
                            first_wrote.set()
                        else:  # and commit after the first wrote: both wrote on one read
                            second_wrote.set()
                            first_wrote.wait(OVERLAP_WAIT_S)
                        uow.commit()
                    told.append(contact)
                    return
                except ConcurrencyConflict:
                    for event in (first_read, first_wrote, second_wrote):
                        event.set()
                except BaseException as exc:  # surfaced below, with the thread's name
                    errors.append(exc)
                    return

        a, b = A, (A if same_datum else Contact.email("b@corp.com"))

        def second() -> None:
            first_read.wait(OVERLAP_WAIT_S)
            charge(b, first=False)

        threads = [
            threading.Thread(target=charge, args=(a,), kwargs={"first": True}, daemon=True),
            threading.Thread(target=second, daemon=True),
        ]
        for thread in threads:
            thread.start()
        join_all(threads)
        assert not errors, errors
        entries = list(repository.entries("acct", limit=100))
        charges = [str(e.cause.datum) for e in entries if e.kind is EntryKind.CHARGE]
        owned = [r.contact for r in repository.owned("acct", limit=10)]
        assert [e.seq for e in entries] == list(range(len(entries)))
        assert sorted(charges) == sorted(map(str, told)) == sorted(map(str, owned)), (
            f"callers were told {told}; the ledger charged {charges}; owned: {owned}"
        )
        assert len(told) == (1 if same_datum else 2)
        with repository.unit_of_work() as uow:
            wallet = uow.load_wallet("acct")
            assert wallet is not None
            assert wallet.balance(Channel.EMAIL) == 12_000 - len(told)
            assert wallet.next_seq == len(entries)

    # -- every error path of every port call ----------------------------------------
    #
    # The port's docstrings (credits_domain.ports) say what each call raises; these tests
    # hold every adapter to it, so that code tested on one adapter fails alike on another.

    def _stored_status(self, repository: Repository, account: str = "acct") -> Status | None:
        with repository.unit_of_work() as uow:
            wallet = uow.load_wallet(account)
        return None if wallet is None else wallet.status

    # unit of work: its life

    def test_a_unit_of_work_is_used_only_inside_its_block(self, repository: Repository) -> None:
        outside = repository.unit_of_work()
        with pytest.raises(AssertionError, match="inside its `with` block"):
            outside.load_wallet("acct")
        with pytest.raises(AssertionError):
            outside.commit()
        with repository.unit_of_work() as uow:
            uow.commit()
            with pytest.raises(AssertionError, match="inside its `with` block"):
                uow.dedup.owned("acct", [])
            with pytest.raises(AssertionError, match="once"):
                uow.commit()
        with pytest.raises(AssertionError, match="inside its `with` block"):
            uow.idempotency.get("acct", "k")
        with pytest.raises(AssertionError, match="entered once"), uow:
            pass

    @pytest.mark.parametrize(
        "fail",
        [
            pytest.param(lambda uow: uow.add_wallet(_wallet()), id="conflict"),
            pytest.param(
                lambda uow: uow.dedup.mark_refunded("acct", Contact.email("n@corp.com"), T0),
                id="refusal",
            ),
            pytest.param(lambda uow: uow.load_wallet(""), id="invalid-argument"),
        ],
    )
    def test_a_call_that_raised_leaves_only_the_way_out(
        self, repository: Repository, fail: Callable[[UnitOfWork], object]
    ) -> None:
        # On PostgreSQL a failed statement aborts the transaction and a COMMIT of it
        # quietly rolls back: so on every adapter, nothing is done in it any more.
        with repository.unit_of_work() as uow:
            uow.add_wallet(_wallet())
            uow.commit()
        with repository.unit_of_work() as uow:
            wallet = uow.load_wallet("acct")
            assert wallet is not None
            wallet.pause()
            uow.save_wallet(wallet)
            with pytest.raises((ConcurrencyConflict, NotCharged, InvalidRequest)):
                fail(uow)
            with pytest.raises(AssertionError, match="call failed"):
                uow.load_wallet("acct")
            with pytest.raises(AssertionError, match="call failed"):
                uow.commit()
        assert self._stored_status(repository) is Status.ACTIVE  # the pause was rolled back

    # unit of work: wallets

    @pytest.mark.parametrize("account", BAD_ACCOUNTS)
    def test_an_invalid_account_id_is_refused_by_every_call(
        self, repository: Repository, account: Any
    ) -> None:
        calls: list[Callable[[UnitOfWork], object]] = [
            lambda uow: uow.load_wallet(account),
            lambda uow: uow.add_wallet(_wallet(account)),
            lambda uow: uow.dedup.owned(account, [Contact.email("a@corp.com")]),
            lambda uow: uow.dedup.add([attrs.evolve(_ownership(A, 1), account=account)]),
            lambda uow: uow.dedup.mark_refunded(account, A, T0),
            lambda uow: uow.idempotency.get(account, "k"),
            lambda uow: uow.idempotency.put(attrs.evolve(_record("k"), account=account)),
        ]
        for call in calls:
            with pytest.raises(InvalidRequest, match="account"), repository.unit_of_work() as uow:
                call(uow)
        with pytest.raises(InvalidRequest, match="account"):
            repository.entries(account)
        with pytest.raises(InvalidRequest, match="account"):
            repository.last_entry(account, Channel.EMAIL, T0)

    def test_a_unit_of_work_sees_its_own_saves(self, repository: Repository) -> None:
        with repository.unit_of_work() as uow:
            uow.add_wallet(_wallet())
            added = uow.load_wallet("acct")
            assert added is not None and added.status is Status.ACTIVE
            added.pause()
            uow.save_wallet(added)
            again = uow.load_wallet("acct")
            assert again is not None and again.status is Status.PAUSED
            again.resume()
            uow.save_wallet(again)  # saved twice in one unit: each save builds on the last
            uow.commit()
        assert self._stored_status(repository) is Status.ACTIVE

    def test_adding_an_account_twice_in_one_unit_conflicts(self, repository: Repository) -> None:
        with pytest.raises(ConcurrencyConflict), repository.unit_of_work() as uow:
            uow.add_wallet(_wallet())
            uow.add_wallet(_wallet())
        assert self._stored_status(repository) is None

    def test_a_naive_instant_in_a_wallet_is_refused(self, repository: Repository) -> None:
        with (
            pytest.raises(InvalidRequest, match="timezone-aware"),
            repository.unit_of_work() as uow,
        ):
            uow.add_wallet(_wallet(at=NAIVE))
        assert self._stored_status(repository) is None
        with repository.unit_of_work() as uow:
            uow.add_wallet(_wallet())
            uow.commit()
        with (
            pytest.raises(InvalidRequest, match="timezone-aware"),
            repository.unit_of_work() as uow,
        ):
            wallet = uow.load_wallet("acct")
            assert wallet is not None
            wallet.top_up(Channel.EMAIL, 5, NAIVE, Cause(operation=Operation.GRANT, note="x"))
            uow.save_wallet(wallet)
        assert [e.seq for e in repository.entries("acct")] == [0, 1]

    def test_saving_a_stale_wallet_conflicts(self, repository: Repository) -> None:
        with repository.unit_of_work() as uow:
            uow.add_wallet(_wallet())
            uow.commit()
        with repository.unit_of_work() as uow:
            stale = uow.load_wallet("acct")
        assert stale is not None
        with repository.unit_of_work() as uow:
            fresh = uow.load_wallet("acct")
            assert fresh is not None
            fresh.pause()
            uow.save_wallet(fresh)
            uow.commit()
        with pytest.raises(ConcurrencyConflict, match="version"), repository.unit_of_work() as uow:
            stale.cancel()
            uow.save_wallet(stale)
            uow.commit()
        assert self._stored_status(repository) is Status.PAUSED

    def test_a_wallet_loaded_earlier_saves_while_it_is_current(
        self, repository: Repository
    ) -> None:
        with repository.unit_of_work() as uow:
            uow.add_wallet(_wallet())
            uow.commit()
        with repository.unit_of_work() as uow:
            earlier = uow.load_wallet("acct")
        assert earlier is not None
        with repository.unit_of_work() as uow:
            earlier.pause()
            uow.save_wallet(earlier)
            uow.commit()
        assert self._stored_status(repository) is Status.PAUSED

    def test_saving_a_wallet_never_added_conflicts(self, repository: Repository) -> None:
        with (
            pytest.raises(ConcurrencyConflict, match="never added"),
            repository.unit_of_work() as uow,
        ):
            uow.save_wallet(_wallet())
        assert self._stored_status(repository) is None
        assert list(repository.entries("acct")) == []

    # unit of work: ownership

    def test_ownership_lookups_of_nothing_find_nothing(self, repository: Repository) -> None:
        with repository.unit_of_work() as uow:
            assert uow.dedup.owned("nobody", [A]) == {}
            assert uow.dedup.owned("acct", []) == {}
            uow.dedup.add([])  # nothing to record is not an error

    def test_owning_a_datum_twice_in_one_unit_conflicts(self, repository: Repository) -> None:
        with pytest.raises(ConcurrencyConflict), repository.unit_of_work() as uow:
            uow.dedup.add([_ownership(A, 1), _ownership(A, 2)])
        with pytest.raises(ConcurrencyConflict), repository.unit_of_work() as uow:
            uow.dedup.add([_ownership(A, 1)])
            uow.dedup.add([_ownership(A, 2)])
        with repository.unit_of_work() as uow:
            assert uow.dedup.owned("acct", [A]) == {}

    def test_ownership_of_another_account_is_its_own(self, repository: Repository) -> None:
        with repository.unit_of_work() as uow:
            uow.dedup.add([_ownership(A, 1), attrs.evolve(_ownership(A, 1), account="other")])
            uow.commit()
        with repository.unit_of_work() as uow:
            assert set(uow.dedup.owned("other", [A])) == {A}

    def test_ownership_with_a_naive_instant_is_refused(self, repository: Repository) -> None:
        with (
            pytest.raises(InvalidRequest, match="timezone-aware"),
            repository.unit_of_work() as uow,
        ):
            uow.dedup.add([attrs.evolve(_ownership(A, 1), charged_at=NAIVE)])
        with repository.unit_of_work() as uow:
            assert uow.dedup.owned("acct", [A]) == {}

    def test_ownership_of_no_credits_is_a_bug(self, repository: Repository) -> None:
        with pytest.raises(AssertionError, match="cost credits"), repository.unit_of_work() as uow:
            uow.dedup.add([_ownership(A, 1, credits=0)])

    def test_a_refund_needs_an_owned_datum_once(self, repository: Repository) -> None:
        with repository.unit_of_work() as uow:
            uow.dedup.add([_ownership(A, 1)])
            uow.commit()
        with pytest.raises(NotCharged), repository.unit_of_work() as uow:
            uow.dedup.mark_refunded("acct", Contact.email("b@corp.com"), T0)
        with pytest.raises(NotCharged), repository.unit_of_work() as uow:
            uow.dedup.mark_refunded("other", A, T0)
        with (
            pytest.raises(InvalidRequest, match="timezone-aware"),
            repository.unit_of_work() as uow,
        ):
            uow.dedup.mark_refunded("acct", A, NAIVE)
        with pytest.raises(AlreadyRefunded), repository.unit_of_work() as uow:
            uow.dedup.mark_refunded("acct", A, T0 + timedelta(days=1))
            uow.dedup.mark_refunded("acct", A, T0 + timedelta(days=2))  # once, even in one unit
        with repository.unit_of_work() as uow:
            assert uow.dedup.owned("acct", [A])[A].refunded_at is None
            uow.dedup.mark_refunded("acct", A, (T0 + timedelta(days=1)).astimezone(PLUS_TWO))
            uow.commit()
        with pytest.raises(AlreadyRefunded), repository.unit_of_work() as uow:
            uow.dedup.mark_refunded("acct", A, T0 + timedelta(days=2))
        with repository.unit_of_work() as uow:
            refunded_at = uow.dedup.owned("acct", [A])[A].refunded_at
        assert refunded_at == T0 + timedelta(days=1)
        assert refunded_at is not None and refunded_at.utcoffset() == timedelta(0)

    # unit of work: idempotency records

    @pytest.mark.parametrize("key", BAD_KEYS)
    def test_an_invalid_idempotency_key_is_refused(self, repository: Repository, key: Any) -> None:
        with pytest.raises(InvalidRequest), repository.unit_of_work() as uow:
            uow.idempotency.get("acct", key)
        with pytest.raises(InvalidRequest), repository.unit_of_work() as uow:
            uow.idempotency.put(attrs.evolve(_record("k"), key=key))

    def test_an_idempotency_record_keeps_its_instant_in_utc(self, repository: Repository) -> None:
        with (
            pytest.raises(InvalidRequest, match="timezone-aware"),
            repository.unit_of_work() as uow,
        ):
            uow.idempotency.put(attrs.evolve(_record("k"), created_at=NAIVE))
        with repository.unit_of_work() as uow:
            assert uow.idempotency.get("acct", "k") is None
            uow.idempotency.put(attrs.evolve(_record("k"), created_at=T0.astimezone(PLUS_TWO)))
            uow.commit()
        with repository.unit_of_work() as uow:
            record = uow.idempotency.get("acct", "k")
        assert record is not None and record.created_at == T0
        assert record.created_at.utcoffset() == timedelta(0)

    # reads

    @pytest.mark.parametrize("limit", BAD_LIMITS)
    def test_a_read_limit_must_be_a_whole_number_in_range(
        self, repository: Repository, limit: Any
    ) -> None:
        with pytest.raises(InvalidRequest, match="limit"):
            repository.entries("acct", limit=limit)
        with pytest.raises(InvalidRequest, match="limit"):
            repository.due_accounts(T0, limit)

    @pytest.mark.parametrize("after_seq", BAD_SEQS)
    def test_a_seq_to_read_after_must_be_a_whole_number_in_range(
        self, repository: Repository, after_seq: Any
    ) -> None:
        with pytest.raises(InvalidRequest, match="after_seq"):
            repository.entries("acct", after_seq=after_seq)

    def test_reads_at_the_edges_of_their_range(self, repository: Repository) -> None:
        self._seed_ledger(repository, 1)
        assert repository.entries("acct", limit=0) == []
        assert len(repository.entries("acct", limit=2**63 - 1)) == 3
        assert repository.entries("acct", after_seq=2**63 - 1) == []
        assert repository.due_accounts(T0 + timedelta(days=60), 0) == []

    def test_reads_refuse_naive_instants(self, repository: Repository) -> None:
        with pytest.raises(InvalidRequest, match="since"):
            repository.entries("acct", since=NAIVE)
        with pytest.raises(InvalidRequest, match="until"):
            repository.entries("acct", until=NAIVE)
        with pytest.raises(InvalidRequest, match="at"):
            repository.last_entry("acct", Channel.EMAIL, NAIVE)
        with pytest.raises(InvalidRequest, match="now"):
            repository.due_accounts(NAIVE, 10)

    def test_last_entry_needs_a_pool(self, repository: Repository) -> None:
        with pytest.raises(InvalidRequest, match="pool"):
            repository.last_entry("acct", "email", T0)  # type: ignore[arg-type]

    def test_reads_of_an_account_that_never_subscribed_find_nothing(
        self, repository: Repository
    ) -> None:
        assert list(repository.entries("nobody")) == []
        assert repository.last_entry("nobody", Channel.EMAIL, T0) is None
        with repository.unit_of_work() as uow:
            assert uow.idempotency.get("nobody", "k") is None

    def test_reads_see_only_what_is_committed(self, repository: Repository) -> None:
        with repository.unit_of_work() as uow:
            uow.add_wallet(_wallet())
            assert list(repository.entries("acct")) == []
            assert repository.last_entry("acct", Channel.EMAIL, T0) is None
            assert repository.due_accounts(T0 + timedelta(days=60), 10) == []
            uow.commit()
        assert len(repository.entries("acct")) == 2

    def test_due_accounts_come_oldest_boundary_first(self, repository: Repository) -> None:
        with repository.unit_of_work() as uow:
            # Account ids in the reverse order of their boundaries.
            for i, account in enumerate(["d", "c", "b", "a"]):
                uow.add_wallet(_wallet(account, at=T0 + timedelta(days=i)))
            uow.add_wallet(_wallet("c2", at=T0 + timedelta(days=1)))  # c's boundary too
            uow.commit()
        later = T0 + timedelta(days=60)
        assert repository.due_accounts(later, 3) == ["d", "c", "c2"]
        assert repository.due_accounts(later, 10) == ["d", "c", "c2", "b", "a"]

    # -- concurrency through the service (R12, R15, R16) ---------------------------------

    def test_concurrent_requests_never_charge_a_datum_twice(self, repository: Repository) -> None:
        service = CreditService(repository=repository, verifier=_AllValid(), clock=_FixedClock(T0))
        service.subscribe("hot", Plan(name="five", monthly=Credits(email=5, mobile=0)))
        shared = [Contact.email(f"s{i}@corp.com") for i in range(4)]
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                for round_no in range(3):
                    mine = [Contact.email(f"w{n}-{round_no}@corp.com")]
                    service.unlock("hot", [*shared, *mine])
            except BaseException as exc:  # surfaced below, with the thread's name
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(4)]
        for thread in threads:
            thread.start()
        join_all(threads)
        assert not errors, errors
        entries = list(service.statement("hot"))
        charged = [e.cause.datum for e in entries if e.kind is EntryKind.CHARGE]
        assert len(charged) == len(set(charged)) == 5  # R12 and R15: exactly the 5 credits
        balance = service.balance("hot")
        assert balance.email == sum(e.amount for e in entries if e.pool is Channel.EMAIL) == 0
        assert balance.email_available == 0

    # -- top-ups' idempotency records (R8, R17) -------------------------------------------

    def test_a_top_up_record_points_at_its_first_entry(self, repository: Repository) -> None:
        record = attrs.evolve(_record("grant-1"), entry_seq=2**63 - 1)
        with repository.unit_of_work() as uow:
            uow.idempotency.put(record)
            uow.commit()
        with repository.unit_of_work() as uow:
            assert uow.idempotency.get("acct", "grant-1") == record

    @pytest.mark.parametrize("seq", [-1, 2**63, True, "3", 1.5])
    def test_a_top_up_record_needs_a_seq_in_range(self, repository: Repository, seq: Any) -> None:
        with pytest.raises(InvalidRequest, match="entry_seq"), repository.unit_of_work() as uow:
            uow.idempotency.put(attrs.evolve(_record("grant-1"), entry_seq=seq))

    def test_a_top_up_record_holds_no_hold_and_no_result(self, repository: Repository) -> None:
        result = ChargeResult(operation=Operation.UNLOCK, items=())
        for wrong in (
            attrs.evolve(_record("grant-1", hold_id="acct#0"), entry_seq=0),
            attrs.evolve(_record("grant-1"), entry_seq=0, result=result),
        ):
            with pytest.raises(InvalidRequest, match="top-up"), repository.unit_of_work() as uow:
                uow.idempotency.put(wrong)
        with repository.unit_of_work() as uow:
            assert uow.idempotency.get("acct", "grant-1") is None

    # -- owned data, paged (R12) -----------------------------------------------------------

    def test_owned_data_read_in_pages_by_channel_then_value(self, repository: Repository) -> None:
        contacts = [
            Contact.mobile("+15550000002"),
            Contact.email("b@corp.com"),
            Contact.email("a@corp.com"),
            Contact.mobile("+15550000001"),
            Contact.email("c@corp.com"),
        ]
        records = [_ownership(c, i, pool=c.channel) for i, c in enumerate(contacts)]
        with repository.unit_of_work() as uow:
            uow.dedup.add(records)
            uow.dedup.add([attrs.evolve(_ownership(A, 9), account="other")])
            uow.commit()
        with repository.unit_of_work() as uow:
            uow.dedup.mark_refunded("acct", contacts[0], T0 + timedelta(days=1))
            uow.commit()
        pages: list[list[Ownership]] = []
        after: Contact | None = None
        while page := list(repository.owned("acct", after=after, limit=2)):
            pages.append(page)
            after = page[-1].contact
        assert [len(page) for page in pages] == [2, 2, 1]
        expected = sorted(records, key=lambda r: (r.contact.channel.value, r.contact.value))
        expected[-1] = attrs.evolve(expected[-1], refunded_at=T0 + timedelta(days=1))
        assert [record for page in pages for record in page] == expected
        # A cursor need not be owned: the page starts after where it would be.
        between = repository.owned("acct", after=Contact.email("bz@corp.com"), limit=10)
        assert [r.contact.value for r in between] == ["c@corp.com", "+15550000001", "+15550000002"]
        assert repository.owned("acct", limit=0) == []
        assert [r.account for r in repository.owned("other", limit=10)] == ["other"]
        assert repository.owned("nobody", limit=10) == []

    def test_owned_data_are_read_once_committed(self, repository: Repository) -> None:
        with repository.unit_of_work() as uow:
            uow.dedup.add([_ownership(A, 1)])
            assert repository.owned("acct", limit=10) == []
            uow.commit()
        assert [r.contact for r in repository.owned("acct", limit=10)] == [A]

    @pytest.mark.parametrize("limit", BAD_LIMITS)
    def test_owned_data_need_a_limit_in_range(self, repository: Repository, limit: Any) -> None:
        with pytest.raises(InvalidRequest, match="limit"):
            repository.owned("acct", limit=limit)

    def test_owned_data_need_a_contact_as_cursor(self, repository: Repository) -> None:
        with pytest.raises(InvalidRequest, match="after"):
            repository.owned("acct", after="email:a@corp.com", limit=10)  # type: ignore[arg-type]
        for account in BAD_ACCOUNTS:
            with pytest.raises(InvalidRequest, match="account"):
                repository.owned(account, limit=10)  # type: ignore[arg-type]

    # -- the list of accounts ------------------------------------------------------------

    # Ids whose code-point order differs from a linguistic collation's (case, accents,
    # punctuation): every adapter lists them as Python's `sorted` does.
    LISTED = ("b", "a", "B", "a-b", "ab", "é", "Z9", "z", "a b", "ä")

    def _add_accounts(self, repository: Repository, ids: Iterable[str]) -> None:
        with repository.unit_of_work() as uow:
            for account in ids:
                uow.add_wallet(_wallet(account))
            uow.commit()

    def test_accounts_are_listed_in_code_point_order(self, repository: Repository) -> None:
        self._add_accounts(repository, self.LISTED)
        lapsed = _wallet("gone")
        lapsed.cancel()
        lapsed.catch_up(T0 + timedelta(days=40))
        with repository.unit_of_work() as uow:
            uow.add_wallet(lapsed)
            uow.commit()
        assert list(repository.accounts(limit=100)) == sorted([*self.LISTED, "gone"])

    def test_accounts_page_by_the_last_id_read(self, repository: Repository) -> None:
        self._add_accounts(repository, self.LISTED)
        pages: list[list[str]] = []
        after: str | None = None
        while page := list(repository.accounts(after=after, limit=3)):
            assert len(page) <= 3
            pages.append(page)
            after = page[-1]
        assert [a for page in pages for a in page] == sorted(self.LISTED)
        assert len(pages) == 4
        # The cursor need not be an account that exists.
        assert list(repository.accounts(after="a", limit=2)) == ["a b", "a-b"]
        assert list(repository.accounts(after="ÿ", limit=2)) == []

    def test_accounts_lists_only_what_is_committed(self, repository: Repository) -> None:
        assert list(repository.accounts(limit=10)) == []
        with repository.unit_of_work() as uow:
            uow.add_wallet(_wallet("acct"))
            assert list(repository.accounts(limit=10)) == []
        assert list(repository.accounts(limit=10)) == []
        self._add_accounts(repository, ["acct"])
        assert list(repository.accounts(limit=10)) == ["acct"]
        assert list(repository.accounts(limit=0)) == []
        assert list(repository.accounts(limit=2**63 - 1)) == ["acct"]

    @pytest.mark.parametrize("limit", BAD_LIMITS)
    def test_accounts_need_a_limit_in_range(self, repository: Repository, limit: Any) -> None:
        with pytest.raises(InvalidRequest, match="limit"):
            repository.accounts(limit=limit)

    @pytest.mark.parametrize("after", BAD_ACCOUNTS)
    def test_accounts_need_a_valid_cursor(self, repository: Repository, after: Any) -> None:
        with pytest.raises(InvalidRequest, match="account"):
            repository.accounts(after=after, limit=10)


def join_all(threads: list[threading.Thread], timeout_s: float = THREAD_TIMEOUT_S) -> None:
    """Join every thread within one bounded wait in all; fail if any is still running
    (a hung thread fails the test instead of passing it on unfinished work)."""
    for thread in threads:
        thread.join(timeout=timeout_s)
    alive = [thread.name for thread in threads if thread.is_alive()]
    assert not alive, f"threads still running after {timeout_s} s: {alive}"


A = Contact.email("a@corp.com")


def _ownership(
    contact: Contact, seq: int, *, pool: Channel = Channel.EMAIL, credits: int = 1
) -> Ownership:
    return Ownership(
        account="acct", contact=contact, pool=pool, credits=credits, charged_at=T0, entry_seq=seq
    )


def _record(key: str, *, hold_id: str | None = None) -> IdempotencyRecord:
    return IdempotencyRecord(
        account="acct", key=key, fingerprint="f" * 64, hold_id=hold_id, created_at=T0
    )


class ApiKeyStoreContract:
    """Tests of the ApiKeyStore port. Subclasses provide `make_key_store(clock)`."""

    def make_key_store(self, clock: Clock) -> ApiKeyStore:
        raise NotImplementedError("say how to build the key store under test")

    @pytest.fixture
    def key_store(self) -> ApiKeyStore:
        return self.make_key_store(_FixedClock(T0))

    def test_a_new_key_authenticates_its_account(self, key_store: ApiKeyStore) -> None:
        issued = key_store.create("acme")
        assert (issued.account, issued.created_at) == ("acme", T0)
        assert key_id_of(issued.token) == issued.key_id
        assert key_store.authenticate(issued.token) == "acme"

    def test_keys_are_independent(self, key_store: ApiKeyStore) -> None:
        first, second = key_store.create("acme"), key_store.create("acme")
        other = key_store.create("globex")  # an account need not have subscribed
        assert len({first.key_id, second.key_id, other.key_id}) == 3
        assert key_store.revoke(first.key_id) is True
        assert key_store.authenticate(first.token) is None
        assert key_store.authenticate(second.token) == "acme"
        assert key_store.authenticate(other.token) == "globex"

    @pytest.mark.parametrize("account", ["", " padded", "a/b", "nul\x00", "x" * 201])
    def test_a_key_needs_an_account_that_can_be_a_path_segment(
        self, key_store: ApiKeyStore, account: str
    ) -> None:
        with pytest.raises(InvalidRequest, match="account"):
            key_store.create(account)

    def test_a_malformed_unknown_or_wrong_key_authenticates_nobody(
        self, key_store: ApiKeyStore
    ) -> None:
        issued = key_store.create("acme")
        secret = issued.token[-43:]
        wrong_secret = issued.token[:-43] + ("A" if secret[0] != "A" else "B") + secret[1:]
        unknown_id = f"ck_{'0' * 16}_{secret}"
        for token in ["", "garbage", "nul\x00", issued.token + "x", wrong_secret, unknown_id]:
            assert key_store.authenticate(token) is None, token
        assert key_store.authenticate(issued.token) == "acme"

    def test_a_key_is_revoked_once(self, key_store: ApiKeyStore) -> None:
        issued = key_store.create("acme")
        assert key_store.revoke(issued.key_id) is True
        assert key_store.revoke(issued.key_id) is False
        assert key_store.authenticate(issued.token) is None

    @pytest.mark.parametrize("key_id", ["0123456789abcdef", "", "nul\x00", "X" * 16, "k" * 300])
    def test_revoking_a_key_that_does_not_exist_is_refused(
        self, key_store: ApiKeyStore, key_id: str
    ) -> None:
        key_store.create("acme")
        with pytest.raises(UnknownApiKey, match="no API key"):
            key_store.revoke(key_id)

    # -- the list of keys ----------------------------------------------------------------

    def test_keys_are_listed_by_id_without_their_hash(self, key_store: ApiKeyStore) -> None:
        made = [key_store.create(account) for account in ("acme", "globex", "acme")]
        key_store.revoke(made[0].key_id)
        listed = list(key_store.list_keys(limit=10))
        assert [k.key_id for k in listed] == sorted(k.key_id for k in made)
        by_id = {k.key_id: k for k in listed}
        revoked, active = by_id[made[0].key_id], by_id[made[1].key_id]
        assert (revoked.account, revoked.created_at, revoked.revoked_at) == ("acme", T0, T0)
        assert not revoked.active
        assert (active.account, active.revoked_at, active.active) == ("globex", None, True)
        assert not hasattr(active, "key_hash")
        assert all(k.created_at.utcoffset() == timedelta(0) for k in listed)

    def test_keys_of_one_account_page_by_id(self, key_store: ApiKeyStore) -> None:
        mine = sorted(key_store.create("acme").key_id for _ in range(5))
        key_store.create("globex")
        pages: list[list[str]] = []
        after: str | None = None
        while page := [k.key_id for k in key_store.list_keys(account="acme", after=after, limit=2)]:
            pages.append(page)
            after = page[-1]
        assert pages == [mine[0:2], mine[2:4], mine[4:]]
        assert list(key_store.list_keys(account="nobody", limit=10)) == []
        assert list(key_store.list_keys(limit=0)) == []
        assert list(key_store.list_keys(after="f" * 16, limit=10)) == []
        assert len(key_store.list_keys(after="0" * 16, limit=2**63 - 1)) == 6

    @pytest.mark.parametrize("limit", BAD_LIMITS)
    def test_listing_keys_needs_a_limit_in_range(self, key_store: ApiKeyStore, limit: Any) -> None:
        with pytest.raises(InvalidRequest, match="limit"):
            key_store.list_keys(limit=limit)

    @pytest.mark.parametrize("after", ["", "0123456789ABCDEF", "0" * 15, "0" * 17, "nul\x00", 7])
    def test_listing_keys_needs_a_key_id_as_cursor(
        self, key_store: ApiKeyStore, after: Any
    ) -> None:
        with pytest.raises(InvalidRequest, match="key id"):
            key_store.list_keys(after=after, limit=10)

    @pytest.mark.parametrize("account", BAD_ACCOUNTS)
    def test_listing_keys_needs_a_valid_account(self, key_store: ApiKeyStore, account: Any) -> None:
        with pytest.raises(InvalidRequest, match="account"):
            key_store.list_keys(account=account, limit=10)


def _cause() -> Cause:
    return Cause(operation=Operation.UNLOCK)


def _committed(repository: Repository, wallet: Wallet) -> None:
    """Add `wallet` (with its entries and events) in a unit of work of its own."""
    with repository.unit_of_work() as uow:
        uow.add_wallet(wallet)
        uow.commit()
