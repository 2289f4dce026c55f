"""The `credits` command: Typer for the arguments, rich for tables and progress.

    credits --version                             the installed version
    credits demo [--db URL]                       replay the scripted story (adapters.cli.demo)
    credits balance ACCOUNT [--db URL]            pools, available credits, subscription
    credits statement ACCOUNT [--period N] [--db URL]
    credits renew-due [--db URL]                  renew every account whose period ended
    credits db upgrade [--db URL]                 bring the schema to the newest revision
    credits keys ..., credits serve ...           the HTTP API's (adapters.cli.serve)

Every command gets its service from the composition root (adapters.bootstrap). `demo`
runs on a scripted clock and a ScriptedVerifier; the other commands run on the real clock
and never charge, so they are wired without a verifier (NoVerifier refuses to be called).
Only `demo`, `db upgrade` and `keys create` create or change a schema; the reading
commands refuse a database file that does not exist rather than leave an empty one.
Expected errors (every CreditsError: a refusal, an outdated schema, a bad or unreachable
database) are one line on stderr and exit status 1, never a traceback; a traceback means
a bug.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from adapters import bootstrap
from adapters.bootstrap import DEFAULT_DATABASE_URL, Settings
from adapters.cli import render, version_line
from adapters.cli.demo import demo
from adapters.cli.serve import register
from adapters.cli.support import (
    AccountArgument,
    DbOption,
    HelpCommand,
    HelpGroup,
    reported,
    wired,
)
from credits_domain import EntryKind, LedgerEntry

STATEMENT_CHUNK = 500  # entries per printed table: a long statement is never held whole
MAX_STATEMENT_ENTRIES = 10_000_000  # what one `statement` prints at most

app = typer.Typer(
    cls=HelpGroup,
    rich_markup_mode=None,  # our plain help pages (see support.HelpGroup)
    name="credits",
    help="Prepaid credits for verified lead data: pay once, only for verified, new data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # errors are one line (support.reported); bugs crash
)
db_app = typer.Typer(
    cls=HelpGroup,
    rich_markup_mode=None,
    help="Create or upgrade the database's schema.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.command(cls=HelpCommand)(demo)


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the installed version and exit.",
        ),
    ] = False,
) -> None:
    pass


# -- reading ---------------------------------------------------------------------------


@app.command(cls=HelpCommand)
def balance(account: AccountArgument, db: DbOption = DEFAULT_DATABASE_URL) -> None:
    """Show an account's pools, available credits and subscription.

    Renewals that fell due are applied first (on the real clock)."""
    console = render.console()
    with reported(), wired(Settings(database_url=db)) as wiring:
        service = wiring.service
        pools = service.balance(account)
        sub = service.subscription(account)
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


@app.command(cls=HelpCommand)
def statement(
    account: AccountArgument,
    period: Annotated[
        int | None,
        typer.Option(
            "--period",
            metavar="N",
            min=0,
            help="Only billing period N of the current subscription (0 is the first).",
        ),
    ] = None,
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """List an account's ledger entries with running balances.

    Every grant, charge, refund and forfeit, in order (R19, R21)."""
    console = render.console()
    with reported(), wired(Settings(database_url=db)) as wiring:
        service = wiring.service
        chosen = None if period is None else service.period(account, period)
        entries = service.statement(account, chosen)
        title = f"Statement of {account}"
        if chosen is not None:
            start, end = render.when(chosen.start), render.when(chosen.end)
            title += f", period {chosen.index}: {start} to {end} UTC"
        printed = 0
        for _ in range(MAX_STATEMENT_ENTRIES // STATEMENT_CHUNK):
            chunk = list(itertools.islice(entries, STATEMENT_CHUNK))
            if not chunk:
                break
            console.print(_entries_table(chunk, title if printed == 0 else None))
            printed += len(chunk)
        else:
            console.print(f"Stopped after {render.n(printed)} entries; use --period for the rest.")
            return
        console.print(f"{render.n(printed)} entries" if printed else "No entries.")


def _entries_table(entries: list[LedgerEntry], title: str | None) -> Table:
    # Each chunk of a long statement is its own table, with its own header.
    table = render.table(title)
    # Numbers never wrap; text wraps on a narrow screen (nothing is ever cropped).
    table.add_column("Seq", justify="right", no_wrap=True)
    table.add_column("When (UTC)")
    table.add_column("Kind")
    table.add_column("Cause")
    table.add_column("Pool")
    table.add_column("Amount", justify="right", no_wrap=True)
    table.add_column("Balance", justify="right", no_wrap=True)
    table.add_column("Detail", overflow="fold")
    for entry in entries:
        table.add_row(
            str(entry.seq),
            render.when(entry.at),
            entry.kind.value,
            entry.cause.operation.value,
            entry.pool.value,
            render.signed(entry.amount),
            render.n(entry.balance_after),
            _detail(entry),
        )
    return table


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
    if cause.idempotency_key:
        parts.append(f"key {cause.idempotency_key}")
    return ", ".join(parts)


# -- operations ------------------------------------------------------------------------


@app.command("renew-due", cls=HelpCommand)
def renew_due(db: DbOption = DEFAULT_DATABASE_URL) -> None:
    """Renew every account whose billing period has ended.

    Safe to run twice, or from two processes at once: no period is granted twice (R4)."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        renewed = wiring.service.renew_due()
    render.console().print(f"Renewed {render.n(renewed)} account{'' if renewed == 1 else 's'}.")


@db_app.command("upgrade", cls=HelpCommand)
def db_upgrade(db: DbOption = DEFAULT_DATABASE_URL) -> None:
    """Create or upgrade the database's schema to the newest revision.

    A new SQLite file is created; an up-to-date database is left as it is."""
    file = bootstrap.database_file(db)
    new_file = file is not None and not Path(file).exists()
    with reported():
        before, after = bootstrap.upgrade_database(db)
    where = bootstrap.describe_database(db)
    now = ", ".join(after)
    if new_file:
        message = f"{where}: created, with the schema at revision {now}."
    elif not before:
        message = f"{where}: the database was empty; created the schema at revision {now}."
    elif before == after:
        message = f"{where}: the schema was up to date already (revision {now})."
    else:
        message = f"{where}: upgraded the schema from revision {', '.join(before)} to {now}."
    # typer.echo, not rich: a long path must not be wrapped (or highlighted) mid-word.
    typer.echo(message)


# `keys` needs storage only. `serve` is listed even without the `http` extra: run, it
# says which extra to install (reported by the entry point, `adapters.cli.main()`).
register(app)


def run() -> None:
    app(prog_name="credits")
