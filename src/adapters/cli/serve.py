"""The HTTP API's commands, added to the `credits` command by `register(app)`.

    credits keys create ACCOUNT [--db URL]     a new API key, printed once, as the last word
    credits keys list [ACCOUNT] [--after KEY_ID] [--limit N] [--format FORMAT] [--db URL]
    credits keys revoke KEY_ID [--db URL]      revoke a key (its id is printed at creation)
    credits serve [--db URL] [--host 127.0.0.1] [--port 8000]
                  (--verifier-url URL [--verifier-dialect native] | --demo-verifier)
                  [--ssl-certfile FILE --ssl-keyfile FILE] [--max-header-bytes BYTES]
                  [--header-timeout S] [--body-timeout S] [--keep-alive S]
                  [--max-connections N] [--max-in-flight N]
                  [--test-mode [--max-sandbox-accounts N]]

`keys create` brings the schema up to date first (it is the first step of a new
installation); `keys revoke` and `serve` do not: a running server never changes the
schema, and on an old one (or a database file that does not exist) they say to run
`credits db upgrade`.

`keys` needs only the `sql` extra. `serve` needs the `http` extra too (uvicorn,
starlette, httpx); it imports it before anything else, so that without it the entry
point says which extra to install (adapters.cli.main()).

`serve` also delivers webhooks (R24) continuously, in a background thread: one bounded
pass a second (adapters.webhooks.runner), stopped when the server stops.

`serve` needs a verifier, and refuses to start without one rather than pick one:
- `--verifier-url URL`: the verification service, called by `HttpVerifier` (our JSON
  protocol, or a vendor dialect with `--verifier-dialect`); the production setting.
- `--demo-verifier`: every datum verifies VALID, in process. For demos and benchmarks
  only: it charges for data nobody verified.
- `--test-mode`: a sandbox (adapters.api.sandbox), on the loopback only: sandbox
  accounts with their own test clocks, verified by magic contact values
  (credits_domain.sandbox). For checking a client, or `credits conformance`.
Expected errors are one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from adapters import bootstrap
from adapters.bootstrap import DEFAULT_DATABASE_URL, Settings
from adapters.cli.output import Column, emit
from adapters.cli.support import (
    EXIT_USAGE,
    AccountArgument,
    DbOption,
    DemoVerifierOption,
    Format,
    FormatOption,
    HelpCommand,
    HelpGroup,
    VerifierDialect,
    VerifierDialectOption,
    VerifierUrlOption,
    bounded,
    fail,
    limit_option,
    reported,
    verifier_settings,
    wired,
)
from credits_domain import ApiKeyInfo
from credits_domain.limits import DEFAULT_API_BATCH, MAX_ACCOUNT_ID_LENGTH, MAX_API_KEYS_PAGE
from credits_domain.sandbox import DEFAULT_MAX_SANDBOX_ACCOUNTS

DEFAULT_PORT = 8000


class LIMITS:
    """The defaults of adapters.api.server.ServerLimits (a test keeps them equal), here
    as numbers: uvicorn is imported only when `serve` runs (the `http` extra)."""

    max_header_bytes = 16_384
    header_timeout_s = 10.0
    body_timeout_s = 30.0
    keep_alive_s = 5
    max_connections = 256
    max_in_flight = 40


keys_app = typer.Typer(
    cls=HelpGroup,
    rich_markup_mode=None,  # our plain help pages (see support.HelpGroup)
    help="Create, list and revoke API keys for the HTTP API. Each key serves one account.",
    no_args_is_help=True,
)


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


KEY_COLUMNS = (
    Column("key_id", "Key id"),
    Column("account", "Account"),
    Column("status", "Status"),
    Column("created_at", "Created (UTC)"),
    Column("revoked_at", "Revoked (UTC)"),
)


def _key_row(key: ApiKeyInfo) -> dict[str, object]:
    return {
        "key_id": key.key_id,
        "account": key.account,
        "status": "active" if key.active else "revoked",
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


@keys_app.command("list", cls=HelpCommand)
def keys_list(
    account: Annotated[
        str | None,
        typer.Argument(
            metavar="ACCOUNT",
            help="Only the keys of this account (default: all).",
            callback=bounded(MAX_ACCOUNT_ID_LENGTH),
        ),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option(
            "--after",
            metavar="KEY_ID",
            help="Start after this key id (the last of the page before).",
            callback=bounded(16),
        ),
    ] = None,
    limit: Annotated[int, limit_option("keys", MAX_API_KEYS_PAGE)] = 100,
    output: FormatOption = Format.TABLE,
    db: DbOption = DEFAULT_DATABASE_URL,
) -> None:
    """List API keys, active and revoked, by key id (never the keys themselves).

    A full page ends with the --after to give for the next one."""
    with reported(), wired(Settings(database_url=db)) as wiring:
        keys = list(wiring.keys.list_keys(account=account, after=after, limit=limit + 1))
    page, more = keys[:limit], len(keys) > limit
    next_after = page[-1].key_id if more else None
    emit(
        output,
        KEY_COLUMNS,
        (_key_row(key) for key in page),
        title="API keys" if account is None else f"API keys of {account}",
        items="keys",
        trailer=lambda: {"next_after": next_after},
        more=None if next_after is None else f"--after {next_after}",
        empty="No keys.",
    )


def serve(
    db: DbOption = DEFAULT_DATABASE_URL,
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="The interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(metavar="PORT", min=1, max=65535, help="The TCP port to listen on.")
    ] = DEFAULT_PORT,
    verifier_url: VerifierUrlOption = None,
    verifier_dialect: VerifierDialectOption = VerifierDialect.NATIVE,
    demo_verifier: DemoVerifierOption = False,
    max_batch: Annotated[
        int,
        typer.Option(
            metavar="N", min=1, max=10_000, help="At most N contacts per request (1 to 10,000)."
        ),
    ] = DEFAULT_API_BATCH,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.")
    ] = True,
    ssl_certfile: Annotated[
        str | None,
        typer.Option(metavar="FILE", help="Serve HTTPS with this PEM certificate (chain)."),
    ] = None,
    ssl_keyfile: Annotated[
        str | None, typer.Option(metavar="FILE", help="The certificate's PEM private key.")
    ] = None,
    max_header_bytes: Annotated[
        int,
        typer.Option(
            metavar="BYTES",
            min=1024,
            max=1_048_576,
            help="Request line and headers above BYTES are refused (431).",
        ),
    ] = LIMITS.max_header_bytes,
    header_timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            min=0.1,
            max=600,
            help="Close a connection whose request headers take longer.",
        ),
    ] = LIMITS.header_timeout_s,
    body_timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            min=0.1,
            max=3600,
            help="Close a connection whose request body takes longer, after its headers.",
        ),
    ] = LIMITS.body_timeout_s,
    keep_alive: Annotated[
        int,
        typer.Option(
            metavar="SECONDS", min=1, max=600, help="Close an idle connection after SECONDS."
        ),
    ] = LIMITS.keep_alive_s,
    max_connections: Annotated[
        int,
        typer.Option(
            metavar="N", min=1, max=100_000, help="Open connections beyond N get 503 and close."
        ),
    ] = LIMITS.max_connections,
    max_in_flight: Annotated[
        int,
        typer.Option(metavar="N", min=1, max=10_000, help="Requests in flight beyond N get 503."),
    ] = LIMITS.max_in_flight,
    test_mode: Annotated[
        bool,
        typer.Option(
            "--test-mode",
            help="Serve a sandbox on the loopback only: POST /v1/test/accounts makes "
            "accounts with clocks of their own; verdicts come from magic contact values "
            "(see the README). Not with a verifier option.",
        ),
    ] = False,
    max_sandbox_accounts: Annotated[
        int,
        typer.Option(
            metavar="N",
            min=1,
            max=1_000_000,
            help="Test mode: at most N sandbox accounts (then 409 sandbox-full).",
        ),
    ] = DEFAULT_MAX_SANDBOX_ACCOUNTS,
) -> None:
    """Serve the HTTP API with uvicorn.

    Needs a verifier: --verifier-url URL (the verification service) or --demo-verifier.
    Webhooks (credits webhooks add) are delivered in the background while it runs.
    The OpenAPI document is served at /openapi.json. The schema is never changed: run
    `credits db upgrade` first. Listening beyond the loopback without TLS warns: API
    keys would cross the network in clear (give --ssl-certfile and --ssl-keyfile, or put
    a TLS proxy in front)."""
    import uvicorn  # the `http` extra; without it the entry point says which to install

    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise typer.BadParameter("give both --ssl-certfile and --ssl-keyfile, or neither")
    if test_mode:
        settings = _test_mode_settings(db, host, verifier_url, demo_verifier)
    else:
        settings = verifier_settings(
            db, verifier_url, verifier_dialect, demo_verifier, command="credits serve"
        )
    with reported(), wired(settings) as wiring:
        sandbox = (
            bootstrap.build_sandbox(wiring, max_accounts=max_sandbox_accounts)
            if test_mode
            else None
        )
        app = bootstrap.build_app(wiring, max_batch=max_batch, sandbox=sandbox)
        config = bootstrap.server_config(
            app,
            host=host,
            port=port,
            access_log=access_log,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            max_header_bytes=max_header_bytes,
            header_timeout_s=header_timeout,
            body_timeout_s=body_timeout,
            keep_alive_s=keep_alive,
            max_connections=max_connections,
            max_in_flight=max_in_flight,
        )
        tls = ssl_certfile is not None
        if not tls and not _loopback(host):
            typer.echo(
                f"credits: warning: serving on {host} without TLS: API keys cross the "
                "network in clear; give --ssl-certfile and --ssl-keyfile, or put a TLS "
                "proxy in front",
                err=True,
            )
        where = bootstrap.display_database(db)
        scheme = "https" if tls else "http"
        mode = " in TEST MODE (sandbox accounts, magic verdicts)" if test_mode else ""
        typer.echo(f"credits: serving the API{mode} on {scheme}://{host}:{port} (database {where})")
        # Webhooks (R24) in a thread of their own, outside every request: a slow or dead
        # endpoint delays only its own deliveries. Stopped once the server has stopped.
        webhooks = bootstrap.webhook_runner(wiring)
        webhooks.start()
        try:
            uvicorn.Server(config).run()
        finally:
            webhooks.stop()


def _test_mode_settings(db: str, host: str, verifier_url: str | None, demo: bool) -> Settings:
    if verifier_url is not None or demo:
        fail(
            "--test-mode verifies by magic contact values; give no --verifier-url or "
            "--demo-verifier with it",
            code=EXIT_USAGE,
        )
    if not _loopback(host):
        fail(
            f"--test-mode serves on the loopback only (127.0.0.1, ::1 or localhost), not "
            f"{host}: anyone reaching it could make accounts and move their clocks",
            code=EXIT_USAGE,
        )
    return Settings(database_url=db, sandbox_verifier=True)


def _loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any interface


def register(app: typer.Typer) -> None:
    """Add `keys create|list|revoke` and `serve` to the `credits` command."""
    app.add_typer(keys_app, name="keys")
    app.command("serve", cls=HelpCommand)(serve)
