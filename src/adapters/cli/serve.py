"""The HTTP API's commands, added to the `credits` command by `register(app)`.

    credits keys create ACCOUNT [--db URL]     a new API key, printed once, as the last word
    credits keys revoke KEY_ID [--db URL]      revoke a key (its id is printed at creation)
    credits serve [--db URL] [--host 127.0.0.1] [--port 8000]
                  (--verifier-url URL [--verifier-dialect native] | --demo-verifier)

`keys create` brings the schema up to date first (it is the first step of a new
installation); `keys revoke` and `serve` do not: a running server never changes the
schema, and on an old one (or a database file that does not exist) they say to run
`credits db upgrade`.

`keys` needs only the `sql` extra. `serve` needs the `http` extra too (uvicorn,
starlette, httpx); it imports it before anything else, so that without it the entry
point says which extra to install (adapters.cli.main()).

`serve` needs a verifier, and refuses to start without one rather than pick one:
- `--verifier-url URL`: the verification service, called by `HttpVerifier` (our JSON
  protocol, or a vendor dialect with `--verifier-dialect`); the production setting.
- `--demo-verifier`: every datum verifies VALID, in process. For demos and benchmarks
  only: it charges for data nobody verified.
Expected errors are one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from adapters import bootstrap
from adapters.bootstrap import DEFAULT_DATABASE_URL, Settings
from adapters.cli.support import (
    AccountArgument,
    DbOption,
    HelpCommand,
    HelpGroup,
    fail,
    reported,
    wired,
)
from credits_domain.limits import DEFAULT_API_BATCH

DEFAULT_PORT = 8000

keys_app = typer.Typer(
    cls=HelpGroup,
    rich_markup_mode=None,  # our plain help pages (see support.HelpGroup)
    help="Create and revoke API keys for the HTTP API. Each key serves one account.",
    no_args_is_help=True,
)


class VerifierDialect(enum.StrEnum):
    """How the verification service words its answers."""

    NATIVE = "native"
    VENDOR_STATUS = "vendor_status"
    VENDOR_RESULT = "vendor_result"


@keys_app.command("create", cls=HelpCommand)
def keys_create(account: AccountArgument, db: DbOption = DEFAULT_DATABASE_URL) -> None:
    """Create an API key for ACCOUNT, printed once.

    The key is the last word printed: store it now, it is never shown again. The
    database's schema is created or upgraded first."""
    with reported(), wired(Settings(database_url=db, migrate=True)) as wiring:
        issued = wiring.keys.create(account)
    typer.echo(
        f"API key {issued.key_id} created for account {issued.account}. "
        "It is shown only now; send it as 'Authorization: Bearer <key>'. Key:"
    )
    typer.echo(issued.token)


@keys_app.command("revoke", cls=HelpCommand)
def keys_revoke(
    key_id: Annotated[
        str,
        typer.Argument(
            metavar="KEY_ID", help="The key's id, printed when it was created (16 hex digits)."
        ),
    ],
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """Revoke an API key: requests with it are refused from now on.

    A running server refuses it (401) within 5 seconds."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        revoked = wiring.keys.revoke(key_id)
    typer.echo(f"API key {key_id} {'revoked' if revoked else 'was revoked already'}.")


def _settings(db: str, url: str | None, dialect: VerifierDialect, demo: bool) -> Settings:
    if url is not None and demo:
        fail("give either --verifier-url or --demo-verifier, not both", code=2)
    if url is None and not demo:
        fail(
            "credits serve needs a verifier: --verifier-url URL (the verification service) "
            "or --demo-verifier (everything verifies VALID; demos and benchmarks only)",
            code=2,
        )
    if demo:
        return Settings(database_url=db, verifier_script={})  # VALID for every datum
    return Settings(database_url=db, verifier_url=url, verifier_dialect=dialect.value)


def serve(
    db: DbOption = DEFAULT_DATABASE_URL,
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="The interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(metavar="PORT", min=1, max=65535, help="The TCP port to listen on.")
    ] = DEFAULT_PORT,
    verifier_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL", help="The verification service's base URL (the production setting)."
        ),
    ] = None,
    verifier_dialect: Annotated[
        VerifierDialect,
        typer.Option(
            metavar="DIALECT",
            help="How the verification service words its answers: native (our protocol), "
            "vendor_status or vendor_result.",
        ),
    ] = VerifierDialect.NATIVE,
    demo_verifier: Annotated[
        bool,
        typer.Option(
            "--demo-verifier",
            help="Instead of a verification service: every datum verifies VALID, so data "
            "nobody verified are charged (demos and benchmarks only).",
        ),
    ] = False,
    max_batch: Annotated[
        int,
        typer.Option(
            metavar="N", min=1, max=10_000, help="At most N contacts per request (1 to 10,000)."
        ),
    ] = DEFAULT_API_BATCH,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.")
    ] = True,
) -> None:
    """Serve the HTTP API with uvicorn.

    Needs a verifier: --verifier-url URL (the verification service) or --demo-verifier.
    The OpenAPI document is served at /openapi.json. The schema is never changed: run
    `credits db upgrade` first."""
    import uvicorn  # the `http` extra; without it the entry point says which to install

    settings = _settings(db, verifier_url, verifier_dialect, demo_verifier)
    with reported(), wired(settings) as wiring:
        app = bootstrap.build_app(wiring, max_batch=max_batch)
        where = bootstrap.display_database(db)
        typer.echo(f"credits: serving the API on http://{host}:{port} (database {where})")
        uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info")


def register(app: typer.Typer) -> None:
    """Add `keys create`, `keys revoke` and `serve` to the `credits` command."""
    app.add_typer(keys_app, name="keys")
    app.command("serve", cls=HelpCommand)(serve)
