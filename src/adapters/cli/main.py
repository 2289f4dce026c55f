"""The `credits` command: Typer for the arguments, rich for tables and progress.

    credits accounts | balance | statement | guarantee ...
                                                  reading (adapters.cli.reading)
    credits events ACCOUNT | threshold ACCOUNT POOL CREDITS
                                                  R24's events (adapters.cli.events)
    credits subscribe | change-plan | cancel | pause | resume | top-up | bounce ...
                                                  changing an account (adapters.cli.operating)
    credits unlock | export | enrich ACCOUNT (CONTACTS... | FILE.csv)
                                                  charging (adapters.cli.charging, csvfile)
    credits renew-due [--db URL]                  renew every account whose period ended
    credits demo [--db URL]                       replay the scripted story (adapters.cli.demo)
    credits keys ..., credits serve ...           the HTTP API's (adapters.cli.serve)
    credits members add|allowance|usage ...       a team's members (adapters.cli.members)
    credits conformance BASE_URL                  check a service in test mode over HTTP
    credits webhooks add|list|remove|deliver ...  webhook endpoints (adapters.cli.webhooks)
    credits db upgrade [--db URL]                 bring the schema to the newest revision
    credits --version                             the installed version

Every command gets its service from the composition root (adapters.bootstrap). `demo`
runs on a scripted clock and a ScriptedVerifier; `unlock`, `export` and `enrich` on the
real clock with the verifier they are given (--verifier-url or --demo-verifier); the
others never charge, so they are wired without a verifier (NoVerifier refuses to be
called). Only `demo`, `db upgrade` and `keys create` create or change a schema; the
others refuse a database file that does not exist rather than leave an empty one.
Expected errors (every CreditsError: a refusal, an outdated schema, a bad or unreachable
database, a CSV file over a limit) are one line on stderr and exit status 1, never a
traceback (a traceback means a bug); wrong usage exits 2, an interrupt 130.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adapters import bootstrap
from adapters.bootstrap import DEFAULT_DATABASE_URL, Settings
from adapters.cli import charging, operating, reading, render, version_line
from adapters.cli.conformance import conformance
from adapters.cli.demo import demo
from adapters.cli.events import events, threshold
from adapters.cli.members import members_app
from adapters.cli.serve import register
from adapters.cli.support import (
    DbOption,
    HelpCommand,
    HelpGroup,
    RootGroup,
    reported,
    wired,
)
from adapters.cli.webhooks import webhooks_app

app = typer.Typer(
    cls=RootGroup,
    rich_markup_mode=None,  # our plain help pages (see support.HelpGroup)
    name="credits",
    help="Prepaid credits for verified lead data: pay once, only for verified, new data. "
    "Reading commands print a table, or CSV or JSON for scripts (--format); errors are "
    "one line on stderr, with the exit status below.",
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


# -- the commands, in the order `credits --help` lists them -----------------------------

app.command(cls=HelpCommand)(reading.accounts)
app.command(cls=HelpCommand)(reading.balance)
app.command(cls=HelpCommand)(reading.statement)
app.command(cls=HelpCommand)(reading.guarantee)
app.command(cls=HelpCommand)(events)
app.command(cls=HelpCommand)(threshold)
app.command(cls=HelpCommand)(operating.subscribe)
app.command("change-plan", cls=HelpCommand)(operating.change_plan)
app.command(cls=HelpCommand)(operating.cancel)
app.command(cls=HelpCommand)(operating.pause)
app.command(cls=HelpCommand)(operating.resume)
app.command("top-up", cls=HelpCommand)(operating.top_up)
app.command(cls=HelpCommand)(charging.unlock)
app.command(cls=HelpCommand)(charging.export)
app.command(cls=HelpCommand)(charging.enrich)
app.command(cls=HelpCommand)(operating.bounce)


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


app.command(cls=HelpCommand)(demo)
# `keys` needs storage only. `serve` is listed even without the `http` extra: run, it
# says which extra to install (reported by the entry point, `adapters.cli.main()`).
register(app)
app.add_typer(members_app, name="members")
app.command(cls=HelpCommand)(conformance)
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(db_app, name="db")


def run() -> None:
    app(prog_name="credits")
