"""`credits webhooks add|list|remove|deliver`: where an account's events are sent (R24).

    credits webhooks add ACCOUNT URL [--db URL]     prints the signing secret, last word
    credits webhooks list ACCOUNT [--format FORMAT] [--db URL]
    credits webhooks remove ACCOUNT ENDPOINT_ID [--db URL]
    credits webhooks deliver [--max-endpoints N] [--max-events N] [--timeout S] [--db URL]

`deliver` runs one bounded delivery pass and says what it delivered and what failed
(it needs the `http` extra: httpx); `credits serve` runs passes continuously.
"""

from __future__ import annotations

import secrets
from typing import Annotated

import typer

from adapters import bootstrap
from adapters.bootstrap import DEFAULT_DATABASE_URL, Settings
from adapters.cli.output import Column, emit
from adapters.cli.support import (
    AccountArgument,
    DbOption,
    Format,
    FormatOption,
    HelpCommand,
    HelpGroup,
    bounded,
    reported,
    when,
    wired,
)
from adapters.webhooks import MAX_ENDPOINTS_PER_ACCOUNT, MAX_URL_LENGTH, Endpoint, register

webhooks_app = typer.Typer(
    cls=HelpGroup,
    rich_markup_mode=None,  # our plain help pages (see support.HelpGroup)
    help="Webhook endpoints: an account's events (R24) sent, signed, to a URL.",
    no_args_is_help=True,
)

UrlArgument = Annotated[
    str,
    typer.Argument(
        metavar="URL",
        help=f"Where to POST the events: http:// or https://, at most {MAX_URL_LENGTH:,} "
        "characters.",
        callback=bounded(MAX_URL_LENGTH),
    ),
]
EndpointArgument = Annotated[
    str,
    typer.Argument(
        metavar="ENDPOINT_ID",
        help="The endpoint's id, printed when it was added (ep_ and 24 hex digits).",
        callback=bounded(64),
    ),
]


def add(account: AccountArgument, url: UrlArgument, db: DbOption = DEFAULT_DATABASE_URL) -> None:
    """Send ACCOUNT's events to URL, signed as Standard Webhooks says.

    The signing secret is the last word printed: give it to the receiver, which checks
    each request's webhook-signature with it. The endpoint gets the events that happen
    from now on, in order."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        endpoint = register(
            wiring.webhooks,
            account,
            url,
            at=wiring.clock.now(),
            random_bytes=secrets.token_bytes,
        )
    typer.echo(
        f"Webhook endpoint {endpoint.endpoint_id} added for {account} (at most "
        f"{MAX_ENDPOINTS_PER_ACCOUNT} an account). Verify each request with its signing secret:"
    )
    typer.echo(endpoint.secret)


ENDPOINT_COLUMNS = (
    Column("endpoint_id", "Endpoint"),
    Column("url", "URL"),
    Column("status", "Status"),
    Column("last_seq", "Last event", "number"),
    Column("attempts", "Failed tries", "number"),
    Column("failing_since", "Failing since", shown="data"),
    Column("next_attempt_at", "Next try", shown="data"),
    Column("disabled_at", "Disabled", shown="data"),
    Column("disabled_reason", "Why", shown="data"),
)


def status(endpoint: Endpoint) -> str:
    if endpoint.disabled_at is not None:
        return f"disabled {when(endpoint.disabled_at)}: {endpoint.disabled_reason}"
    if endpoint.failing_since is not None and endpoint.next_attempt_at is not None:
        return (
            f"failing since {when(endpoint.failing_since)}, "
            f"next try {when(endpoint.next_attempt_at)}"
        )
    return "active"


def _row(endpoint: Endpoint) -> dict[str, object]:
    return {
        "endpoint_id": endpoint.endpoint_id,
        "url": endpoint.url,
        "status": "disabled"
        if endpoint.disabled
        else ("failing" if endpoint.failing_since else "active"),
        "last_seq": endpoint.last_seq,
        "attempts": endpoint.attempts,
        "failing_since": endpoint.failing_since,
        "next_attempt_at": endpoint.next_attempt_at,
        "disabled_at": endpoint.disabled_at,
        "disabled_reason": endpoint.disabled_reason,
    }


def list_endpoints(
    account: AccountArgument,
    output: FormatOption = Format.TABLE,
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """List ACCOUNT's webhook endpoints and how their delivery goes (never the secrets).

    A disabled endpoint says why (3 days of failures); remove it and add it again."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        found = list(wiring.webhooks.endpoints(account))
    if output is Format.TABLE:
        rows = [{**_row(e), "status": status(e)} for e in found]
    else:
        rows = [_row(e) for e in found]
    emit(
        output,
        ENDPOINT_COLUMNS,
        rows,
        title=f"Webhook endpoints of {account}",
        items="endpoints",
        empty=f"{account} has no webhook endpoints.",
    )


def remove(
    account: AccountArgument, endpoint_id: EndpointArgument, db: DbOption = DEFAULT_DATABASE_URL
) -> None:
    """Stop sending ACCOUNT's events to the endpoint ENDPOINT_ID, and forget it."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        wiring.webhooks.remove(account, endpoint_id)
    typer.echo(f"Webhook endpoint {endpoint_id} of {account} removed.")


def deliver(
    max_endpoints: Annotated[
        int,
        typer.Option(metavar="N", min=1, max=1_000, help="At most N endpoints (1 to 1,000)."),
    ] = 100,
    max_events: Annotated[
        int,
        typer.Option(
            metavar="N", min=1, max=1_000, help="At most N events per endpoint (1 to 1,000)."
        ),
    ] = 100,
    timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS", min=0.1, max=60, help="Give up on a request after SECONDS."
        ),
    ] = 10.0,
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """Run one delivery pass: send each due endpoint its pending events, in order.

    A failed request is retried by a later pass, after a growing wait; an endpoint
    failing for 3 days is disabled. `credits serve` delivers continuously."""
    from adapters.webhooks.delivery import DeliveryLimits  # the `http` extra (httpx)

    limits = DeliveryLimits(max_endpoints=max_endpoints, max_events=max_events, timeout_s=timeout)
    with reported(), wired(Settings(database_url=db)) as wiring:
        report = bootstrap.deliver_webhooks(wiring, limits=limits)
    for attempt in report.attempts:
        where = (
            f"{attempt.account} event {attempt.seq} ({attempt.event_id}) to {attempt.endpoint_id}"
        )
        if attempt.ok:
            typer.echo(f"delivered {where}")
        elif attempt.disabled:
            typer.echo(f"failed {where}: {attempt.outcome}; the endpoint is disabled (3 days)")
        else:
            typer.echo(f"failed {where}: {attempt.outcome}; next try at {attempt.retry_at}")
    typer.echo(
        f"Delivered {report.delivered}, failed {report.failed} "
        f"({report.endpoints} endpoint{'' if report.endpoints == 1 else 's'} due)."
    )


webhooks_app.command("add", cls=HelpCommand)(add)
webhooks_app.command("list", cls=HelpCommand)(list_endpoints)
webhooks_app.command("remove", cls=HelpCommand)(remove)
webhooks_app.command("deliver", cls=HelpCommand)(deliver)
