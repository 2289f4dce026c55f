"""The composition root: the one place that wires the core's ports to adapters.

    with bootstrap.build(Settings(database_url="sqlite:///credits.db")) as wiring:
        wiring.service.balance("acme")

`build` makes a CreditService (and the API key store) from `Settings`: which database,
which verifier, which clock. The driving adapters (the CLI, `credits serve`) get storage
and the verifier only from here; nothing is connected or started at import time, and
the SQL adapter is imported only when a database is opened, so the core and the memory
adapter work without the `sql` extra.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import attrs

from adapters.clock import SystemClock
from credits_domain import (
    ApiKeyStore,
    ChargePolicy,
    Clock,
    CreditService,
    InvalidRequest,
    Plan,
    Repository,
    Verdict,
    Verifier,
)

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette

    from adapters.api.sandbox import Sandbox
    from adapters.webhooks import EndpointStore, EventSource
    from adapters.webhooks.delivery import DeliveryLimits, PassReport
    from adapters.webhooks.runner import WebhookRunner

DEFAULT_DATABASE_URL = "sqlite:///credits.db"
"""The embedded default: an SQLite file in the current directory."""
DEMO_DATABASE_URL = "sqlite:///credits-demo.db"
"""Where `credits demo` writes unless told: a file of its own beside the default, so
that the demo's accounts (acme, ...) never take the names of a real walk-through."""


@attrs.frozen(kw_only=True)
class Settings:
    """What to wire.

    - `database_url`: `sqlite:///path.db` (the default, `credits.db` here) or
      `postgresql+psycopg://user@host/db`; `migrate=True` upgrades its schema first.
    - The verifier, one of: `verifier_url` (the verification service, production);
      `verifier_script` (a ScriptedVerifier: the script's verdicts, VALID for the rest;
      an empty script verifies everything VALID: demos and benchmarks only);
      `sandbox_verifier` (test mode's magic values, `credits_domain.sandbox`); none
      (NoVerifier: the service reads and renews, and any charge is a bug).
    """

    database_url: str = DEFAULT_DATABASE_URL
    migrate: bool = False
    verifier_url: str | None = None
    verifier_dialect: str = "native"
    verifier_script: Mapping[str, Verdict] | None = None
    sandbox_verifier: bool = False
    policy: ChargePolicy = attrs.field(factory=ChargePolicy)

    def __attrs_post_init__(self) -> None:
        if self.verifier_url is not None and self.verifier_script is not None:
            raise InvalidRequest("give either a verifier URL or a verifier script, not both")
        if self.sandbox_verifier and (self.verifier_url, self.verifier_script) != (None, None):
            raise InvalidRequest("the sandbox verifier takes no verifier URL or script")


@attrs.define
class Wiring:
    """What `build` made; `close()` (or leaving the `with` block) releases it."""

    service: CreditService
    repository: Repository
    keys: ApiKeyStore
    verifier: Verifier
    clock: Clock
    webhooks: EndpointStore  # the webhook endpoints (R24), in the same database
    _closers: list[object] = attrs.field(factory=list, alias="closers")

    def close(self) -> None:
        for closer in reversed(self._closers):
            closer.close()  # type: ignore[attr-defined]
        self._closers.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def build_verifier(settings: Settings) -> Verifier:
    from adapters.verifier import NoVerifier, SandboxVerifier, ScriptedVerifier

    if settings.sandbox_verifier:
        return SandboxVerifier()
    if settings.verifier_url is not None:
        # Only the HTTP client needs the `http` extra (httpx): reading commands run without.
        from adapters.verifier import Dialect, HttpVerifier

        try:
            dialect = Dialect(settings.verifier_dialect)
        except ValueError:
            known = ", ".join(d.value for d in Dialect)
            raise InvalidRequest(
                f"verifier dialect must be one of {known}, got {settings.verifier_dialect!r}"
            ) from None
        return HttpVerifier(settings.verifier_url, dialect=dialect)
    if settings.verifier_script is not None:
        # Nothing reads what it was asked: recording it would grow with every request.
        return ScriptedVerifier(settings.verifier_script, record_calls=False)
    return NoVerifier()


def build(settings: Settings, *, clock: Clock | None = None) -> Wiring:
    """Open the database, make the verifier, and wire a CreditService over them."""
    from adapters.sql import SqlApiKeyStore, SqlEndpointStore, SqlRepository

    clock = clock if clock is not None else SystemClock()
    repository = SqlRepository.connect(settings.database_url, migrate=settings.migrate)
    closers: list[object] = [repository]
    try:
        verifier = build_verifier(settings)
        if hasattr(verifier, "close"):
            closers.append(verifier)
        keys = SqlApiKeyStore(repository.engine, clock=clock)
    except BaseException:
        for closer in reversed(closers):
            closer.close()  # type: ignore[attr-defined]
        raise
    from adapters.heartbeat import ThreadHeartbeat

    service = CreditService(
        repository=repository,
        verifier=verifier,
        clock=clock,
        policy=settings.policy,
        heartbeat=ThreadHeartbeat(),  # renews a request's lease while it is verified (R16)
    )
    return Wiring(
        service=service,
        repository=repository,
        keys=keys,
        verifier=verifier,
        clock=clock,
        webhooks=SqlEndpointStore(repository.engine),
        closers=closers,
    )


def event_source(service: CreditService) -> EventSource:
    """The outbox that webhooks deliver (R24): the service's `events`."""
    return service


def deliver_webhooks(
    wiring: Wiring,
    *,
    limits: DeliveryLimits | None = None,
    after_id: str | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> PassReport:
    """One bounded delivery pass over the wiring's endpoints (`credits webhooks deliver`)."""
    import random

    from adapters.webhooks.delivery import DeliveryLimits, deliver_pass, new_client

    limits = limits if limits is not None else DeliveryLimits()
    with new_client(limits.timeout_s) as client:
        return deliver_pass(
            store=wiring.webhooks,
            source=event_source(wiring.service),
            client=client,
            clock=wiring.clock,
            draw=random.random,
            limits=limits,
            after_id=after_id,
            stopping=stopping,
        )


def webhook_runner(wiring: Wiring, *, interval_s: float = 1.0) -> WebhookRunner:
    """Delivery passes in a background thread (`credits serve`); start() and stop() it."""
    from adapters.webhooks.runner import WebhookRunner

    runner = WebhookRunner(
        lambda after_id: deliver_webhooks(wiring, after_id=after_id, stopping=runner.stopping),
        interval_s=interval_s,
    )
    return runner


def build_app(
    wiring: Wiring, *, max_batch: int | None = None, sandbox: Sandbox | None = None
) -> Starlette:
    """The HTTP API over a wiring's service and key store; with `sandbox`, in test mode."""
    from adapters.api import create_app

    if max_batch is None:
        return create_app(wiring.service, wiring.keys, sandbox=sandbox)
    return create_app(wiring.service, wiring.keys, max_batch=max_batch, sandbox=sandbox)


def build_sandbox(wiring: Wiring, *, max_accounts: int) -> Sandbox:
    """Test mode's sandbox: per sandbox account, a CreditService over the wiring's
    repository and verifier with a ManualClock of its own, started at the wiring's clock
    in whole seconds (so that a client can reach a renewal's exact instant)."""
    from adapters.api.sandbox import Sandbox
    from adapters.clock import ManualClock

    policy = wiring.service.policy

    def new_service(clock: Clock, plans: Mapping[str, Plan]) -> CreditService:
        return CreditService(
            repository=wiring.repository,
            verifier=wiring.verifier,
            clock=clock,
            policy=policy,
            plans=plans,
        )

    def new_clock() -> ManualClock:
        return ManualClock(wiring.clock.now().replace(microsecond=0))

    return Sandbox(new_service, new_clock, max_accounts=max_accounts)


def server_config(
    app: Starlette,
    *,
    host: str,
    port: int,
    access_log: bool = True,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    **limits: Any,
) -> uvicorn.Config:
    """uvicorn's configuration of the API, bounded by `limits` (adapters.api.server's
    ServerLimits fields; each one not given keeps its default)."""
    from adapters.api.server import ServerLimits
    from adapters.api.server import server_config as bounded_config

    return bounded_config(
        app,
        host=host,
        port=port,
        limits=ServerLimits(**limits),
        access_log=access_log,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )


def upgrade_database(url: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Bring the schema of the database at `url` to the newest revision; returns the
    revisions (before, after)."""
    from adapters.sql import upgrade

    done = upgrade(url)
    return done.before, done.after


def describe_database(url: str) -> str:
    """Where the database at `url` lives, for people (no password)."""
    from adapters.sql import describe_url

    return describe_url(url)


def display_database(url: str) -> str:
    """The URL without its password."""
    from adapters.sql import display_url

    return display_url(url)


def database_file(url: str) -> str | None:
    """The file an SQLite URL names (None for a server or in-memory database)."""
    from adapters.sql import sqlite_file

    found = sqlite_file(url)
    return None if found is None else str(found)
