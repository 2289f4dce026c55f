"""What every `credits` subcommand shares: the `--db` option, wiring the service through
the composition root, and turning expected errors into one line on stderr (never a
traceback)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, NoReturn

import typer

from adapters import bootstrap
from adapters.bootstrap import DEFAULT_DATABASE_URL, Settings, Wiring
from credits_domain import Clock, CreditsError

DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        metavar="URL",
        help="Database URL: sqlite:///path.db (default: credits.db here) "
        "or postgresql+psycopg://user@host/dbname.",
    ),
]


def one_line(text: str) -> str:
    return " ".join(text.split())


def fail(message: str, code: int = 1) -> NoReturn:
    # typer.echo, not rich: rich would wrap a long message over several lines.
    typer.echo(f"credits: error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def shown(url: str) -> str:
    """The URL without its password."""
    return bootstrap.display_database(url)


def db_hint(url: str) -> str:
    """The `--db` option to repeat in a suggested command ('' for the default)."""
    return "" if url == DEFAULT_DATABASE_URL else f" --db {shown(url)}"


def when(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M}"


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Expected errors (every CreditsError: refusals, an outdated schema, a bad or
    unreachable database) become one line on stderr and exit 1; Ctrl-C exits 130."""
    try:
        yield
    except CreditsError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", code=130)


@contextlib.contextmanager
def wired(settings: Settings, *, clock: Clock | None = None) -> Iterator[Wiring]:
    """The service wired from `settings`, released after."""
    with bootstrap.build(settings, clock=clock) as wiring:
        yield wiring
