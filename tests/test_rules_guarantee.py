"""R25, the deliverability guarantee, through the facade: per account and period, the
emails charged, the bounces reported for them (R18), the rate, and the breach (more than
1% bounced with at least 100 emails charged). Derived from the ledger; the last test runs
on SQLite too."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from adapters.clock import ManualClock
from adapters.sql import SqlRepository
from adapters.verifier import ScriptedVerifier
from credits_domain import Contact, CreditService, Guarantee, InvalidRequest
from rules_support import ACCOUNT, JAN_1, World, emails, make_world, mobiles, tiny_plan

DAY = timedelta(days=1)
PLANS = {"tiny": tiny_plan(300, 10)}


def world() -> World:
    w = make_world(plans=PLANS)
    w.service.subscribe(ACCOUNT, "tiny")
    return w


def bounce(service: CreditService, contacts: list[Contact]) -> None:
    for contact in contacts:
        service.report_bounce(ACCOUNT, contact)


def test_r25_one_percent_of_a_hundred_emails_keeps_the_guarantee() -> None:
    w = world()
    batch = emails(100)
    w.service.unlock(ACCOUNT, [*batch, *mobiles(5)])  # mobiles are not emails
    bounce(w.service, batch[:1])
    kept = w.service.guarantee(ACCOUNT)
    assert (kept.emails_charged, kept.bounces, kept.bounce_rate, kept.breached) == (
        100,
        1,
        0.01,
        False,
    )
    bounce(w.service, batch[1:2])
    broken = w.service.guarantee(ACCOUNT)
    assert (broken.emails_charged, broken.bounces, broken.breached) == (100, 2, True)
    assert broken.bounce_rate == 0.02
    assert broken.period == w.service.period(ACCOUNT)


def test_r25_fewer_than_a_hundred_emails_never_breach() -> None:
    w = world()
    batch = emails(99)
    w.service.unlock(ACCOUNT, batch)
    bounce(w.service, batch[:50])
    few = w.service.guarantee(ACCOUNT)
    assert (few.emails_charged, few.bounces, few.breached) == (99, 50, False)


def test_r25_a_refund_does_not_reduce_the_emails_charged() -> None:
    w = world()
    batch = emails(120)
    w.service.unlock(ACCOUNT, batch)
    bounce(w.service, batch[:3])
    assert w.service.balance(ACCOUNT).email == 300 - 120 + 3
    assert w.service.guarantee(ACCOUNT).emails_charged == 120


def test_r25_a_bounce_counts_for_the_period_of_its_charge() -> None:
    w = world()
    first = emails(100, prefix="jan")
    w.advance(20 * DAY)
    w.service.unlock(ACCOUNT, first)
    w.advance(11 * DAY)  # period 1, within 30 days of the charge (R18)
    second = emails(10, prefix="feb")
    w.service.unlock(ACCOUNT, second)
    bounce(w.service, [*first[:2], second[0]])  # two of January's, reported in February
    january = w.service.guarantee(ACCOUNT, w.service.period(ACCOUNT, 0))
    february = w.service.guarantee(ACCOUNT)
    assert (january.emails_charged, january.bounces, january.breached) == (100, 2, True)
    assert (february.emails_charged, february.bounces, february.breached) == (10, 1, False)
    assert february.period.index == 1


def test_r25_an_empty_period_has_a_zero_rate() -> None:
    w = world()
    nothing = w.service.guarantee(ACCOUNT)
    assert (nothing.emails_charged, nothing.bounces, nothing.bounce_rate) == (0, 0, 0.0)
    assert not nothing.breached
    with pytest.raises(InvalidRequest, match="Period"):
        w.service.guarantee(ACCOUNT, 0)  # type: ignore[arg-type]


def test_r25_the_guarantee_refuses_an_impossible_tally() -> None:
    with pytest.raises(AssertionError, match="more bounces"):
        Guarantee(account="a", period=world().service.period(ACCOUNT), emails_charged=1, bounces=2)


def test_r25_on_sqlite_from_the_stored_ledger(tmp_path: Path) -> None:
    clock = ManualClock(JAN_1)
    with SqlRepository.connect(f"sqlite:///{tmp_path / 'r25.db'}", migrate=True) as repository:
        service = CreditService(
            repository=repository, verifier=ScriptedVerifier(), clock=clock, plans=PLANS
        )
        service.subscribe(ACCOUNT, "tiny")
        batch = emails(200)
        clock.advance(25 * DAY)
        service.unlock(ACCOUNT, batch)
        clock.advance(10 * DAY)  # the next period
        bounce(service, batch[:2])
        past = service.guarantee(ACCOUNT, service.period(ACCOUNT, 0))
        assert (past.emails_charged, past.bounces, past.breached) == (200, 2, False)
        bounce(service, batch[2:3])
        assert service.guarantee(ACCOUNT, service.period(ACCOUNT, 0)).breached
