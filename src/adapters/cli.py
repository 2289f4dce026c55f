"""The `credits` command: Typer for the arguments, rich for tables and progress.

    credits demo [--db URL]                       replay the scripted story (adapters.demo)
    credits balance ACCOUNT [--db URL]            pools, available credits, subscription
    credits statement ACCOUNT [--period N] [--db URL]
    credits renew-due [--db URL]                  renew every account whose period ended
    credits db upgrade [--db URL]                 bring the schema to the newest revision
    credits keys ..., credits serve ...           the HTTP API's (adapters.http.cli_commands)

`demo` runs on a scripted clock and the in-memory ScriptedVerifier. The other commands
run on the real clock (SystemClock) and never charge, so their verifier is `NoVerifier`,
which refuses to be called. Expected errors (every CreditsError, an outdated schema, a
bad or unreachable database) are one line on stderr and exit status 1, never a traceback;
a traceback means a bug.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapters import demo as story
from adapters.cli_support import DbOption, opened, reported, shown
from adapters.memory import SystemClock
from adapters.sql import DEFAULT_URL, upgrade
from credits_domain import (
    Channel,
    Contact,
    CreditService,
    EntryKind,
    ItemResult,
    LedgerEntry,
    Operation,
    Outcome,
    Repository,
    Verdict,
)

PIPE_WIDTH = 160  # columns of output that goes to a file or a pipe
STATEMENT_CHUNK = 500  # entries per printed table: a long statement is never held whole
MAX_STATEMENT_ENTRIES = 10_000_000  # what one `statement` prints at most
EXCERPT_ROLE = "acme"  # whose statement the demo prints
EXCERPT_PERIODS = (0, 1)

app = typer.Typer(
    name="credits",
    help="Prepaid credits for verified lead data: pay once, only for verified, new data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # errors are one line (cli_support.reported); bugs crash
)
db_app = typer.Typer(help="The database's schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


class NoVerifier:
    """The verifier of commands that never charge: being called is a bug."""

    def verify(self, contacts: Sequence[Contact]) -> Sequence[Verdict]:
        raise NoVerifierError(
            f"this command does not verify data, yet was asked to verify {len(contacts)}"
        )


class NoVerifierError(RuntimeError):
    """NoVerifier was called: a command that must never charge tried to."""


def _live_service(repository: Repository) -> CreditService:
    return CreditService(repository=repository, verifier=NoVerifier(), clock=SystemClock())


def _n(value: int) -> str:
    return f"{value:,}"


def _signed(value: int) -> str:
    return f"{value:+,}" if value else "0"


def _table(title: str | None) -> Table:
    """A compact table (no vertical rules, collapsed padding): the demo fits 80 columns."""
    return Table(
        title=title,
        min_width=len(title or ""),  # a narrow table would wrap its title
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )


def _when(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M}"


def _console() -> Console:
    """Standard output; when it is not a terminal (a file, a pipe), wide enough that
    table rows stay on one line, unless COLUMNS says otherwise."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=PIPE_WIDTH)
    return console


def _where(url: str) -> str:
    """Where a database lives, for people: a file's absolute path, or the URL."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return url
    if parsed.get_backend_name() != "sqlite":
        return shown(url)
    if parsed.database in (None, "", ":memory:"):
        return "SQLite, in memory (gone when the command ends)"
    return f"SQLite file {Path(parsed.database).resolve()}"


def _db_hint(url: str) -> str:
    return "" if url == DEFAULT_URL else f" --db {shown(url)}"


# -- demo ------------------------------------------------------------------------------


@app.command()
def demo(db: DbOption = DEFAULT_URL) -> None:
    """Replay five months of four accounts on the shipped plans, then show the books.

    The story runs on a scripted clock (January to May 2025) with the in-memory
    ScriptedVerifier: no real verification, nothing leaves this machine. A fresh
    database is created (or upgraded); on a database that holds an earlier run, the
    accounts get a suffix (acme-2, ...).
    """
    console = _console()
    with reported(db), opened(db, migrate=True) as repository:
        cast = story.free_cast(repository)
        plot = story.story()
        console.rule("[bold]credits demo")
        console.print(
            f"Four accounts on the shipped plans, {story.START:%d %b %Y} to "
            f"{story.END:%d %b %Y}, replayed on a scripted clock (ManualClock)."
        )
        console.print(
            "Verifier: ScriptedVerifier, in memory, with scripted verdicts "
            "(no real verification; nothing leaves this machine)."
        )
        console.print(f"Database: {_where(db)}")
        if cast.run > 1:
            console.print(
                f"This database holds earlier demo runs; this is run {cast.run}, with the "
                f"accounts {', '.join(cast.names)}."
            )
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("contacts"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("Replaying", total=plot.size)

            def advance(step: story.Step) -> None:
                progress.update(task, advance=step.size)

            run = story.replay(repository, cast, plot, advance)
        _print_log(console, run)
        _print_periods(console, run)
        _print_excerpt(console, run)
        _print_outcomes(console, run)
        _print_final(console, run)
        acme = cast.name(EXCERPT_ROLE)
        console.print(
            f"\nLook again: [bold]credits balance {acme}{_db_hint(db)}[/], "
            f"[bold]credits statement {acme} --period 1{_db_hint(db)}[/]. Those commands "
            "read on the real clock, so the renewals due since the story ended are applied "
            "when you look (R4, R5)."
        )


def _print_log(console: Console, run: story.DemoRun) -> None:
    table = _table("What happened")
    table.add_column("When (UTC)", no_wrap=True)
    table.add_column("Account", no_wrap=True)
    table.add_column("Event", overflow="fold")
    table.add_column("Result", overflow="fold")
    table.add_column("Rules", no_wrap=True)
    for line in story.log_lines(run.happened):
        table.add_row(_when(line.at), line.account, line.title, line.note, line.rules)
    console.print(table)


def _print_periods(console: Console, run: story.DemoRun) -> None:
    console.print(
        "[bold]Balances per billing period[/], from the ledger (R21); forfeits at a period's "
        "end (lapse, R6) close that period."
    )
    for account in run.cast.names:
        table = _table(account)
        for name in ("Period", "Plan", "Pool"):
            table.add_column(name)  # text may wrap on a narrow screen; numbers never do
        for name in ("Opening", "Granted", "Used", "Refund", "Forfeit", "Closing"):
            table.add_column(name, justify="right", no_wrap=True)
        for row in story.period_rows(run.service, account):
            first = row.pool is Channel.EMAIL
            table.add_row(
                f"{row.index} {row.period.start:%b %d}" if first else "",
                " → ".join(row.plans) if first else "",
                row.pool.value,
                _n(row.carried_in),
                _n(row.granted),
                _n(row.used),
                _n(row.refunded),
                _n(row.forfeited),
                _n(row.closing),
            )
        console.print(table)


def _print_excerpt(console: Console, run: story.DemoRun) -> None:
    account = run.cast.name(EXCERPT_ROLE)
    table = _table(
        f"Statement of {account}, periods {EXCERPT_PERIODS[0]} and {EXCERPT_PERIODS[-1]} "
        "(the entries of one request taken together)"
    )
    table.add_column("When (UTC)", no_wrap=True)
    table.add_column("Entry", no_wrap=True)
    table.add_column("Pool", no_wrap=True)
    table.add_column("Count", justify="right", no_wrap=True)
    table.add_column("Amount", justify="right", no_wrap=True)
    table.add_column("Balance", justify="right", no_wrap=True)
    table.add_column("Detail", overflow="fold")
    for index in EXCERPT_PERIODS:
        period = run.service.period(account, index)
        for line in story.grouped_statement(run.service, account, period):
            table.add_row(
                _when(line.at),
                f"{line.kind.value} ({line.operation.value})",
                line.pool.value,
                _n(line.count),
                _signed(line.amount),
                _n(line.balance_after),
                line.detail,
            )
    console.print(table)


_OUTCOME_LABELS = {
    Outcome.CHARGED: "charged: verified and new",
    Outcome.ALREADY_OWNED: "already owned: free (R12)",
    Outcome.DUPLICATE_IN_REQUEST: "repeated in the request: free (R12)",
    Outcome.INSUFFICIENT_CREDITS: "beyond the balance: not revealed (R15)",
}


def _not_verified_label(verdict: Verdict | None) -> str:
    name = "no verdict" if verdict is None else story.verdict_label(verdict)
    return f"not verified ({name}): free (R10)"


def _outcome_label(item: ItemResult) -> str:
    if item.outcome is Outcome.NOT_VERIFIED:
        return _not_verified_label(item.verdict)
    return _OUTCOME_LABELS[item.outcome]


def _print_outcomes(console: Console, run: story.DemoRun) -> None:
    operations = (Operation.UNLOCK, Operation.EXPORT, Operation.ENRICH)
    counts: Counter[tuple[str, Operation]] = Counter()
    for happened in run.happened:
        if happened.result is not None:
            for item in happened.result.items:
                counts[_outcome_label(item), happened.result.operation] += 1
    rows = [
        _OUTCOME_LABELS[Outcome.CHARGED],
        _OUTCOME_LABELS[Outcome.ALREADY_OWNED],
        _OUTCOME_LABELS[Outcome.DUPLICATE_IN_REQUEST],
        *(_not_verified_label(v) for v in Verdict if v is not Verdict.VALID),
        _OUTCOME_LABELS[Outcome.INSUFFICIENT_CREDITS],
    ]
    table = _table("What became of the contacts asked for")
    table.add_column("Outcome")
    for operation in operations:
        table.add_column(operation.value, justify="right")
    table.add_column("total", justify="right")
    for row in rows:
        found = [counts[row, operation] for operation in operations]
        if any(found):
            table.add_row(row, *map(_n, found), _n(sum(found)))
    console.print(table)


def _print_final(console: Console, run: story.DemoRun) -> None:
    table = _table(f"Balances at the end of the story, {_when(story.END)}")
    table.add_column("Account")
    table.add_column("Plan")
    table.add_column("Status")
    table.add_column("Email", justify="right")
    table.add_column("Mobile", justify="right")
    for account in run.cast.names:
        balance = run.balances[account]
        table.add_row(
            account,
            run.plans[account],
            run.statuses[account],
            _n(balance.email),
            _n(balance.mobile),
        )
    console.print(table)


# -- reading ---------------------------------------------------------------------------


@app.command()
def balance(account: str, db: DbOption = DEFAULT_URL) -> None:
    """An account's pools now (renewals due are applied first) and its subscription."""
    console = _console()
    with reported(db), opened(db, migrate=False) as repository:
        service = _live_service(repository)
        pools = service.balance(account)
        sub = service.subscription(account)
    table = _table(f"{account}: {sub.plan.name}, {sub.status.value}")
    table.add_column("Pool")
    table.add_column("Balance", justify="right")
    table.add_column("Available", justify="right")
    table.add_row("email", _n(pools.email), _n(pools.email_available))
    table.add_row("mobile", _n(pools.mobile), _n(pools.mobile_available))
    console.print(table)
    console.print(
        f"Period {sub.period.index}: {_when(sub.period.start)} to {_when(sub.period.end)} UTC"
    )
    if sub.ends_at is not None:
        console.print(f"Cancelled: ends {_when(sub.ends_at)} UTC (R6)")
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
    db: DbOption = DEFAULT_URL,
) -> None:
    """An account's ledger entries with running balances (R19, R21)."""
    console = _console()
    with reported(db), opened(db, migrate=False) as repository:
        service = _live_service(repository)
        chosen = None if period is None else service.period(account, period)
        entries = service.statement(account, chosen)
        title = f"Statement of {account}"
        if chosen is not None:
            title += f", period {chosen.index}: {_when(chosen.start)} to {_when(chosen.end)} UTC"
        printed = 0
        for _ in range(MAX_STATEMENT_ENTRIES // STATEMENT_CHUNK):
            chunk = list(itertools.islice(entries, STATEMENT_CHUNK))
            if not chunk:
                break
            console.print(_entries_table(chunk, title if printed == 0 else None))
            printed += len(chunk)
        else:
            console.print(f"Stopped after {_n(printed)} entries; use --period for the rest.")
            return
        console.print(f"{_n(printed)} entries" if printed else "No entries.")


def _entries_table(entries: list[LedgerEntry], title: str | None) -> Table:
    # Each chunk of a long statement is its own table, with its own header.
    table = _table(title)
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
            _when(entry.at),
            entry.kind.value,
            entry.cause.operation.value,
            entry.pool.value,
            _signed(entry.amount),
            _n(entry.balance_after),
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
def renew_due(db: DbOption = DEFAULT_URL) -> None:
    """Renew every account whose billing period has ended (safe to run twice, R4)."""
    with reported(db), opened(db, migrate=False) as repository:
        renewed = _live_service(repository).renew_due()
    _console().print(f"Renewed {_n(renewed)} account{'' if renewed == 1 else 's'}.")


@db_app.command("upgrade")
def db_upgrade(db: DbOption = DEFAULT_URL) -> None:
    """Bring the database's schema to the newest revision (creates it if empty)."""
    with reported(db):
        upgrade(db)
    _console().print(f"{_where(db)}: the schema is up to date.")


# The HTTP adapter's commands (`keys create`, `keys revoke`, `serve`), when the `http`
# extra (uvicorn, starlette, httpx) is installed; without it, `credits` works without them.
_HTTP_EXTRA = {"uvicorn", "starlette", "httpx", "phonenumbers"}


def _register_http_commands() -> None:
    try:
        from adapters.http.cli_commands import register
    except ModuleNotFoundError as exc:
        if exc.name not in _HTTP_EXTRA:
            raise
        return
    register(app)


_register_http_commands()


def main() -> None:
    app(prog_name="credits")


if __name__ == "__main__":
    main()
