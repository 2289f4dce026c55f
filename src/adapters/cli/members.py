"""`credits members add|allowance|usage`: a team's members and their allowances (R22).

Data belong to the team (the account); a member named with `--member` on `unlock`,
`export` or `enrich` charges the team's pool, within their allowance per pool and
billing period if they have one.
"""

from __future__ import annotations

from typing import Annotated

import typer

from adapters.bootstrap import DEFAULT_DATABASE_URL, Settings
from adapters.cli import render
from adapters.cli.operating import credits_option
from adapters.cli.support import (
    AccountArgument,
    DbOption,
    HelpCommand,
    HelpGroup,
    bounded,
    reported,
    wired,
)
from credits_domain import Credits
from credits_domain.limits import MAX_ACCOUNT_ID_LENGTH

members_app = typer.Typer(
    cls=HelpGroup,
    rich_markup_mode=None,  # our plain help pages (see support.HelpGroup)
    help="A team's members, their allowances per billing period and their usage (R22).",
    no_args_is_help=True,
)

MemberArgument = Annotated[
    str,
    typer.Argument(
        metavar="MEMBER",
        help="The member's id (as an account id).",
        callback=bounded(MAX_ACCOUNT_ID_LENGTH),
    ),
]


def add(
    account: AccountArgument, member: MemberArgument, db: DbOption = DEFAULT_DATABASE_URL
) -> None:
    """Add MEMBER to the team ACCOUNT (R22); they draw on its pool freely until given an
    allowance."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        added = wiring.service.add_member(account, member)
    said = "added to" if added else "is already a member of"
    typer.echo(f"{member} {said} {account} (R22).")


def allowance(
    account: AccountArgument,
    member: MemberArgument,
    email: Annotated[int, credits_option("email", "a period")] = 0,
    mobile: Annotated[int, credits_option("mobile", "a period")] = 0,
    remove: Annotated[
        bool, typer.Option("--remove", help="Remove the allowance: the pool, freely.")
    ] = False,
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """Set MEMBER's allowance per pool and billing period (R22), or --remove it.

    Items past it are member_allowance_exceeded, free; it resets each period."""
    credits = None if remove else Credits(email=email, mobile=mobile)
    with reported(), wired(Settings(database_url=db)) as wiring:
        wiring.service.set_member_allowance(account, member, credits)
    if credits is None:
        typer.echo(f"{member} of {account} has no allowance now: the team's pool, freely (R22).")
    else:
        typer.echo(
            f"{member} of {account} may use {render.n(credits.email)} email and "
            f"{render.n(credits.mobile)} mobile credits a period (R22)."
        )


def usage(
    account: AccountArgument,
    member: MemberArgument,
    period: Annotated[
        int | None,
        typer.Option("--period", metavar="N", help="Billing period N (default: the current one)."),
    ] = None,
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """Show what MEMBER was charged in a billing period, less bounce refunds (R22)."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        chosen = wiring.service.period(account, period)
        used = wiring.service.member_usage(account, member, chosen)
    typer.echo(
        f"{member} of {account}, period {chosen.index}: {render.n(used.email)} email and "
        f"{render.n(used.mobile)} mobile credits used (R22)."
    )


members_app.command("add", cls=HelpCommand)(add)
members_app.command("allowance", cls=HelpCommand)(allowance)
members_app.command("usage", cls=HelpCommand)(usage)
