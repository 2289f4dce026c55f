"""What every `credits` subcommand shares: the `--db` option, opening the repository,
and turning expected errors into one line on stderr (never a traceback)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, NoReturn

import sqlalchemy as sa
import typer

from adapters.sql import SqlRepository
from credits_domain import CreditsError

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
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return repr(url)


@contextlib.contextmanager
def reported(url: str, *also: type[Exception]) -> Iterator[None]:
    """Expected errors (CreditsError and `also`) become one line on stderr and exit 1;
    a database that cannot be reached or used too; Ctrl-C exits 130."""
    expected: tuple[type[Exception], ...] = (CreditsError, *also)
    try:
        yield
    except expected as exc:  # SchemaOutOfDate among them: it says to run the upgrade
        fail(str(exc))
    except sa.exc.SQLAlchemyError as exc:
        cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        fail(f"cannot use the database {shown(url)}: {type(cause).__name__}: {cause}")
    except KeyboardInterrupt:
        fail("interrupted", code=130)


@contextlib.contextmanager
def opened(url: str, *, migrate: bool) -> Iterator[SqlRepository]:
    """The repository at `url`, closed after; with `migrate`, the schema is upgraded first."""
    repository = SqlRepository.connect(url, migrate=migrate)
    try:
        yield repository
    finally:
        repository.close()
