"""What every `credits` subcommand shares: the `--db` option, wiring the service through
the composition root, turning expected errors into one line on stderr (never a
traceback), and help pages that name arguments and values as people write them."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from adapters import bootstrap
from adapters.bootstrap import DEFAULT_DATABASE_URL, Settings, Wiring
from credits_domain import Clock, CreditsError

DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        metavar="URL",
        help="The database: sqlite:///path.db (a file; a relative path starts in the "
        "current directory) or postgresql+psycopg://user@host/dbname.",
    ),
]


AccountArgument = Annotated[
    str, typer.Argument(metavar="ACCOUNT", help="The account's id, as it was subscribed.")
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
