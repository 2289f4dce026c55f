"""The contract every Repository adapter passes (eventsourcing's shape).

Subclass it in a test module named `test_*.py`, as a class named `Test*`, and say how to
build the repository; pytest collects the inherited tests::

    class TestMyRepository(RepositoryContract):
        def make_repository(self) -> Repository:
            return MyRepository.connect(...)

or, when building it needs fixtures, override the `repository` fixture instead. The class
is not named Test*, so pytest does not collect it on its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from credits_domain.charging import ChargeResult, ItemResult, Outcome
from credits_domain.contact import Channel, Contact
from credits_domain.dedup import Ownership
from credits_domain.errors import ConcurrencyConflict
from credits_domain.ledger import Cause, EntryKind, LedgerEntry, Operation
from credits_domain.plans import PLANS, Credits, Plan, Price
from credits_domain.ports import IdempotencyRecord, Repository
from credits_domain.service import CreditService
from credits_domain.verdict import Verdict
from credits_domain.wallet import Status, Wallet

T0 = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
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
            uow.save_wallet(wallet)
            raise RuntimeError("boom")
        with repository.unit_of_work() as uow:
            again = uow.load_wallet("acct")
            assert again is not None
            assert again.balance(Channel.EMAIL) == 12_000
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

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        entries = list(service.statement("hot"))
        charged = [e.cause.datum for e in entries if e.kind is EntryKind.CHARGE]
        assert len(charged) == len(set(charged)) == 5  # R12 and R15: exactly the 5 credits
        balance = service.balance("hot")
        assert balance.email == sum(e.amount for e in entries if e.pool is Channel.EMAIL) == 0
        assert balance.email_available == 0


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
