"""The facade's reads for operators: which billing periods exist, the list of accounts, and
refusals worded for people (the CLI and the API show them as they are)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from credits_domain import (
    AlreadySubscribed,
    Contact,
    CreditsError,
    InvalidRequest,
    NoActiveSubscription,
    PeriodOutOfRange,
    SubscriptionPaused,
    UnknownAccount,
)
from credits_domain.limits import MAX_ACCOUNTS_PAGE
from rules_support import ACCOUNT, JAN_1, make_world


def test_a_new_account_has_only_period_0() -> None:
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    assert w.service.period(ACCOUNT, 0) == w.service.period(ACCOUNT)
    with pytest.raises(PeriodOutOfRange) as raised:
        w.service.period(ACCOUNT, 1)
    assert str(raised.value) == (
        f"account {ACCOUNT!r} has only period 0 (its current one); there is no period 1 yet"
    )
    assert isinstance(raised.value, InvalidRequest)  # the API answers 422, the CLI exits 1


@pytest.mark.parametrize("index", [4, 999, 10**30, -1, -(10**30)])
def test_a_period_out_of_range_says_which_periods_exist(index: int) -> None:
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.clock.advance(timedelta(days=100))  # three renewals: periods 0 to 3
    assert w.service.period(ACCOUNT, 3) == w.service.period(ACCOUNT)
    with pytest.raises(PeriodOutOfRange, match=r"has periods 0 to 3 \(3 is the current one\)"):
        w.service.period(ACCOUNT, index)
    assert w.service.period(ACCOUNT, 0).start == JAN_1
    assert w.service.period(ACCOUNT, 3).start == datetime(2024, 4, 1, tzinfo=UTC)


def test_a_lapsed_account_keeps_the_periods_it_had() -> None:
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.clock.advance(timedelta(days=40))
    w.service.cancel(ACCOUNT)  # ends with period 1
    w.clock.advance(timedelta(days=200))
    assert w.service.period(ACCOUNT, 1).index == 1
    with pytest.raises(PeriodOutOfRange, match="periods 0 to 1"):
        w.service.period(ACCOUNT, 2)


@pytest.mark.parametrize("index", [True, "1", 1.0])
def test_a_period_is_a_whole_number(index: Any) -> None:
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    with pytest.raises(InvalidRequest, match="a period is a whole number"):
        w.service.period(ACCOUNT, index)


def test_accounts_are_listed_by_id_in_pages() -> None:
    w = make_world()
    for account in ("initech", "acme", "globex", "Zeta"):
        w.service.subscribe(account, "ignite")
    assert w.service.accounts() == ["Zeta", "acme", "globex", "initech"]
    assert w.service.accounts(limit=2) == ["Zeta", "acme"]
    assert w.service.accounts(after="acme", limit=2) == ["globex", "initech"]
    assert w.service.accounts(after="initech") == []


@pytest.mark.parametrize("limit", [0, MAX_ACCOUNTS_PAGE + 1, -1, True, "10"])
def test_a_page_of_accounts_is_bounded(limit: Any) -> None:
    w = make_world()
    with pytest.raises(InvalidRequest, match=f"1 to {MAX_ACCOUNTS_PAGE:,} accounts"):
        w.service.accounts(limit=limit)


def test_a_page_of_accounts_after_a_bad_id_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="account must be"):
        make_world().service.accounts(after="x" * 201)


def refusals() -> list[CreditsError]:
    """One of each refusal about the state of a subscription, as the facade raises it."""
    w = make_world()
    found: list[CreditsError] = []

    def refused(call: Callable[[], object]) -> None:
        with pytest.raises(CreditsError) as raised:
            call()
        found.append(raised.value)

    refused(lambda: w.service.balance("nobody"))
    w.service.subscribe(ACCOUNT, "boost")
    refused(lambda: w.service.subscribe(ACCOUNT, "power"))
    w.service.pause(ACCOUNT)
    refused(lambda: w.service.unlock(ACCOUNT, [Contact.email("a@b.co")]))
    refused(lambda: w.service.change_plan(ACCOUNT, "power"))
    w.service.resume(ACCOUNT)
    w.service.cancel(ACCOUNT)
    w.clock.advance(timedelta(days=40))
    with pytest.raises(NoActiveSubscription) as lapsed:
        w.service.change_plan(ACCOUNT, "power")
    return [*found, lapsed.value]


def test_refusals_name_no_python_call() -> None:
    """Read from the CLI and the API alike: "subscribe it", not "call subscribe()"."""
    found = refusals()
    assert [type(e) for e in found] == [
        UnknownAccount,
        AlreadySubscribed,
        SubscriptionPaused,
        SubscriptionPaused,
        NoActiveSubscription,
    ]
    for error in found:
        assert not re.search(r"\w\(\)", str(error)), str(error)
    assert "change its plan" in str(found[1])
    assert "resume its subscription" in str(found[2])


def test_r4_a_read_that_crosses_a_boundary_of_a_paused_account_saves_it() -> None:
    """R4, R6: a paused account's boundary writes no ledger entry, but the read that applies
    it still saves the wallet, so the renewal job does not find it due again. Found by the
    state machine: renew_due() answered 1 after balance() had applied the boundary."""
    w = make_world()
    w.service.subscribe(ACCOUNT, "boost")
    w.service.pause(ACCOUNT)
    w.clock.advance(timedelta(days=40))
    w.service.balance(ACCOUNT)
    assert w.service.renew_due() == 0
