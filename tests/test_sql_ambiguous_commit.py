"""The ambiguous commit on a real PostgreSQL: a TCP proxy on 127.0.0.1 drops the
connection right after forwarding the statement that commits (the server commits, the
client hears nothing), or right before (nothing reaches the server). Either way the
caller sees StorageUnavailable, and the retry with the same key neither loses nor doubles
a charge (R12, R17). Both charging paths: the one-call functions, whose call commits, and
units of work, whose COMMIT does."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
import sqlalchemy as sa

from adapters.clock import ManualClock
from adapters.sql import SqlRepository
from adapters.verifier import ScriptedVerifier
from credits_domain import (
    ChargePolicy,
    Contact,
    Credits,
    CreditService,
    Repository,
    RequestInFlight,
    StorageUnavailable,
)
from credits_domain.testing import ChosenPaths
from tcp_proxy import TcpProxy
from test_sql_charging import START

pytestmark = pytest.mark.postgres
POLICY = ChargePolicy(hold_ttl_s=60)
# psycopg's COMMIT, as the wire carries it: a Query message ('Q', its length, the text).
# Matching the bare word would trap "BEGIN ISOLATION LEVEL READ COMMITTED" first.
COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"


@pytest.mark.parametrize("when", ["after", "before"])
@pytest.mark.parametrize("path", ["one call", "units of work"])
def test_a_cut_around_the_commit_neither_loses_nor_doubles_a_charge(
    postgres_url: str, when: str, path: str
) -> None:
    url = sa.make_url(postgres_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        with SqlRepository.connect(proxied, migrate=True) as repository:
            store: Repository = repository
            if path == "units of work":
                store = ChosenPaths(repository, reserve=False, settle=False)
            clock = ManualClock(START)
            trap = TrapOnce(proxy)
            verifier = ScriptedVerifier(before_answer=trap.arm)  # runs between the phases
            service = CreditService(repository=store, verifier=verifier, clock=clock, policy=POLICY)
            service.subscribe("acme", "boost")
            batch = [Contact.email("ann@corp.com"), Contact.email("bob@corp.com")]
            # The one-call settle is the first message after the verifier that carries the
            # batch's data (its Bind: psycopg prepares the statement apart); units of work
            # commit with a COMMIT of their own.
            needle = b"bob@corp.com" if path == "one call" else COMMIT
            if path == "units of work":
                # The reserve's COMMIT passes; the settle's is the one trapped.
                service.unlock("acme", [Contact.email("warm@corp.com")])
            trap.set(needle, when)
            with pytest.raises(StorageUnavailable):
                service.unlock("acme", batch, idempotency_key="import-1")
            assert proxy.sprung == 1
            if when == "before":
                # Nothing was charged; the hold waits for its expiry (R16), then the
                # retry takes the request over.
                with pytest.raises(RequestInFlight):
                    service.unlock("acme", batch, idempotency_key="import-1")
                clock.advance(timedelta(seconds=POLICY.hold_ttl_s + 1))
            done = service.unlock("acme", batch, idempotency_key="import-1")
            assert done.replayed is (when == "after")
            assert done.charged_credits == Credits(email=2)
            charged = [e.cause.datum for e in service.statement("acme") if e.amount < 0]
            assert sorted(str(d) for d in charged if d != "email:warm@corp.com") == [
                "email:ann@corp.com",
                "email:bob@corp.com",
            ]
            balance = service.balance("acme")
            assert balance.email == balance.email_available == 12_000 - len(charged)


class TrapOnce:
    """Arms the proxy's trap from inside the verifier, so that the next message holding
    the needle is the settle's (the verifier runs between reserve and settle, R16), once."""

    def __init__(self, proxy: TcpProxy) -> None:
        self._proxy = proxy
        self._needle: bytes | None = None
        self._when = "after"

    def set(self, needle: bytes, when: str) -> None:
        self._needle, self._when = needle, when

    def arm(self, batch: Sequence[Contact]) -> None:
        if self._needle is not None:
            self._proxy.trap(self._needle, when=self._when)
            self._needle = None
