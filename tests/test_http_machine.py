"""The API behaves exactly like the core: a state machine drives both side by side.

One side is the HTTP API under uvicorn on 127.0.0.1, called with httpx; the other is an
in-process `CreditService` on its own `InMemoryRepository`. Both share one ManualClock
and one ScriptedVerifier, and use the harness's plans and contact universe
(`credits_domain.testing`). Every operation runs on both sides, and the API's answer
must be exactly what the core's result (or error) renders to: same status, same JSON,
the same problem `type` and `detail` for each refusal. After every step, both sides'
balances and full statements are compared through the API.

The expected JSON is written here, by this module's own small renderer (`Expected`),
from the documented wire format, not by the API's renderers: a rendering bug in the API
shows as a difference instead of being repeated on both sides.

The harness's own machine (`make_state_machine`) takes a repository factory, which does
not fit a system reached over HTTP; this machine reuses its plans, universe and request
strategy, and compares with the core instead of the reference model (which the
harness already compares the core with).

Idempotency keys are drawn from a small set per account, so replays (R17: the same body)
and key reuse with another payload (409) happen often. Cross-account calls must answer
404 and change nothing (isolation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import attrs
import httpx
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.api import create_app
from adapters.clock import ManualClock
from adapters.memory import InMemoryApiKeyStore, InMemoryRepository
from adapters.verifier import ScriptedVerifier
from credits_domain import (
    Balance,
    ChargeResult,
    Contact,
    Credits,
    CreditsError,
    CreditService,
    LedgerEntry,
    Outcome,
    Period,
    PeriodOutOfRange,
    PlanChange,
    Subscription,
    Verdict,
)
from credits_domain.testing.http import PROBLEMS as HTTP_PROBLEMS
from credits_domain.testing.http import spelled
from credits_domain.testing.machine import ACCOUNTS, MACHINE_PLANS, START, UNIVERSE
from credits_domain.testing.strategies import requests
from http_api_support import client, serve

CATALOGUE = {plan.name: plan for plan in MACHINE_PLANS}
PLAN_NAMES = [*CATALOGUE, "no-such-plan"]
STATEMENT_PAGE = 1000
MAX_STATEMENT_PAGES = 50  # bounds the invariant's reading; the machine writes far fewer


@attrs.define
class Switch:
    """An ASGI app that forwards to the current example's app: one server for the run."""

    app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "no example is running"
        await self.app(scope, receive, send)


@attrs.frozen
class Served:
    base_url: str
    switch: Switch


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    switch = Switch()
    with serve(switch) as base_url:
        yield Served(base_url=base_url, switch=switch)


def dressed(contact: Contact, style: int) -> str:
    """The datum as a caller might send it; the core puts it back in canonical form."""
    return spelled(contact.channel.value, contact.value, style)


Rendered = tuple[int, Any]
Json = dict[str, Any]

# The refusals the machine can meet, as the API documents them (status, problem slug). A
# refusal missing here fails the run: a new one must be added on purpose.
PROBLEMS: Final[dict[type[CreditsError], tuple[int, str]]] = {
    **HTTP_PROBLEMS,
    PeriodOutOfRange: (422, "invalid-request"),  # a statement of a period not begun
}
PROBLEM_BASE: Final = "https://credits-domain.dev/problems/"


class AnyTitle:
    """A problem's title is for people: any non-empty text will do."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    def __repr__(self) -> str:
        return "<any non-empty title>"


class Expected:
    """The answers' JSON as the API documents it, built from the core's own results."""

    @staticmethod
    def instant(at: datetime) -> str:
        at = at.astimezone(UTC)
        fraction = f".{at.microsecond:06d}" if at.microsecond else ""
        return f"{at:%Y-%m-%dT%H:%M:%S}{fraction}Z"

    @classmethod
    def period(cls, period: Period) -> Json:
        return {
            "index": period.index,
            "start": cls.instant(period.start),
            "end": cls.instant(period.end),
        }

    @classmethod
    def subscription(cls, subscription: Subscription) -> Json:
        ends_at, pending = subscription.ends_at, subscription.pending_plan
        return {
            "account": subscription.account,
            "plan": subscription.plan.name,
            "status": subscription.status.value,
            "period": cls.period(subscription.period),
            "ends_at": None if ends_at is None else cls.instant(ends_at),
            "pending_plan": None if pending is None else pending.name,
        }

    @classmethod
    def plan_change(cls, change: PlanChange, subscription: Subscription) -> Json:
        return {"change": change.value, "subscription": cls.subscription(subscription)}

    @staticmethod
    def charge(result: ChargeResult) -> Json:
        items = []
        charged = {"email": 0, "mobile": 0}
        for item in result.items:
            if item.pool is not None:
                charged[item.pool.value] += item.credits
            items.append(
                {
                    "channel": item.contact.channel.value,
                    "value": item.contact.value,
                    "outcome": item.outcome.value,
                    "verdict": None if item.verdict is None else item.verdict.value,
                    "revealed": item.outcome in (Outcome.CHARGED, Outcome.ALREADY_OWNED),
                    "pool": None if item.pool is None else item.pool.value,
                    "credits": item.credits,
                }
            )
        return {
            "operation": result.operation.value,
            "idempotency_key": result.idempotency_key,
            "items": items,
            "charged": charged,
        }

    @classmethod
    def entry(cls, entry: LedgerEntry) -> Json:
        cause = entry.cause
        return {
            "seq": entry.seq,
            "kind": entry.kind.value,
            "pool": entry.pool.value,
            "amount": entry.amount,
            "at": cls.instant(entry.at),
            "balance_after": entry.balance_after,
            "cause": {
                "operation": cause.operation.value,
                "datum": cause.datum,
                "plan": cause.plan,
                "period": cause.period,
                "idempotency_key": cause.idempotency_key,
                "destination": cause.destination,
                "note": cause.note,
                "grant": cause.grant,
                "expires_at": None if cause.expires_at is None else cls.instant(cause.expires_at),
                "member": cause.member,
            },
        }

    @classmethod
    def statement(
        cls, entries: list[LedgerEntry], next_cursor: int | None, period: Period | None
    ) -> Json:
        return {
            "entries": [cls.entry(e) for e in entries],
            "next_cursor": next_cursor,
            "period": None if period is None else cls.period(period),
        }

    @staticmethod
    def balance(balance: Balance) -> Json:
        return {
            "email": balance.email,
            "mobile": balance.mobile,
            "email_available": balance.email_available,
            "mobile_available": balance.mobile_available,
        }

    @classmethod
    def past_balance(cls, at: datetime, credits: Credits) -> Json:
        return {"at": cls.instant(at), "email": credits.email, "mobile": credits.mobile}

    @staticmethod
    def problem(error: CreditsError, path: str) -> Rendered:
        assert type(error) in PROBLEMS, f"add {type(error).__name__} to PROBLEMS: {error}"
        status, slug = PROBLEMS[type(error)]
        return status, {
            "type": PROBLEM_BASE + slug,
            "title": AnyTitle(),
            "status": status,
            "detail": str(error),
            "instance": path,
        }


class ApiVersusCore(RuleBasedStateMachine):
    def __init__(self, served: Served) -> None:
        super().__init__()
        self.clock = ManualClock(START)
        self.verifier = ScriptedVerifier()

        def service() -> CreditService:
            return CreditService(
                repository=InMemoryRepository(),
                verifier=self.verifier,
                clock=self.clock,
                plans=CATALOGUE,
            )

        self.api_service = service()  # the one behind the API
        self.core = service()  # the one called in process
        keys = InMemoryApiKeyStore(clock=self.clock)
        served.switch.app = create_app(self.api_service, keys, max_batch=50)
        self.clients = {a: client(served.base_url, keys.create(a).token) for a in ACCOUNTS}

    def teardown(self) -> None:
        for c in self.clients.values():
            c.close()

    # -- comparing ------------------------------------------------------------------------

    def expect(self, path: str, call: Callable[[], Rendered]) -> Rendered:
        """What the API must answer: the core's result, rendered; or its error."""
        try:
            return call()
        except CreditsError as exc:
            return Expected.problem(exc, path)

    def check(self, response: httpx.Response, expected: Rendered) -> None:
        actual = (response.status_code, response.json())
        assert actual == expected, f"{response.request.method} {response.request.url}"

    @staticmethod
    def charged(result: ChargeResult) -> Rendered:
        return 200, Expected.charge(result)

    # -- rules ----------------------------------------------------------------------------

    @initialize(account=st.sampled_from(ACCOUNTS), plan=st.sampled_from(list(CATALOGUE)))
    def first_subscription(self, account: str, plan: str) -> None:
        self.subscribe(account, plan)

    @rule(account=st.sampled_from(ACCOUNTS), plan=st.sampled_from(PLAN_NAMES))
    def subscribe(self, account: str, plan: str) -> None:
        path = f"/v1/accounts/{account}/subscription"
        expected = self.expect(
            path, lambda: (201, Expected.subscription(self.core.subscribe(account, plan)))
        )
        self.check(self.clients[account].post(path, json={"plan": plan}), expected)

    @rule(account=st.sampled_from(ACCOUNTS), plan=st.sampled_from(PLAN_NAMES))
    def change_plan(self, account: str, plan: str) -> None:
        path = f"/v1/accounts/{account}/subscription/plan"

        def core() -> Rendered:
            change = self.core.change_plan(account, plan)
            return 200, Expected.plan_change(change, self.core.subscription(account))

        self.check(self.clients[account].put(path, json={"plan": plan}), self.expect(path, core))

    @rule(account=st.sampled_from(ACCOUNTS), verb=st.sampled_from(["cancel", "pause", "resume"]))
    def lifecycle(self, account: str, verb: str) -> None:
        path = f"/v1/accounts/{account}/subscription/{verb}"

        def core() -> Rendered:
            getattr(self.core, verb)(account)
            return 200, Expected.subscription(self.core.subscription(account))

        self.check(self.clients[account].post(path), self.expect(path, core))

    @rule(
        account=st.sampled_from(ACCOUNTS),
        operation=st.sampled_from(["unlock", "export", "enrich"]),
        contacts=requests(UNIVERSE),
        styles=st.lists(st.integers(0, 2), min_size=8, max_size=8),
        key=st.none() | st.sampled_from(["k1", "k2", "k3"]),
    )
    def charge(
        self,
        account: str,
        operation: str,
        contacts: list[Contact],
        styles: list[int],
        key: str | None,
    ) -> None:
        path = f"/v1/accounts/{account}/{operation}"
        items = [
            {"channel": c.channel.value, "value": dressed(c, style)}
            for c, style in zip(contacts, styles, strict=False)
        ]
        body: dict[str, Any] = {"found" if operation == "enrich" else "contacts": items}
        if operation == "export":
            body["destination"] = "csv"
        calls: dict[str, Callable[[], ChargeResult]] = {
            "unlock": lambda: self.core.unlock(account, contacts, idempotency_key=key),
            "export": lambda: self.core.export(
                account, contacts, destination="csv", idempotency_key=key
            ),
            "enrich": lambda: self.core.enrich(account, contacts, idempotency_key=key),
        }
        replayed: list[bool] = []

        def core() -> Rendered:
            result = calls[operation]()
            replayed.append(result.replayed)
            return self.charged(result)

        expected = self.expect(path, core)
        headers = {} if key is None else {"Idempotency-Key": key}
        response = self.clients[account].post(path, json=body, headers=headers)
        self.check(response, expected)
        if replayed:
            assert (response.headers.get("idempotent-replayed") == "true") == replayed[0]

    @rule(account=st.sampled_from(ACCOUNTS), contact=st.sampled_from(UNIVERSE))
    def bounce(self, account: str, contact: Contact) -> None:
        path = f"/v1/accounts/{account}/bounces"
        expected = self.expect(
            path, lambda: (201, Expected.entry(self.core.report_bounce(account, contact)))
        )
        payload = {"channel": contact.channel.value, "value": contact.value}
        self.check(self.clients[account].post(path, json=payload), expected)

    @rule(
        account=st.sampled_from(ACCOUNTS),
        limit=st.integers(1, 7),
        cursor=st.none() | st.integers(0, 30),
        period=st.none() | st.integers(0, 4),
    )
    def read_statement(
        self, account: str, limit: int, cursor: int | None, period: int | None
    ) -> None:
        path = f"/v1/accounts/{account}/statement"

        def core() -> Rendered:
            chosen = None if period is None else self.core.period(account, period)
            entries = [
                e for e in self.core.statement(account, chosen) if cursor is None or e.seq > cursor
            ]
            page = entries[:limit]
            next_cursor = page[-1].seq if len(entries) > limit else None
            return 200, Expected.statement(page, next_cursor, chosen)

        params = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        if period is not None:
            params["period"] = period
        self.check(self.clients[account].get(path, params=params), self.expect(path, core))

    @rule(account=st.sampled_from(ACCOUNTS), back_s=st.integers(0, 90 * 86_400))
    def balance_at(self, account: str, back_s: int) -> None:
        path = f"/v1/accounts/{account}/balance-at"
        at = self.clock.now() - timedelta(seconds=back_s)
        expected = self.expect(
            path, lambda: (200, Expected.past_balance(at, self.core.balance_at(account, at)))
        )
        response = self.clients[account].get(path, params={"at": Expected.instant(at)})
        self.check(response, expected)

    @rule(
        account=st.sampled_from(ACCOUNTS),
        other=st.sampled_from([*ACCOUNTS, "initech"]),
        contacts=requests(UNIVERSE, max_size=3),
    )
    def cross_account(self, account: str, other: str, contacts: list[Contact]) -> None:
        """A key of `account` used on `other`: 404 as for a missing account, no change."""
        if other == account:
            return
        path = f"/v1/accounts/{other}/unlock"
        items = [{"channel": c.channel.value, "value": c.value} for c in contacts]
        response = self.clients[account].post(path, json={"contacts": items})
        assert response.status_code == 404
        assert response.json()["type"].endswith("/unknown-account")
        assert response.json()["detail"] == f"account {other!r} has never subscribed; " + (
            "subscribe it to a plan first"
        )

    @rule(contact=st.sampled_from(UNIVERSE), verdict=st.sampled_from(list(Verdict)))
    def set_verdict(self, contact: Contact, verdict: Verdict) -> None:
        self.verifier.set(contact.value, verdict)

    @rule(days=st.integers(0, 40), seconds=st.integers(0, 86_399))
    def advance_time(self, days: int, seconds: int) -> None:
        self.clock.advance(timedelta(days=days, seconds=seconds))

    @rule()
    def renew_due(self) -> None:
        # An operator's use case, not on the API: run on both sides in process.
        assert self.api_service.renew_due() == self.core.renew_due()

    # -- invariants -----------------------------------------------------------------------

    def _core_balance(self, account: str) -> Callable[[], Rendered]:
        return lambda: (200, Expected.balance(self.core.balance(account)))

    @invariant()
    def balances_and_statements_agree(self) -> None:
        for account, c in self.clients.items():
            path = f"/v1/accounts/{account}/balance"
            expected = self.expect(path, self._core_balance(account))
            self.check(c.get(path), expected)
            if expected[0] != 200:
                continue
            entries: list[Any] = []
            cursor: int | None = None
            for _ in range(MAX_STATEMENT_PAGES):
                params = {"limit": STATEMENT_PAGE}
                if cursor is not None:
                    params["cursor"] = cursor
                page = c.get(f"/v1/accounts/{account}/statement", params=params).json()
                entries += page["entries"]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert entries == [Expected.entry(e) for e in self.core.statement(account)]


def test_the_api_behaves_exactly_like_the_core(served: Served) -> None:
    class OnThisServer(ApiVersusCore):
        def __init__(self) -> None:
            super().__init__(served)

    run_state_machine_as_test(
        OnThisServer, settings=settings(max_examples=40, stateful_step_count=30, deadline=None)
    )
