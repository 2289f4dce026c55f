"""R24 events, through the facade, on every storage: memory, SQLite, PostgreSQL.

Every change a customer's systems care about writes its event in the same unit of work
(an outbox): credits.low once per crossing of the pool's threshold (re-armed when the
balance rises above it), credits.depleted at zero, period.renewed, plan.changed,
subscription.lapsed, grant.expired, charge.refunded. Balance events fire on what is
charged, never on holds. An account's events are numbered 1, 2, 3, ... without gaps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import cast

import attrs
import pytest

from adapters.clock import ManualClock
from adapters.verifier import ScriptedVerifier
from credits_domain import (
    Channel,
    Contact,
    Credits,
    CreditService,
    Event,
    EventType,
    InvalidRequest,
    Repository,
    UnknownAccount,
    Verdict,
)
from rules_support import JAN_1, STORAGES, emails, storage, tiny_plan

ACCOUNT = "acme"
DAY = timedelta(days=1)
LOW, DEPLETED = EventType.CREDITS_LOW, EventType.CREDITS_DEPLETED
# 20 email credits a month: the default threshold is 2 (10%, rounded up); 5 mobile: 1.
PLANS = {
    "tiny": tiny_plan(20, 5),
    "big": tiny_plan(40, 5, name="big"),
    "capped": tiny_plan(20, 0, name="capped", cap=Credits(email=0)),
}


@attrs.define
class Events:
    """A service on one storage, its clock, and a hook run while the verifier works."""

    service: CreditService
    clock: ManualClock
    repository: Repository
    hook: Callable[[], object] | None = None

    def all(self) -> list[Event]:
        return self.service.events(ACCOUNT, limit=1000)

    def types(self) -> list[EventType]:
        return [e.type for e in self.all()]

    def unlock(self, count: int, prefix: str = "lead") -> None:
        self.service.unlock(ACCOUNT, emails(count, prefix))


@pytest.fixture(params=STORAGES)
def events(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Events]:
    clock = ManualClock(JAN_1)
    holder: list[Events] = []

    def before_answer(batch: Sequence[Contact]) -> None:
        if holder[0].hook is not None:
            holder[0].hook()

    verifier = ScriptedVerifier(
        {f"bad{i}@corp.com": Verdict.INVALID for i in range(30)},
        default=Verdict.VALID,
        before_answer=before_answer,
    )
    with storage(request, tmp_path) as repository:
        service = CreditService(repository=repository, verifier=verifier, clock=clock, plans=PLANS)
        holder.append(Events(service=service, clock=clock, repository=repository))
        yield holder[0]


def test_r24_credits_low_fires_once_when_the_balance_falls_to_its_threshold(
    events: Events,
) -> None:
    events.service.subscribe(ACCOUNT, "tiny")
    events.unlock(17)  # 20 -> 3: above the default threshold of 2
    assert events.all() == []
    events.unlock(1, "more")  # 3 -> 2: at the threshold
    (low,) = events.all()
    assert (low.type, low.seq, low.at) == (LOW, 1, JAN_1)
    assert dict(low.data) == {"pool": "email", "balance": 2, "threshold": 2, "entry_seq": 19}
    events.unlock(1, "again")  # 2 -> 1: still low, no second event
    assert events.types() == [LOW]


def test_r24_credits_depleted_fires_at_zero_with_low_if_both_are_crossed_at_once(
    events: Events,
) -> None:
    events.service.subscribe(ACCOUNT, "tiny")
    events.unlock(20)  # 20 -> 0 in one request: the entry that crosses each fires it
    assert events.types() == [LOW, DEPLETED]
    low, depleted = events.all()
    assert (low.data["balance"], depleted.data["balance"]) == (2, 0)
    assert depleted.data["entry_seq"] == low.data["entry_seq"] + 2  # type: ignore[operator]


def test_r24_rising_above_the_threshold_arms_both_again(events: Events) -> None:
    events.service.subscribe(ACCOUNT, "tiny")
    events.unlock(20)
    events.service.top_up(ACCOUNT, Credits(email=5), reason="goodwill")  # 0 -> 5
    assert events.types() == [LOW, DEPLETED]  # a rise fires nothing
    events.unlock(5, "more")  # 5 -> 0: crosses both again
    assert events.types() == [LOW, DEPLETED, LOW, DEPLETED]
    assert [e.seq for e in events.all()] == [1, 2, 3, 4]


def test_r24_a_threshold_set_per_account_and_pool(events: Events) -> None:
    events.service.subscribe(ACCOUNT, "tiny")
    events.service.set_low_balance_threshold(ACCOUNT, Channel.EMAIL, 15)
    assert events.service.low_balance_thresholds(ACCOUNT) == Credits(email=15, mobile=1)
    assert events.all() == []  # setting it fires nothing by itself
    events.unlock(5)  # 20 -> 15
    assert [(e.type, e.data["threshold"]) for e in events.all()] == [(LOW, 15)]
    events.service.set_low_balance_threshold(ACCOUNT, Channel.EMAIL, None)  # the default
    assert events.service.low_balance_thresholds(ACCOUNT).email == 2
    events.unlock(13, "more")  # 15 -> 2: a crossing of the default
    assert events.types() == [LOW, LOW]


@pytest.mark.parametrize("credits", [-1, 10**12 + 1, 2.0, "3", True])
def test_r24_a_threshold_is_a_whole_number_of_credits(events: Events, credits: object) -> None:
    events.service.subscribe(ACCOUNT, "tiny")
    with pytest.raises(InvalidRequest, match="threshold"):
        events.service.set_low_balance_threshold(ACCOUNT, Channel.EMAIL, credits)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="pool"):
        events.service.set_low_balance_threshold(ACCOUNT, "email", 3)  # type: ignore[arg-type]


def test_r24_a_hold_never_fires_and_a_hold_ending_free_leaves_no_event(events: Events) -> None:
    events.service.subscribe(ACCOUNT, "tiny")
    events.unlock(15)  # 20 -> 5
    seen: list[list[Event]] = []
    events.hook = lambda: seen.append(events.all())
    # 5 credits held (available 0) while the verifier works; none of them valid: free.
    result = events.service.unlock(ACCOUNT, [Contact.email(f"bad{i}@corp.com") for i in range(5)])
    assert result.charged(Channel.EMAIL) == 0
    assert seen == [[]]  # nothing while held
    assert events.all() == []  # nor after
    assert events.service.balance(ACCOUNT).email == 5


def test_r24_period_renewed_and_plan_changed_at_the_renewal(events: Events) -> None:
    events.service.subscribe(ACCOUNT, "big")
    events.service.change_plan(ACCOUNT, "tiny")  # a downgrade waits for the renewal (R7)
    assert events.all() == []
    events.clock.advance(31 * DAY)
    changed, renewed = events.all()
    assert (changed.type, dict(changed.data)) == (
        EventType.PLAN_CHANGED,
        {"from": "big", "to": "tiny", "period": 1},
    )
    assert renewed.type is EventType.PERIOD_RENEWED
    assert renewed.at == changed.at == JAN_1 + 31 * DAY
    assert renewed.data["period"] == 1 and renewed.data["plan"] == "tiny"
    assert renewed.data["balance"] == {"email": 60, "mobile": 10}


def test_r24_an_upgrade_is_a_plan_change_at_once(events: Events) -> None:
    events.service.subscribe(ACCOUNT, "tiny")
    events.service.change_plan(ACCOUNT, "big")
    (changed,) = events.all()
    assert (changed.type, changed.data["from"], changed.data["to"]) == (
        EventType.PLAN_CHANGED,
        "tiny",
        "big",
    )


def test_r24_a_renewal_of_an_untouched_account_by_renew_due(events: Events) -> None:
    events.service.subscribe(ACCOUNT, "tiny")
    events.clock.advance(62 * DAY)
    assert events.service.renew_due() == 1
    assert [e.type for e in events.repository.events(ACCOUNT, limit=9)] == [
        EventType.PERIOD_RENEWED,
        EventType.PERIOD_RENEWED,
    ]


def test_r24_a_rollover_forfeit_is_no_balance_event(events: Events) -> None:
    """R5's forfeit at a boundary is reported by period.renewed, not credits.low."""
    events.service.subscribe(ACCOUNT, "capped")
    events.clock.advance(31 * DAY)
    assert events.types() == [EventType.PERIOD_RENEWED]


def test_r24_subscription_lapsed(events: Events) -> None:
    events.service.subscribe(ACCOUNT, "tiny")
    events.service.cancel(ACCOUNT)
    events.clock.advance(31 * DAY)
    (lapsed,) = events.all()
    assert lapsed.type is EventType.SUBSCRIPTION_LAPSED
    assert lapsed.at == JAN_1 + 31 * DAY
    assert dict(lapsed.data) == {"plan": "tiny", "period": 0}


def test_r24_grant_expired(events: Events) -> None:
    events.service.subscribe(ACCOUNT, "tiny")
    top_up = events.service.top_up(
        ACCOUNT, Credits(email=4), reason="promo", expires_at=JAN_1 + 7 * DAY
    )
    events.unlock(1)
    events.clock.advance(8 * DAY)
    (expired,) = events.all()
    assert expired.type is EventType.GRANT_EXPIRED
    assert expired.at == JAN_1 + 7 * DAY
    assert expired.data["grant"] == top_up.entries[0].seq
    assert (expired.data["pool"], expired.data["credits"]) == ("email", 3)


def test_r24_an_expiry_that_crosses_the_threshold_is_a_balance_event(events: Events) -> None:
    events.service.subscribe(ACCOUNT, "tiny")
    events.unlock(20)  # the plan's credits spent: low, depleted
    events.service.top_up(ACCOUNT, Credits(email=4), reason="promo", expires_at=JAN_1 + DAY)
    events.clock.advance(2 * DAY)  # the grant's 4 leave: 4 -> 0
    assert events.types() == [LOW, DEPLETED, EventType.GRANT_EXPIRED, LOW, DEPLETED]


def test_r24_charge_refunded(events: Events) -> None:
    events.service.subscribe(ACCOUNT, "tiny")
    events.unlock(1)
    events.clock.advance(DAY)
    entry = events.service.report_bounce(ACCOUNT, Contact.email("lead0@corp.com"))
    (refunded,) = events.all()
    assert refunded.type is EventType.CHARGE_REFUNDED
    assert refunded.at == JAN_1 + DAY
    assert dict(refunded.data) == {
        "datum": "email:lead0@corp.com",
        "pool": "email",
        "credits": 1,
        "reason": "bounce",
        "member": None,
        "entry_seq": entry.seq,
    }


def test_r24_seq_is_gapless_and_events_page_by_it(events: Events) -> None:
    events.service.subscribe(ACCOUNT, "tiny")
    events.service.change_plan(ACCOUNT, "big")
    events.unlock(50)
    events.clock.advance(31 * DAY)
    events.service.top_up(ACCOUNT, Credits(email=1), reason="x", expires_at=JAN_1 + 40 * DAY)
    events.clock.advance(10 * DAY)
    every = events.all()
    assert [e.seq for e in every] == list(range(1, len(every) + 1))
    assert len(every) >= 5
    assert len({e.id for e in every}) == len(every)
    page = events.service.events(ACCOUNT, after_seq=2, limit=2)
    assert page == every[2:4]
    assert events.service.events(ACCOUNT, after_seq=len(every)) == []


@pytest.mark.parametrize("limit", [0, 1001, -1, 2.0, "5", None])
def test_r24_a_page_of_events_is_bounded(events: Events, limit: object) -> None:
    events.service.subscribe(ACCOUNT, "tiny")
    with pytest.raises(InvalidRequest, match="limit"):
        events.service.events(ACCOUNT, limit=limit)  # type: ignore[arg-type]


@pytest.mark.parametrize("after_seq", [-1, 2**63, 1.0, "1", True])
def test_r24_the_cursor_is_a_seq(events: Events, after_seq: object) -> None:
    events.service.subscribe(ACCOUNT, "tiny")
    with pytest.raises(InvalidRequest, match="after_seq"):
        events.service.events(ACCOUNT, after_seq=after_seq)  # type: ignore[arg-type]


def test_r24_events_of_an_unknown_account(events: Events) -> None:
    with pytest.raises(UnknownAccount):
        events.service.events("nobody")


def test_r24_a_unit_of_work_failing_before_commit_leaves_neither_change_nor_event(
    events: Events,
) -> None:
    """The settle that crosses the threshold fails after it has saved the wallet (its
    commit never runs): no charge, no event; the retry writes both."""
    events.service.subscribe(ACCOUNT, "tiny")
    events.unlock(17)
    failing = _FailOnce(events.repository)
    service = CreditService(
        repository=cast(Repository, failing),
        verifier=ScriptedVerifier({}, default=Verdict.VALID),
        clock=events.clock,
        plans=PLANS,
    )
    with pytest.raises(_Boom):
        service.unlock(ACCOUNT, emails(1, "cross"))
    assert events.all() == []
    assert events.service.balance(ACCOUNT).email == 3
    service.unlock(ACCOUNT, emails(1, "cross"))
    assert events.types() == [LOW]
    assert events.service.balance(ACCOUNT).email == 2


class _Boom(Exception):
    pass


class _FailOnce:
    """The repository, but the first unit of work that saves a wallet with events raises
    right after the save, before its commit (as a crash would)."""

    def __init__(self, repository: Repository) -> None:
        self._repository = repository
        self.failed = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._repository, name)

    def unit_of_work(self) -> object:
        uow = self._repository.unit_of_work()
        outer = self
        save = uow.save_wallet

        def save_wallet(wallet: object) -> None:
            pending = bool(getattr(wallet, "pending_events", ()))
            save(wallet)  # type: ignore[arg-type]
            if pending and not outer.failed:
                outer.failed = True
                raise _Boom("crash after the save, before the commit")

        uow.save_wallet = save_wallet  # type: ignore[method-assign]
        return uow


BULK = {"bulk": tiny_plan(1000, 5, name="bulk")}


@pytest.fixture(params=STORAGES)
def bulk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Events]:
    clock = ManualClock(JAN_1)
    verifier = ScriptedVerifier({}, default=Verdict.VALID)
    with storage(request, tmp_path) as repository:
        service = CreditService(repository=repository, verifier=verifier, clock=clock, plans=BULK)
        service.subscribe(ACCOUNT, "bulk")
        yield Events(service=service, clock=clock, repository=repository)


def bounce(events: Events, *numbers: int) -> None:
    for n in numbers:
        events.service.report_bounce(ACCOUNT, Contact.email(f"lead{n}@corp.com"))


def test_r24_guarantee_breached_once_per_period_when_a_bounce_first_breaches(
    bulk: Events,
) -> None:
    bulk.unlock(150)
    bounce(bulk, 0)  # 1 in 150: within the promise
    assert bulk.types() == [EventType.CHARGE_REFUNDED]
    bulk.clock.advance(DAY)
    bounce(bulk, 1)  # 2 in 150 > 1%
    refunds, breached = bulk.all()[0:2], bulk.all()[-1]
    assert [e.type for e in refunds] == [EventType.CHARGE_REFUNDED] * 2
    assert breached.type is EventType.GUARANTEE_BREACHED
    assert breached.at == JAN_1 + DAY
    assert {k: breached.data[k] for k in ("period", "emails_charged", "bounces")} == {
        "period": 0,
        "emails_charged": 150,
        "bounces": 2,
    }
    bounce(bulk, 2)  # still breached: no second event this period
    assert bulk.types().count(EventType.GUARANTEE_BREACHED) == 1
    assert bulk.service.guarantee(ACCOUNT).breached


def test_r24_guarantee_breached_by_the_charge_that_reaches_the_minimum(bulk: Events) -> None:
    bulk.unlock(99)
    bounce(bulk, 0, 1)  # 2 in 99: too few emails to judge
    assert EventType.GUARANTEE_BREACHED not in bulk.types()
    bulk.unlock(1, "hundredth")  # 2 in 100 > 1%: the charge breaches
    assert bulk.types()[-1] is EventType.GUARANTEE_BREACHED
    assert bulk.all()[-1].data["emails_charged"] == 100


def test_r24_a_late_bounce_counts_for_the_period_of_its_charge(bulk: Events) -> None:
    bulk.clock.advance(20 * DAY)
    bulk.unlock(100)
    bounce(bulk, 0)
    bulk.clock.advance(12 * DAY)  # a new period; bounces of period 0 still come in (R18)
    bulk.unlock(200, "new")
    bounce(bulk, 1)  # 2 in 100 of period 0
    breached = bulk.all()[-1]
    assert (breached.type, breached.data["period"]) == (EventType.GUARANTEE_BREACHED, 0)
    assert bulk.service.guarantee(ACCOUNT, bulk.service.period(ACCOUNT, 0)).breached


def test_r24_a_batch_through_the_hundredth_email_breaches_there(bulk: Events) -> None:
    """98 emails, 2 bounces; one request of 102 more: at its 100th email of the period
    the rate is 2% (breached), though after all 200 it is 1% (kept). Evaluated after
    every charge: the breach fires, whichever charging path the request took."""
    bulk.unlock(98)
    bounce(bulk, 0, 1)
    bulk.unlock(102, "more")
    breached = bulk.all()[-1]
    assert breached.type is EventType.GUARANTEE_BREACHED
    assert (breached.data["emails_charged"], breached.data["bounces"]) == (100, 2)
    assert not bulk.service.guarantee(ACCOUNT).breached  # 2 in 200, now
