"""Example-based tests of R1..R8: units, pools, plans, periods, rollover, lapse, plan changes.

Each test's name starts with the rule it checks; its docstring quotes what it checks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from credits_domain import (
    PLANS,
    Channel,
    Contact,
    Credits,
    EntryKind,
    IdempotencyKeyReused,
    InvalidPlan,
    InvalidRequest,
    NoActiveSubscription,
    Operation,
    Outcome,
    Plan,
    PlanChange,
    Price,
    Status,
    SubscriptionPaused,
    UnknownPlan,
)
from credits_domain.limits import MAX_REASON_LENGTH
from rules_support import (
    ACCOUNT,
    JAN_1,
    SECOND,
    emails,
    fifteen_per_mobile,
    make_world,
    mobiles,
    of_kind,
    tiny_plan,
)

# -- R1: whole, non-negative credits in two pools ------------------------------------------


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None])
def test_r1_credits_are_whole_non_negative_numbers(bad: object) -> None:
    """R1: "A credit is a whole, non-negative number." -- a fraction, a negative, a bool or
    a string is refused as a plan amount."""
    with pytest.raises(InvalidPlan):
        Credits(email=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidPlan):
        Credits(mobile=bad)  # type: ignore[arg-type]


def test_r1_balances_and_amounts_are_ints() -> None:
    """R1: every balance and every ledger amount is a whole number (int, never float)."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.service.unlock(ACCOUNT, [*emails(3), *mobiles(2)])
    b = w.balance()
    for value in (b.email, b.mobile, b.email_available, b.mobile_available):
        assert type(value) is int
    for entry in w.entries():
        assert type(entry.amount) is int
        assert type(entry.balance_after) is int


def test_r1_a_credit_of_one_pool_never_pays_for_the_other() -> None:
    """R1: "A credit of one pool never pays for data of the other." -- plenty of EMAIL
    credits do not pay for a mobile number, plenty of MOBILE credits do not pay an email."""
    w = make_world()
    w.service.subscribe(ACCOUNT, tiny_plan(email=100, mobile=0))
    result = w.service.unlock(ACCOUNT, mobiles(1))
    assert result.items[0].outcome is Outcome.INSUFFICIENT_CREDITS
    assert w.balance().email == 100

    w.service.subscribe("other", tiny_plan(email=0, mobile=100))
    result = w.service.unlock("other", emails(1))
    assert result.items[0].outcome is Outcome.INSUFFICIENT_CREDITS
    assert w.balance("other").mobile == 100


# -- R2: price list ------------------------------------------------------------------------


def test_r2_shipped_plans_charge_one_credit_of_the_own_pool() -> None:
    """R2: "one email address costs 1 EMAIL credit, one mobile number costs 1 MOBILE
    credit" on every shipped plan."""
    for plan in PLANS.values():
        assert plan.price_of(Channel.EMAIL) == Price(pool=Channel.EMAIL, credits=1)
        assert plan.price_of(Channel.MOBILE) == Price(pool=Channel.MOBILE, credits=1)
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    result = w.service.unlock(ACCOUNT, [*emails(1), *mobiles(1)])
    assert result.charged(Channel.EMAIL) == 1
    assert result.charged(Channel.MOBILE) == 1
    assert (w.balance().email, w.balance().mobile) == (11_999, 799)


def test_r2_plan_can_price_a_mobile_at_15_email_credits() -> None:
    """R2: "a plan must be able to say" that a mobile number costs 15 EMAIL credits; the
    Plan is plain data and the charge comes from the EMAIL pool."""
    plan = Plan(
        name="mobile-from-email",
        monthly=Credits(email=100, mobile=0),
        prices={
            Channel.EMAIL: Price(pool=Channel.EMAIL, credits=1),
            Channel.MOBILE: Price(pool=Channel.EMAIL, credits=15),
        },
    )
    w = make_world()
    w.service.subscribe(ACCOUNT, plan)
    phone = Contact.mobile("+447700900123")
    result = w.service.unlock(ACCOUNT, [phone, *emails(1)])

    assert [i.outcome for i in result.items] == [Outcome.CHARGED, Outcome.CHARGED]
    assert (result.items[0].pool, result.items[0].credits) == (Channel.EMAIL, 15)
    assert result.charged(Channel.EMAIL) == 16
    assert result.charged(Channel.MOBILE) == 0
    assert (w.balance().email, w.balance().mobile) == (84, 0)
    charge = of_kind(w.entries(), EntryKind.CHARGE)[0]
    assert (charge.pool, charge.amount, charge.cause.datum) == (
        Channel.EMAIL,
        -15,
        "mobile:+447700900123",
    )


def test_r2_a_price_list_covers_both_channels_with_positive_prices() -> None:
    """R2: "what one verified datum costs and from which pool" -- a plan without a price
    for a channel, or with a price of 0 credits, is refused."""
    with pytest.raises(InvalidPlan):
        Plan(name="x", monthly=Credits(), prices={Channel.EMAIL: Price(pool=Channel.EMAIL)})
    with pytest.raises(InvalidPlan):
        Price(pool=Channel.EMAIL, credits=0)


# -- R3: allowances and catalogue ----------------------------------------------------------


def test_r3_shipped_catalogue_has_the_published_figures() -> None:
    """R3: ignite 5,000 + 333, boost 12,000 + 800, power 30,000 + 2,000, mobile =
    floor(email / 15), and no rollover cap on shipped plans (R5)."""
    figures = {name: (p.monthly.email, p.monthly.mobile) for name, p in PLANS.items()}
    assert figures == {"ignite": (5_000, 333), "boost": (12_000, 800), "power": (30_000, 2_000)}
    for plan in PLANS.values():
        assert plan.monthly.mobile == plan.monthly.email // 15
        assert plan.rollover_cap is None


@pytest.mark.parametrize("name", ["ignite", "boost", "power"])
def test_r3_subscribe_grants_the_first_allowance(name: str) -> None:
    """R3: "A plan grants a monthly allowance per pool at the start of each billing
    period" -- the first one at subscription, as GRANT entries naming plan and period."""
    w = make_world()
    w.service.subscribe(ACCOUNT, name)
    monthly = PLANS[name].monthly
    assert (w.balance().email, w.balance().mobile) == (monthly.email, monthly.mobile)
    grants = w.entries()
    assert [(e.kind, e.pool, e.amount) for e in grants] == [
        (EntryKind.GRANT, Channel.EMAIL, monthly.email),
        (EntryKind.GRANT, Channel.MOBILE, monthly.mobile),
    ]
    for entry in grants:
        assert entry.cause.operation is Operation.SUBSCRIBE
        assert (entry.cause.plan, entry.cause.period, entry.at) == (name, 0, JAN_1)


def test_r3_next_allowance_is_granted_at_the_period_boundary() -> None:
    """R3: the allowance comes "at the start of each billing period": not a second early,
    and exactly at the boundary, as a RENEWAL grant of period 1."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    boundary = datetime(2024, 2, 1, tzinfo=UTC)
    w.clock.set(boundary - SECOND)
    assert w.balance().email == 12_000
    w.clock.set(boundary)
    assert (w.balance().email, w.balance().mobile) == (24_000, 1_600)
    renewal = w.entries()[-2:]
    assert {(e.kind, e.cause.operation, e.cause.period, e.at) for e in renewal} == {
        (EntryKind.GRANT, Operation.RENEWAL, 1, boundary)
    }


def test_r3_an_application_loads_its_own_catalogue() -> None:
    """R3: "The catalogue is data: an application can load its own plans." -- a service
    given its own catalogue knows those plans and only those."""
    starter = tiny_plan(email=50, mobile=3, name="starter")
    w = make_world(plans={"starter": starter})
    w.service.subscribe(ACCOUNT, "starter")
    assert (w.balance().email, w.balance().mobile) == (50, 3)
    with pytest.raises(UnknownPlan):
        w.service.subscribe("other", "boost")


def test_r3_renew_due_renews_every_due_account_for_a_scheduler() -> None:
    """R3: allowances arrive even for accounts nobody touches: renew_due() applies every
    passed boundary, and a second run finds nothing to do."""
    w = make_world()
    w.service.subscribe("a1", "boost")
    w.service.subscribe("a2", "ignite")
    w.advance(timedelta(days=31))
    assert len(w.stored_entries("a1")) == 2  # nothing renewed until someone asks
    assert w.service.renew_due() == 2
    assert [e.cause.operation for e in w.stored_entries("a1")[2:]] == [Operation.RENEWAL] * 2
    assert [e.amount for e in w.stored_entries("a2")[2:]] == [5_000, 333]
    assert w.service.renew_due() == 0


# -- R4: monthly periods from the anchor, clamped -------------------------------------------


@pytest.mark.parametrize(
    ("anchor", "expected_ends"),
    [
        (  # not a leap year
            datetime(2023, 1, 31, 10, 0, tzinfo=UTC),
            [(2023, 2, 28), (2023, 3, 31), (2023, 4, 30), (2023, 5, 31)],
        ),
        (  # leap year
            datetime(2024, 1, 31, 10, 0, tzinfo=UTC),
            [(2024, 2, 29), (2024, 3, 31), (2024, 4, 30), (2024, 5, 31)],
        ),
        (  # anchored on a leap day: Feb 28 next year, then back to the 29th
            datetime(2024, 2, 29, 10, 0, tzinfo=UTC),
            [(2024, 3, 29), (2024, 4, 29)],
        ),
        (
            datetime(2024, 8, 31, 10, 0, tzinfo=UTC),
            [(2024, 9, 30), (2024, 10, 31), (2024, 11, 30), (2024, 12, 31), (2025, 1, 31)],
        ),
    ],
)
def test_r4_period_clamps_to_month_end(
    anchor: datetime, expected_ends: list[tuple[int, int, int]]
) -> None:
    """R4: "monthly from the subscription's anchor instant ... on the same day of month,
    clamped to the month's end (Jan 31 -> Feb 28/29 -> Mar 31)" -- counted from the
    anchor, so a short month never drags later periods to an earlier day."""
    w = make_world(start=anchor)
    w.service.subscribe(ACCOUNT, "boost")
    y, m, d = expected_ends[-1]
    w.clock.set(datetime(y, m, d, 9, 0, tzinfo=UTC))  # in the last period: all have begun
    ends = [w.service.period(ACCOUNT, i).end for i in range(len(expected_ends))]
    assert ends == [datetime(y, m, d, 10, 0, tzinfo=UTC) for y, m, d in expected_ends]
    for i in range(1, len(expected_ends)):
        assert w.service.period(ACCOUNT, i).start == w.service.period(ACCOUNT, i - 1).end


def test_r4_leap_day_anchor_clamps_to_feb_28_in_a_common_year() -> None:
    """R4: an anchor on Feb 29 renews on Feb 28 in a common year and on Mar 29 after."""
    w = make_world(start=datetime(2024, 2, 29, tzinfo=UTC))
    w.service.subscribe(ACCOUNT, "boost")
    w.clock.set(datetime(2025, 3, 29, tzinfo=UTC))  # period 13 has begun
    assert w.service.period(ACCOUNT, 12).start == datetime(2025, 2, 28, tzinfo=UTC)
    assert w.service.period(ACCOUNT, 13).start == datetime(2025, 3, 29, tzinfo=UTC)


def test_r4_renewal_grants_land_on_the_clamped_days() -> None:
    """R4: with a Jan 31 anchor the allowance arrives on Feb 29 (2024) and Mar 31, not on
    Mar 29 or Mar 1."""
    w = make_world(start=datetime(2024, 1, 31, 10, 0, tzinfo=UTC))
    w.service.subscribe(ACCOUNT, "boost")
    w.clock.set(datetime(2024, 2, 29, 9, 59, 59, tzinfo=UTC))
    assert w.balance().email == 12_000
    w.clock.set(datetime(2024, 2, 29, 10, 0, tzinfo=UTC))
    assert w.balance().email == 24_000
    w.clock.set(datetime(2024, 3, 31, 9, 59, 59, tzinfo=UTC))
    assert w.balance().email == 24_000
    w.clock.set(datetime(2024, 3, 31, 10, 0, tzinfo=UTC))
    assert w.balance().email == 36_000
    grant_days = [e.at for e in of_kind(w.entries(), EntryKind.GRANT) if e.pool is Channel.EMAIL]
    assert grant_days == [
        datetime(2024, 1, 31, 10, 0, tzinfo=UTC),
        datetime(2024, 2, 29, 10, 0, tzinfo=UTC),
        datetime(2024, 3, 31, 10, 0, tzinfo=UTC),
    ]


def test_r4_periods_are_computed_in_utc() -> None:
    """R4: periods are "in UTC": a subscription made on Jan 31, 23:30 at UTC-5 is anchored
    on Feb 1, 04:30 UTC, and renews on Mar 1 (not Feb 29)."""
    new_york_winter = timezone(timedelta(hours=-5))
    w = make_world(start=datetime(2024, 1, 31, 23, 30, tzinfo=new_york_winter))
    w.service.subscribe(ACCOUNT, "boost")
    period = w.service.period(ACCOUNT)
    assert period.start == datetime(2024, 2, 1, 4, 30, tzinfo=UTC)
    assert period.end == datetime(2024, 3, 1, 4, 30, tzinfo=UTC)
    assert period.start.utcoffset() == timedelta(0)
    assert all(e.at.utcoffset() == timedelta(0) for e in w.entries())


# -- R5: rollover --------------------------------------------------------------------------


def test_r5_rollover_without_cap_carries_everything_over() -> None:
    """R5: "unused credits carry over to the next period, without limit" -- also across
    several boundaries applied in one touch."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.service.unlock(ACCOUNT, emails(100))
    w.advance(timedelta(days=31))
    assert w.balance().email == 12_000 - 100 + 12_000
    w.service.unlock(ACCOUNT, emails(50, prefix="feb"))
    w.clock.set(datetime(2024, 8, 1, tzinfo=UTC))  # six boundaries passed, touched once
    b = w.balance()
    assert (b.email, b.mobile) == (8 * 12_000 - 150, 8 * 800)
    assert not of_kind(w.entries(), EntryKind.FORFEIT)


def test_r5_rollover_cap_forfeits_the_excess_with_a_ledger_entry() -> None:
    """R5: "credits above a cap are forfeited at renewal, with a ledger entry" -- before
    the new allowance is granted, per pool."""
    capped = tiny_plan(email=1_000, mobile=100, name="capped", cap=Credits(email=300, mobile=50))
    w = make_world()
    w.service.subscribe(ACCOUNT, capped)
    w.service.unlock(ACCOUNT, emails(200))  # 800 email left, 100 mobile left
    boundary = datetime(2024, 2, 1, tzinfo=UTC)
    w.clock.set(boundary)
    assert (w.balance().email, w.balance().mobile) == (300 + 1_000, 50 + 100)

    renewal = [e for e in w.entries() if e.at == boundary]
    assert [(e.kind, e.pool, e.amount, e.balance_after) for e in renewal] == [
        (EntryKind.FORFEIT, Channel.EMAIL, -500, 300),
        (EntryKind.FORFEIT, Channel.MOBILE, -50, 50),
        (EntryKind.GRANT, Channel.EMAIL, 1_000, 1_300),
        (EntryKind.GRANT, Channel.MOBILE, 100, 150),
    ]
    assert renewal[0].cause.operation is Operation.RENEWAL
    assert renewal[0].cause.plan == "capped"


def test_r5_rollover_under_the_cap_forfeits_nothing() -> None:
    """R5: only credits *above* the cap are forfeited; below it everything carries over."""
    capped = tiny_plan(email=1_000, mobile=100, name="capped", cap=Credits(email=300, mobile=50))
    w = make_world()
    w.service.subscribe(ACCOUNT, capped)
    w.service.unlock(ACCOUNT, [*emails(800), *mobiles(60)])  # 200 and 40 left: under the cap
    w.advance(timedelta(days=31))
    assert (w.balance().email, w.balance().mobile) == (1_200, 140)
    assert not of_kind(w.entries(), EntryKind.FORFEIT)


# -- R6: cancel, lapse, resubscribe, pause --------------------------------------------------


def test_r6_cancelled_credits_stay_spendable_until_the_period_ends() -> None:
    """R6: when a subscription is cancelled the credits are forfeited "at the end of the
    last paid period ...; until then they can be spent"."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.advance(timedelta(days=9))
    ends = w.service.cancel(ACCOUNT)
    assert ends == datetime(2024, 2, 1, tzinfo=UTC)
    assert w.service.subscription(ACCOUNT).ends_at == ends
    assert w.service.cancel(ACCOUNT) == ends  # cancelling twice changes nothing
    w.clock.set(ends - SECOND)
    result = w.service.unlock(ACCOUNT, emails(100))
    assert result.charged(Channel.EMAIL) == 100
    assert w.balance().email == 11_900
    assert not of_kind(w.entries(), EntryKind.FORFEIT)


def test_r6_lapse_forfeits_both_pools_with_ledger_entries_and_reads_zero() -> None:
    """R6: "the credits left in both pools are forfeited at the end of the last paid
    period, with ledger entries" and "A lapsed account's balance reads zero"; it gets no
    renewal and cannot be charged."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.service.unlock(ACCOUNT, emails(100))
    ends = w.service.cancel(ACCOUNT)
    w.clock.set(ends)
    b = w.balance()
    assert (b.email, b.mobile, b.email_available, b.mobile_available) == (0, 0, 0, 0)
    assert w.service.subscription(ACCOUNT).status is Status.LAPSED
    lapse = [e for e in w.entries() if e.at == ends]
    assert [(e.kind, e.pool, e.amount, e.balance_after) for e in lapse] == [
        (EntryKind.FORFEIT, Channel.EMAIL, -11_900, 0),
        (EntryKind.FORFEIT, Channel.MOBILE, -800, 0),
    ]
    assert {e.cause.operation for e in lapse} == {Operation.LAPSE}
    with pytest.raises(NoActiveSubscription):
        w.service.unlock(ACCOUNT, emails(1, prefix="late"))
    w.advance(timedelta(days=100))
    assert (w.balance().email, w.balance().mobile) == (0, 0)
    assert w.entries()[-1] == lapse[-1]  # nothing granted after the lapse


def test_r6_resubscribing_starts_from_the_new_allowance() -> None:
    """R6: "Subscribing again starts from the new allowance; forfeited credits never
    come back." -- with a new anchor; and data bought before stay owned (R12: "ever")."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    bought = emails(5)
    w.service.unlock(ACCOUNT, bought)
    w.clock.set(w.service.cancel(ACCOUNT))
    restart = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)
    w.clock.set(restart)
    w.service.subscribe(ACCOUNT, "ignite")
    assert (w.balance().email, w.balance().mobile) == (5_000, 333)
    assert w.service.period(ACCOUNT).start == restart
    w.clock.set(datetime(2024, 4, 15, 12, 0, tzinfo=UTC))
    assert (w.balance().email, w.balance().mobile) == (10_000, 666)
    again = w.service.unlock(ACCOUNT, bought)
    assert {i.outcome for i in again.items} == {Outcome.ALREADY_OWNED}
    assert again.charged(Channel.EMAIL) == 0


def test_r6_pause_refuses_charges_with_subscription_paused() -> None:
    """R6: "a charging request on it is refused with an error, until it resumes" --
    unlock, export and enrich alike, at once, with nothing verified or charged."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.service.pause(ACCOUNT)
    before = w.entries()
    with pytest.raises(SubscriptionPaused):
        w.service.unlock(ACCOUNT, emails(1))
    with pytest.raises(SubscriptionPaused):
        w.service.export(ACCOUNT, emails(1), destination="csv")
    with pytest.raises(SubscriptionPaused):
        w.service.enrich(ACCOUNT, mobiles(1))
    with pytest.raises(SubscriptionPaused):
        w.service.change_plan(ACCOUNT, "power")
    assert w.verifier.calls == []
    assert w.entries() == before
    assert w.service.subscription(ACCOUNT).status is Status.PAUSED
    w.service.resume(ACCOUNT)
    assert w.service.unlock(ACCOUNT, emails(1)).charged(Channel.EMAIL) == 1


def test_r6_paused_subscription_keeps_its_credits_but_grants_nothing() -> None:
    """R6: "a paused subscription keeps its credits but grants nothing"; after resume the
    next renewal grants again. (Decision: resuming does not itself grant.)"""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.service.unlock(ACCOUNT, emails(10))
    w.clock.set(datetime(2024, 1, 10, tzinfo=UTC))
    w.service.pause(ACCOUNT)
    w.clock.set(datetime(2024, 2, 15, tzinfo=UTC))  # Feb 1 boundary passed while paused
    assert (w.balance().email, w.balance().mobile) == (11_990, 800)
    assert len(of_kind(w.entries(), EntryKind.GRANT)) == 2  # only the first allowance
    w.service.resume(ACCOUNT)
    assert w.balance().email == 11_990
    w.clock.set(datetime(2024, 3, 1, tzinfo=UTC))
    assert (w.balance().email, w.balance().mobile) == (23_990, 1_600)
    last = of_kind(w.entries(), EntryKind.GRANT)[-1]
    assert (last.at, last.cause.period) == (datetime(2024, 3, 1, tzinfo=UTC), 2)


def test_r6_a_lapsed_account_cannot_be_paused_resumed_or_topped_up() -> None:
    """R6: a lapsed account has no subscription left to pause, resume or credit."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.clock.set(w.service.cancel(ACCOUNT))
    for call in (w.service.pause, w.service.resume, w.service.cancel):
        with pytest.raises(NoActiveSubscription):
            call(ACCOUNT)
    with pytest.raises(NoActiveSubscription):
        w.service.top_up(ACCOUNT, Credits(email=5), reason="goodwill")
    assert (w.balance().email, w.balance().mobile) == (0, 0)


# -- R7: upgrade, downgrade -----------------------------------------------------------------


def test_r7_upgrade_is_prorated_to_the_second_and_rounded_down() -> None:
    """R7: "granted the difference of the two monthly allowances, pro-rated to the part of
    the current period that is left, measured in time to the second, and rounded down"."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")  # period: Jan 1 .. Feb 1 = 2,678,400 s
    w.clock.set(datetime(2024, 1, 11, 7, 13, 20, 750_000, tzinfo=UTC))
    assert w.service.change_plan(ACCOUNT, "power") is PlanChange.UPGRADED
    # 20 d 16:46:39.25 left -> 1,788,399 whole seconds.
    # email: 18,000 * 1,788,399 / 2,678,400 = 12,018.81 -> 12,018
    # mobile: 1,200 * 1,788,399 / 2,678,400 = 801.25 -> 801
    upgrade = w.entries()[-2:]
    assert [(e.kind, e.pool, e.amount) for e in upgrade] == [
        (EntryKind.GRANT, Channel.EMAIL, 12_018),
        (EntryKind.GRANT, Channel.MOBILE, 801),
    ]
    assert {(e.cause.operation, e.cause.plan) for e in upgrade} == {(Operation.UPGRADE, "power")}
    assert (w.balance().email, w.balance().mobile) == (24_018, 1_601)
    assert w.service.subscription(ACCOUNT).plan == PLANS["power"]


def test_r7_later_periods_grant_the_new_allowance() -> None:
    """R7: "later periods grant the new allowance" after an upgrade."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "ignite")
    w.service.change_plan(ACCOUNT, "boost")  # at the anchor: the full difference
    assert (w.balance().email, w.balance().mobile) == (12_000, 800)
    w.clock.set(datetime(2024, 2, 1, tzinfo=UTC))
    assert (w.balance().email, w.balance().mobile) == (24_000, 1_600)


def test_r7_upgrade_in_the_last_half_second_grants_nothing_extra() -> None:
    """R7: rounded down "to whole credits" on time measured "to the second": with less
    than a second left nothing is granted, and no zero-amount entry is written."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.clock.set(datetime(2024, 2, 1, tzinfo=UTC) - timedelta(milliseconds=500))
    before = w.entries()
    assert w.service.change_plan(ACCOUNT, "power") is PlanChange.UPGRADED
    assert w.entries() == before
    w.clock.set(datetime(2024, 2, 1, tzinfo=UTC))
    assert w.balance().email == 12_000 + 30_000


def test_r7_downgrade_takes_effect_at_the_next_renewal() -> None:
    """R7: "Downgrade takes effect at the next renewal. Credits already granted are always
    kept, also above the new allowance."
    """
    w = make_world()
    w.service.subscribe(ACCOUNT, "power")
    w.service.unlock(ACCOUNT, emails(1_000))
    w.clock.set(datetime(2024, 1, 20, tzinfo=UTC))
    assert w.service.change_plan(ACCOUNT, "boost") is PlanChange.DOWNGRADE_SCHEDULED
    sub = w.service.subscription(ACCOUNT)
    assert (sub.plan, sub.pending_plan) == (PLANS["power"], PLANS["boost"])
    assert (w.balance().email, w.balance().mobile) == (29_000, 2_000)

    w.clock.set(datetime(2024, 2, 1, tzinfo=UTC))
    assert (w.balance().email, w.balance().mobile) == (29_000 + 12_000, 2_000 + 800)
    assert w.balance().email > PLANS["boost"].monthly.email
    assert w.service.subscription(ACCOUNT).plan == PLANS["boost"]
    assert not of_kind(w.entries(), EntryKind.FORFEIT)
    renewal = of_kind(w.entries(), EntryKind.GRANT)[-2:]
    assert {e.cause.plan for e in renewal} == {"boost"}


def test_r7_a_change_that_lowers_any_pool_is_not_an_upgrade() -> None:
    """R7 (decision): a plan with more email but fewer mobile credits is not an upgrade; it
    waits for the renewal like a downgrade, and grants nothing now."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    mixed = tiny_plan(email=20_000, mobile=100, name="mixed")
    assert w.service.change_plan(ACCOUNT, mixed) is PlanChange.DOWNGRADE_SCHEDULED
    assert w.balance().email == 12_000
    w.clock.set(datetime(2024, 2, 1, tzinfo=UTC))
    assert (w.balance().email, w.balance().mobile) == (32_000, 900)


def test_r7_upgrade_after_a_scheduled_downgrade_replaces_it() -> None:
    """R7: the latest choice wins: an upgrade acts at once and drops the pending downgrade;
    choosing the current plan again is UNCHANGED and also drops it."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.service.change_plan(ACCOUNT, "ignite")
    assert w.service.change_plan(ACCOUNT, "boost") is PlanChange.UNCHANGED
    assert w.service.subscription(ACCOUNT).pending_plan is None
    w.service.change_plan(ACCOUNT, "ignite")
    assert w.service.change_plan(ACCOUNT, "power") is PlanChange.UPGRADED
    sub = w.service.subscription(ACCOUNT)
    assert (sub.plan, sub.pending_plan) == (PLANS["power"], None)


# -- R8: other grants -----------------------------------------------------------------------


def test_r8_top_up_is_a_ledger_entry_like_any_other() -> None:
    """R8: "Other grants (top-up, promotion, goodwill) are ledger entries like any other."
    -- spendable and rolled over like the allowance."""
    w = make_world()
    w.service.subscribe(ACCOUNT, tiny_plan(email=2))
    top_up = w.service.top_up(ACCOUNT, Credits(email=3, mobile=4), reason="promotion")
    entries = list(top_up.entries)
    assert (top_up.account, top_up.idempotency_key, top_up.replayed) == (ACCOUNT, None, False)
    assert [(e.kind, e.pool, e.amount) for e in entries] == [
        (EntryKind.TOP_UP, Channel.EMAIL, 3),
        (EntryKind.TOP_UP, Channel.MOBILE, 4),
    ]
    assert entries[0].cause.note == "promotion"
    assert w.entries()[-2:] == entries
    assert w.service.unlock(ACCOUNT, emails(5)).charged(Channel.EMAIL) == 5
    w.advance(timedelta(days=31))
    assert (w.balance().email, w.balance().mobile) == (2, 4)


def test_r8_a_top_up_needs_credits_and_a_reason() -> None:
    """R8: a grant without credits, or without saying why, is refused and changes nothing."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    with pytest.raises(InvalidRequest):
        w.service.top_up(ACCOUNT, Credits(), reason="goodwill")
    with pytest.raises(InvalidRequest):
        w.service.top_up(ACCOUNT, Credits(email=1), reason="  ")
    assert len(w.entries()) == 2


def test_r8_a_top_up_reason_is_bounded_and_printable() -> None:
    """R8 with the limits: the reason is kept on every entry, so it is bounded like any
    other text a client controls."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    longest = "r" * MAX_REASON_LENGTH
    assert w.service.top_up(ACCOUNT, Credits(email=1), reason=longest).entries[0].cause.note == (
        longest
    )
    for wrong in ["r" * (MAX_REASON_LENGTH + 1), "new\nline", "nul\x00", 7]:
        with pytest.raises(InvalidRequest, match="reason"):
            w.service.top_up(ACCOUNT, Credits(email=1), reason=wrong)  # type: ignore[arg-type]
    assert len(w.entries()) == 3


def test_r8_r17_a_repeated_top_up_grants_once_and_answers_the_first() -> None:
    """R17 for grants: "a repeat with the same key and payload returns the first result
    and charges nothing more" -- here, grants nothing more; later activity changes nothing
    of the answer, which is read back from the append-only ledger (R19)."""
    w = make_world()
    w.service.subscribe(ACCOUNT, tiny_plan(email=2, mobile=1))
    first = w.service.top_up(
        ACCOUNT, Credits(email=3, mobile=4), reason="goodwill", idempotency_key="grant-1"
    )
    assert [e.cause.idempotency_key for e in first.entries] == ["grant-1", "grant-1"]
    w.service.unlock(ACCOUNT, emails(2))
    w.advance(timedelta(days=40))  # a renewal since
    again = w.service.top_up(
        ACCOUNT, Credits(email=3, mobile=4), reason="goodwill", idempotency_key="grant-1"
    )
    assert again.replayed and not first.replayed
    assert again.entries == first.entries and again.idempotency_key == "grant-1"
    assert len(of_kind(w.entries(), EntryKind.TOP_UP)) == 2
    assert (w.balance().email, w.balance().mobile) == (2 + 3 - 2 + 2, 1 + 4 + 1)
    w.service.cancel(ACCOUNT)
    w.advance(timedelta(days=40))  # lapsed: a repeat still answers what was done
    assert (
        w.service.top_up(
            ACCOUNT, Credits(email=3, mobile=4), reason="goodwill", idempotency_key="grant-1"
        ).entries
        == first.entries
    )


def test_r8_r17_a_top_up_key_with_another_payload_is_refused() -> None:
    """R17: "the same key with another payload is refused with a clear error"; top-ups and
    charging requests share the account's keys, so neither takes the other's."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.service.top_up(ACCOUNT, Credits(email=3), reason="goodwill", idempotency_key="k1")
    w.service.unlock(ACCOUNT, emails(1), idempotency_key="k2")
    before = w.entries()
    for credits, reason, key in [
        (Credits(email=4), "goodwill", "k1"),
        (Credits(email=3, mobile=1), "goodwill", "k1"),
        (Credits(email=3), "promotion", "k1"),
        (Credits(email=3), "goodwill", "k2"),
    ]:
        with pytest.raises(IdempotencyKeyReused):
            w.service.top_up(ACCOUNT, credits, reason=reason, idempotency_key=key)
    with pytest.raises(IdempotencyKeyReused):
        w.service.unlock(ACCOUNT, emails(1), idempotency_key="k1")
    assert w.entries() == before
    other = "globex"
    w.service.subscribe(other, "boost")  # keys are scoped to their account
    assert not w.service.top_up(
        other, Credits(email=3), reason="goodwill", idempotency_key="k1"
    ).replayed


def test_r8_r17_a_top_up_key_is_checked_like_a_charge_key() -> None:
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    for key in ["", "k" * 256, "tab\t", 7]:
        with pytest.raises(InvalidRequest, match="idempotency_key"):
            w.service.top_up(ACCOUNT, Credits(email=1), reason="x", idempotency_key=key)  # type: ignore[arg-type]
    assert len(w.entries()) == 2


def test_r8_a_lapsed_account_takes_no_top_up() -> None:
    """R6: a lapsed account holds no credits; a grant needs a subscription first."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.service.cancel(ACCOUNT)
    w.advance(timedelta(days=40))
    with pytest.raises(NoActiveSubscription):
        w.service.top_up(ACCOUNT, Credits(email=1), reason="goodwill", idempotency_key="k")
    w.service.subscribe(ACCOUNT, "boost")  # the refused key was not taken
    assert not w.service.top_up(
        ACCOUNT, Credits(email=1), reason="goodwill", idempotency_key="k"
    ).replayed


def test_r3_a_plan_value_works_outside_the_catalogue() -> None:
    """R3: "the catalogue is data": a service knows the plan names of the catalogue it
    was given (here none), and a Plan given as a value works without being in it, with
    its own allowance and price list (R2)."""
    plan = fifteen_per_mobile(30)
    w = make_world(plans={})
    with pytest.raises(UnknownPlan):
        w.service.subscribe(ACCOUNT, "boost")
    w.service.subscribe(ACCOUNT, plan)
    assert w.service.subscription(ACCOUNT).plan == plan
    assert w.balance().email == 30
    assert w.service.unlock(ACCOUNT, mobiles(1)).charged(Channel.EMAIL) == 15
    assert w.balance().email == 15


def test_r6_a_request_reserved_before_a_pause_still_settles() -> None:
    """R6 with R16 (decision in ARCHITECTURE.md): pausing acts on requests made after it;
    a request already holding credits and being verified settles, and the next is refused."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.hook = lambda batch: w.service.pause(ACCOUNT)
    result = w.service.unlock(ACCOUNT, emails(2))
    w.hook = None
    assert result.charged(Channel.EMAIL) == 2
    assert w.service.subscription(ACCOUNT).status is Status.PAUSED
    with pytest.raises(SubscriptionPaused):
        w.service.unlock(ACCOUNT, emails(3))
