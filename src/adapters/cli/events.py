"""`credits events` and `credits threshold`: an account's events and its low-balance
thresholds (R24).

Events are written with the change they report (an outbox) and numbered 1, 2, 3, ...
per account; `--after SEQ` pages on from the last one shown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated

import typer

from adapters.bootstrap import DEFAULT_DATABASE_URL, Settings
from adapters.cli import render
from adapters.cli.output import Column, Row, emit
from adapters.cli.support import (
    AccountArgument,
    DbOption,
    Format,
    FormatOption,
    db_hint,
    limit_option,
    reported,
    wired,
)
from credits_domain import Channel
from credits_domain.limits import MAX_EVENTS_PAGE, MAX_LOW_THRESHOLD

EVENT_COLUMNS = (
    Column("seq", "Seq", "number"),
    Column("at", "At"),
    Column("type", "Type"),
    Column("data", "Data"),
    Column("id", "Id", shown="data"),
)


def events(
    account: AccountArgument,
    after: Annotated[
        int | None,
        typer.Option(
            "--after",
            metavar="SEQ",
            min=0,
            max=2**63 - 1,
            help="Start after the event numbered SEQ (the last one shown).",
        ),
    ] = None,
    limit: Annotated[int, limit_option("events", MAX_EVENTS_PAGE)] = 100,
    output: FormatOption = Format.TABLE,
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """List an account's events, oldest first (R24).

    credits.low, credits.depleted, period.renewed, plan.changed, subscription.lapsed,
    grant.expired, charge.refunded and guarantee.breached, each written with its change.
    A full page ends with the --after to give for the next one."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        found = wiring.service.events(account, after_seq=after, limit=limit)
    last = found[-1].seq if found else after

    def rows() -> Iterator[Row]:
        for event in found:
            yield {
                "seq": event.seq,
                "at": event.at,
                "type": event.type.value,
                "data": dict(event.data)
                if output is Format.JSON
                else json.dumps(dict(event.data), sort_keys=True),
                "id": event.id,
            }

    full = len(found) == limit
    emit(
        output,
        EVENT_COLUMNS,
        rows(),
        title=f"Events of {account}",
        items="events",
        head={"account": account},
        trailer=lambda: {"next_after": last if full else None},
        more=f"--after {last} (credits events {account} --after {last}{db_hint(db)})"
        if full
        else None,
        empty="No events.",
        counted=lambda n: f"{render.n(n)} events",
    )


def threshold(
    account: AccountArgument,
    pool: Annotated[Channel, typer.Argument(metavar="POOL", help="The pool: email or mobile.")],
    credits: Annotated[
        str,
        typer.Argument(
            metavar="CREDITS",
            help=f"The threshold (0 to {MAX_LOW_THRESHOLD:,}), or 'default' for 10% of the "
            "plan's monthly allowance, rounded up.",
        ),
    ],
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """Set POOL's low-balance threshold of ACCOUNT (R24).

    credits.low fires when the pool's balance falls to CREDITS or below, once per
    crossing; it is armed again when the balance rises above."""
    chosen = None if credits == "default" else _whole(credits)
    with reported(), wired(Settings(database_url=db)) as wiring:
        wiring.service.set_low_balance_threshold(account, pool, chosen)
        now = wiring.service.low_balance_thresholds(account)
    typer.echo(
        f"{account}: credits.low at {render.n(now.email)} email and "
        f"{render.n(now.mobile)} mobile credits or below (R24)."
    )


def _whole(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > MAX_LOW_THRESHOLD:
        raise typer.BadParameter(
            f"a whole number from 0 to {MAX_LOW_THRESHOLD:,} or 'default', got {text[:20]!r}",
            param_hint="CREDITS",
        )
    return int(text)
