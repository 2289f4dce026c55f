"""A rule-based state machine that checks any Repository against the reference model.

Usage, for an adapter of your own::

    from credits_domain.testing import make_state_machine
    TestMyRepository = make_state_machine(lambda: MyRepository(...)).TestCase

The machine drives a real `CreditService` on the repository under test (with a manual
clock and a scripted verifier), runs the same operations on `ReferenceModel`, and after
every step checks, as invariants:
- R12: no datum is ever charged twice; the charged data are exactly the model's;
- R15: no pool is ever below zero, nor its available credits;
- R20: balance = grants + refunds - charges - forfeits, recomputed from the statement,
  and equal to the model's balance.

and, as rules of their own: R17 with a small pool of keys both accounts use (a replay
answers the account's own first answer, another account's use of the key included);
R19/R21 statements in seq order with running balances, the same entries read in pages of
1 to 4, windows and past balances at an entry's exact instant and a microsecond either
side.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from credits_domain.charging import ChargeResult
from credits_domain.contact import Channel, Contact
from credits_domain.errors import CreditsError, IdempotencyKeyReused
from credits_domain.ledger import EntryKind, LedgerEntry
from credits_domain.plans import Credits, Plan, Price
from credits_domain.ports import Clock, Repository, Verifier
from credits_domain.service import CreditService
from credits_domain.testing.model import ReferenceModel
from credits_domain.testing.strategies import contact_universe, requests
from credits_domain.verdict import Verdict

START = datetime(2024, 1, 31, 9, 30, tzinfo=UTC)  # a 31st: exercises month-end clamping (R4)
ACCOUNTS = ("acme", "globex")
# The second id extends the first past a ":", as a storage key built without escaping it
# would: each account must still read only its own rows.
MACHINE_ACCOUNTS = ("acme", "acme:eu")
UNIVERSE = contact_universe(9)
SHARED_KEYS = ("k1", "k2", "k3")
TICK = timedelta(microseconds=1)  # the storage's resolution: the closest other instant

# Small allowances make insufficiency (R15), caps (R5) and cross-pool prices (R2) common.
MACHINE_PLANS = (
    Plan(name="tiny", monthly=Credits(email=3, mobile=1)),
    Plan(name="small", monthly=Credits(email=6, mobile=2)),
    Plan(
        name="capped", monthly=Credits(email=5, mobile=2), rollover_cap=Credits(email=7, mobile=2)
    ),
    Plan(
        name="email-pays-mobile",
        monthly=Credits(email=8, mobile=0),
        prices={
            Channel.EMAIL: Price(pool=Channel.EMAIL),
            Channel.MOBILE: Price(pool=Channel.EMAIL, credits=3),
        },
    ),
    Plan(name="large", monthly=Credits(email=20, mobile=4)),
)


class _Clock:
    def __init__(self, start: datetime) -> None:
        self.at = start

    def now(self) -> datetime:
        return self.at


class _Verifier:
    def __init__(self) -> None:
        self.script: dict[Contact, Verdict] = {}

    def verdict_of(self, contact: Contact) -> Verdict:
        return self.script.get(contact, Verdict.VALID)

    def verify(self, contacts: Any) -> list[Verdict]:
        return [self.verdict_of(c) for c in contacts]


class CreditsStateMachine(RuleBasedStateMachine):
    """Takes the system under test as a factory of Repository (zarr's shape)."""

    def __init__(self, repository_factory: Callable[[], Repository]) -> None:
        super().__init__()
        self.repository = repository_factory()
        self.clock = _Clock(START)
        self.verifier = _Verifier()
        self.service = CreditService(
            repository=self.repository, verifier=self._verifier_port(), clock=self._clock_port()
        )
        self.model = ReferenceModel()
        # (account, key) -> the payload first sent under the key, and its answer (R17)
        self.answered: dict[
            tuple[str, str], tuple[tuple[str, tuple[Contact, ...]], ChargeResult]
        ] = {}

    def _verifier_port(self) -> Verifier:
        return self.verifier

    def _clock_port(self) -> Clock:
        return self.clock

    def teardown(self) -> None:
        close = getattr(self.repository, "close", None)
        if callable(close):
            close()

    def _both(
        self, real: Callable[[], object], model: Callable[[], object]
    ) -> tuple[object, object] | None:
        """Run one operation on both sides; they must succeed alike or fail alike."""
        self.model.advance(self.clock.at)
        expected_error: type[CreditsError] | None = None
        try:
            expected = model()
        except CreditsError as exc:
            expected_error, expected = type(exc), None
        try:
            actual = real()
        except CreditsError as exc:
            if expected_error is None or not isinstance(exc, expected_error):
                raise AssertionError(
                    f"system raised {exc!r}; the model expected {expected_error or 'success'}"
                ) from exc
            return None
        if expected_error is not None:
            raise AssertionError(f"system succeeded; the model expected {expected_error.__name__}")
        return expected, actual

    @initialize(account=st.sampled_from(MACHINE_ACCOUNTS), plan=st.sampled_from(MACHINE_PLANS))
    def first_subscription(self, account: str, plan: Plan) -> None:
        self.subscribe(account, plan)

    @rule(account=st.sampled_from(MACHINE_ACCOUNTS), plan=st.sampled_from(MACHINE_PLANS))
    def subscribe(self, account: str, plan: Plan) -> None:
        now = self.clock.at
        self._both(
            lambda: self.service.subscribe(account, plan),
            lambda: self.model.subscribe(account, plan, now),
        )

    @rule(account=st.sampled_from(MACHINE_ACCOUNTS), plan=st.sampled_from(MACHINE_PLANS))
    def change_plan(self, account: str, plan: Plan) -> None:
        now = self.clock.at
        self._both(
            lambda: self.service.change_plan(account, plan),
            lambda: self.model.change_plan(account, plan, now),
        )

    @rule(
        account=st.sampled_from(MACHINE_ACCOUNTS),
        operation=st.sampled_from(["unlock", "export", "enrich"]),
        contacts=requests(UNIVERSE),
        # A small pool of keys that both accounts use: a key is the account's own (R17),
        # so another account's request under it neither replays nor overwrites it.
        key=st.none() | st.sampled_from(SHARED_KEYS),
    )
    def charge(
        self, account: str, operation: str, contacts: list[Contact], key: str | None
    ) -> None:
        now = self.clock.at
        calls: dict[str, Callable[[], object]] = {
            "unlock": lambda: self.service.unlock(account, contacts, idempotency_key=key),
            "export": lambda: self.service.export(
                account, contacts, destination="csv", idempotency_key=key
            ),
            "enrich": lambda: self.service.enrich(account, contacts, idempotency_key=key),
        }
        payload = (operation, tuple(contacts))
        if key is not None and (account, key) in self.answered:
            self._use_again(account, key, payload, calls[operation])
            return
        pair = self._both(
            calls[operation],
            lambda: self.model.charge(account, contacts, self.verifier.verdict_of, now),
        )
        if pair is None:
            return
        expected, result = pair
        assert isinstance(result, ChargeResult)
        outcomes = [item.outcome for item in result.items]
        assert outcomes == expected, f"{operation} {contacts}: {outcomes} != model {expected}"
        if key is not None:
            self.answered[(account, key)] = (payload, result)
            self._use_again(account, key, payload, calls[operation])
            for other in MACHINE_ACCOUNTS:  # the same key of another account is untouched
                if other != account and (other, key) in self.answered:
                    self._replay(other, key)

    def _replay(self, account: str, key: str) -> None:
        (operation, contacts), first = self.answered[(account, key)]
        again = {
            "unlock": lambda: self.service.unlock(account, contacts, idempotency_key=key),
            "export": lambda: self.service.export(
                account, contacts, destination="csv", idempotency_key=key
            ),
            "enrich": lambda: self.service.enrich(account, contacts, idempotency_key=key),
        }[operation]()
        assert again.replayed and again.items == first.items, f"R17: {account} {key}"

    def _use_again(
        self,
        account: str,
        key: str,
        payload: tuple[str, tuple[Contact, ...]],
        call: Callable[[], object],
    ) -> None:
        """R17: the same payload under a used key is answered as the first time and charges
        nothing more; another payload is refused."""
        first_payload, first = self.answered[(account, key)]
        before = self.service.balance(account)
        if payload == first_payload:
            again = call()
            assert isinstance(again, ChargeResult)
            assert again.replayed and again.items == first.items, f"R17: {account} {key}"
        else:
            try:
                call()
            except IdempotencyKeyReused:
                pass
            else:
                raise AssertionError(f"R17: {account} reused {key!r} with another payload")
        assert self.service.balance(account) == before, f"R17: {account} {key} charged again"
        try:
            self.service.unlock(account, [*first_payload[1], UNIVERSE[0]], idempotency_key=key)
        except IdempotencyKeyReused:
            pass
        else:
            raise AssertionError("R17: a key reused with another payload must be refused")

    @rule(account=st.sampled_from(MACHINE_ACCOUNTS), page=st.integers(1, 4), data=st.data())
    def read_statement(self, account: str, page: int, data: st.DataObject) -> None:
        """R19, R21: the statement in seq order with running balances; the same entries read
        in small pages; windows and past balances at an entry's exact instant and between."""
        statement = list(self.service.statement(account)) if account in self.model.accounts else []
        assert [e.seq for e in statement] == list(range(len(statement))), "R19: seq order"
        running = dict.fromkeys(Channel, 0)
        for before, entry in zip([None, *statement], statement, strict=False):
            running[entry.pool] += entry.amount
            assert entry.account == account, f"{account} reads {entry}"
            assert entry.balance_after == running[entry.pool], f"R21: running balance {entry}"
            assert before is None or before.at <= entry.at, f"R19: time order {entry}"
        paged: list[LedgerEntry] = []
        after = -1
        while True:
            chunk = list(self.repository.entries(account, after_seq=after, limit=page))
            assert len(chunk) <= page
            # A page that repeats its cursor would never end.
            assert all(e.seq > after for e in chunk), f"a page after seq {after}: {chunk}"
            paged += chunk
            if len(chunk) < page:
                break
            after = chunk[-1].seq
        assert paged == statement, f"pages of {page} differ from the statement"
        if not statement:
            return
        at = data.draw(st.sampled_from(statement)).at
        at += data.draw(st.sampled_from([timedelta(0), -TICK, TICK]))
        window = list(self.repository.entries(account, since=at))
        assert window == [e for e in statement if e.at >= at], f"entries since {at}"
        window = list(self.repository.entries(account, until=at))
        assert window == [e for e in statement if e.at < at], f"entries until {at}"
        past = self.service.balance_at(account, at)
        for pool in Channel:
            mine = [e.balance_after for e in statement if e.pool is pool and e.at <= at]
            assert past.of(pool) == (mine[-1] if mine else 0), f"R21: {pool} at {at}"

    @rule(contact=st.sampled_from(UNIVERSE), verdict=st.sampled_from(list(Verdict)))
    def set_verdict(self, contact: Contact, verdict: Verdict) -> None:
        self.verifier.script[contact] = verdict

    @rule(
        days=st.integers(0, 40),
        seconds=st.integers(0, 86_399),
    )
    def advance_time(self, days: int, seconds: int) -> None:
        self.clock.at += timedelta(days=days, seconds=seconds)

    @rule(account=st.sampled_from(MACHINE_ACCOUNTS))
    def cancel(self, account: str) -> None:
        self._both(lambda: self.service.cancel(account), lambda: self.model.cancel(account))

    @rule(account=st.sampled_from(MACHINE_ACCOUNTS))
    def pause(self, account: str) -> None:
        self._both(lambda: self.service.pause(account), lambda: self.model.pause(account))

    @rule(account=st.sampled_from(MACHINE_ACCOUNTS))
    def resume(self, account: str) -> None:
        self._both(lambda: self.service.resume(account), lambda: self.model.resume(account))

    @rule(account=st.sampled_from(MACHINE_ACCOUNTS), contact=st.sampled_from(UNIVERSE))
    def bounce(self, account: str, contact: Contact) -> None:
        now = self.clock.at
        self._both(
            lambda: self.service.report_bounce(account, contact),
            lambda: self.model.bounce(account, contact, now),
        )

    @rule()
    def renew_due(self) -> None:
        self.service.renew_due(batch_size=1)

    @invariant()
    def ledger_balances_and_model_agree(self) -> None:
        """R15, R20: conservation from the ledger, no pool below zero, model agrees."""
        self.model.advance(self.clock.at)
        for account in self.model.accounts:
            balance = self.service.balance(account)
            totals = dict.fromkeys(Channel, 0)
            kinds: dict[EntryKind, int] = Counter()
            for entry in self.service.statement(account):
                totals[entry.pool] += entry.amount
                kinds[entry.kind] += 1
                assert entry.balance_after >= 0, f"R15: {entry}"
            for pool in Channel:
                assert balance.of(pool) == totals[pool], f"R20: {account} {pool}"
                assert balance.of(pool) >= 0
                assert min(balance.email_available, balance.mobile_available) >= 0
            model = self.model.balance(account)
            assert (balance.email, balance.mobile) == (
                model[Channel.EMAIL],
                model[Channel.MOBILE],
            ), f"{account}: system {balance} != model {model}"

    @invariant()
    def no_datum_charged_twice(self) -> None:
        """R12: at most one charge per datum and account, ever; exactly the model's."""
        for account, model in self.model.accounts.items():
            charged = Counter(
                entry.cause.datum
                for entry in self.service.statement(account)
                if entry.kind is EntryKind.CHARGE
            )
            assert all(n == 1 for n in charged.values()), f"R12: {charged}"
            assert set(charged) == {str(c) for c in model.owned}


def make_state_machine(
    repository_factory: Callable[[], Repository],
) -> type[CreditsStateMachine]:
    """A state machine class bound to `repository_factory`; use its `.TestCase` in pytest."""

    class BoundCreditsStateMachine(CreditsStateMachine):
        def __init__(self) -> None:
            super().__init__(repository_factory)

    BoundCreditsStateMachine.__name__ = "CreditsStateMachine"
    # Every bound class has the same source, so Hypothesis would file the examples of all
    # adapters under one key of its example database and replay one adapter's examples
    # on another. This attribute is how Hypothesis itself tells such tests apart.
    factory_name = getattr(repository_factory, "__qualname__", repr(repository_factory))
    factory_module = getattr(repository_factory, "__module__", "")
    BoundCreditsStateMachine._hypothesis_internal_add_digest = (
        f"{factory_module}.{factory_name}".encode()
    )
    return BoundCreditsStateMachine
