"""How the `credits` command shows things: compact tables that fit 80 columns, numbers
with thousands separators, instants in UTC."""

from __future__ import annotations

import os
from datetime import datetime

from rich import box
from rich.console import Console
from rich.table import Table

PIPE_WIDTH = 160  # columns of output that goes to a file or a pipe


def n(value: int) -> str:
    return f"{value:,}"


def signed(value: int) -> str:
    return f"{value:+,}" if value else "0"


def table(title: str | None) -> Table:
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


def when(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M}"


def console() -> Console:
    """Standard output; when it is not a terminal (a file, a pipe), wide enough that
    table rows stay on one line, unless COLUMNS says otherwise."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=PIPE_WIDTH)
    return console
