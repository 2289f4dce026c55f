"""The reading commands: `accounts`, `balance`, `statement`, `guarantee`.

Each prints a table for people, or `--format csv|json` for scripts, from one
description of its columns (adapters.cli.output). Listings are paged: `--limit N` rows
after `--after` (the last id or seq of the page before); a full page says which `--after`
reads the next one. They read on the real clock, so renewals that fell due are applied
first (touching an account applies what time has done), and never charge: they are
wired without a verifier.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from adapters.bootstrap import DEFAULT_DATABASE_URL, Settings
from adapters.cli import render
from adapters.cli.output import Column, Row, document, emit
from adapters.cli.support import (
    AccountArgument,
    DbOption,
    Format,
    FormatOption,
    bounded,
    db_hint,
    limit_option,
    reported,
    wired,
)
from credits_domain import Balance, CreditService, EntryKind, LedgerEntry, Subscription
from credits_domain.limits import MAX_ACCOUNT_ID_LENGTH, MAX_ACCOUNTS_PAGE, MAX_STATEMENT_CURSOR

MAX_STATEMENT_ENTRIES = 10_000_000  # what one `statement` prints at most

ACCOUNT_COLUMNS = (
    Column("account", "Account"),
    Column("plan", "Plan"),
    Column("status", "Status"),
    Column("period", "Period", "number"),
    Column("period_start", "Since", shown="data"),
    Column("period_end", "Until", shown="data"),
    Column("email", "Email", "number"),
    Column("mobile", "Mobile", "number"),
    Column("email_available", "Email available", "number", shown="data"),
    Column("mobile_available", "Mobile available", "number", shown="data"),
    Column("ends_at", "Ends (UTC)"),
    Column("pending_plan", "Next plan"),
)

ENTRY_COLUMNS = (
    Column("seq", "Seq", "number"),
    Column("at", "When (UTC)"),
    Column("kind", "Kind"),
    Column("operation", "Cause"),
    Column("pool", "Pool"),
    Column("amount", "Amount", "signed"),
    Column("balance_after", "Balance", "number"),
    Column("detail", "Detail", shown="table"),
    Column("datum", "Datum", shown="data"),
    Column("plan", "Plan", shown="data"),
    Column("period", "Period", "number", shown="data"),
    Column("idempotency_key", "Idempotency key", shown="data"),
    Column("destination", "Destination", shown="data"),
    Column("note", "Note", shown="data"),
    Column("member", "Member", shown="data"),  # R22
    Column("grant", "Grant", "number", shown="data"),  # R23: the grant's top_up seq
    Column("expires_at", "Expires", shown="data"),  # R23: on an expiring grant's top_up
)


def account_row(sub: Subscription, pools: Balance) -> Row:
    return {
        "account": sub.account,
        "plan": sub.plan.name,
        "status": sub.status.value,
        "period": sub.period.index,
        "period_start": sub.period.start,
        "period_end": sub.period.end,
        "email": pools.email,
        "mobile": pools.mobile,
        "email_available": pools.email_available,
        "mobile_available": pools.mobile_available,
        "ends_at": sub.ends_at,
        "pending_plan": None if sub.pending_plan is None else sub.pending_plan.name,
    }


def _overview(service: CreditService, account: str) -> Row:
    return account_row(service.subscription(account), service.balance(account))


def accounts(
    after: Annotated[
        str | None,
        typer.Option(
            "--after",
            metavar="ACCOUNT",
            help="Start after this account id (the last one shown).",
            callback=bounded(MAX_ACCOUNT_ID_LENGTH),
        ),
    ] = None,
    limit: Annotated[int, limit_option("accounts", MAX_ACCOUNTS_PAGE)] = 100,
    output: FormatOption = Format.TABLE,
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """List accounts by id, with plan, status, period and balances.

    Lapsed accounts are listed too (their balances read zero, R6). A full page ends
    with the --after to give for the next one."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        service = wiring.service
        ids = service.accounts(after=after, limit=limit)
        rows = [_overview(service, account) for account in ids]
        more = bool(ids) and len(ids) == limit and bool(service.accounts(after=ids[-1], limit=1))
    next_after = ids[-1] if more else None
    emit(
        output,
        ACCOUNT_COLUMNS,
        rows,
        title="Accounts",
        items="accounts",
        trailer=lambda: {"next_after": next_after},
        more=None if next_after is None else f"--after {next_after}",
        empty="No accounts.",
    )


def balance(
    account: AccountArgument,
    output: FormatOption = Format.TABLE,
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """Show an account's pools, available credits and subscription.

    Renewals that fell due are applied first (on the real clock)."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        service = wiring.service
        pools = service.balance(account)
        sub = service.subscription(account)
    row = account_row(sub, pools)
    if output is Format.JSON:
        document(row)
        return
    if output is Format.CSV:
        emit(output, ACCOUNT_COLUMNS, [row], title=account, items="accounts")
        return
    console = render.console()
    table = render.table(f"{account}: {sub.plan.name}, {sub.status.value}")
    table.add_column("Pool")
    table.add_column("Balance", justify="right")
    table.add_column("Available", justify="right")
    table.add_row("email", render.n(pools.email), render.n(pools.email_available))
    table.add_row("mobile", render.n(pools.mobile), render.n(pools.mobile_available))
    console.print(table)
    console.print(
        f"Period {sub.period.index}: {render.when(sub.period.start)} to "
        f"{render.when(sub.period.end)} UTC"
    )
    if sub.ends_at is not None:
        console.print(f"Cancelled: ends {render.when(sub.ends_at)} UTC (R6)")
    if sub.pending_plan is not None:
        console.print(f"Changes to {sub.pending_plan.name} at the next renewal (R7)")


def _detail(entry: LedgerEntry) -> str:
    cause = entry.cause
    parts = []
    if cause.datum:
        parts.append(cause.datum.split(":", 1)[1])
    if cause.destination:
        parts.append(f"to {cause.destination}")
    if entry.kind in (EntryKind.GRANT, EntryKind.FORFEIT) and cause.plan:
        parts.append(cause.plan)
    if cause.note:
        parts.append(cause.note)
    if cause.member is not None:  # R22: the team member who charged
        parts.append(f"member {cause.member}")
    if cause.expires_at is not None:  # R23: an expiring grant
        parts.append(f"expires {cause.expires_at:%Y-%m-%d %H:%M} UTC")
    if entry.kind is not EntryKind.TOP_UP and cause.grant is not None:
        parts.append(f"grant of entry {cause.grant}")  # R23: the grant drawn on or expired
    if cause.idempotency_key:
        parts.append(f"key {cause.idempotency_key}")
    return ", ".join(parts)


def entry_row(entry: LedgerEntry) -> Row:
    cause = entry.cause
    return {
        "detail": _detail(entry),
        "seq": entry.seq,
        "at": entry.at,
        "kind": entry.kind.value,
        "operation": cause.operation.value,
        "pool": entry.pool.value,
        "amount": entry.amount,
        "balance_after": entry.balance_after,
        # A datum is stored as "channel:value"; the pool column says the channel.
        "datum": cause.datum.split(":", 1)[1] if cause.datum else None,
        "plan": cause.plan,
        "period": cause.period,
        "idempotency_key": cause.idempotency_key,
        "destination": cause.destination,
        "note": cause.note,
        "member": cause.member,
        "grant": cause.grant,
        "expires_at": cause.expires_at,
    }


def _period_option(meaning: str) -> Any:
    """`--period N`: a billing period of the current subscription (0 is the first)."""
    return typer.Option(
        "--period",
        metavar="N",
        help=f"{meaning} (0 is the first; an index it has not reached is refused with the "
        "periods it has).",
    )


def statement(
    account: AccountArgument,
    period: Annotated[
        int | None, _period_option("Only billing period N of the current subscription")
    ] = None,
    after: Annotated[
        int | None,
        typer.Option(
            "--after",
            metavar="SEQ",
            min=0,
            max=MAX_STATEMENT_CURSOR,
            help="Start after the entry numbered SEQ (the last one shown).",
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit",
            metavar="N",
            min=1,
            max=MAX_STATEMENT_ENTRIES,
            help=f"At most N entries (1 to {MAX_STATEMENT_ENTRIES:,}; the default is all, "
            "up to that).",
        ),
    ] = MAX_STATEMENT_ENTRIES,
    output: FormatOption = Format.TABLE,
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """List an account's ledger entries with running balances.

    Every grant, charge, refund and forfeit, in order (R19, R21), read page by page from
    the database: a long statement is never held whole. A page cut short by --limit ends
    with the --after to give for the next one."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        service = wiring.service
        chosen = None if period is None else service.period(account, period)
        entries = service.statement(account, chosen, after_seq=-1 if after is None else after)
        title = f"Statement of {account}"
        head: dict[str, object] = {"account": account, "period": None}
        if chosen is not None:
            start, end = render.when(chosen.start), render.when(chosen.end)
            title += f", period {chosen.index}: {start} to {end} UTC"
            head["period"] = chosen.index
            head["period_start"], head["period_end"] = chosen.start, chosen.end
        last: list[int] = []
        peeked: list[LedgerEntry] = []

        def rows() -> Iterator[Row]:
            for entry in itertools.islice(entries, limit):
                last[:] = [entry.seq]
                yield entry_row(entry)
            peeked.extend(itertools.islice(entries, 1))  # is there more?

        def next_after() -> int | None:
            return last[0] if peeked and last else None

        def hint() -> str | None:
            seq = next_after()
            if seq is None:
                return None
            where = "" if period is None else f" --period {period}"
            return f"--after {seq} (credits statement {account}{where} --after {seq}{db_hint(db)})"

        emit(
            output,
            ENTRY_COLUMNS,
            rows(),
            title=title,
            items="entries",
            head=head,
            trailer=lambda: {"next_after": next_after()},
            more=hint,
            empty="No entries.",
            counted=lambda n: f"{render.n(n)} entries",
        )


GUARANTEE_COLUMNS = (
    Column("account", "Account"),
    Column("period", "Period", "number"),
    Column("period_start", "Since"),
    Column("period_end", "Until"),
    Column("emails_charged", "Emails charged", "number"),
    Column("bounces", "Bounces", "number"),
    Column("bounce_rate", "Bounce rate"),
    Column("breached", "Breached"),
)


def guarantee(
    account: AccountArgument,
    period: Annotated[
        int | None,
        _period_option(
            "Billing period N of the current subscription; the default is the current one"
        ),
    ] = None,
    output: FormatOption = Format.TABLE,
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """Show the deliverability guarantee of a billing period (R25).

    Emails charged in the period (refunds do not reduce it), bounces reported for them
    (R18), the bounce rate, and whether it breaches the promise: more than 1% bounced
    with at least 100 emails charged. Read from the ledger."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        service = wiring.service
        chosen = None if period is None else service.period(account, period)
        found = service.guarantee(account, chosen)
    row: Row = {
        "account": account,
        "period": found.period.index,
        "period_start": found.period.start,
        "period_end": found.period.end,
        "emails_charged": found.emails_charged,
        "bounces": found.bounces,
        "bounce_rate": f"{found.bounce_rate:.2%}",
        "breached": "yes" if found.breached else "no",
    }
    if output is Format.JSON:
        document({**row, "bounce_rate": found.bounce_rate, "breached": found.breached})
        return
    if output is Format.CSV:
        emit(output, GUARANTEE_COLUMNS, [row], title=account, items="periods")
        return
    verdict = "BREACHED" if found.breached else "kept"
    typer.echo(
        f"{account}, period {found.period.index} ({render.when(found.period.start)} to "
        f"{render.when(found.period.end)} UTC): {render.n(found.emails_charged)} emails "
        f"charged, {render.n(found.bounces)} bounced ({found.bounce_rate:.2%}); "
        f"guarantee {verdict} (R25)."
    )
