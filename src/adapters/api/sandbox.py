"""Test mode of the HTTP API (`credits serve --test-mode`): sandbox accounts, as a payment
API's sandbox offers them.

    POST /v1/test/accounts                 {"plans": [...], "plan": "boost"}   (no key)
    POST /v1/test/accounts/{account}/clock {"seconds": 86400}        (the account's key)

Creating a sandbox account answers its id and API key (shown once), the instant of its
clock and the plans it may choose: the shipped catalogue and the custom plans of the body
(at most `MAX_SANDBOX_PLANS`, each checked as any Plan is). Each sandbox account has a
clock of its own, started at the server's time in whole seconds, that only its client
moves forward (at most `MAX_CLOCK_ADVANCE_S` per call); renewals follow it. Every
account of a test-mode server is verified by the magic values of
`credits_domain.sandbox` (SandboxVerifier, wired by the composition root).

The Clock port has no account parameter, so each sandbox account gets a CreditService of
its own, over the server's one repository, with its own clock and catalogue;
`Sandbox.service_for` is the app's only hook. Sandbox accounts and their clocks live in
the server's memory: after a restart the accounts stay in the database and follow the
server's clock. The routes exist, and appear in /openapi.json and /docs, in test mode
only.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Protocol

import attrs
import msgspec
from msgspec import UNSET, Meta, UnsetType

from adapters.api import schemas, shapes
from adapters.api.problems import ProblemError, ProblemKind
from adapters.api.shapes import Instant, Shape
from credits_domain import (
    PLANS,
    ApiKeyStore,
    Channel,
    Clock,
    Credits,
    CreditService,
    InvalidPlan,
    Plan,
    Price,
    UnknownAccount,
    UnknownPlan,
)
from credits_domain.errors import invariant
from credits_domain.limits import MAX_PLAN_NAME_LENGTH
from credits_domain.plans import MAX_CREDITS
from credits_domain.sandbox import (
    DEFAULT_MAX_SANDBOX_ACCOUNTS,
    MAGIC_EMAIL_DOMAINS,
    MAGIC_MOBILE_ENDINGS,
    MAX_CLOCK_ADVANCE_S,
    MAX_SANDBOX_PLANS,
)

TEST_ACCOUNTS_PATH: Final = "/v1/test/accounts"
TEST_CLOCK_PATH: Final = "/v1/test/accounts/{account}/clock"
SANDBOX_FULL = ProblemKind(
    slug="sandbox-full", status=409, title="The server has made all its sandbox accounts"
)

# -- wire shapes ----------------------------------------------------------------------------

PlanCredits = Annotated[int, Meta(ge=0, le=MAX_CREDITS)]


class PoolCredits(Shape, frozen=True):
    """Credits per pool."""

    email: PlanCredits = 0
    mobile: PlanCredits = 0


class PriceIn(Shape, frozen=True):
    """What one verified datum of a channel costs, and which pool pays (R2)."""

    pool: Channel
    credits: Annotated[int, Meta(ge=1, le=MAX_CREDITS)] = 1


class PricesIn(Shape, frozen=True):
    """The price of each channel; a channel not given costs 1 credit of its own pool."""

    email: PriceIn | UnsetType = UNSET
    mobile: PriceIn | UnsetType = UNSET


class CustomPlan(Shape, frozen=True):
    """A plan of this sandbox account's own, checked as any plan is (R2, R3, R5)."""

    name: Annotated[str, Meta(min_length=1, max_length=MAX_PLAN_NAME_LENGTH)]
    monthly: PoolCredits
    prices: PricesIn | UnsetType = UNSET
    rollover_cap: PoolCredits | None = None


class SandboxAccountRequest(Shape, frozen=True):
    """A new sandbox account: its custom plans, and the plan to subscribe to at once."""

    plans: Annotated[list[CustomPlan], Meta(max_length=MAX_SANDBOX_PLANS)] = msgspec.field(
        default_factory=list
    )
    plan: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=MAX_PLAN_NAME_LENGTH,
                description="Subscribe to this plan (shipped or custom) at once; "
                "absent: not subscribed.",
            ),
        ]
        | None
    ) = None


class SandboxAccount(Shape, frozen=True):
    """A new sandbox account. The API key is shown only now."""

    account: str
    api_key: str
    now: Instant
    plans: list[str]
    subscription: shapes.Subscription | None


class ClockAdvance(Shape, frozen=True):
    """How far to move the account's test clock forward."""

    seconds: Annotated[int, Meta(ge=1, le=MAX_CLOCK_ADVANCE_S)]


class TestClock(Shape, frozen=True):
    """The instant of a sandbox account's test clock."""

    account: str
    now: Instant


# -- the sandbox ----------------------------------------------------------------------------


class AdvancingClock(Clock, Protocol):
    """A clock that moves only when told to (adapters.clock.ManualClock)."""

    def advance(self, delta: timedelta) -> datetime: ...


ServiceFactory = Callable[[Clock, Mapping[str, Plan]], CreditService]
"""A CreditService over the server's repository and verifier, with this clock and catalogue."""


@attrs.frozen
class _Member:
    service: CreditService
    clock: AdvancingClock


def _price(given: PriceIn | UnsetType, channel: Channel) -> Price:
    if isinstance(given, UnsetType):
        return Price(pool=channel)
    return Price(pool=given.pool, credits=given.credits)


def _credits(given: PoolCredits) -> Credits:
    return Credits(email=given.email, mobile=given.mobile)


def to_plans(custom: list[CustomPlan]) -> dict[str, Plan]:
    """The catalogue of a sandbox account: the shipped plans and its own (422 if wrong)."""
    catalogue = dict(PLANS)
    for i, spec in enumerate(custom):
        if spec.name in catalogue:
            raise InvalidPlan(f"plans[{i}].name {spec.name!r} is taken; give another name")
        prices = spec.prices if not isinstance(spec.prices, UnsetType) else PricesIn()
        try:
            catalogue[spec.name] = Plan(
                name=spec.name,
                monthly=_credits(spec.monthly),
                prices={
                    Channel.EMAIL: _price(prices.email, Channel.EMAIL),
                    Channel.MOBILE: _price(prices.mobile, Channel.MOBILE),
                },
                rollover_cap=None if spec.rollover_cap is None else _credits(spec.rollover_cap),
            )
        except InvalidPlan as exc:
            raise InvalidPlan(f"plans[{i}]: {exc}") from exc
    return catalogue


@attrs.define
class Sandbox:
    """The sandbox accounts of one test-mode server, in its memory (thread-safe)."""

    new_service: ServiceFactory
    new_clock: Callable[[], AdvancingClock]
    max_accounts: int = attrs.field(default=DEFAULT_MAX_SANDBOX_ACCOUNTS)
    _members: dict[str, _Member] = attrs.field(factory=dict, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    @max_accounts.validator
    def _check_max(self, attribute: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"max_accounts must be a whole number >= 1, got {value!r}")

    def service_for(self, account: str) -> CreditService | None:
        with self._lock:
            member = self._members.get(account)
        return None if member is None else member.service

    def create(self, keys: ApiKeyStore, request: SandboxAccountRequest) -> SandboxAccount:
        catalogue = to_plans(request.plans)
        if request.plan is not None and request.plan not in catalogue:
            raise UnknownPlan(request.plan, list(catalogue))  # before a slot is taken
        clock = self.new_clock()
        service = self.new_service(clock, catalogue)
        with self._lock:
            if len(self._members) >= self.max_accounts:
                raise ProblemError(
                    SANDBOX_FULL,
                    f"this server has made its {self.max_accounts} sandbox accounts; restart "
                    "it on a fresh database, or give --max-sandbox-accounts a higher bound",
                )
            account = f"sbx_{secrets.token_hex(8)}"
            invariant(account not in self._members, "sandbox account ids are fresh")
            self._members[account] = _Member(service=service, clock=clock)
        subscription = None
        if request.plan is not None:
            service.subscribe(account, request.plan)
            subscription = schemas.render_subscription(service.subscription(account))
        issued = keys.create(account)
        return SandboxAccount(
            account=account,
            api_key=issued.token,
            now=clock.now().astimezone(UTC),
            plans=list(catalogue),
            subscription=subscription,
        )

    def advance(self, account: str, seconds: int) -> TestClock:
        with self._lock:
            member = self._members.get(account)
        if member is None:
            raise UnknownAccount(account)  # not a sandbox account: as for any other
        now = member.clock.advance(timedelta(seconds=seconds))
        return TestClock(account=account, now=now.astimezone(UTC))


# -- the OpenAPI document's part ------------------------------------------------------------

REF_TEMPLATE: Final = "#/components/schemas/{name}"


def _magic_table() -> str:
    rows = [
        f"| an email at `{domain}` | `{v.value}` |" for domain, v in MAGIC_EMAIL_DOMAINS.items()
    ]
    rows += [
        f"| a mobile number ending in `{end}` | `{v.value}` |"
        for end, v in MAGIC_MOBILE_ENDINGS.items()
    ]
    return "\n".join(["| contact | verdict |", "|---|---|", *rows, "| anything else | `valid` |"])


def _problems(statuses: dict[int, str]) -> dict[str, Any]:
    return {
        str(status): {
            "description": text,
            "content": {
                "application/problem+json": {
                    "schema": {"$ref": REF_TEMPLATE.format(name="Problem")}
                }
            },
        }
        for status, text in statuses.items()
    }


def with_test_paths(document: dict[str, Any]) -> dict[str, Any]:
    """The API's document with the test-mode routes and their bodies added."""
    bodies: list[type[msgspec.Struct]] = [
        SandboxAccountRequest,
        SandboxAccount,
        ClockAdvance,
        TestClock,
    ]
    refs, components = msgspec.json.schema_components(bodies, ref_template=REF_TEMPLATE)
    ref = dict(zip(bodies, refs, strict=True))

    def body(shape: type[msgspec.Struct]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": ref[shape]}}}

    def ok(status: int, text: str, shape: type[msgspec.Struct]) -> dict[str, Any]:
        return {
            str(status): {
                "description": text,
                "content": {"application/json": {"schema": ref[shape]}},
            }
        }

    create = {
        "operationId": "createSandboxAccount",
        "summary": "Test mode: a new sandbox account and its API key",
        "description": "Test mode only (`credits serve --test-mode`); needs no API key. "
        "Every contact of a test-mode server is verified by magic values:\n\n" + _magic_table(),
        "security": [],
        "requestBody": body(SandboxAccountRequest),
        "responses": {
            **ok(201, "The sandbox account; its API key is shown only now", SandboxAccount),
            **_problems(
                {
                    400: "Malformed JSON body (malformed-json)",
                    409: "The server has made all its sandbox accounts (sandbox-full)",
                    415: "The body is not application/json (unsupported-media-type)",
                    422: "A value is wrong (invalid-request, invalid-plan, unknown-plan)",
                }
            ),
        },
    }
    clock = {
        "operationId": "advanceTestClock",
        "summary": "Test mode: move a sandbox account's clock forward (renewals follow)",
        "requestBody": body(ClockAdvance),
        "parameters": [
            {
                "name": "account",
                "in": "path",
                "required": True,
                "description": "The sandbox account the API key is bound to.",
                "schema": {"type": "string", "minLength": 1},
            }
        ],
        "responses": {
            **ok(200, "The clock's new instant", TestClock),
            **_problems(
                {
                    400: "Malformed JSON body (malformed-json)",
                    401: "No API key, an unknown key or a revoked key (unauthorized)",
                    404: "No such sandbox account for this key (unknown-account)",
                    415: "The body is not application/json (unsupported-media-type)",
                    422: f"seconds outside 1..{MAX_CLOCK_ADVANCE_S} (invalid-request)",
                }
            ),
        },
    }
    return {
        **document,
        "paths": {
            **document["paths"],
            TEST_ACCOUNTS_PATH: {"post": create},
            TEST_CLOCK_PATH: {"post": clock},
        },
        "components": {
            **document["components"],
            "schemas": {**document["components"]["schemas"], **components},
        },
    }
