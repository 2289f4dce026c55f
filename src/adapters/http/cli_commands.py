"""The HTTP API's commands, added to the `credits` command by `register(app)`.

    credits keys create ACCOUNT [--db URL]     a new API key, printed once, as the last word
    credits keys revoke KEY_ID [--db URL]      revoke a key (its id is printed at creation)
    credits serve [--db URL] [--host 127.0.0.1] [--port 8000]
                  (--verifier-url URL [--verifier-dialect native] | --demo-verifier)

`keys create` brings the schema up to date first (it is the first step of a new
installation); `keys revoke` and `serve` do not: a running server never changes the
schema, and on an old one they say to run `credits db upgrade`.

`serve` needs a verifier, and refuses to start without one rather than pick one:
- `--verifier-url URL`: the verification service, called by `HttpVerifier` (our JSON
  protocol, or a vendor dialect with `--verifier-dialect`); the production setting.
- `--demo-verifier`: every datum verifies VALID, in process. For demos and benchmarks
  only: it charges for data nobody verified.
Expected errors are one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from adapters.cli_support import DbOption, fail, opened, reported
from adapters.http.api import DEFAULT_MAX_BATCH, create_app
from adapters.http.keys import UnknownApiKey
from adapters.http.sql_keys import SqlApiKeyStore
from adapters.http.verifier import Dialect, HttpVerifier
from adapters.memory import ScriptedVerifier, SystemClock
from adapters.sql import DEFAULT_URL
from credits_domain import CreditService, Verifier

DEFAULT_PORT = 8000

keys_app = typer.Typer(help="API keys of the HTTP API (one account each).", no_args_is_help=True)


@keys_app.command("create")
def keys_create(account: str, db: DbOption = DEFAULT_URL) -> None:
    """Create an API key bound to ACCOUNT. The key is printed once: store it now."""
    with reported(db, UnknownApiKey), opened(db, migrate=True) as repository:
        issued = SqlApiKeyStore(repository.engine).create(account)
    typer.echo(
        f"API key {issued.key_id} created for account {issued.account}. "
        "It is shown only now; send it as 'Authorization: Bearer <key>'. Key:"
    )
    typer.echo(issued.token)


@keys_app.command("revoke")
def keys_revoke(key_id: str, db: DbOption = DEFAULT_URL) -> None:
    """Revoke the API key KEY_ID: requests with it are refused (401) from now on."""
    with reported(db, UnknownApiKey), opened(db, migrate=False) as repository:
        revoked = SqlApiKeyStore(repository.engine).revoke(key_id)
    typer.echo(f"API key {key_id} {'revoked' if revoked else 'was revoked already'}.")


def _verifier(url: str | None, dialect: Dialect, demo: bool) -> Verifier:
    if url is not None and demo:
        fail("give either --verifier-url or --demo-verifier, not both", code=2)
    if url is not None:
        with reported(url):
            return HttpVerifier(url, dialect=dialect)
    if demo:
        return ScriptedVerifier()  # VALID for every datum
    fail(
        "credits serve needs a verifier: --verifier-url URL (the verification service) "
        "or --demo-verifier (everything verifies VALID; demos and benchmarks only)",
        code=2,
    )


def serve(
    db: DbOption = DEFAULT_URL,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = DEFAULT_PORT,
    verifier_url: Annotated[
        str | None,
        typer.Option(metavar="URL", help="Base URL of the verification service."),
    ] = None,
    verifier_dialect: Annotated[
        Dialect, typer.Option(help="How the verification service words its answers.")
    ] = Dialect.NATIVE,
    demo_verifier: Annotated[
        bool,
        typer.Option(help="Every datum verifies VALID (demos, benchmarks; never production)."),
    ] = False,
    max_batch: Annotated[
        int, typer.Option(min=1, max=10_000, help="Contacts per request at most.")
    ] = DEFAULT_MAX_BATCH,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
) -> None:
    """Serve the HTTP API (OpenAPI document at /openapi.json) with uvicorn."""
    verifier = _verifier(verifier_url, verifier_dialect, demo_verifier)
    try:
        with reported(db, UnknownApiKey), opened(db, migrate=False) as repository:
            keys = SqlApiKeyStore(repository.engine)
            service = CreditService(repository=repository, verifier=verifier, clock=SystemClock())
            app = create_app(service, keys, max_batch=max_batch)
            typer.echo(f"credits: serving the API on http://{host}:{port} (database {db})")
            uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info")
    finally:
        if isinstance(verifier, HttpVerifier):
            verifier.close()


def register(app: typer.Typer) -> None:
    """Add `keys create`, `keys revoke` and `serve` to the `credits` command."""
    app.add_typer(keys_app, name="keys")
    app.command("serve")(serve)


if __name__ == "__main__":  # `python -m adapters.http.cli_commands serve ...`
    standalone = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(standalone)
    standalone(prog_name="credits")
