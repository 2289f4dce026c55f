"""`credits unlock|export|enrich ACCOUNT (CONTACTS... | FILE.csv)`: the three charging
events (R9, R13, R14) from the command line.

Contacts come from the arguments (an argument with an `@` is an email, any other a
mobile number) as one request, or from one CSV file (an argument ending in `.csv`, read
by adapters.cli.csvfile). A file is charged in batches of `--batch` rows, each one request
under its own idempotency key, derived from the file's content, the options that shape
its requests and the batch's number: run the same command again after a crash, an
interrupt or a refusal, and the batches charged before are replayed (R17), so nothing is
charged twice; data bought since are free anyway (R12). A batch still in flight from a
run that died (its hold not yet expired, R16) is left for a later run, and said so.

Every row comes back, in order, with its line and an outcome per contact column, to
`--out FILE` or standard output; a progress bar runs on stderr when it is a terminal, and
malformed rows are named there by line. Charging needs a verifier: `--verifier-url` or
`--demo-verifier`, as for `credits serve`.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, TextIO, TypeVar

import attrs
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from adapters.bootstrap import DEFAULT_DATABASE_URL
from adapters.cli import csvfile, render
from adapters.cli.output import Column, Row, emit
from adapters.cli.support import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    AccountArgument,
    DbOption,
    DemoVerifierOption,
    Format,
    VerifierDialect,
    VerifierDialectOption,
    VerifierUrlOption,
    bounded,
    fail,
    note,
    reported,
    verifier_settings,
    wired,
)
from credits_domain import (
    Channel,
    ChargeResult,
    Contact,
    CreditsError,
    CreditService,
    HoldExpired,
    ItemResult,
    MalformedContact,
    NoActiveSubscription,
    Operation,
    Outcome,
    RequestInFlight,
    Status,
    SubscriptionPaused,
)
from credits_domain.errors import invariant
from credits_domain.limits import (
    MAX_ACCOUNT_ID_LENGTH,
    MAX_DESTINATION_LENGTH,
    MAX_IDEMPOTENCY_KEY_LENGTH,
)

T = TypeVar("T")

MAX_BATCH_ROWS = 5_000
"""Rows per request: two contacts each at most, within the service's 10,000 (R9)."""
DEFAULT_BATCH_ROWS = 500
MAX_ARGUMENT_LENGTH = 4_096  # a contact, or a file's path
MAX_REPORTED = 20  # malformed rows named on stderr; the output marks every one
HOLD_EXPIRED_ATTEMPTS = 3  # a batch whose hold expired while it was verified is retried

ContactsArgument = Annotated[
    list[str],
    typer.Argument(
        metavar="CONTACTS|FILE",
        help="Emails and mobile numbers (one request), or one CSV file (a name ending in "
        ".csv) with an email and/or a mobile column.",
        show_default=False,
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        metavar="FILE",
        help="Write the CSV file back there, every row with its outcomes (default: "
        "standard output).",
        dir_okay=False,
    ),
]
BatchOption = Annotated[
    int | None,
    typer.Option(
        "--batch",
        metavar="N",
        min=1,
        max=MAX_BATCH_ROWS,
        help=f"Rows of the CSV file per request (1 to {MAX_BATCH_ROWS:,}; default "
        f"{DEFAULT_BATCH_ROWS}).",
    ),
]
RegionOption = Annotated[
    str | None,
    typer.Option(
        "--region",
        metavar="CODE",
        help="The region of mobile numbers written without their country code: an ISO "
        "3166 code such as GB or US (default: only international numbers, +44 ...).",
        callback=bounded(2),
    ),
]
EmailColumnOption = Annotated[
    str | None,
    typer.Option(
        "--email-column",
        metavar="NAME",
        help="The CSV file's email column (default: found by name: email, e-mail, mail, "
        "email_address, ...).",
        callback=bounded(csvfile.MAX_COLUMN_NAME),
    ),
]
MobileColumnOption = Annotated[
    str | None,
    typer.Option(
        "--mobile-column",
        metavar="NAME",
        help="The CSV file's mobile column (default: found by name: mobile, phone, "
        "mobile_phone, phone_number, ...).",
        callback=bounded(csvfile.MAX_COLUMN_NAME),
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        metavar="KEY",
        help="For contacts given as arguments: the request's idempotency key; the same "
        "command again returns the first result and charges nothing (R17). A CSV file's "
        "batches get keys of their own.",
        callback=bounded(MAX_IDEMPOTENCY_KEY_LENGTH),
    ),
]
MemberOption = Annotated[
    str | None,
    typer.Option(
        "--member",
        metavar="MEMBER",
        help="The team member asking (R22): items past their allowance are "
        "member_allowance_exceeded, free.",
        callback=bounded(MAX_ACCOUNT_ID_LENGTH),
    ),
]
ChargeFormatOption = Annotated[
    Format | None,
    typer.Option(
        "--format",
        metavar="FORMAT",
        help="For contacts given as arguments: table (default), csv or json. A CSV file "
        "is answered as CSV.",
    ),
]


@attrs.frozen(kw_only=True)
class _Request:
    """One charging command as typed."""

    operation: Operation
    account: str
    destination: str | None
    region: str | None
    member: str | None = None  # R22

    def call(
        self, service: CreditService, contacts: Sequence[Contact], key: str | None
    ) -> ChargeResult:
        if self.operation is Operation.EXPORT:
            invariant(self.destination is not None, "an export has a destination")
            return service.export(
                self.account,
                contacts,
                destination=str(self.destination),
                idempotency_key=key,
                member=self.member,
            )
        if self.operation is Operation.ENRICH:
            return service.enrich(self.account, contacts, idempotency_key=key, member=self.member)
        return service.unlock(self.account, contacts, idempotency_key=key, member=self.member)


def _check_region(region: str | None) -> None:
    if region is None:
        return
    from adapters.phones import check_region  # the `http` extra (phonenumbers)

    try:
        check_region(region)
    except CreditsError as exc:
        fail(f"--region: {exc}", code=EXIT_USAGE)


def charge(
    operation: Operation,
    account: str,
    inputs: list[str],
    *,
    destination: str | None,
    out: Path | None,
    batch: int | None,
    region: str | None,
    email_column: str | None,
    mobile_column: str | None,
    key: str | None,
    output: Format | None,
    verifier_url: str | None,
    verifier_dialect: VerifierDialect,
    demo_verifier: bool,
    db: str,
    member: str | None = None,
) -> None:
    """What `unlock`, `export` and `enrich` share."""
    command = f"credits {operation.value}"
    if not inputs:
        fail(f"{command} needs contacts, or a CSV file (a name ending in .csv)", EXIT_USAGE)
    if any(len(text) > MAX_ARGUMENT_LENGTH for text in inputs):
        fail(f"an argument has more than {MAX_ARGUMENT_LENGTH:,} characters", EXIT_USAGE)
    settings = verifier_settings(db, verifier_url, verifier_dialect, demo_verifier, command=command)
    _check_region(region)
    request = _Request(
        operation=operation,
        account=account,
        destination=destination,
        region=region,
        member=member,
    )
    files = [text for text in inputs if _names_a_file(text)]
    if files:
        if len(inputs) > 1:
            fail("give contacts, or one CSV file, not both (nor two files)", EXIT_USAGE)
        for option, value in (("--format", output), ("--idempotency-key", key)):
            if value is not None:
                fail(f"{option} is for contacts given as arguments, not a CSV file", EXIT_USAGE)
        path = Path(files[0])
        if out is not None and out.resolve() == path.resolve():
            fail("--out must not be the CSV file read: it would be overwritten", EXIT_USAGE)
        with reported(), wired(settings) as wiring:
            _charge_file(
                wiring.service,
                request,
                path,
                out=out,
                batch=batch or DEFAULT_BATCH_ROWS,
                email_column=email_column,
                mobile_column=mobile_column,
                lease_s=wiring.service.policy.lease_s,
            )
        return
    for option, given in (
        ("--out", out),
        ("--batch", batch),
        ("--email-column", email_column),
        ("--mobile-column", mobile_column),
    ):
        if given is not None:
            fail(f"{option} is for a CSV file, not contacts given as arguments", EXIT_USAGE)
    try:
        contacts = [_contact(text, region) for text in inputs]
    except MalformedContact as exc:
        fail(f"{exc}; nothing was charged")
    with reported(), wired(settings) as wiring:
        result = request.call(wiring.service, contacts, key)
        pools = wiring.service.balance(account)
    _print_result(result, request, output or Format.TABLE, balance=(pools.email, pools.mobile))


def _names_a_file(text: str) -> bool:
    # No email ends in ".csv" (no such top-level domain), and no phone number does.
    return text.casefold().endswith(".csv") and "@" not in text


def _contact(text: str, region: str | None) -> Contact:
    channel = Channel.EMAIL if "@" in text else Channel.MOBILE
    return csvfile.read_contact(channel, text, region)


ITEM_COLUMNS = (
    Column("channel", "Channel"),
    Column("value", "Contact"),
    Column("outcome", "Outcome"),
    Column("verdict", "Verdict"),
    Column("credits", "Credits", "number"),
)


def _item_row(item: ItemResult) -> Row:
    return {
        "channel": item.contact.channel.value,
        "value": item.contact.value,
        "outcome": item.outcome.value,
        "verdict": None if item.verdict is None else item.verdict.value,
        "credits": item.credits if item.outcome is Outcome.CHARGED else 0,
    }


def _print_result(
    result: ChargeResult, request: _Request, output: Format, *, balance: tuple[int, int]
) -> None:
    email, mobile = result.charged(Channel.EMAIL), result.charged(Channel.MOBILE)
    replayed = " (a replay of the first request under this key: nothing charged again)"
    title = (
        f"{request.operation.value} for {request.account}: {render.n(email)} email and "
        f"{render.n(mobile)} mobile credits charged" + (replayed if result.replayed else "")
    )
    emit(
        output,
        ITEM_COLUMNS,
        (_item_row(item) for item in result.items),
        title=title,
        items="items",
        head={
            "account": request.account,
            "operation": request.operation.value,
            "destination": request.destination,
            "idempotency_key": result.idempotency_key,
            "replayed": result.replayed,
            "charged": {"email": email, "mobile": mobile},
        },
        counted=lambda n: (
            f"Balance now: {render.n(balance[0])} email, {render.n(balance[1])} mobile."
        ),
    )


# -- a CSV file, batch by batch ----------------------------------------------------------


def _batched(rows: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(rows)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _outcome(item: ItemResult) -> str:
    if item.outcome is Outcome.NOT_VERIFIED and item.verdict is not None:
        return f"{item.outcome.value}:{item.verdict.value}"
    return item.outcome.value


@attrs.define
class _Tally:
    """What a run did, for the summary."""

    rows: int = 0
    batches: int = 0
    replayed: int = 0
    charged: Counter[Channel] = attrs.field(factory=Counter)
    outcomes: Counter[str] = attrs.field(factory=Counter)
    malformed: int = 0  # rows with a problem, or with a malformed datum
    in_flight: list[tuple[int, int]] = attrs.field(factory=list)  # first and last line


@contextlib.contextmanager
def _sink(out: Path | None) -> Iterator[TextIO]:
    if out is None:
        yield sys.stdout
        return
    try:
        file = out.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    with file:
        yield file


def _progress() -> Progress:
    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lines"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,  # a log or a pipe gets the summary only
        # The CSV goes to standard output as it is; lines for people (stderr) go above
        # the bar.
        redirect_stdout=False,
    )


def _run_id(scanned: csvfile.Scanned, request: _Request, batch: int, layout: csvfile.Layout) -> str:
    """The part of a batch's key that names the run: what decides its requests."""
    parts = [
        scanned.digest,
        request.operation.value,
        request.destination or "",
        str(batch),
        request.region or "",
        *([] if request.member is None else [f"member={request.member}"]),
        *(f"{channel.value}={index}" for channel, index in layout.columns.items()),
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _charge_file(
    service: CreditService,
    request: _Request,
    path: Path,
    *,
    out: Path | None,
    batch: int,
    email_column: str | None,
    mobile_column: str | None,
    lease_s: int,
) -> None:
    scanned = csvfile.scan(path)
    reader = csvfile.CsvReader(scanned, email_column=email_column, mobile_column=mobile_column)
    with contextlib.closing(reader):
        # Refused before a line is written: an account that cannot be charged at all.
        sub = service.subscription(request.account)
        if sub.status is Status.LAPSED:
            raise NoActiveSubscription(request.account)
        if sub.status is Status.PAUSED:
            raise SubscriptionPaused(request.account)
        run = _run_id(scanned, request, batch, reader.layout)
        tally = _Tally()
        line = 1
        with _sink(out) as sink, _progress() as progress:
            writer = csvfile.CsvWriter(sink, reader.layout, scanned)
            task = progress.add_task(
                f"{request.operation.value} {path.name}", total=max(scanned.lines - 1, 0)
            )
            try:
                for number, rows in enumerate(_batched(reader.rows(), batch)):
                    line = rows[0].line
                    key = f"csv-{request.operation.value}-{run}-{number}"
                    for row, values in _charge_batch(service, request, reader, rows, key, tally):
                        writer.write(row, values)
                        progress.advance(task, row.lines)
            except KeyboardInterrupt:
                sink.flush()
                fail(
                    f"interrupted at line {line:,} of {path}; the rows before it are written. "
                    f"{_resume(lease_s)}",
                    code=EXIT_INTERRUPTED,
                )
            except CreditsError as exc:
                sink.flush()
                fail(
                    f"stopped at line {line:,} of {path}: {exc}. The rows before it are "
                    f"written; the others were not charged. {_resume(lease_s)}"
                )
    _summarise(tally, request, path, out)
    if tally.in_flight:
        spans = ", ".join(f"lines {a:,} to {b:,}" for a, b in tally.in_flight[:5])
        more = f" and {len(tally.in_flight) - 5} more" if len(tally.in_flight) > 5 else ""
        many = len(tally.in_flight) > 1
        fail(
            f"{len(tally.in_flight)} batch{'es' if many else ''} ({spans}{more}) "
            f"{'were' if many else 'was'} not charged: an earlier run of this command is still "
            f"charging {'them' if many else 'it'}, or died doing so; their rows say in_flight. "
            "Run the same command again once their leases have lapsed (R16), at most "
            f"{lease_s} seconds after that run stopped: the other batches are replayed, not "
            "charged twice"
        )


def _resume(lease_s: int) -> str:
    return (
        "Run the same command again to finish: the batches charged so far are replayed, not "
        f"charged twice (R17); one cut short is taken over once its lease has lapsed, "
        f"{lease_s} seconds after it stopped (R16)."
    )


def _charge_batch(
    service: CreditService,
    request: _Request,
    reader: csvfile.CsvReader,
    rows: list[csvfile.Row],
    key: str,
    tally: _Tally,
) -> Iterator[tuple[csvfile.Row, dict[str, str]]]:
    """Each row of the batch with its outcomes, once the batch is charged."""
    layout, name = reader.layout, reader.scanned.path
    data = [[] if row.problem else csvfile.read_data(row, layout, request.region) for row in rows]
    contacts = [d.contact for found in data for d in found if d.contact is not None]
    items: Iterator[ItemResult] = iter(())
    in_flight = False
    if contacts:
        tally.batches += 1
        try:
            result = _with_retries(service, request, contacts, key)
        except RequestInFlight:
            in_flight = True
            tally.in_flight.append((rows[0].line, rows[-1].line + rows[-1].lines - 1))
        else:
            tally.replayed += result.replayed
            for channel in Channel:
                tally.charged[channel] += 0 if result.replayed else result.charged(channel)
            items = iter(result.items)
    for row, found in zip(rows, data, strict=True):
        tally.rows += 1
        values: dict[str, str] = {}
        if row.problem is not None:
            for channel in layout.columns:
                values[csvfile.OUTCOME_COLUMN[channel]] = f"malformed row: {row.problem}"
            tally.outcomes["malformed row"] += 1
            _report(tally, f"{name} line {row.line:,}: malformed row: {row.problem}")
        for datum in found:
            column = csvfile.OUTCOME_COLUMN[datum.channel]
            if datum.contact is not None:
                outcome = "in_flight" if in_flight else _outcome(next(items))
                values[column] = outcome
                tally.outcomes[outcome] += 1
            elif datum.problem is not None:
                values[column] = f"malformed: {datum.problem}"
                tally.outcomes[f"malformed {datum.channel.value}"] += 1
                _report(
                    tally,
                    f"{name} line {row.line:,}: malformed {datum.channel.value} "
                    f"{csvfile.shown(datum.raw)}: {datum.problem}",
                )
            else:
                values[column] = ""
        yield row, values
    invariant(next(items, None) is None, "every item of a batch goes back to its row")


def _with_retries(
    service: CreditService, request: _Request, contacts: list[Contact], key: str
) -> ChargeResult:
    for attempt in range(HOLD_EXPIRED_ATTEMPTS):
        try:
            return request.call(service, contacts, key)
        except HoldExpired:
            # Nothing was charged, and the service says to retry under the same key.
            if attempt == HOLD_EXPIRED_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _report(tally: _Tally, message: str) -> None:
    tally.malformed += 1
    if tally.malformed <= MAX_REPORTED:
        note(f"{message}; not charged")


def _summarise(tally: _Tally, request: _Request, path: Path, out: Path | None) -> None:
    if tally.malformed > MAX_REPORTED:
        note(
            f"... {tally.malformed - MAX_REPORTED:,} more malformed rows or data, not named "
            "here: the outcome columns of the output mark every one"
        )
    outcomes = ", ".join(f"{name} {render.n(n)}" for name, n in sorted(tally.outcomes.items()))
    replayed = (
        f" ({render.n(tally.replayed)} replayed from an earlier run: nothing charged again)"
        if tally.replayed
        else ""
    )
    note(
        f"{request.operation.value} for {request.account} from {path}: "
        f"{render.n(tally.rows)} rows, {render.n(tally.batches)} "
        f"request{'' if tally.batches == 1 else 's'}{replayed}; "
        f"charged {render.n(tally.charged[Channel.EMAIL])} email and "
        f"{render.n(tally.charged[Channel.MOBILE])} mobile credits; "
        f"outcomes: {outcomes or 'none'}" + ("" if out is None else f"; written to {out}")
    )


# -- the commands --------------------------------------------------------------------------


def unlock(
    account: AccountArgument,
    contacts: ContactsArgument,
    out: OutOption = None,
    batch: BatchOption = None,
    region: RegionOption = None,
    email_column: EmailColumnOption = None,
    mobile_column: MobileColumnOption = None,
    idempotency_key: KeyOption = None,
    member: MemberOption = None,
    output: ChargeFormatOption = None,
    verifier_url: VerifierUrlOption = None,
    verifier_dialect: VerifierDialectOption = VerifierDialect.NATIVE,
    demo_verifier: DemoVerifierOption = False,
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """Unlock contacts: pay once per new, verified datum (R9).

    Reveals them (R9..R12, R15): data the account owns already, repeats and data that
    do not verify VALID are free. A CSV file is charged batch by batch; run the same
    command again after a crash and nothing is charged twice (R17). Needs
    --verifier-url URL or --demo-verifier."""
    charge(
        Operation.UNLOCK,
        account,
        contacts,
        destination=None,
        out=out,
        batch=batch,
        region=region,
        email_column=email_column,
        mobile_column=mobile_column,
        key=idempotency_key,
        member=member,
        output=output,
        verifier_url=verifier_url,
        verifier_dialect=verifier_dialect,
        demo_verifier=demo_verifier,
        db=db,
    )


def export(
    account: AccountArgument,
    contacts: ContactsArgument,
    destination: Annotated[
        str,
        typer.Option(
            "--destination",
            metavar="NAME",
            help="Where the leads go: a file format or CRM (csv, hubspot, ...); on the "
            "ledger entries.",
            callback=bounded(MAX_DESTINATION_LENGTH),
        ),
    ] = "csv",
    out: OutOption = None,
    batch: BatchOption = None,
    region: RegionOption = None,
    email_column: EmailColumnOption = None,
    mobile_column: MobileColumnOption = None,
    idempotency_key: KeyOption = None,
    member: MemberOption = None,
    output: ChargeFormatOption = None,
    verifier_url: VerifierUrlOption = None,
    verifier_dialect: VerifierDialectOption = VerifierDialect.NATIVE,
    demo_verifier: DemoVerifierOption = False,
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """Export leads: charge only new, verified data (R13).

    To a file or CRM; as unlock, with the destination kept on the ledger entries.
    Needs --verifier-url URL or --demo-verifier."""
    charge(
        Operation.EXPORT,
        account,
        contacts,
        destination=destination,
        out=out,
        batch=batch,
        region=region,
        email_column=email_column,
        mobile_column=mobile_column,
        key=idempotency_key,
        member=member,
        output=output,
        verifier_url=verifier_url,
        verifier_dialect=verifier_dialect,
        demo_verifier=demo_verifier,
        db=db,
    )


def enrich(
    account: AccountArgument,
    contacts: ContactsArgument,
    out: OutOption = None,
    batch: BatchOption = None,
    region: RegionOption = None,
    email_column: EmailColumnOption = None,
    mobile_column: MobileColumnOption = None,
    idempotency_key: KeyOption = None,
    member: MemberOption = None,
    output: ChargeFormatOption = None,
    verifier_url: VerifierUrlOption = None,
    verifier_dialect: VerifierDialectOption = VerifierDialect.NATIVE,
    demo_verifier: DemoVerifierOption = False,
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """Charge the new, verified data an enrichment found (R14).

    Finding nothing, or data the account owns, is free. Needs --verifier-url URL or
    --demo-verifier."""
    charge(
        Operation.ENRICH,
        account,
        contacts,
        destination=None,
        out=out,
        batch=batch,
        region=region,
        email_column=email_column,
        mobile_column=mobile_column,
        key=idempotency_key,
        member=member,
        output=output,
        verifier_url=verifier_url,
        verifier_dialect=verifier_dialect,
        demo_verifier=demo_verifier,
        db=db,
    )
