"""R22 team members and allowances, through the facade, on memory, SQLite and PostgreSQL.

An account is a team; a charging call may name a member. Data belong to the team (R12
per account). A member with an allowance per pool and period gets items past it refused
as member_allowance_exceeded (free, in request order like R15), also when past the pool
too; allowances reset each period; a bounce refund (R18) gives the usage back in the
period of its charge; a member without an allowance draws on the pool freely.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import attrs
import pytest

from adapters.clock import ManualClock
from adapters.verifier import ScriptedVerifier
from credits_domain import (
    Channel,
    Contact,
    Credits,
    CreditService,
    EntryKind,
    IdempotencyKeyReused,
    InvalidRequest,
    Outcome,
    UnknownMember,
    Verdict,
)
from rules_support import JAN_1, STORAGES, emails, storage, tiny_plan

ACCOUNT = "acme"
DAY = timedelta(days=1)
PLANS = {"tiny": tiny_plan(10, 5), "small": tiny_plan(4, 0, name="small")}
C, MAE, IC, OWNED = (
    Outcome.CHARGED,
    Outcome.MEMBER_ALLOWANCE_EXCEEDED,
    Outcome.INSUFFICIENT_CREDITS,
    Outcome.ALREADY_OWNED,
)


@attrs.define
class Team:
    service: CreditService
    clock: ManualClock
    hook: Callable[[], object] | None = None

    def unlock(self, member: str | None, contacts: Sequence[Contact]) -> list[Outcome]:
        result = self.service.unlock(ACCOUNT, contacts, member=member)
        return [item.outcome for item in result.items]


@pytest.fixture(params=STORAGES)
def team(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Team]:
    clock = ManualClock(JAN_1)
    holder: list[Team] = []

    def before_answer(batch: Sequence[Contact]) -> None:
        hook, holder[0].hook = holder[0].hook, None  # once
        if hook is not None:
            hook()

    verifier = ScriptedVerifier(
        {"bad@corp.com": Verdict.INVALID}, default=Verdict.VALID, before_answer=before_answer
    )
    with storage(request, tmp_path) as repository:
        service = CreditService(repository=repository, verifier=verifier, clock=clock, plans=PLANS)
        service.subscribe(ACCOUNT, "tiny")
        for member in ("alice", "bob"):
            assert service.add_member(ACCOUNT, member)
        holder.append(Team(service=service, clock=clock))
        yield holder[0]


def test_r22_data_belong_to_the_team_and_members_draw_on_its_pool(team: Team) -> None:
    first = emails(2)
    assert team.unlock("alice", first) == [C, C]
    assert team.unlock("bob", [first[0], *emails(1, prefix="bob")]) == [OWNED, C]
    assert team.unlock(None, first) == [OWNED, OWNED]
    assert team.service.balance(ACCOUNT).email == 10 - 3
    charges = [e for e in team.service.statement(ACCOUNT) if e.kind is EntryKind.CHARGE]
    assert [e.cause.member for e in charges] == ["alice", "alice", "bob"]
    assert not team.service.add_member(ACCOUNT, "alice")  # a member already


def test_r22_past_the_allowance_is_member_allowance_exceeded_in_request_order(
    team: Team,
) -> None:
    team.service.set_member_allowance(ACCOUNT, "alice", Credits(email=3))
    batch = [Contact.email("bad@corp.com"), *emails(4)]
    assert team.unlock("alice", batch) == [Outcome.NOT_VERIFIED, C, C, C, MAE]
    assert team.unlock("alice", emails(1, prefix="more")) == [MAE]
    assert team.unlock("bob", emails(3, prefix="bob")) == [C, C, C]  # the pool pays
    mobile = [Contact.mobile("+15550000001")]
    assert team.unlock("alice", mobile) == [MAE]  # the allowance is per pool: mobile 0
    assert team.service.member_usage(ACCOUNT, "alice") == Credits(email=3)
    assert team.service.member_usage(ACCOUNT, "bob") == Credits(email=3)
    team.service.set_member_allowance(ACCOUNT, "alice", None)
    assert team.unlock("alice", emails(1, prefix="free")) == [C]


def test_r22_past_both_allowance_and_pool_is_member_allowance_exceeded(team: Team) -> None:
    team.service.set_member_allowance(ACCOUNT, "alice", Credits(email=2))
    team.unlock("bob", emails(7, prefix="bob"))  # 3 email credits left
    assert team.unlock("alice", emails(5)) == [C, C, MAE, MAE, MAE]
    assert team.unlock("bob", emails(2, prefix="last")) == [C, IC]


def test_r22_allowances_reset_each_period(team: Team) -> None:
    team.service.set_member_allowance(ACCOUNT, "alice", Credits(email=2))
    assert team.unlock("alice", emails(3)) == [C, C, MAE]
    team.clock.advance(31 * DAY)
    assert team.unlock("alice", emails(3, prefix="feb")) == [C, C, MAE]
    january = team.service.period(ACCOUNT, 0)
    assert team.service.member_usage(ACCOUNT, "alice", january) == Credits(email=2)
    assert team.service.member_usage(ACCOUNT, "alice") == Credits(email=2)


def test_r22_a_refund_gives_usage_back_in_the_period_of_the_charge(team: Team) -> None:
    team.service.set_member_allowance(ACCOUNT, "alice", Credits(email=2))
    team.clock.advance(20 * DAY)
    jan = emails(2)
    assert team.unlock("alice", jan) == [C, C]
    team.service.report_bounce(ACCOUNT, jan[0])
    assert team.service.member_usage(ACCOUNT, "alice") == Credits(email=1)
    assert team.unlock("alice", emails(2, prefix="more")) == [C, MAE]
    team.clock.advance(11 * DAY)  # February; January's charge bounces now
    team.service.report_bounce(ACCOUNT, jan[1])
    january = team.service.period(ACCOUNT, 0)
    assert team.service.member_usage(ACCOUNT, "alice", january) == Credits(email=1)
    assert team.service.member_usage(ACCOUNT, "alice") == Credits()
    assert team.unlock("alice", emails(3, prefix="feb")) == [C, C, MAE]


def test_r22_a_members_requests_in_flight_count_against_their_allowance(team: Team) -> None:
    team.service.set_member_allowance(ACCOUNT, "alice", Credits(email=3))
    inner: list[list[Outcome]] = []
    team.hook = lambda: inner.append(team.unlock("alice", emails(2, prefix="inner")))
    assert team.unlock("alice", emails(2)) == [C, C]
    assert inner == [[C, MAE]]  # 2 of the 3 were held while the first was verified
    assert team.service.member_usage(ACCOUNT, "alice") == Credits(email=3)


def test_r22_unknown_members_and_bad_allowances_are_refused(team: Team) -> None:
    with pytest.raises(UnknownMember, match="add_member"):
        team.unlock("carol", emails(1))
    with pytest.raises(UnknownMember):
        team.service.set_member_allowance(ACCOUNT, "carol", Credits(email=1))
    with pytest.raises(UnknownMember):
        team.service.member_usage(ACCOUNT, "carol")
    with pytest.raises(InvalidRequest):
        team.service.set_member_allowance(ACCOUNT, "alice", 5)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        team.unlock("", emails(1))
    assert team.service.balance(ACCOUNT).email == 10


def test_r22_a_key_replays_a_members_request_and_refuses_another_member(team: Team) -> None:
    team.service.set_member_allowance(ACCOUNT, "alice", Credits(email=1))
    first = team.service.unlock(ACCOUNT, emails(2), idempotency_key="k", member="alice")
    again = team.service.unlock(ACCOUNT, emails(2), idempotency_key="k", member="alice")
    assert again.replayed and again.items == first.items
    with pytest.raises(IdempotencyKeyReused):
        team.service.unlock(ACCOUNT, emails(2), idempotency_key="k", member="bob")
    assert team.service.member_usage(ACCOUNT, "alice") == Credits(email=1)
    assert team.service.balance(ACCOUNT).of(Channel.EMAIL) == 9
