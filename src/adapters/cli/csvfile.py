"""CSV files of contacts, in and out, for `credits unlock|export|enrich ACCOUNT FILE.csv`.

Reading is two passes over the file, each streaming it line by line (memory stays
bounded by one batch, whatever the file's size):

1. `scan` checks the limits before anything is charged (a file over `MAX_FILE_BYTES`,
   over `MAX_LINES` lines, or with a line over `MAX_LINE_BYTES` is refused whole) and
   takes the SHA-256 of the content: the charging batches' idempotency keys derive from
   it, so a rerun on the same file charges nothing twice (R17).
2. `CsvReader` reads the header (a UTF-8 BOM is dropped; comma or semicolon, whichever
   the header has more of outside quotes; the email and mobile columns found by name,
   case and punctuation ignored, unless named by the caller), then yields one `Row` per
   record. A record is its lines up to one where the quotes balance (a quoted field
   may hold line breaks, up to `MAX_RECORD_LINES` lines); a quote never closed marks its
   first line malformed and reading goes on with the next line.

A malformed row (bytes that are not UTF-8, broken quoting, a number of fields other than
the header's) carries its problem and line number, is not charged, and still comes back
in the output, in order: `CsvWriter` writes every row with the columns `line`,
`email_outcome` and `mobile_outcome` after the header's own (replacing them when the
input is the output of an earlier run). The output keeps the input's delimiter, line
ending and BOM, and is always valid UTF-8 (bytes that were not are replaced by U+FFFD).
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Final, TextIO

import attrs

from credits_domain import Channel, Contact, InvalidRequest, MalformedContact
from credits_domain.limits import MAX_CONTACT_INPUT_LENGTH

MAX_FILE_BYTES: Final = 256 * 2**20
"""Bytes of one CSV file (256 MiB: a million rows of a few hundred bytes)."""
MAX_LINES: Final = 1_000_000
"""Lines of one CSV file, its header included."""
MAX_LINE_BYTES: Final = 64 * 2**10
"""Bytes of one line, its line break excluded (a CRM export's widest rows fit)."""
MAX_RECORD_LINES: Final = 100
"""Lines one record may span (quoted fields holding line breaks)."""
MAX_SHOWN = 60  # characters of a value quoted back in a message
MAX_COLUMN_NAME = 200
"""Characters of a column's name given with --email-column or --mobile-column."""

BOM: Final = b"\xef\xbb\xbf"
ADDED = ("line", "email_outcome", "mobile_outcome")
OUTCOME_COLUMN = {Channel.EMAIL: "email_outcome", Channel.MOBILE: "mobile_outcome"}

# Header names, compared with case and everything but letters and digits ignored
# ("E-Mail", "email_address" and "Email Address" are all found), in order of preference.
EMAIL_HEADERS = ("email", "emailaddress", "mail", "mailaddress", "workemail", "businessemail")
MOBILE_HEADERS = (
    "mobile",
    "mobilephone",
    "mobilenumber",
    "mobileno",
    "cell",
    "cellphone",
    "cellnumber",
    "phone",
    "phonenumber",
    "telephone",
    "telephonenumber",
    "tel",
)


class CsvFileRefused(InvalidRequest):
    """A CSV file that cannot be read as a whole (missing, over a limit, no header,
    no contact column): refused before anything is charged."""


def shown(value: str) -> str:
    """A value quoted back to a person: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


@attrs.frozen(kw_only=True)
class Scanned:
    """What the first pass learned: the content's digest, its size in lines, its BOM
    and line ending (the output keeps both)."""

    path: Path
    digest: str
    lines: int
    bom: bool
    newline: str


def scan(path: Path) -> Scanned:
    """Check the file against the limits and take its digest; raises CsvFileRefused."""
    name = str(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise CsvFileRefused(f"{name} is not a file; give a CSV file")
    except OSError as exc:
        raise CsvFileRefused(f"cannot read {name}: {exc.strerror or exc}") from None
    if size > MAX_FILE_BYTES:
        raise CsvFileRefused(
            f"{name} has {size:,} bytes, more than the {MAX_FILE_BYTES:,} a CSV file may "
            "have; split it into smaller files"
        )
    digest = hashlib.sha256()
    lines = 0
    first = b""
    try:
        with path.open("rb") as file:
            while line := file.readline(MAX_LINE_BYTES + 3):
                lines += 1
                if lines == 1:
                    first = line
                if len(_body(line)) > MAX_LINE_BYTES:
                    raise CsvFileRefused(
                        f"{name}: line {lines:,} is longer than {MAX_LINE_BYTES:,} bytes; a "
                        "CSV file of contacts has shorter lines (is it the right file?)"
                    )
                if lines > MAX_LINES:
                    raise CsvFileRefused(
                        f"{name} has more than {MAX_LINES:,} lines; split it into smaller files"
                    )
                digest.update(line)
    except OSError as exc:
        raise CsvFileRefused(f"cannot read {name}: {exc.strerror or exc}") from None
    if not first.removeprefix(BOM).strip():
        raise CsvFileRefused(f"{name} has no header line; its first line names the columns")
    return Scanned(
        path=path,
        digest=digest.hexdigest(),
        lines=lines,
        bom=first.startswith(BOM),
        newline="\r\n" if first.endswith(b"\r\n") else "\n",
    )


def _body(line: bytes) -> bytes:
    """A line without its line break."""
    if line.endswith(b"\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith(b"\n") else line


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.casefold())


@attrs.frozen(kw_only=True)
class Layout:
    """The header, the delimiter, and where the contacts are."""

    header: tuple[str, ...]
    delimiter: str
    columns: dict[Channel, int]  # the channels the file has, with their column

    @property
    def width(self) -> int:
        return len(self.header)


@attrs.frozen(kw_only=True)
class Row:
    """One record of the file: where it starts, how many lines it spans, its cells,
    and what is wrong with it as a whole (None: a well-formed row)."""

    line: int
    lines: int
    cells: list[str]
    problem: str | None


@attrs.frozen(kw_only=True)
class Datum:
    """One cell of a contact column: a contact, or why it is none (None: empty)."""

    channel: Channel
    contact: Contact | None
    problem: str | None
    raw: str


def _parse(raw: bytes, delimiter: str) -> tuple[list[str], str | None]:
    body = _body(raw)
    problem = None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = body.decode("utf-8", "replace")
        problem = (
            f"bytes that are not UTF-8 (0x{body[exc.start]:02x} at byte {exc.start + 1} of the "
            "row); save the file as UTF-8"
        )
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
        problem = problem or f"broken quoting ({exc})"
    if len(rows) > 1:  # a carriage return alone, outside quotes, ends a record too
        problem = problem or "a line break outside quotes"
    return [cell for row in rows for cell in row], problem


def _delimiter(header: bytes) -> str:
    outside = re.sub(rb'"[^"]*"', b"", header)
    return ";" if outside.count(b";") > outside.count(b",") else ","


class CsvReader:
    """The second pass: the header, then the rows, streamed (see the module's doc)."""

    def __init__(
        self,
        scanned: Scanned,
        *,
        email_column: str | None = None,
        mobile_column: str | None = None,
    ) -> None:
        self.scanned = scanned
        self._file: BinaryIO = scanned.path.open("rb")
        # Bounded reads even here: a file that grew a long line since `scan` is read in
        # pieces (malformed rows), never whole.
        self._lines = enumerate(iter(lambda: self._file.readline(MAX_LINE_BYTES + 3), b""), 1)
        self._pushed: collections.deque[tuple[int, bytes]] = collections.deque()
        try:
            self.layout = self._read_header(email_column, mobile_column)
        except BaseException:
            self._file.close()
            raise

    def close(self) -> None:
        self._file.close()

    def _next_line(self) -> tuple[int, bytes] | None:
        if self._pushed:
            return self._pushed.popleft()
        return next(self._lines, None)

    def _records(self) -> Iterator[tuple[int, list[bytes], str | None]]:
        """(first line, its lines, None) per record; (line, [that line], problem) for a
        line whose quote is never closed, then reading resumes at the next line."""
        while (first := self._next_line()) is not None:
            taken = [first]
            quotes = first[1].count(b'"')  # a quote byte never occurs inside UTF-8 runes
            while quotes % 2 and len(taken) < MAX_RECORD_LINES:
                following = self._next_line()
                if following is None:
                    break
                taken.append(following)
                quotes += following[1].count(b'"')
            if quotes % 2:
                self._pushed.extendleft(reversed(taken[1:]))
                problem = (
                    f"a quote opened on this line is not closed within {MAX_RECORD_LINES} "
                    "lines or before the end of the file"
                )
                yield first[0], [first[1]], problem
            else:
                yield first[0], [line for _, line in taken], None

    def _read_header(self, email_column: str | None, mobile_column: str | None) -> Layout:
        name = self.scanned.path
        found = next(self._records(), None)
        if found is None:  # pragma: no cover - scan() refuses a file without a header
            raise CsvFileRefused(f"{name} has no header line")
        line, lines, problem = found
        raw = b"".join(lines).removeprefix(BOM)
        delimiter = _delimiter(raw)
        header, parse_problem = _parse(raw, delimiter)
        if problem or parse_problem:
            raise CsvFileRefused(
                f"{name}: the header (line {line}) cannot be read: {problem or parse_problem}"
            )
        columns: dict[Channel, int] = {}
        for channel, wanted, names in (
            (Channel.EMAIL, email_column, EMAIL_HEADERS),
            (Channel.MOBILE, mobile_column, MOBILE_HEADERS),
        ):
            index = self._column(header, wanted, names)
            if index is not None:
                columns[channel] = index
        if not columns:
            raise CsvFileRefused(
                f"{name} has no email or mobile column (its columns: {_listed(header)}); "
                "name them with --email-column NAME or --mobile-column NAME"
            )
        if len(set(columns.values())) < len(columns):
            raise CsvFileRefused(f"{name}: the email and mobile columns must be two columns")
        return Layout(header=tuple(header), delimiter=delimiter, columns=columns)

    def _column(self, header: list[str], wanted: str | None, names: Sequence[str]) -> int | None:
        if wanted is not None:
            folded = wanted.strip().casefold()
            for index, title in enumerate(header):
                if title.strip().casefold() == folded:
                    return index
            raise CsvFileRefused(
                f"{self.scanned.path} has no column named {shown(wanted)} (its columns: "
                f"{_listed(header)})"
            )
        normalized = [_norm(title) for title in header]
        for candidate in names:
            if candidate in normalized:
                return normalized.index(candidate)
        return None

    def rows(self) -> Iterator[Row]:
        width = self.layout.width
        for line, lines, problem in self._records():
            cells, parse_problem = _parse(b"".join(lines), self.layout.delimiter)
            problem = problem or parse_problem
            if problem is None and cells and len(cells) != width:
                problem = f"{len(cells)} fields where the header has {width}"
            yield Row(line=line, lines=len(lines), cells=cells, problem=problem)


def _listed(header: Sequence[str]) -> str:
    names = [shown(title) for title in header[:20]]
    return ", ".join(names) + (f" and {len(header) - 20} more" if len(header) > 20 else "")


def _reason(error: MalformedContact) -> str:
    """The core's reason, without the value it quotes (the row is named by its line)."""
    message = str(error)
    prefix = f"malformed {error.channel} {error.raw!r}: "
    return message.removeprefix(prefix)


def read_data(row: Row, layout: Layout, region: str | None) -> list[Datum]:
    """The row's contacts, email first: each a contact, a problem, or empty."""
    found = []
    for channel, index in layout.columns.items():
        raw = row.cells[index].strip() if index < len(row.cells) else ""
        contact, problem = None, None
        if not raw:
            pass
        elif len(raw) > MAX_CONTACT_INPUT_LENGTH:
            problem = f"longer than {MAX_CONTACT_INPUT_LENGTH} characters"
        else:
            try:
                contact = read_contact(channel, raw, region)
            except MalformedContact as exc:
                problem = _reason(exc)
        found.append(Datum(channel=channel, contact=contact, problem=problem, raw=raw))
    return found


def read_contact(channel: Channel, raw: str, region: str | None) -> Contact:
    """An email in canonical form, or a mobile number read with `phonenumbers` (national
    forms with the region), so that "+44 (0) 7700 900123" is the datum "+447700900123"."""
    if channel is Channel.EMAIL:
        return Contact.email(raw)
    from adapters.phones import parse_phone  # the `http` extra; only files with mobiles

    return parse_phone(raw, region)


class CsvWriter:
    """Every row back, in order, with its line number and an outcome per contact column."""

    def __init__(self, out: TextIO, layout: Layout, scanned: Scanned) -> None:
        self._layout = layout
        self._writer = csv.writer(out, delimiter=layout.delimiter, lineterminator=scanned.newline)
        added = ["line", *(OUTCOME_COLUMN[c] for c in Channel if c in layout.columns)]
        header = list(layout.header)
        # The output of an earlier run, read again: its own columns are replaced.
        self._replace = {name: header.index(name) for name in added if name in header}
        self._append = [name for name in added if name not in self._replace]
        if scanned.bom:
            out.write("\ufeff")
        self._writer.writerow([*header, *self._append])

    def write(self, row: Row, values: dict[str, str]) -> None:
        width = self._layout.width
        cells = row.cells[:width] + [""] * (width - len(row.cells))
        values = {"line": str(row.line), **values}
        for name, index in self._replace.items():
            cells[index] = values.get(name, "")
        appended = [values.get(name, "") for name in self._append]
        # A row with more fields than the header keeps them, after the added columns.
        self._writer.writerow([*cells, *appended, *row.cells[width:]])
