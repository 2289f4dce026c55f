"""What every `credits` subcommand shares: the `--db`, `--format` and verifier options,
wiring the service through the composition root, turning expected errors into one line
on stderr (never a traceback) with the documented exit status, and help pages that name
arguments and values as people write them."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from adapters import bootstrap
from adapters.bootstrap import DEFAULT_DATABASE_URL, Settings, Wiring
from credits_domain import Clock, CreditsError
from credits_domain.limits import MAX_ACCOUNT_ID_LENGTH

DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        metavar="URL",
        help="The database: sqlite:///path.db (a file; a relative path starts in the "
        "current directory) or postgresql+psycopg://user@host/dbname.",
    ),
]


def bounded(limit: int) -> Callable[[str | None], str | None]:
    """A check for a text argument or option: at most `limit` characters, printable.
    Past it is a usage error (exit 2) that does not echo the value back."""

    def check(value: str | None) -> str | None:
        if value is None:
            return None
        if len(value) > limit:
            raise typer.BadParameter(f"at most {limit:,} characters, got {len(value):,}")
        if not value.isprintable():
            raise typer.BadParameter("control characters (tabs, new lines, ...) are not allowed")
        return value

    return check


def limit_option(items: str, maximum: int) -> Any:
    """`--limit N`: at most N `items` on a page, 1 to `maximum`."""
    return typer.Option(
        "--limit", metavar="N", min=1, max=maximum, help=f"At most N {items} (1 to {maximum:,})."
    )


AccountArgument = Annotated[
    str,
    typer.Argument(
        metavar="ACCOUNT",
        help="The account's id, as it was subscribed.",
        callback=bounded(MAX_ACCOUNT_ID_LENGTH),
    ),
]

# The exit statuses every command keeps (also in `credits --help` and the README).
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_STATUSES = (
    (str(EXIT_OK), "done"),
    (
        str(EXIT_REFUSED),
        "refused or failed, as the one line on stderr says (an unknown account, a lapsed "
        "subscription, a database to upgrade or out of reach, a CSV file over a limit, "
        "batches left in flight)",
    ),
    (str(EXIT_USAGE), "wrong usage: an unknown option, a missing argument, a value out of range"),
    (str(EXIT_INTERRUPTED), "interrupted (Ctrl-C); charging commands say how to resume"),
)


class Format(enum.StrEnum):
    """How a reading command prints: a table for people, csv or json for scripts."""

    TABLE = "table"
    CSV = "csv"
    JSON = "json"


FormatOption = Annotated[
    Format,
    typer.Option(
        "--format",
        metavar="FORMAT",
        help="table (for people), csv or json (for scripts: standard output holds only the data).",
    ),
]


class VerifierDialect(enum.StrEnum):
    """How the verification service words its answers."""

    NATIVE = "native"
    VENDOR_STATUS = "vendor_status"
    VENDOR_RESULT = "vendor_result"


VerifierUrlOption = Annotated[
    str | None,
    typer.Option(
        "--verifier-url",
        metavar="URL",
        help="The verification service's base URL (the production setting).",
    ),
]
VerifierDialectOption = Annotated[
    VerifierDialect,
    typer.Option(
        "--verifier-dialect",
        metavar="DIALECT",
        help="How the verification service words its answers: native (our protocol), "
        "vendor_status or vendor_result.",
    ),
]
DemoVerifierOption = Annotated[
    bool,
    typer.Option(
        "--demo-verifier",
        help="Instead of a verification service: every datum verifies VALID, so data "
        "nobody verified are charged (demos and benchmarks only).",
    ),
]


def verifier_settings(
    db: str, url: str | None, dialect: VerifierDialect, demo: bool, *, command: str
) -> Settings:
    """The settings of a command that verifies: exactly one of a service URL or the demo
    verifier, else a usage error (exit 2) naming both."""
    if url is not None and demo:
        fail("give either --verifier-url or --demo-verifier, not both", code=EXIT_USAGE)
    if url is None and not demo:
        fail(
            f"{command} needs a verifier: --verifier-url URL (the verification service) "
            "or --demo-verifier (everything verifies VALID; demos and benchmarks only)",
            code=EXIT_USAGE,
        )
    if demo:
        return Settings(database_url=db, verifier_script={})  # VALID for every datum
    return Settings(database_url=db, verifier_url=url, verifier_dialect=dialect.value)


def one_line(text: str) -> str:
    return " ".join(text.split())


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    # typer.echo, not rich: rich would wrap a long message over several lines.
    typer.echo(f"credits: error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def note(message: str) -> None:
    """One line for people on stderr (standard output stays the data's)."""
    typer.echo(f"credits: {one_line(message)}", err=True)


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
        fail("interrupted", code=EXIT_INTERRUPTED)


@contextlib.contextmanager
def wired(settings: Settings, *, clock: Clock | None = None) -> Iterator[Wiring]:
    """The service wired from `settings`, released after."""
    with bootstrap.build(settings, clock=clock) as wiring:
        yield wiring


# -- help pages ------------------------------------------------------------------------
#
# Typer 0.27 and later print Python types and braces in help (`--help <bool>`,
# `balance {account}`); these classes print what a person types instead (`ACCOUNT`,
# `--db URL`), from the parameters' public attributes, so every Typer version reads
# the same. Typer passes its own (from 0.27, vendored) click context and formatter,
# hence `Any` for both. The apps using them set `rich_markup_mode=None`: in rich mode
# Typer prints help only through its own renderer, and `credits` alone (no_args_is_help)
# would print nothing.


def _argument_name(param: Any) -> str:
    return str(param.metavar or param.name.upper())


def _usage_pieces(command: Any) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.params:
        if param.param_type_name == "argument":
            name = _argument_name(param)
            pieces.append(name if param.required else f"[{name}]")
    return pieces


def _default(param: Any) -> str | None:
    if isinstance(param.show_default, str):
        return param.show_default
    value = param.default
    if not param.show_default or value is None:
        return None
    if param.is_flag:
        # A flag that is off unless given needs no word; one on by default names itself.
        return param.opts[0] if value is True and param.secondary_opts else None
    return str(value.value if isinstance(value, enum.Enum) else value)


def _option_row(param: Any) -> tuple[str, str]:
    names = ", ".join(param.opts)
    if not param.is_flag and not param.count:
        names += f" {param.metavar or param.name.upper()}"
    if param.secondary_opts:
        names += " / " + ", ".join(param.secondary_opts)
    text = param.help or ""
    default = _default(param)
    if default is not None:
        text += f"  [default: {default}]"
    return names, text


def _write_help(command: Any, ctx: Any, formatter: Any) -> None:
    command.format_usage(ctx, formatter)
    command.format_help_text(ctx, formatter)
    shown = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    arguments = [
        (_argument_name(p), p.help or "") for p in shown if p.param_type_name == "argument"
    ]
    if arguments:
        with formatter.section("Arguments"):
            formatter.write_dl(arguments)
    options = [_option_row(p) for p in shown if p.param_type_name == "option"]
    if options:
        with formatter.section("Options"):
            formatter.write_dl(options)


class HelpCommand(TyperCommand):
    """A `credits` subcommand (its help as described above)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage_pieces(self)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _write_help(self, ctx, formatter)


class HelpGroup(TyperGroup):
    """`credits` and its groups of subcommands (`db`, `keys`)."""

    # Rows printed last, under their heading (the root lists its exit statuses).
    closing: tuple[str, tuple[tuple[str, str], ...]] | None = None

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*_usage_pieces(self), "COMMAND [ARGS]..."]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _write_help(self, ctx, formatter)
        named = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        commands = [(name, c) for name, c in named if c is not None and not c.hidden]
        if commands:
            width = max(len(name) for name, _ in commands)
            limit = formatter.width - 6 - width
            with formatter.section("Commands"):
                formatter.write_dl([(name, c.get_short_help_str(limit)) for name, c in commands])
        if self.closing is not None:
            heading, rows = self.closing
            with formatter.section(heading):
                formatter.write_dl(list(rows))


class RootGroup(HelpGroup):
    """`credits` itself: its help page ends with the exit statuses."""

    closing = ("Exit status", EXIT_STATUSES)
