"""How reading commands print their rows: a table for people, CSV or JSON for scripts.

One description of the columns serves the three formats, so they never drift apart.
Rows arrive as an iterable and are written as they come (a statement of millions of
entries is never held whole): tables in chunks, CSV row by row, JSON as one document
whose list is written element by element. Standard output holds only the data in CSV and
JSON; a hint for people (the next page) goes to stderr there.
"""

from __future__ import annotations

import csv
import itertools
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Literal

import attrs

from adapters.cli import render
from adapters.cli.support import Format, note

TABLE_CHUNK = 500  # rows per printed table: a long listing is never held whole

Row = Mapping[str, object]


@attrs.frozen
class Column:
    """One field: its key in JSON and CSV, its title in a table, and how a table shows it
    (numbers with thousands separators, amounts with their sign, right-aligned; instants
    to the minute, where JSON and CSV keep them whole)."""

    key: str
    title: str
    kind: Literal["text", "number", "signed"] = "text"
    # A table for people may show fewer columns, or one that sums others up.
    shown: Literal["everywhere", "table", "data"] = "everywhere"

    @property
    def in_table(self) -> bool:
        return self.shown != "data"

    @property
    def in_data(self) -> bool:
        return self.shown != "table"


def instant(at: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, as the HTTP API writes instants."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def plain(value: object) -> object:
    """A row's value as JSON and CSV hold it."""
    return instant(value) if isinstance(value, datetime) else value


def _cell(column: Column, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return render.when(value.astimezone(UTC))
    if isinstance(value, int) and not isinstance(value, bool):
        return render.signed(value) if column.kind == "signed" else render.n(value)
    return str(value)


def _table(columns: tuple[Column, ...], rows: list[Row], title: str | None) -> object:
    table = render.table(title)
    for column in columns:
        if column.kind == "text":
            table.add_column(column.title, overflow="fold")
        else:  # numbers never wrap
            table.add_column(column.title, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*(_cell(c, row.get(c.key)) for c in columns))
    return table


def emit(
    output: Format,
    columns: tuple[Column, ...],
    rows: Iterable[Row],
    *,
    title: str,
    items: str,
    head: Mapping[str, object] | None = None,
    trailer: Callable[[], Mapping[str, object]] = dict,
    more: str | Callable[[], str | None] | None = None,
    empty: str = "Nothing to list.",
    counted: Callable[[int], str] | None = None,
) -> None:
    """Write `rows` in `output`'s format.

    JSON is one object: `head`'s fields, the rows as a list named `items`, then
    `trailer()`'s fields (called once the rows are consumed: a cursor for the next page).
    `more` (or what it returns, once the rows are consumed) is the option that reads the
    next page: a table says it on standard output, CSV on stderr, JSON in `trailer`.
    """
    if output is Format.JSON:
        _json(tuple(c for c in columns if c.in_data), rows, items, head or {}, trailer)
        return
    if output is Format.CSV:
        columns = tuple(c for c in columns if c.in_data)
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([c.key for c in columns])
        for row in rows:
            writer.writerow(["" if (v := row.get(c.key)) is None else plain(v) for c in columns])
        hint = more() if callable(more) else more
        if hint is not None:
            note(f"more {items}: give {hint}")
        return
    columns = tuple(c for c in columns if c.in_table)
    console = render.console()
    printed = 0
    chunks = iter(rows)
    while chunk := list(itertools.islice(chunks, TABLE_CHUNK)):
        console.print(_table(columns, chunk, title if printed == 0 else None))
        printed += len(chunk)
    if printed == 0:
        console.print(empty)
    elif counted is not None:
        console.print(counted(printed))
    hint = more() if callable(more) else more
    if hint is not None:
        console.print(f"More {items}: give {hint}")


def _json(
    columns: tuple[Column, ...],
    rows: Iterable[Row],
    items: str,
    head: Mapping[str, object],
    trailer: Callable[[], Mapping[str, object]],
) -> None:
    out = sys.stdout
    out.write("{")
    for key, value in head.items():
        out.write(f"{json.dumps(key)}: {json.dumps(plain(value), ensure_ascii=False)}, ")
    out.write(f"{json.dumps(items)}: [")
    for n, row in enumerate(rows):
        out.write(",\n" if n else "\n")
        fields = {c.key: plain(row.get(c.key)) for c in columns}
        out.write(json.dumps(fields, ensure_ascii=False))
    out.write("\n]")
    for key, value in trailer().items():
        out.write(f", {json.dumps(key)}: {json.dumps(plain(value), ensure_ascii=False)}")
    out.write("}\n")


def document(value: Mapping[str, object]) -> None:
    """One JSON object on standard output (a single result, not a listing)."""
    fields = {key: plain(v) for key, v in value.items()}
    sys.stdout.write(json.dumps(fields, ensure_ascii=False) + "\n")
