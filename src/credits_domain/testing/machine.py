"""A rule-based state machine that checks any Repository against the reference model.

Usage, for an adapter of your own::

    from credits_domain.testing import make_state_machine
    TestMyRepository = make_state_machine(lambda: MyRepository(...)).TestCase

The machine drives a real `CreditService` on the repository under test (with a manual
clock and a scripted verifier), runs the same operations on `ReferenceModel`, and checks:

- every answer: each item's outcome and canonical datum, replays identical to the first
  answer, refusals of the same class;
- after every step, each account's statement entry by entry against the model's ledger
  (order, kinds, pools, amounts, instants, data, running balances: R19, R21), no datum
  charged twice (R12), balances and available credits equal to the model's (R15, R20);
- requests that overlap, in one thread: the verifier is the interleaving point. Request A
  reserves; inside A's call to the verifier, request B (same or another account, often
  the same data) runs to completion; then A settles. Whichever settles first pays, the
  other gets the datum free (R12); the credits A holds limit B (R15, R16);
- crashes: the verifier raises an exception private to the harness, which the service
  does not catch, so A is abandoned between reserve and settle. Its hold stays until its
  lifetime lapses; a retry with the same key is `RequestInFlight` until then and takes
  the request over (charging once) from that instant on (R16, R17);
- inputs that find real bugs: account ids with ':', '/', '%' and non-ASCII letters, a
  small pool of idempotency keys every account uses (one holds ':'), emails spelled in
  any case with stray spaces (the model canonicalises them on its own), bounces twice;
- reads: the statement in pages of 1 to 4, `entries(since/until)` and `balance_at` at an
  entry's exact instant and a microsecond either side; renewals due exactly now, a
  microsecond before and after (`renew_due` renews exactly the model's due accounts);
- expiring grants (R23): top-ups expiring a microsecond ahead, now (refused), days ahead,
  at a boundary, a hold's lapse or another grant's expiry (and a microsecond either
  side); `expire` entries compared like any other, with the grant each entry names; a
  grant expiring inside a request's verifier call;
- team members (R22): the first account starts as a team; half the requests name a
  member; allowances set, changed, removed; `member_usage` compared after each member's
  request, each bounce and in `read_reports`;
- the guarantee (R25): this period's and the last one's tally in `read_reports`; once per
  example, `many_emails` charges 100 to 104 emails to an account apart and bounces a few,
  so that the breach (more than 1% of at least 100) is reached;
- events (R24): after every step, each account's outbox is the model's list: seq 1..n
  without gaps, type, instant, account and the data that matter (pool, balance and
  threshold, the ledger entry, period, plans, grant, datum, the guarantee's counts);
  `read_events` pages through `service.events` with limits of 1 to 4 from any
  `after_seq`; `set_threshold` sets a pool's low-balance threshold (0 to 6, or None for
  the plan's default) and compares `low_balance_thresholds`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from credits_domain.charging import ChargeResult, Outcome
from credits_domain.contact import Channel, Contact
from credits_domain.errors import CreditsError
from credits_domain.events import Event
from credits_domain.ledger import EntryKind, LedgerEntry
from credits_domain.plans import Credits, Plan, Price
from credits_domain.policy import ChargePolicy
from credits_domain.ports import Clock, Repository, Verifier
from credits_domain.service import CreditService
from credits_domain.testing.model import (
    ModelAccount,
    ModelEntry,
    ModelEvent,
    ModelReservation,
    RawContact,
    ReferenceModel,
    Replay,
    channel_of,
    datum_of,
)
from credits_domain.testing.strategies import contact_universe, raw_requests, spellings
from credits_domain.verdict import Verdict

START = datetime(2024, 1, 31, 9, 30, tzinfo=UTC)  # a 31st: exercises month-end clamping (R4)
ACCOUNTS = ("acme", "globex")
# Ids a storage key built without escaping would confuse: "acme" is a prefix of the
# others past a ":"; "acme%3Aeu" is "acme:eu" percent-encoded; "/" splits paths;
# non-ASCII letters; "Acme" is "acme" to a case-insensitive collation. Each account must
# read only its own rows.
MACHINE_ACCOUNTS = ("acme", "acme:eu", "acme%3Aeu", "acme/zürich", "Acme")
# R25's threshold needs 100 emails: one account, apart, takes them once per example; its
# long ledger is compared in that step only, not read again after every step.
BULK_ACCOUNT = "acme-bulk"
UNIVERSE = contact_universe(9)
# Keys every account uses: a key is the account's own (R17). "acme" with "eu:k1" and
# "acme:eu" with "k1" join to the same text around a ":"; "K1" is not "k1".
SHARED_KEYS = ("k1", "eu:k1", "K1", "k2")
OPERATIONS = ("unlock", "export", "enrich")
# R22: team members every account may add; "ann:eu" is "ann" past a ":".
MEMBERS = ("ann", "bob", "ann:eu")
TICK = timedelta(microseconds=1)  # the storage's resolution: the closest other instant
NEAR: Final = (-TICK, timedelta(0), TICK)

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


def hold_lifetime_s(policy: ChargePolicy) -> int:
    """How long an abandoned request's hold lives: its lease, which nobody renews once the
    request is gone (R16, R17); the one place the harness reads it."""
    return policy.lease_s


class _Crash(BaseException):
    """The process dies inside the verifier call. A BaseException, private to the harness:
    the service catches the verifier's Exceptions (R10), not this."""


@attrs.frozen
class Crashed:
    """The answer of a request whose process died between reserve and settle."""


CRASHED: Final = Crashed()


@attrs.frozen(kw_only=True)
class Request:
    """One charging request as the machine sends it: data as typed, a key or none."""

    account: str = attrs.field(validator=attrs.validators.instance_of(str))
    operation: str = attrs.field(validator=attrs.validators.in_(OPERATIONS))
    contacts: tuple[RawContact, ...] = attrs.field(
        validator=attrs.validators.deep_iterable(attrs.validators.instance_of(RawContact))
    )
    key: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )
    member: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )


Answer = ChargeResult | CreditsError | Crashed
Expected = list[Outcome] | Replay | type[CreditsError]


class _Clock:
    def __init__(self, start: datetime) -> None:
        self.at = start

    def now(self) -> datetime:
        return self.at


class _Verifier:
    """Verdicts scripted per datum; `interlude`, if set, runs once inside the next call."""

    def __init__(self) -> None:
        self.script: dict[str, Verdict] = {}  # by the model's canonical datum
        self.interlude: Callable[[], None] | None = None

    def verdict_of(self, datum: str) -> Verdict:
        return self.script.get(datum, Verdict.VALID)

    def verify(self, contacts: Any) -> list[Verdict]:
        interlude, self.interlude = self.interlude, None
        if interlude is not None:
            interlude()
        return [self.verdict_of(str(c)) for c in contacts]


def _raise_crash() -> None:
    raise _Crash


def _line(entry: LedgerEntry) -> tuple[object, ...]:
    return (
        entry.seq,
        entry.kind,
        entry.pool,
        entry.amount,
        entry.at,
        entry.balance_after,
        entry.cause.datum,
        entry.cause.grant,
        entry.cause.member,
    )


def _model_line(seq: int, entry: ModelEntry) -> tuple[object, ...]:
    return (
        seq,
        entry.kind,
        entry.pool,
        entry.amount,
        entry.at,
        entry.balance_after,
        entry.datum,
        entry.grant,
        entry.member,
    )


def _event_agrees(account: str, got: Event, expected: ModelEvent) -> None:
    """R24: one event is the model's: seq, type, instant, account and the model's data."""
    data = {key: got.data.get(key) for key in expected.data}
    assert (got.account, got.seq, got.type, got.at, data) == (
        account,
        expected.seq,
        expected.type,
        expected.at,
        dict(expected.data),
    ), f"R24: {account}: event {got} != model {expected}"


_accounts = st.sampled_from(MACHINE_ACCOUNTS)
# Requests favour the first account, subscribed from the start, over the others.
_requesters = st.sampled_from(MACHINE_ACCOUNTS[:1] * 3 + MACHINE_ACCOUNTS[1:])
_requests = st.builds(
    Request,
    account=_requesters,
    operation=st.sampled_from(OPERATIONS),
    contacts=raw_requests(UNIVERSE).map(tuple),
    key=st.none() | st.sampled_from(SHARED_KEYS),
    # R22: half of them by a member, mostly the first, who has an allowance.
    member=st.none() | st.sampled_from(MEMBERS[:1] * 3 + MEMBERS[1:]),
)
_allowances = st.none() | st.builds(Credits, email=st.integers(0, 4), mobile=st.integers(0, 2))
_top_ups = st.builds(Credits, email=st.integers(0, 3), mobile=st.integers(0, 2)).filter(
    lambda c: bool(c.email or c.mobile)
)


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
        self.model = ReferenceModel(hold_lifetime_s=hold_lifetime_s(self.service.policy))
        # (account, key) -> the request first answered under the key, and its answer (R17)
        self.answered: dict[tuple[str, str], tuple[Request, ChargeResult]] = {}
        self.bulk_done = False  # `many_emails` runs once per example

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

    # -- charging requests: sent, predicted, checked ---------------------------------------

    def _send(self, request: Request) -> Answer:
        """The request through the real service (the service canonicalises the data)."""
        contacts = [Contact.of(c.channel, c.text) for c in request.contacts]
        account, key, member = request.account, request.key, request.member
        try:
            if request.operation == "export":
                return self.service.export(
                    account, contacts, destination="csv", idempotency_key=key, member=member
                )
            if request.operation == "enrich":
                return self.service.enrich(account, contacts, idempotency_key=key, member=member)
            return self.service.unlock(account, contacts, idempotency_key=key, member=member)
        except CreditsError as exc:
            return exc
        except _Crash:
            return CRASHED

    def _reserve(self, request: Request) -> ModelReservation | Replay | type[CreditsError]:
        try:
            return self.model.reserve(
                request.account,
                request.operation,
                request.contacts,
                self.clock.at,
                key=request.key,
                member=request.member,
            )
        except CreditsError as exc:
            return type(exc)

    def _settle(self, reserved: ModelReservation | Replay | type[CreditsError]) -> Expected:
        if not isinstance(reserved, ModelReservation):
            return reserved
        try:
            return self.model.settle(reserved, self.verifier.verdict_of, self.clock.at)
        except CreditsError as exc:
            return type(exc)

    def _check(self, request: Request, expected: Expected, got: Answer) -> None:
        """The system's answer is the model's: the same refusal, or the same outcomes for
        the same canonical data; a replay is the first answer, item for item (R17)."""
        if isinstance(expected, type):
            assert isinstance(got, expected), (
                f"{request}: system answered {got!r}; the model expected {expected.__name__}"
            )
            return
        assert isinstance(got, ChargeResult), (
            f"{request}: system answered {got!r}; the model expected {expected}"
        )
        data = [datum_of(c) for c in request.contacts]
        assert [str(item.contact) for item in got.items] == data, (
            f"R12: {request}: the system's canonical data {got.items} != the model's {data}"
        )
        outcomes = [item.outcome for item in got.items]
        if isinstance(expected, Replay):
            assert got.replayed, f"R17: {request} answered anew, not replayed: {got}"
            assert outcomes == expected.outcomes, (
                f"R17: {request}: replay {outcomes} != first answer {expected.outcomes}"
            )
            if request.key is not None and (request.account, request.key) in self.answered:
                first = self.answered[(request.account, request.key)][1]
                assert got.items == first.items, f"R17: {request}: {got} != first {first}"
            return
        assert not got.replayed, f"{request}: a first answer marked replayed: {got}"
        assert outcomes == expected, f"{request}: {outcomes} != model {expected}"
        if request.key is not None:
            self.answered[(request.account, request.key)] = (request, got)

    def one(self, request: Request) -> Answer:
        """Send one request, checked against the model; returns the system's answer."""
        self.model.advance(self.clock.at)
        expected = self._settle(self._reserve(request))
        got = self._send(request)
        self._check(request, expected, got)
        if request.member is not None:
            self._usage_agrees(request.account)
        return got

    @initialize(
        plan=st.sampled_from(MACHINE_PLANS),
        allowance=st.builds(Credits, email=st.integers(0, 3), mobile=st.integers(0, 1)),
        more=st.booleans(),
    )
    def first_subscription(self, plan: Plan, allowance: Credits, more: bool) -> None:
        self.subscribe(MACHINE_ACCOUNTS[0], plan)
        self.team(allowance, more)

    @initialize(account=st.sampled_from(MACHINE_ACCOUNTS[1:]), plan=st.sampled_from(MACHINE_PLANS))
    def second_subscription(self, account: str, plan: Plan) -> None:
        """Other accounts from the start, whose ids a storage key may confuse with the
        first's."""
        self.subscribe(account, plan)

    @initialize(account=st.sampled_from(MACHINE_ACCOUNTS[1:]), plan=st.sampled_from(MACHINE_PLANS))
    def third_subscription(self, account: str, plan: Plan) -> None:
        self.subscribe(account, plan)

    def team(self, allowance: Credits, more: bool) -> None:
        """R22: the first account is a team from the start: a member with a small
        allowance, and often another who draws on the pool freely."""
        account = MACHINE_ACCOUNTS[0]
        self.add_member(account, MEMBERS[0])
        self.set_allowance(account, MEMBERS[0], allowance)
        if more:
            self.add_member(account, MEMBERS[1])

    @rule(account=_accounts, plan=st.sampled_from(MACHINE_PLANS))
    def subscribe(self, account: str, plan: Plan) -> None:
        now = self.clock.at
        self._both(
            lambda: self.service.subscribe(account, plan),
            lambda: self.model.subscribe(account, plan, now),
        )

    @rule(account=_accounts, plan=st.sampled_from(MACHINE_PLANS))
    def change_plan(self, account: str, plan: Plan) -> None:
        now = self.clock.at
        self._both(
            lambda: self.service.change_plan(account, plan),
            lambda: self.model.change_plan(account, plan, now),
        )

    @rule(request=_requests)
    def charge(self, request: Request) -> None:
        """One request on its own; a keyed first answer is then repeated (R17)."""
        self.one(request)
        if request.key is not None and (request.account, request.key) in self.answered:
            self.one(self.answered[(request.account, request.key)][0])

    @rule(first=_requests, data=st.data(), slow=st.none() | st.sampled_from(NEAR))
    def overlap(self, first: Request, data: st.DataObject, slow: timedelta | None) -> None:
        """B runs to completion inside A's call to the verifier, between A's reserve and
        its settle; often on A's account, with A's data or key. A slow verifier answers
        when A's hold lapses (`slow` is how far from that instant): A then settles
        nothing (HoldExpired), or answers what a retry that took it over answered."""
        second = data.draw(
            st.builds(
                Request,
                account=st.sampled_from([first.account] * 3 + list(MACHINE_ACCOUNTS)),
                operation=st.sampled_from([first.operation, *OPERATIONS]),
                contacts=st.one_of(
                    st.just(first.contacts),
                    st.lists(
                        st.sampled_from(
                            list(first.contacts)
                            or [RawContact(UNIVERSE[0].channel, UNIVERSE[0].value)]
                        )
                    ).map(tuple),
                    raw_requests(UNIVERSE).map(tuple),
                ),
                key=st.sampled_from([first.key, None, *SHARED_KEYS]),
                member=st.sampled_from([first.member, None, *MEMBERS]),
            ),
            label="second",
        )
        self.overlapping(first, second, slow)

    def overlapping(
        self, first: Request, second: Request, slow: timedelta | None = None
    ) -> tuple[Answer, Answer]:
        """Send A; inside its verifier call (at A's hold lapse + `slow`, if not None),
        send B; both checked against the model. Returns both answers, A's first."""
        self.model.advance(self.clock.at)
        reserved = self._reserve(first)
        nested = isinstance(reserved, ModelReservation) and reserved.verifies
        started, answered = self.clock.at, self.clock.at
        if nested:
            assert isinstance(reserved, ModelReservation)
            if slow is not None and reserved.hold is not None:
                answered = reserved.hold.expires_at + slow
                self.clock.at = answered
                self.model.advance(answered)
            expected_second = self._settle(self._reserve(second))
        expected_first = self._settle(reserved)
        if not nested:
            expected_second = self._settle(self._reserve(second))
        inside: list[Answer | Exception] = []
        self.clock.at = started

        def run_second() -> None:
            self.clock.at = answered
            try:
                inside.append(self._send(second))
            except Exception as exc:  # the service would take it for a verifier failure
                inside.append(exc)

        self.verifier.interlude = run_second
        got_first = self._send(first)
        self.verifier.interlude = None
        assert bool(inside) == nested, (
            f"R16: {first} {'did not call' if nested else 'called'} the verifier; "
            f"the model expected otherwise"
        )
        if not inside:
            self._check(first, expected_first, got_first)
            got_second = self._send(second)
            self._check(second, expected_second, got_second)
            return got_first, got_second
        got = inside[0]
        if isinstance(got, Exception) and not isinstance(got, CreditsError):
            raise got
        self._check(second, expected_second, got)
        self._check(first, expected_first, got_first)
        return got_first, got

    @rule(
        request=_requests,
        then=st.sampled_from(["leave", "retry", "retry at lapse"]),
        near=st.sampled_from(NEAR),
    )
    def crash(self, request: Request, then: str, near: timedelta) -> None:
        """The process dies inside the verifier call: reserved, never settled (R16). Then
        the client may retry at once (RequestInFlight under its key; without one, a new
        request the abandoned hold limits), or when the hold lapses, to the microsecond
        (the retry takes the request over and charges once)."""
        reserved = self.crashing(request)
        if reserved is None or then == "leave":
            return
        if then == "retry at lapse" and reserved.hold is not None:
            self.clock.at = reserved.hold.expires_at + near
        self.one(request)

    def crashing(self, request: Request) -> ModelReservation | None:
        """Send a request whose process dies inside its verifier call, checked against
        the model; returns its reservation in the model, or None if it never reached the
        verifier (then it was answered, and checked, as usual)."""
        self.model.advance(self.clock.at)
        reserved = self._reserve(request)
        dies = isinstance(reserved, ModelReservation) and reserved.verifies
        expected = None if dies else self._settle(reserved)
        self.verifier.interlude = _raise_crash
        got = self._send(request)
        self.verifier.interlude = None
        if expected is not None:
            assert got is not CRASHED, f"{request} called the verifier; the model expected not"
            self._check(request, expected, got)
            return None
        assert got is CRASHED, f"{request} did not reach the verifier: {got!r}"
        assert isinstance(reserved, ModelReservation)
        return reserved

    def _in_flight(self) -> list[tuple[str, str]]:
        return sorted(
            (account, key)
            for account, acct in self.model.accounts.items()
            for key, record in acct.keys.items()
            if record.outcomes is None
        )

    @precondition(lambda self: bool(self._in_flight()))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        """A client retries an abandoned request with its key: RequestInFlight while its
        hold lives, taken over (charged once) once the hold has lapsed (R16, R17)."""
        account, key = data.draw(st.sampled_from(self._in_flight()), label="in flight")
        operation, canonical, member = self.model.accounts[account].keys[key].fingerprint
        contacts = tuple(
            data.draw(spellings(Contact.of(channel_of(d), d.split(":", 1)[1])), label="datum")
            for d in canonical
        )
        self.one(
            Request(account=account, operation=operation, contacts=contacts, key=key, member=member)
        )

    @precondition(lambda self: bool(self.answered))
    @rule(data=st.data(), other_payload=st.booleans())
    def repeat(self, data: st.DataObject, other_payload: bool) -> None:
        """R17: a finished request repeated, maybe spelled otherwise, answers as the first
        time; under the same key another payload is refused."""
        first, _ = self.answered[data.draw(st.sampled_from(sorted(self.answered)), label="key")]
        contacts = tuple(
            data.draw(spellings(Contact.of(c.channel, c.text)), label="datum")
            for c in first.contacts
        )
        if other_payload:
            contacts += (RawContact(UNIVERSE[0].channel, UNIVERSE[0].value),)
        self.one(attrs.evolve(first, contacts=contacts))

    # -- reading -------------------------------------------------------------------------

    @rule(account=_accounts, page=st.integers(1, 4), data=st.data())
    def read_statement(self, account: str, page: int, data: st.DataObject) -> None:
        """R19, R21: the ledger read in small pages is the model's, entry by entry;
        windows and past balances at an entry's exact instant and a microsecond apart."""
        if account not in self.model.accounts:
            assert not self.repository.entries(account), f"{account} never subscribed"
            return
        ledger = self.model.accounts[account].ledger
        expected = [_model_line(seq, entry) for seq, entry in enumerate(ledger)]
        paged: list[LedgerEntry] = []
        after = -1
        for _ in range(len(ledger) + 2):
            chunk = list(self.repository.entries(account, after_seq=after, limit=page))
            assert len(chunk) <= page
            # A page that repeats its cursor would never end.
            assert all(e.seq > after for e in chunk), f"a page after seq {after}: {chunk}"
            paged += chunk
            if len(chunk) < page:
                break
            after = chunk[-1].seq
        assert all(e.account == account for e in paged), f"{account} reads another's entries"
        assert [_line(e) for e in paged] == expected, f"{account}: pages of {page} != model"
        if not ledger:
            return
        at = data.draw(st.sampled_from(ledger)).at + data.draw(st.sampled_from(NEAR))
        since = [_line(e) for e in self.repository.entries(account, since=at)]
        assert since == [expected[n] for n, e in enumerate(ledger) if e.at >= at], f"since {at}"
        until = [_line(e) for e in self.repository.entries(account, until=at)]
        assert until == [expected[n] for n, e in enumerate(ledger) if e.at < at], f"until {at}"
        past = self.service.balance_at(account, at)
        model = self.model.balance_at(account, at)
        assert {pool: past.of(pool) for pool in Channel} == model, f"R21: {account} at {at}"

    # -- time, verdicts, subscriptions, refunds -------------------------------------------

    @rule(datum=st.sampled_from([str(c) for c in UNIVERSE]), verdict=st.sampled_from(list(Verdict)))
    def set_verdict(self, datum: str, verdict: Verdict) -> None:
        self.verifier.script[datum] = verdict

    @rule(days=st.integers(0, 40), seconds=st.integers(0, 86_399))
    def advance_time(self, days: int, seconds: int) -> None:
        self.clock.at += timedelta(days=days, seconds=seconds)

    def _lapses(self) -> list[datetime]:
        """The instants an abandoned hold lapses (R16) or a grant expires (R23)."""
        return sorted(
            [hold.expires_at for acct in self.model.accounts.values() for hold in acct.holds]
            + [g.expires_at for a in self.model.accounts.values() for g in a.grants if not g.kept]
        )

    @precondition(lambda self: bool(self._lapses()))
    @rule(data=st.data(), near=st.sampled_from(NEAR))
    def until_a_hold_lapses(self, data: st.DataObject, near: timedelta) -> None:
        """To a microsecond before, at or after the instant an abandoned hold lapses or a
        grant expires."""
        self.clock.at = max(self.clock.at, data.draw(st.sampled_from(self._lapses())) + near)

    @rule(account=_accounts, near=st.sampled_from(NEAR))
    def renew_when_due(self, account: str, near: timedelta) -> None:
        """To a microsecond before, at or after an account's next boundary, then renew:
        every account due by then (a boundary at or before now) is renewed.

        At least those: the service may renew more, as it does not save a wallet whose
        touch applied a boundary that wrote no entry (a paused account's), so storage
        still lists it as due; renewing it again is harmless."""
        acct = self.model.accounts.get(account)
        boundary = acct.next_boundary() if acct is not None else None
        if boundary is not None:
            self.clock.at = max(self.clock.at, boundary + near)
        due = self.model.due(self.clock.at)
        renewed = self.service.renew_due(batch_size=1)
        assert renewed == len(due), f"renewed {renewed} accounts at {self.clock.at}; due: {due}"

    @rule(account=_accounts)
    def cancel(self, account: str) -> None:
        self._both(lambda: self.service.cancel(account), lambda: self.model.cancel(account))

    @rule(account=_accounts)
    def pause(self, account: str) -> None:
        self._both(lambda: self.service.pause(account), lambda: self.model.pause(account))

    @rule(account=_accounts)
    def resume(self, account: str) -> None:
        self._both(lambda: self.service.resume(account), lambda: self.model.resume(account))

    @rule(account=_requesters, data=st.data(), twice=st.sampled_from([True, True, False]))
    def bounce(self, account: str, data: st.DataObject, twice: bool) -> None:
        """R18: a bounce refunds a charged email once; reported again (maybe spelled
        otherwise), it is refused and refunds nothing. Mostly of emails the account owns."""
        acct = self.model.accounts.get(account)
        owned = [
            c
            for c in UNIVERSE
            if acct is not None and str(c) in acct.owned and c.channel is Channel.EMAIL
        ]
        pick = st.sampled_from(UNIVERSE)
        if owned:
            pick = st.sampled_from(owned) | st.sampled_from(owned) | pick
        contact = data.draw(pick.flatmap(spellings), label="datum")
        spelled = (contact, attrs.evolve(contact, text=contact.text.upper()))
        for raw in spelled[: 1 + twice]:
            self._bounce(account, raw)
        self._usage_agrees(account)

    def _bounce(self, account: str, raw: RawContact) -> None:
        now = self.clock.at
        self._both(
            lambda: self.service.report_bounce(account, Contact.of(raw.channel, raw.text)),
            lambda: self.model.bounce(account, raw, now),
        )

    # -- expiring grants (R23), members (R22), the guarantee (R25) ----------------------

    def _instants(self, account: str) -> list[datetime]:
        """Expiry instants worth trying: the account's next boundary, its holds' lapses,
        expiries already given (two grants at one instant), a microsecond either side."""
        acct = self.model.accounts.get(account)
        if acct is None:
            return []
        marks = [hold.expires_at for hold in acct.holds] + [g.expires_at for g in acct.grants]
        boundary = acct.next_boundary()
        if boundary is not None:
            marks.append(boundary)
        return [mark + near for mark in marks for near in NEAR]

    @rule(account=_requesters, credits=_top_ups, data=st.data())
    def top_up(self, account: str, credits: Credits, data: st.DataObject) -> None:
        """R8, R23: a top-up, mostly an expiring grant: a day or weeks ahead, a microsecond
        ahead (or now: refused), at (or a microsecond from) the next boundary, a hold's
        lapse or another grant's expiry."""
        now = self.clock.at
        ahead = st.sampled_from([TICK, timedelta(0), timedelta(days=1), timedelta(days=20)])
        choices = ahead.map(lambda gap: now + gap)
        if instants := self._instants(account):
            choices = choices | st.sampled_from(instants)
        self.topping_up(account, credits, data.draw(st.none() | choices | choices, label="expiry"))

    def topping_up(self, account: str, credits: Credits, expires_at: datetime | None) -> None:
        now = self.clock.at
        self._both(
            lambda: self.service.top_up(account, credits, reason="machine", expires_at=expires_at),
            lambda: self.model.top_up(account, credits, now, expires_at=expires_at),
        )

    @rule(first=_requests, second=_requests, credits=_top_ups, slow=st.sampled_from(NEAR))
    def expiry_inside_a_request(
        self, first: Request, second: Request, credits: Credits, slow: timedelta
    ) -> None:
        """R23: a grant that expires while A holds it: A's verifier answers a microsecond
        before its hold lapses (A charges what it holds of the grant: spent before the
        expiry), at or after the lapse (A settles nothing; what the hold kept expires)."""
        self.topping_up(first.account, credits, self.clock.at + TICK)
        self.overlapping(first, second, slow)

    @rule(account=_requesters, member=st.sampled_from(MEMBERS))
    def add_member(self, account: str, member: str) -> None:
        outcome = self._both(
            lambda: self.service.add_member(account, member),
            lambda: self.model.add_member(account, member),
        )
        if outcome is not None:
            expected, actual = outcome
            assert actual == expected, f"R22: add_member({account}, {member}) answered {actual}"

    @rule(account=_requesters, member=st.sampled_from(MEMBERS), allowance=_allowances)
    def set_allowance(self, account: str, member: str, allowance: Credits | None) -> None:
        """R22: an allowance set, changed or removed; it acts at once on this period's use."""
        self._both(
            lambda: self.service.set_member_allowance(account, member, allowance),
            lambda: self.model.set_member_allowance(account, member, allowance),
        )

    @rule(account=_requesters)
    def read_reports(self, account: str) -> None:
        """R22, R25: each member's usage this period, and the guarantee's tally of this
        period and the previous one, are the model's."""
        acct = self.model.accounts.get(account)
        if acct is None:
            return
        self._usage_agrees(account)
        for index in range(max(0, acct.index - 1), acct.index + 1):
            self._guarantee(account, index)

    def _usage_agrees(self, account: str) -> None:
        """R22: each member's usage this period, from the ledger, is the model's."""
        self.model.advance(self.clock.at)
        acct = self.model.accounts.get(account)
        for member in acct.members if acct is not None else ():
            used = self.service.member_usage(account, member)
            expected = self.model.member_usage(account, member)
            assert (used.email, used.mobile) == (
                expected[Channel.EMAIL],
                expected[Channel.MOBILE],
            ), f"R22: {account} {member}: system {used} != model {expected}"

    def _guarantee(self, account: str, index: int) -> None:
        emails, bounces, breached = self.model.guarantee(account, index)
        got = self.service.guarantee(account, self.service.period(account, index))
        assert (got.emails_charged, got.bounces, got.breached) == (emails, bounces, breached), (
            f"R25: {account} period {index}: {got} != model {(emails, bounces, breached)}"
        )
        rate = bounces / emails if emails else 0.0
        assert got.bounce_rate == rate, f"R25: {account}: rate {got.bounce_rate} != {rate}"

    @precondition(lambda self: not self.bulk_done)
    @rule(size=st.integers(100, 104), bounced=st.integers(0, 3))
    def many_emails(self, size: int, bounced: int) -> None:
        """R25 past its threshold, once per example: 100 to 104 new emails unlocked by a
        member (the second, their allowance removed) on credits topped up for them, then
        a few bounced: the period breaches exactly when more than 1% bounced."""
        self.bulk_done = True
        account, member = BULK_ACCOUNT, MEMBERS[1]
        self.subscribe(account, MACHINE_PLANS[-1])
        self.topping_up(account, Credits(email=size), None)
        self.add_member(account, member)
        self.set_allowance(account, member, None)
        contacts = tuple(RawContact(Channel.EMAIL, f"bulk{n}@example.com") for n in range(size))
        self.one(Request(account=account, operation="unlock", contacts=contacts, member=member))
        for raw in contacts[:bounced]:
            self._bounce(account, raw)
        acct = self.model.accounts[account]
        self._guarantee(account, acct.index)
        self._agree(account, acct)
        self._usage_agrees(account)

    @rule(
        account=_requesters,
        pool=st.sampled_from(list(Channel)),
        credits=st.none() | st.integers(0, 6),
    )
    def set_threshold(self, account: str, pool: Channel, credits: int | None) -> None:
        """R24: a pool's low-balance threshold set (None: back to the plan's default);
        it fires nothing itself, and acts on the next charge or expiry."""
        self._both(
            lambda: self.service.set_low_balance_threshold(account, pool, credits),
            lambda: self.model.set_low_threshold(account, pool, credits),
        )
        if account in self.model.accounts:
            got = self.service.low_balance_thresholds(account)
            expected = self.model.thresholds(account)
            assert (got.email, got.mobile) == (expected[Channel.EMAIL], expected[Channel.MOBILE]), (
                f"R24: {account}: thresholds {got} != model {expected}"
            )

    @rule(account=_accounts, limit=st.integers(1, 4), data=st.data())
    def read_events(self, account: str, limit: int, data: st.DataObject) -> None:
        """R24: the events after any seq, in pages of `limit`, are the model's tail."""
        acct = self.model.accounts.get(account)
        if acct is not None:
            after = data.draw(st.integers(0, len(acct.events) + 1), label="after_seq")
            self.read_events_in_pages(account, limit, after)

    def read_events_in_pages(self, account: str, limit: int, after_seq: int) -> None:
        """`service.events(account, after_seq=..., limit=...)` page after page, each
        page's last seq the next cursor: the model's events after `after_seq`."""
        self.model.advance(self.clock.at)
        expected, after = self.model.events(account)[after_seq:], after_seq
        got: list[Event] = []
        for _ in range(len(expected) // limit + 2):
            page = self.service.events(account, after_seq=after or None, limit=limit)
            assert len(page) <= limit, f"R24: {account}: {len(page)} events past limit {limit}"
            got += page
            if len(page) < limit:
                break
            after = page[-1].seq
        assert len(got) == len(expected), f"R24: {account}: {got} != model {expected}"
        for event, predicted in zip(got, expected, strict=True):
            _event_agrees(account, event, predicted)

    # -- after every step ----------------------------------------------------------------

    @invariant()
    def statements_balances_and_model_agree(self) -> None:
        """R12, R15, R19..R21: each statement is the model's ledger, entry by entry; no
        datum charged twice; balances and available credits are the model's; R24: the
        events are the model's."""
        self.model.advance(self.clock.at)
        for account, acct in self.model.accounts.items():
            if account != BULK_ACCOUNT:
                self._agree(account, acct)
            else:
                balance = self.service.balance(account)  # touched, its balance read only
                assert (balance.email, balance.mobile) == (
                    acct.balance[Channel.EMAIL],
                    acct.balance[Channel.MOBILE],
                ), f"{account}: system {balance} != model {acct.balance}"
            self._events_agree(account, acct)  # touched above: what time did is written

    def _events_agree(self, account: str, acct: ModelAccount) -> None:
        """R24: the account's outbox is the model's list, seq 1..n without gaps. One read
        from storage, as for the statement (`read_events` pages through the service)."""
        events = list(self.repository.events(account, limit=1000))
        assert len(events) < 1000, f"{account}: an outbox past one page"
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), (
            f"R24: {account}: seqs {[e.seq for e in events]} not 1..n"
        )
        if len(events) != len(acct.events):
            raise AssertionError(
                f"R24: {account}: {len(events)} events, the model {len(acct.events)}:\n"
                f"  system: {[(e.seq, e.type.value, e.at, dict(e.data)) for e in events]}\n"
                f"  model:  {[(e.seq, e.type.value, e.at, dict(e.data)) for e in acct.events]}"
            )
        for event, expected in zip(events, acct.events, strict=True):
            _event_agrees(account, event, expected)

    def _agree(self, account: str, acct: ModelAccount) -> None:
        """One account's statement, entry by entry, and its balances are the model's."""
        balance = self.service.balance(account)  # touching it applies what time did
        # The machine's ledgers stay far under one page: one read, no transaction.
        statement = list(self.repository.entries(account, limit=1000))
        assert len(statement) < 1000, f"{account}: a ledger past one page"
        lines = [_line(e) for e in statement]
        expected = [_model_line(seq, entry) for seq, entry in enumerate(acct.ledger)]
        if lines != expected:
            first = next(
                (
                    i
                    for i, pair in enumerate(zip(lines, expected, strict=False))
                    if pair[0] != pair[1]
                ),
                min(len(lines), len(expected)),
            )
            raise AssertionError(
                f"{account}: the statement differs from the model from seq {first}:\n"
                f"  system: {lines[first : first + 3]}\n  model:  {expected[first : first + 3]}"
            )
        assert all(e.account == account for e in statement), f"{account} reads another's"
        charged = Counter(e.cause.datum for e in statement if e.kind is EntryKind.CHARGE)
        assert all(n == 1 for n in charged.values()), f"R12: {charged}"
        for pool in Channel:  # R20: grants + top-ups + refunds - charges - forfeits - expiries
            by_kind = Counter[EntryKind]()
            for e in statement:
                if e.pool is pool:
                    by_kind[e.kind] += e.amount
            assert sum(by_kind.values()) == balance.of(pool), (
                f"R20: {account} {pool.value}: the entries {dict(by_kind)} != balance {balance}"
            )
        available = self.model.available(account)
        assert (balance.email, balance.mobile) == (
            acct.balance[Channel.EMAIL],
            acct.balance[Channel.MOBILE],
        ), f"{account}: system {balance} != model {acct.balance}"
        assert (balance.email_available, balance.mobile_available) == (
            available[Channel.EMAIL],
            available[Channel.MOBILE],
        ), f"R16: {account}: system {balance} != model available {available}"


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
