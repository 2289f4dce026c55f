"""The commands that change an account: `subscribe`, `change-plan`, `cancel`, `pause`,
`resume`, `top-up` (R8, R23) and `bounce` (R18).

Each is one call of the facade, on the real clock, wired without a verifier (none of
them verifies anything), and answers with one sentence saying what happened and what
follows from it (when a cancellation ends, when a downgrade acts).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from adapters.bootstrap import DEFAULT_DATABASE_URL, Settings
from adapters.cli import render
from adapters.cli.support import AccountArgument, DbOption, bounded, reported, wired
from credits_domain import Contact, Credits, PlanChange
from credits_domain.limits import MAX_CONTACT_INPUT_LENGTH, MAX_PLAN_NAME_LENGTH
from credits_domain.plans import MAX_CREDITS

MAX_REASON_LENGTH = 200
"""Characters of a top-up's reason (kept on its ledger entries, R8)."""

PlanArgument = Annotated[
    str,
    typer.Argument(
        metavar="PLAN",
        help="The plan's name: ignite, boost or power.",
        callback=bounded(MAX_PLAN_NAME_LENGTH),
    ),
]


def subscribe(
    account: AccountArgument, plan: PlanArgument, db: DbOption = DEFAULT_DATABASE_URL
) -> None:
    """Subscribe an account to a plan (R3).

    Its first allowance is granted at once. A new account starts here; a lapsed one
    starts afresh (its forfeited credits never come back, R6). A running subscription
    is refused: change its plan instead."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        sub = wiring.service.subscribe(account, plan)
        pools = wiring.service.balance(account)
    typer.echo(
        f"Subscribed {account} to {sub.plan.name}: {render.n(pools.email)} email and "
        f"{render.n(pools.mobile)} mobile credits; the period renews on "
        f"{render.when(sub.period.end)} UTC."
    )


def change_plan(
    account: AccountArgument, plan: PlanArgument, db: DbOption = DEFAULT_DATABASE_URL
) -> None:
    """Change an account's plan (R7).

    An upgrade acts at once and grants the difference pro-rated to what is left of the
    period; a downgrade acts at the next renewal. Choosing the current plan again
    cancels a scheduled downgrade. Credits granted are always kept."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        service = wiring.service
        before = service.balance(account)
        change = service.change_plan(account, plan)
        after = service.balance(account)
        sub = service.subscription(account)
    if change is PlanChange.UPGRADED:
        email, mobile = after.email - before.email, after.mobile - before.mobile
        typer.echo(
            f"Upgraded {account} to {sub.plan.name} at once: granted {render.n(email)} email "
            f"and {render.n(mobile)} mobile credits for the rest of the period (R7)."
        )
    elif change is PlanChange.DOWNGRADE_SCHEDULED:
        typer.echo(
            f"{account} changes from {sub.plan.name} to {plan} at the next renewal, "
            f"{render.when(sub.period.end)} UTC (R7); its credits are kept."
        )
    else:
        typer.echo(f"{account} stays on {sub.plan.name}; no plan change is scheduled.")


def cancel(account: AccountArgument, db: DbOption = DEFAULT_DATABASE_URL) -> None:
    """Cancel a subscription at the end of its current period (R6).

    Its credits can be spent until then, and are forfeited at that instant. Cancelling
    twice changes nothing."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        ends = wiring.service.cancel(account)
    typer.echo(
        f"{account}'s subscription ends {render.when(ends)} UTC; its credits can be spent "
        "until then, and are forfeited at that instant (R6)."
    )


def pause(account: AccountArgument, db: DbOption = DEFAULT_DATABASE_URL) -> None:
    """Pause a subscription at once (R6).

    Its credits are kept, renewals grant nothing, and charges and plan changes are
    refused until it resumes."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        wiring.service.pause(account)
    typer.echo(
        f"Paused {account}: credits kept, nothing granted, charges refused until "
        f"`credits resume {account}` (R6)."
    )


def resume(account: AccountArgument, db: DbOption = DEFAULT_DATABASE_URL) -> None:
    """Resume a paused subscription (R6).

    Resuming grants nothing by itself; the next renewal grants the allowance."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        wiring.service.resume(account)
        sub = wiring.service.subscription(account)
    typer.echo(
        f"Resumed {account}: charges are accepted again; the next renewal, "
        f"{render.when(sub.period.end)} UTC, grants the allowance of {sub.plan.name}."
    )


def credits_option(what: str, meaning: str = "to grant") -> Any:
    """`--email N` or `--mobile N`: credits of that pool (R1), 0 to MAX_CREDITS."""
    return typer.Option(
        f"--{what}",
        metavar="N",
        min=0,
        max=MAX_CREDITS,
        help=f"{what.capitalize()} credits {meaning} (0 to {MAX_CREDITS:,}).",
    )


def top_up(
    account: AccountArgument,
    reason: Annotated[
        str,
        typer.Option(
            "--reason",
            metavar="TEXT",
            help=f"Why (promotion, goodwill, purchase ...), kept on the ledger entries; at "
            f"most {MAX_REASON_LENGTH} characters.",
            callback=bounded(MAX_REASON_LENGTH),
        ),
    ],
    email: Annotated[int, credits_option("email")] = 0,
    mobile: Annotated[int, credits_option("mobile")] = 0,
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires",
            metavar="INSTANT",
            help="Make it an expiring grant (R23): an ISO 8601 instant with a zone "
            "(2026-12-31T00:00:00Z); spent before plan credits, what is left then expires.",
            callback=bounded(40),
        ),
    ] = None,
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """Grant credits beyond the allowance: top-up, goodwill (R8), or an expiring grant (R23).

    A top-up, promotion or goodwill grant: one ledger entry per pool, with the reason;
    the credits roll over like any other (R5). With --expires they are spent first and
    what is left of them at that instant expires."""
    expires_at = None if expires is None else _instant(expires)
    with reported(), wired(Settings(database_url=db)) as wiring:
        done = wiring.service.top_up(
            account, Credits(email=email, mobile=mobile), reason=reason, expires_at=expires_at
        )
    granted = ", ".join(
        f"{render.n(e.amount)} {e.pool.value} (balance {render.n(e.balance_after)})"
        for e in done.entries
    )
    if expires_at is None:
        typer.echo(f"Granted {account} {granted} credits: {reason} (R8).")
    else:
        typer.echo(
            f"Granted {account} {granted} credits: {reason}, expiring "
            f"{render.when(expires_at)} UTC (R23)."
        )


def _instant(text: str) -> datetime:
    """An ISO 8601 instant with a zone, in UTC; a usage error otherwise."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 instant with a zone, such as 2026-12-31T00:00:00Z",
            param_hint="--expires",
        )
    return at.astimezone(UTC)


def bounce(
    account: AccountArgument,
    email: Annotated[
        str,
        typer.Argument(
            metavar="EMAIL",
            help="The email address that hard-bounced, as it was charged.",
            callback=bounded(MAX_CONTACT_INPUT_LENGTH),
        ),
    ],
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """Refund a charged email that hard-bounced (R18).

    Once, within 30 days of the charge; the email stays owned, so it is never charged again."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        entry = wiring.service.report_bounce(account, Contact.email(email))
    typer.echo(
        f"Refunded {render.n(entry.amount)} {entry.pool.value} credit"
        f"{'' if entry.amount == 1 else 's'} to {account} for {Contact.email(email).value} "
        f"(bounce, R18); balance {render.n(entry.balance_after)}."
    )
