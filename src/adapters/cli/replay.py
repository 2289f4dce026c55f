"""Replaying the demo's story on a CreditService, and what the CLI shows of it: the
log, balances per billing period, a grouped statement (all read back from the ledger)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

import attrs

from adapters.cli.story import START, Cast, Step, Story
from adapters.clock import ManualClock
from credits_domain import (
    Balance,
    Channel,
    ChargeResult,
    CreditsError,
    CreditService,
    EntryKind,
    LedgerEntry,
    Operation,
    Outcome,
    Period,
    Verdict,
)
from credits_domain.errors import invariant


@attrs.frozen(kw_only=True)
class Happened:
    step: Step
    account: str
    result: ChargeResult | None
    note: str


@attrs.frozen(kw_only=True)
class LogLine:
    """One line of the story's log: a step, or consecutive steps of one group."""

    at: datetime
    account: str
    title: str
    note: str
    rules: str


@attrs.frozen(kw_only=True)
class PeriodRow:
    """One pool of one billing period of an account, from its ledger (R21).

    Forfeits at a period's end (lapse R6, rollover cap R5) close that period.
    """

    index: int
    period: Period
    plans: tuple[str, ...]
    pool: Channel
    carried_in: int
    granted: int
    used: int
    refunded: int
    forfeited: int
    closing: int


@attrs.frozen(kw_only=True)
class StatementLine:
    """Consecutive ledger entries of one request, one pool and one kind, taken together."""

    at: datetime
    kind: EntryKind
    operation: Operation
    pool: Channel
    count: int
    amount: int
    balance_after: int
    detail: str


@attrs.frozen(kw_only=True)
class DemoRun:
    cast: Cast
    happened: tuple[Happened, ...]
    balances: dict[str, Balance]  # at END
    plans: dict[str, str]  # at END
    statuses: dict[str, str]  # at END
    service: CreditService  # on the story's clock, stopped at END


def replay(
    service: CreditService,
    clock: ManualClock,
    cast: Cast,
    plot: Story,
    on_step: Callable[[Step], None] | None = None,
) -> DemoRun:
    """Play `plot` on `service` under `cast`'s names, moving `clock` to each step's instant
    (the service must run on that clock, with a verifier answering `plot.script`);
    `on_step` after each step."""
    invariant(clock.now() <= START, "the story starts at START")
    happened: list[Happened] = []
    for step in plot.steps:
        clock.set(step.at)
        account = cast.name(step.role)
        happened.append(_play(service, step, account))
        if on_step is not None:
            on_step(step)
    balances = {name: service.balance(name) for name in cast.names}
    subs = {name: service.subscription(name) for name in cast.names}
    return DemoRun(
        cast=cast,
        happened=tuple(happened),
        balances=balances,
        plans={name: sub.plan.name for name, sub in subs.items()},
        statuses={name: sub.status.value for name, sub in subs.items()},
        service=service,
    )


def _play(service: CreditService, step: Step, account: str) -> Happened:
    try:
        outcome = step.action(service, account)
    except CreditsError as exc:
        if step.refusal is None or not isinstance(exc, step.refusal):
            raise
        return Happened(step=step, account=account, result=None, note=f"refused: {exc}")
    invariant(step.refusal is None, f"demo: {step.title!r} should have been refused")
    if isinstance(outcome, str):
        return Happened(step=step, account=account, result=None, note=outcome)
    if step.expect is not None:
        invariant(
            outcome.charged_credits == step.expect,
            f"demo: {step.title!r} charged {outcome.charged_credits}, expected {step.expect}",
        )
    return Happened(step=step, account=account, result=outcome, note=describe(outcome))


def log_lines(happened: Sequence[Happened]) -> list[LogLine]:
    """The log of a run, with each group of consecutive steps taken together."""
    lines: list[LogLine] = []
    for _, run in itertools.groupby(happened, key=lambda h: (h.step.group or id(h), h.account)):
        steps = list(run)
        first, last = steps[0], steps[-1]
        title, note = first.step.title, first.note
        if len(steps) > 1:
            results = [h.result for h in steps if h.result is not None]
            invariant(len(results) == len(steps), "a group of steps is of charging steps")
            merged = ChargeResult(
                operation=results[0].operation,
                items=tuple(item for result in results for item in result.items),
            )
            title = (
                f"{first.step.group}: {len(steps)} requests, "
                f"{first.step.at:%b %d} to {last.step.at:%b %d}"
            )
            note = describe(merged)
        lines.append(
            LogLine(
                at=first.step.at,
                account=first.account,
                title=title,
                note=note,
                rules=first.step.rules,
            )
        )
    return lines


def describe(result: ChargeResult) -> str:
    """'8 email charged; 2 not verified (invalid)' and so on."""
    charged = result.charged_credits
    pools = [
        f"{n:,} {name}" for name, n in (("email", charged.email), ("mobile", charged.mobile)) if n
    ]
    parts = [f"{' + '.join(pools) or 'nothing'} charged"]
    for outcome, label in (
        (Outcome.ALREADY_OWNED, "already owned"),
        (Outcome.DUPLICATE_IN_REQUEST, "repeated in the request"),
        (Outcome.INSUFFICIENT_CREDITS, "beyond the balance"),
        (Outcome.MEMBER_ALLOWANCE_EXCEEDED, "beyond the member's allowance"),
    ):
        if n := result.count(outcome):
            parts.append(f"{n:,} {label}")
    refused = {
        verdict: sum(
            1
            for item in result.items
            if item.outcome is Outcome.NOT_VERIFIED and item.verdict is verdict
        )
        for verdict in Verdict
    }
    if any(refused.values()):
        detail = ", ".join(f"{n:,} {verdict_label(v)}" for v, n in refused.items() if n)
        parts.append(f"not verified: {detail}")
    return "; ".join(parts)


def verdict_label(verdict: Verdict) -> str:
    return verdict.value.replace("_", "-")


# -- reading the ledger back (R21) ------------------------------------------------------


def period_rows(service: CreditService, account: str) -> list[PeriodRow]:
    """Per billing period and pool: carried in, granted, used, refunded, forfeited, closing."""
    anchor = service.period(account, 0).start
    sums: dict[tuple[int, Channel], dict[EntryKind, int]] = {}
    closing: dict[tuple[int, Channel], int] = {}
    plans: dict[int, list[str]] = {}
    index = 0
    for entry in service.statement(account):
        invariant(entry.at >= anchor, "the demo's accounts never subscribe twice")
        index = _period_index(anchor, index, entry)
        key = (index, entry.pool)
        by_kind = sums.setdefault(key, {})
        by_kind[entry.kind] = by_kind.get(entry.kind, 0) + entry.amount
        closing[key] = entry.balance_after
        if entry.kind is EntryKind.GRANT and entry.cause.plan is not None:
            seen = plans.setdefault(index, [])
            if entry.cause.plan not in seen:
                seen.append(entry.cause.plan)
    rows: list[PeriodRow] = []
    last = {pool: 0 for pool in Channel}
    for i in range(max((i for i, _ in sums), default=-1) + 1):
        for pool in Channel:
            by_kind = sums.get((i, pool), {})
            end = closing.get((i, pool), last[pool])
            rows.append(
                PeriodRow(
                    index=i,
                    period=Period.of(anchor, i),
                    plans=tuple(plans.get(i, ())),
                    pool=pool,
                    carried_in=last[pool],
                    granted=by_kind.get(EntryKind.GRANT, 0) + by_kind.get(EntryKind.TOP_UP, 0),
                    used=-by_kind.get(EntryKind.CHARGE, 0),
                    refunded=by_kind.get(EntryKind.REFUND, 0),
                    # R23: an expiring grant's remainder leaves the pool like a forfeit.
                    forfeited=-by_kind.get(EntryKind.FORFEIT, 0) - by_kind.get(EntryKind.EXPIRE, 0),
                    closing=end,
                )
            )
            last[pool] = end
    return rows


def _period_index(anchor: datetime, index: int, entry: LedgerEntry) -> int:
    """The period an entry belongs to, from the one before (entries come in time order)."""
    for _ in range(10_000):  # a period per month: 800 years
        end = Period.of(anchor, index).end
        at_end_forfeit = entry.kind is EntryKind.FORFEIT and entry.at == end
        if entry.at < end or at_end_forfeit:
            return index
        index += 1
    raise AssertionError("invariant broken: ledger entry centuries after its anchor")


def _detail(entry: LedgerEntry) -> str:
    """What the demo's statement says of an entry: where it went, why, who, which grant."""
    cause = entry.cause
    detail = cause.destination or cause.note or ""
    if cause.operation is Operation.BOUNCE and cause.datum:
        detail = cause.datum.split(":", 1)[1]
    extras = [detail] if detail else []
    if cause.member is not None:
        extras.append(f"member {cause.member}")  # R22
    if cause.grant is not None and entry.kind is not EntryKind.TOP_UP:
        extras.append(f"grant #{cause.grant}")  # R23: the expiring grant drawn on
    if cause.expires_at is not None:
        extras.append(f"grant #{entry.seq}, expires {cause.expires_at:%b %d %H:%M}")
    return "; ".join(extras)


def grouped_statement(
    service: CreditService, account: str, period: Period | None = None
) -> Iterator[StatementLine]:
    """The statement with consecutive entries of one kind, pool, instant and cause joined."""
    line: StatementLine | None = None
    for entry in service.statement(account, period):
        detail = _detail(entry)
        if line is not None and (line.at, line.kind, line.operation, line.pool, line.detail) == (
            entry.at,
            entry.kind,
            entry.cause.operation,
            entry.pool,
            detail,
        ):
            line = attrs.evolve(
                line,
                count=line.count + 1,
                amount=line.amount + entry.amount,
                balance_after=entry.balance_after,
            )
            continue
        if line is not None:
            yield line
        line = StatementLine(
            at=entry.at,
            kind=entry.kind,
            operation=entry.cause.operation,
            pool=entry.pool,
            count=1,
            amount=entry.amount,
            balance_after=entry.balance_after,
            detail=detail,
        )
    if line is not None:
        yield line
