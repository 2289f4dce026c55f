"""The `credits` command: Typer for the arguments, rich for tables and progress.

    credits demo [--db URL]                       replay the scripted story (adapters.cli.demo)
    credits balance ACCOUNT [--db URL]            pools, available credits, subscription
    credits statement ACCOUNT [--period N] [--db URL]
    credits renew-due [--db URL]                  renew every account whose period ended
    credits db upgrade [--db URL]                 bring the schema to the newest revision
    credits keys ..., credits serve ...           the HTTP API's (adapters.cli.serve)

Every command gets its service from the composition root (adapters.bootstrap). `demo`
runs on a scripted clock and a ScriptedVerifier; the other commands run on the real clock
and never charge, so they are wired without a verifier (NoVerifier refuses to be called).
Expected errors (every CreditsError: a refusal, an outdated schema, a bad or unreachable
database) are one line on stderr and exit status 1, never a traceback; a traceback means
a bug.
"""

from __future__ import annotations

import itertools
from typing import Annotated

import typer
from rich.table import Table

from adapters import bootstrap
from adapters.bootstrap import DEFAULT_DATABASE_URL, Settings
from adapters.cli import render
from adapters.cli.demo import demo
from adapters.cli.support import DbOption, reported, wired
from credits_domain import EntryKind, LedgerEntry

STATEMENT_CHUNK = 500  # entries per printed table: a long statement is never held whole
MAX_STATEMENT_ENTRIES = 10_000_000  # what one `statement` prints at most

app = typer.Typer(
    name="credits",
    help="Prepaid credits for verified lead data: pay once, only for verified, new data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # errors are one line (support.reported); bugs crash
)
db_app = typer.Typer(help="The database's schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.command()(demo)


# -- reading ---------------------------------------------------------------------------


@app.command()
def balance(account: str, db: DbOption = DEFAULT_DATABASE_URL) -> None:
    """An account's pools now (renewals due are applied first) and its subscription."""
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


@app.command()
def statement(
    account: str,
    period: Annotated[
        int | None,
        typer.Option(
            "--period",
            metavar="N",
            min=0,
            help="Only billing period N of the current subscription (0 = the first).",
        ),
    ] = None,
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """An account's ledger entries with running balances (R19, R21)."""
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


@app.command("renew-due")
def renew_due(db: DbOption = DEFAULT_DATABASE_URL) -> None:
    """Renew every account whose billing period has ended (safe to run twice, R4)."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        renewed = wiring.service.renew_due()
    render.console().print(f"Renewed {render.n(renewed)} account{'' if renewed == 1 else 's'}.")


@db_app.command("upgrade")
def db_upgrade(db: DbOption = DEFAULT_DATABASE_URL) -> None:
    """Bring the database's schema to the newest revision (creates it if empty)."""
    with reported():
        before, after = bootstrap.upgrade_database(db)
    where = bootstrap.describe_database(db)
    if before == after:
        message = f"{where}: the schema was up to date already (revision {', '.join(after)})."
    else:
        was = ", ".join(before) or "none: an empty database"
        message = f"{where}: the schema was upgraded from revision {was} to {', '.join(after)}."
    render.console().print(message)


# The HTTP adapter's commands (`keys create`, `keys revoke`, `serve`), when the `http`
# extra (uvicorn, starlette, httpx) is installed; without it, `credits` works without them.
_HTTP_EXTRA = {"uvicorn", "starlette", "httpx", "phonenumbers"}


def _register_http_commands() -> None:
    try:
        from adapters.cli.serve import register
    except ModuleNotFoundError as exc:
        if exc.name not in _HTTP_EXTRA:
            raise
        return
    register(app)


_register_http_commands()


def run() -> None:
    app(prog_name="credits")
