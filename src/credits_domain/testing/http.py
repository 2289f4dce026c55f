"""Check a whole service over HTTP, as a black box: any server that implements the API and
its test mode (`credits serve --test-mode`, or another team's, in any language).

Usage::

    from credits_domain.testing.http import make_http_machine
    TestMyService = make_http_machine("http://127.0.0.1:8000").TestCase

or `credits conformance http://127.0.0.1:8000` (`run_conformance`). Each example makes two
sandbox accounts (`POST /v1/test/accounts`, with custom plans), then drives them through
the API: subscribe, change plan, cancel, pause, resume, unlock, export and enrich (with
contacts spelled as people type them, and `Idempotency-Key`s from a small pool, so that
replays and reused keys are common), top-ups, bounces, statements in pages of 1 to 5,
and each account's test clock, moved to a renewal's exact instant, a second before it, or
by hours and days. Every answer is predicted by the reference model (`ReferenceModel`,
one per sandbox account, since each has its own clock) and the verdicts by the magic
values of `credits_domain.sandbox`:
- the status and problem type of every refusal; the outcome, canonical value and verdict
  of every item, and the credits charged per pool (R2, R10, R12, R15);
- R17: a replay answers the first body byte for byte with `Idempotent-Replayed: true`,
  another payload under a used key is 409 idempotency-key-reused, for charges and top-ups;
- after every step, both balances and subscriptions equal the model's (R3..R8, R20);
- statements: seqs without gaps, running balances, the same entries in every page size,
  the last balance of each pool the model's, and balance-at on and a microsecond before
  entries' instants (R19, R21); another account's key is 404.

The client is the standard library's (`http.client`): one connection per request, with
a timeout, retried (boundedly) only when the connection was refused, when nothing was sent.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final

import attrs
import hypothesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine
from hypothesis.reporting import with_reporter
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from credits_domain.charging import Outcome
from credits_domain.contact import Channel, Contact
from credits_domain.errors import (
    AlreadyRefunded,
    AlreadySubscribed,
    CreditsError,
    IdempotencyKeyReused,
    InvalidRequest,
    NoActiveSubscription,
    NotAnEmail,
    NotCharged,
    RefundWindowClosed,
    SubscriptionPaused,
    UnknownAccount,
    UnknownPlan,
)
from credits_domain.errors import (
    invariant as check,
)
from credits_domain.plans import PLANS, Credits, Plan, Price
from credits_domain.sandbox import MAX_CLOCK_ADVANCE_S, sandbox_verdict
from credits_domain.testing.model import ReferenceModel, channel_of, nth_month

PROBLEM_BASE: Final = "https://credits-domain.dev/problems/"
SLOTS: Final = (0, 1)  # two sandbox accounts per example
SHARED_KEYS: Final = ("k1", "k2", "k3")  # each account uses the same key names
DESTINATIONS: Final = ("csv", "crm")
REASON: Final = "conformance"
MAX_PAGES: Final = 400  # bounds a statement's reading; an example writes far fewer entries
BIG_PAGE: Final = 1_000
UNKNOWN_PLAN: Final = "no-such-plan"
TICK: Final = timedelta(microseconds=1)  # the closest other instant

# The refusals the machine predicts, as the API documents them.
PROBLEMS: Final[Mapping[type[CreditsError], tuple[int, str]]] = {
    UnknownPlan: (422, "unknown-plan"),
    UnknownAccount: (404, "unknown-account"),
    AlreadySubscribed: (409, "already-subscribed"),
    NoActiveSubscription: (409, "no-active-subscription"),
    SubscriptionPaused: (409, "subscription-paused"),
    IdempotencyKeyReused: (409, "idempotency-key-reused"),
    NotCharged: (422, "not-charged"),
    NotAnEmail: (422, "not-an-email"),
    AlreadyRefunded: (409, "already-refunded"),
    RefundWindowClosed: (409, "refund-window-closed"),
    InvalidRequest: (422, "invalid-request"),
}

# Contacts as (channel, canonical); spelled for the wire by `spelled`. The magic ones get
# their verdict from credits_domain.sandbox.
UNIVERSE: Final = (
    ("email", "ann@example.com"),
    ("email", "bob@example.org"),
    ("email", "cy@invalid.example"),
    ("email", "dee@unknown.example"),
    ("email", "eve@catch-all.example"),
    ("mobile", "+447700900123"),
    ("mobile", "+14155550100"),
    ("mobile", "+447700900000"),  # invalid
    ("mobile", "+14155550001"),  # unknown
)


# -- the HTTP client ------------------------------------------------------------------------


class ConformanceError(AssertionError):
    """The service answered other than the rules say (or not at all)."""


@attrs.frozen
class Answer:
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise ConformanceError(f"the answer is not JSON ({exc}): {self.body[:200]!r}") from exc


@attrs.frozen
class HttpClient:
    """A small JSON client on `http.client`: a connection per request (nothing is retried
    that the server may have read), `timeout_s` per request, and up to `attempts`
    attempts while the connection is refused (a server starting), with a doubling pause."""

    base_url: str
    timeout_s: float = 10.0
    attempts: int = 5
    first_pause_s: float = 0.1

    def __attrs_post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest(
                f"a base URL is http(s)://host[:port][/path], not {self.base_url!r}"
            )
        if not (0 < self.timeout_s <= 600 and 1 <= self.attempts <= 20):
            raise InvalidRequest("timeout_s must be in (0, 600] and attempts in 1..20")

    def _connection(self) -> http.client.HTTPConnection:
        parts = urllib.parse.urlsplit(self.base_url)
        host, port = parts.hostname or "", parts.port
        if parts.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self.timeout_s)
        return http.client.HTTPConnection(host, port, timeout=self.timeout_s)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: object | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            sent["Content-Type"] = "application/json"
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        target = urllib.parse.urlsplit(self.base_url).path.rstrip("/") + path
        pause_s = self.first_pause_s
        for attempt in range(1, self.attempts + 1):
            connection = self._connection()
            try:
                connection.request(method, target, body=data, headers=sent)
                response = connection.getresponse()
                payload = response.read()
                names = {name.lower(): value for name, value in response.getheaders()}
                return Answer(response.status, names, payload)
            except ConnectionRefusedError as exc:
                if attempt == self.attempts:
                    raise ConformanceError(
                        f"{method} {path}: the connection was refused {attempt} times"
                    ) from exc
            except (OSError, http.client.HTTPException) as exc:
                # Sent, maybe read: retrying could do it twice. The service failed.
                raise ConformanceError(f"{method} {path}: no answer ({exc!r})") from exc
            finally:
                connection.close()
            time.sleep(pause_s)
            pause_s *= 2
        raise AssertionError("unreachable: the loop returns or raises")


# -- what the machine draws -----------------------------------------------------------------


@attrs.frozen
class PlanSpec:
    """A custom plan as the machine draws it; `wire()` is its JSON, `plan()` its Plan."""

    name: str
    email: int
    mobile: int
    mobile_price_pool: str = "mobile"
    mobile_price: int = 1
    cap: tuple[int, int] | None = None

    def plan(self) -> Plan:
        return Plan(
            name=self.name,
            monthly=Credits(email=self.email, mobile=self.mobile),
            prices={
                Channel.EMAIL: Price(pool=Channel.EMAIL),
                Channel.MOBILE: Price(
                    pool=Channel(self.mobile_price_pool), credits=self.mobile_price
                ),
            },
            rollover_cap=None
            if self.cap is None
            else Credits(email=self.cap[0], mobile=self.cap[1]),
        )

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "monthly": {"email": self.email, "mobile": self.mobile},
            "prices": {"mobile": {"pool": self.mobile_price_pool, "credits": self.mobile_price}},
        }
        if self.cap is not None:
            body["rollover_cap"] = {"email": self.cap[0], "mobile": self.cap[1]}
        return body


@st.composite
def plan_specs(draw: st.DrawFn, name: str) -> PlanSpec:
    email = draw(st.integers(0, 8))
    mobile = draw(st.integers(0, 3))
    cross = draw(st.booleans())
    capped = draw(st.booleans())
    return PlanSpec(
        name=name,
        email=email,
        mobile=mobile,
        mobile_price_pool="email" if cross else "mobile",
        mobile_price=draw(st.integers(1, 3)) if cross else 1,
        cap=(draw(st.integers(0, 10)), draw(st.integers(0, 4))) if capped else None,
    )


def _distinct_allowances(specs: list[PlanSpec]) -> bool:
    # Two plans of equal allowances are neither an upgrade nor a downgrade of each other
    # in every reading of R7; the machine leaves that case to the rule tests.
    return len({(s.email, s.mobile) for s in specs}) == len(specs)


CATALOGUES = (
    st.tuples(plan_specs("p1"), plan_specs("p2"), plan_specs("p3"))
    .map(list)
    .filter(_distinct_allowances)
)


def spelled(channel: str, canonical: str, style: int) -> str:
    """The datum as a person might type it; the service keeps its canonical form (R12)."""
    if channel == "email":
        return [canonical, canonical.upper(), f"  {canonical.title()} "][style % 3]
    digits = canonical
    return [digits, f"{digits[:3]} {digits[3:7]} {digits[7:]}", f"{digits[:3]}-{digits[3:]}"][
        style % 3
    ]


def _contact(channel: str, canonical: str) -> Contact:
    return Contact.email(canonical) if channel == "email" else Contact.mobile(canonical)


CONTACTS = st.tuples(st.sampled_from(UNIVERSE), st.integers(0, 2)).map(
    lambda pair: (pair[0][0], spelled(pair[0][0], pair[0][1], pair[1]), pair[0][1])
)
"""(channel, as sent, canonical)."""


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def wire_instant(at: datetime) -> str:
    at = at.astimezone(UTC)
    fraction = f".{at.microsecond:06d}" if at.microsecond else ""
    return f"{at:%Y-%m-%dT%H:%M:%S}{fraction}Z"


@attrs.define
class SandboxAccount:
    """One sandbox account as the machine knows it, with its own model and clock."""

    id: str
    token: str
    now: datetime
    catalogue: dict[str, Plan]
    model: ReferenceModel = attrs.field(factory=ReferenceModel)
    # key -> (what was asked, the first answer's body, how to ask it again)
    keys: dict[str, tuple[tuple[Any, ...], bytes, Callable[[], None]]] = attrs.field(factory=dict)

    @property
    def path(self) -> str:
        return f"/v1/accounts/{urllib.parse.quote(self.id, safe='')}"

    def expected(self, action: Callable[[], object]) -> CreditsError | None:
        """What the model says of `action`: None, or the refusal the service must answer."""
        self.model.advance(self.now)
        try:
            action()
        except CreditsError as exc:
            return exc
        return None


def _problem_of(error: CreditsError) -> tuple[int, str]:
    for kind in type(error).__mro__:
        if kind in PROBLEMS:
            return PROBLEMS[kind]
    raise AssertionError(f"the machine has no problem for {type(error).__name__}")


# -- the machine ----------------------------------------------------------------------------


class HttpServiceMachine(RuleBasedStateMachine):
    """The state machine; `make_http_machine(base_url)` makes it for one server."""

    client: ClassVar[HttpClient]
    # A subclass may hold `on_example`, a function called as each example starts.

    def __init__(self) -> None:
        super().__init__()
        self.accounts: list[SandboxAccount] = []
        hook = type(self).__dict__.get("on_example")
        if hook is not None:
            hook()

    # -- plumbing ---------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        account: SandboxAccount | None,
        body: object | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        token = None if account is None else account.token
        return self.client.request(method, path, body=body, token=token, headers=headers)

    @staticmethod
    def expect(answer: Answer, error: CreditsError | None, status: int, what: str) -> bool:
        """Check the status (and the problem type of a refusal); True if it succeeded."""
        if error is None:
            if answer.status != status:
                raise ConformanceError(
                    f"{what}: expected {status}, got {answer.status}: {answer.body[:300]!r}"
                )
            return True
        want_status, slug = _problem_of(error)
        got = answer.json() if answer.status >= 400 else {}
        got_type = got.get("type") if isinstance(got, dict) else None
        if answer.status != want_status or got_type != PROBLEM_BASE + slug:
            raise ConformanceError(
                f"{what}: expected {want_status} {slug} ({type(error).__name__}), got "
                f"{answer.status}: {answer.body[:300]!r}"
            )
        return False

    # -- set-up -----------------------------------------------------------------------

    @initialize(
        catalogues=st.tuples(CATALOGUES, CATALOGUES),
        at_once=st.tuples(*[st.sampled_from([True, True, False])] * 2),
    )
    def make_accounts(
        self, catalogues: tuple[list[PlanSpec], list[PlanSpec]], at_once: tuple[bool, bool]
    ) -> None:
        for specs, subscribe in zip(catalogues, at_once, strict=True):
            body: dict[str, Any] = {"plans": [spec.wire() for spec in specs]}
            if subscribe:
                body["plan"] = specs[0].name
            answer = self.call("POST", "/v1/test/accounts", None, body)
            self.expect(answer, None, 201, "POST /v1/test/accounts")
            made = answer.json()
            catalogue = {**PLANS, **{spec.name: spec.plan() for spec in specs}}
            if made.get("plans") != list(catalogue):
                raise ConformanceError(f"the sandbox account's plans: {made.get('plans')!r}")
            account = SandboxAccount(
                id=made["account"],
                token=made["api_key"],
                now=instant(made["now"]),
                catalogue=catalogue,
            )
            if subscribe:
                account.model.subscribe(account.id, catalogue[specs[0].name], account.now)
            self.accounts.append(account)

    # -- subscriptions ----------------------------------------------------------------

    @rule(
        slot=st.sampled_from(SLOTS),
        name=st.sampled_from(["p1", "p2", "p3", "ignite", UNKNOWN_PLAN]),
    )
    def subscribe(self, slot: int, name: str) -> None:
        account = self.accounts[slot]
        plan = account.catalogue.get(name)
        error = (
            UnknownPlan(name, list(account.catalogue))
            if plan is None
            else account.expected(lambda: account.model.subscribe(account.id, plan, account.now))
        )
        answer = self.call("POST", f"{account.path}/subscription", account, {"plan": name})
        if self.expect(answer, error, 201, f"subscribe to {name}"):
            got = answer.json()
            start = wire_instant(account.now)
            if (got["plan"], got["status"], got["period"]["start"]) != (name, "active", start):
                raise ConformanceError(f"subscribe to {name} at {start}: answered {got}")

    @rule(
        slot=st.sampled_from(SLOTS),
        name=st.sampled_from(["p1", "p2", "p3", "ignite", UNKNOWN_PLAN]),
    )
    def change_plan(self, slot: int, name: str) -> None:
        account = self.accounts[slot]
        plan = account.catalogue.get(name)
        error = (
            UnknownPlan(name, list(account.catalogue))
            if plan is None
            else account.expected(lambda: account.model.change_plan(account.id, plan, account.now))
        )
        answer = self.call("PUT", f"{account.path}/subscription/plan", account, {"plan": name})
        self.expect(answer, error, 200, f"change plan to {name}")

    @rule(slot=st.sampled_from(SLOTS), action=st.sampled_from(["cancel", "pause", "resume"]))
    def subscription_action(self, slot: int, action: str) -> None:
        account = self.accounts[slot]
        model_action = getattr(account.model, action)
        error = account.expected(lambda: model_action(account.id))
        answer = self.call("POST", f"{account.path}/subscription/{action}", account, {})
        self.expect(answer, error, 200, action)

    # -- time -------------------------------------------------------------------------

    @rule(
        slot=st.sampled_from(SLOTS),
        step=st.sampled_from(["renewal", "second-before-renewal", "hours", "days"]),
        amount=st.integers(1, 40),
    )
    def advance_clock(self, slot: int, step: str, amount: int) -> None:
        account = self.accounts[slot]
        seconds = amount * (3_600 if step == "hours" else 86_400)
        modelled = account.model.accounts.get(account.id)
        if step in ("renewal", "second-before-renewal") and modelled is not None:
            boundary = nth_month(modelled.anchor, modelled.index + 1)
            to_boundary = int((boundary - account.now).total_seconds())
            seconds = to_boundary - (step == "second-before-renewal")
        seconds = max(1, min(seconds, MAX_CLOCK_ADVANCE_S))
        path = f"/v1/test/accounts/{urllib.parse.quote(account.id, safe='')}/clock"
        answer = self.call("POST", path, account, {"seconds": seconds})
        self.expect(answer, None, 200, f"advance the clock by {seconds} s")
        now = account.now + timedelta(seconds=seconds)
        if instant(answer.json()["now"]) != now:
            raise ConformanceError(
                f"the clock moved {seconds} s to {answer.json()['now']}, not {now}"
            )
        account.now = now
        account.model.advance(now)

    # -- charging ---------------------------------------------------------------------

    @rule(
        slot=st.sampled_from(SLOTS),
        operation=st.sampled_from(["unlock", "export", "enrich"]),
        contacts=st.lists(CONTACTS, min_size=1, max_size=6),
        key=st.none() | st.sampled_from(SHARED_KEYS),
        destination=st.sampled_from(DESTINATIONS),
    )
    def charge(
        self,
        slot: int,
        operation: str,
        contacts: list[tuple[str, str, str]],
        key: str | None,
        destination: str,
    ) -> None:
        account = self.accounts[slot]
        items = [{"channel": channel, "value": raw} for channel, raw, _ in contacts]
        body: dict[str, Any] = {"found" if operation == "enrich" else "contacts": items}
        if operation == "export":
            body["destination"] = destination
        asked = (
            operation,
            destination if operation == "export" else None,
            tuple((channel, canonical) for channel, _, canonical in contacts),
        )
        headers = {} if key is None else {"Idempotency-Key": key}
        answer = self.call("POST", f"{account.path}/{operation}", account, body, headers)
        what = f"{operation} {[raw for _, raw, _ in contacts]} under key {key}"
        if self._replayed(account, key, asked, answer, 200, what):
            return
        canon = [_contact(channel, canonical) for channel, _, canonical in contacts]
        outcomes: list[Outcome] = []

        def run() -> None:
            outcomes.extend(account.model.charge(account.id, canon, sandbox_verdict, account.now))

        if not self.expect(answer, account.expected(run), 200, what):
            return
        got = answer.json()
        self._check_key(what, got, key)
        self._check_items(account, what, got, canon, outcomes)
        if key is not None:
            account.keys[key] = (
                asked,
                answer.body,
                lambda: self.charge(slot, operation, contacts, key, destination),
            )

    @staticmethod
    def _check_key(what: str, got: dict[str, Any], key: str | None) -> None:
        if got.get("idempotency_key") != key:
            raise ConformanceError(
                f"{what}: answered idempotency_key {got.get('idempotency_key')!r}, not {key!r}"
            )

    def _check_items(
        self,
        account: SandboxAccount,
        what: str,
        got: dict[str, Any],
        canon: Sequence[Contact],
        outcomes: Sequence[Outcome],
    ) -> None:
        plan = account.model.accounts[account.id].plan
        charged = dict.fromkeys(("email", "mobile"), 0)
        expected_items = []
        for contact, outcome in zip(canon, outcomes, strict=True):
            verdict = sandbox_verdict(contact).value if outcome is Outcome.NOT_VERIFIED else None
            if outcome is Outcome.CHARGED:
                price = plan.price_of(contact.channel)
                charged[price.pool.value] += price.credits
                verdict = "valid"
            expected_items.append((contact.channel.value, contact.value, outcome.value, verdict))
        seen = [
            (
                item.get("channel"),
                item.get("value"),
                item.get("outcome"),
                item.get("verdict") if item.get("outcome") in ("charged", "not_verified") else None,
            )
            for item in got.get("items", [])
        ]
        if seen != expected_items or got.get("charged") != charged:
            raise ConformanceError(
                f"{what}: expected items {expected_items} charging {charged}, got {seen} "
                f"charging {got.get('charged')}"
            )

    def _replayed(
        self,
        account: SandboxAccount,
        key: str | None,
        asked: tuple[Any, ...],
        answer: Answer,
        status: int,
        what: str,
    ) -> bool:
        """R17: True if `key` was used before, after checking the replay or refusal."""
        if key is None or key not in account.keys:
            if answer.headers.get("idempotent-replayed") is not None:
                raise ConformanceError(f"{what}: a first request answered as a replay")
            return False
        first_asked, first_body, _ = account.keys[key]
        if first_asked != asked:
            self.expect(answer, IdempotencyKeyReused(account.id, key), status, what)
            return True
        if answer.status != status or answer.body != first_body:
            raise ConformanceError(
                f"{what}: a replay must answer the first answer byte for byte "
                f"({first_body[:300]!r}); got {answer.status}: {answer.body[:300]!r}"
            )
        if answer.headers.get("idempotent-replayed") != "true":
            raise ConformanceError(f"{what}: a replay without Idempotent-Replayed: true")
        return True

    @rule(
        slot=st.sampled_from(SLOTS),
        email=st.integers(0, 5),
        mobile=st.integers(0, 2),
        key=st.none() | st.sampled_from(SHARED_KEYS),
    )
    def top_up(self, slot: int, email: int, mobile: int, key: str | None) -> None:
        account = self.accounts[slot]
        body = {"email": email, "mobile": mobile, "reason": REASON}
        headers = {} if key is None else {"Idempotency-Key": key}
        answer = self.call("POST", f"{account.path}/top-ups", account, body, headers)
        what = f"top up {email} email, {mobile} mobile under key {key}"
        if not (email or mobile):
            self.expect(answer, InvalidRequest("a top-up needs credits"), 201, what)
            return
        if self._replayed(account, key, ("top_up", email, mobile), answer, 201, what):
            return

        def run() -> None:
            modelled = account.model.accounts.get(account.id)
            if modelled is None:
                raise UnknownAccount(account.id)
            if modelled.status == "lapsed":
                raise NoActiveSubscription(account.id)
            modelled.balance[Channel.EMAIL] += email
            modelled.balance[Channel.MOBILE] += mobile

        if not self.expect(answer, account.expected(run), 201, what):
            return
        self._check_key(what, answer.json(), key)
        if key is not None:
            account.keys[key] = (
                ("top_up", email, mobile),
                answer.body,
                lambda: self.top_up(slot, email, mobile, key),
            )

    @rule(slot=st.sampled_from(SLOTS), key=st.sampled_from(SHARED_KEYS))
    def replay(self, slot: int, key: str) -> None:
        """R17: the request first sent under `key`, sent again as it was."""
        found = self.accounts[slot].keys.get(key)
        if found is not None:
            found[2]()

    @rule(slot=st.sampled_from(SLOTS), contact=CONTACTS, owned=st.integers(0, 8))
    def bounce(self, slot: int, contact: tuple[str, str, str], owned: int) -> None:
        """A bounce of `contact`, or, when `owned` is below the number of emails the
        account bought, of the `owned`-th of those (so that refunds are common)."""
        account = self.accounts[slot]
        modelled = account.model.accounts.get(account.id)
        bought = sorted(
            datum.split(":", 1)[1]
            for datum in (modelled.owned if modelled else {})
            if channel_of(datum) is Channel.EMAIL
        )
        if owned < len(bought):
            contact = ("email", spelled("email", bought[owned], owned), bought[owned])
        channel, raw, canonical = contact
        datum = _contact(channel, canonical)
        error = account.expected(lambda: account.model.bounce(account.id, datum, account.now))
        answer = self.call(
            "POST", f"{account.path}/bounces", account, {"channel": channel, "value": raw}
        )
        if self.expect(answer, error, 201, f"bounce {raw}"):
            got = answer.json()
            if (got.get("kind"), got.get("cause", {}).get("datum")) != (
                "refund",
                f"{channel}:{canonical}",
            ):
                raise ConformanceError(f"bounce {raw}: answered {got}")

    # -- reading ----------------------------------------------------------------------

    def _statement(self, account: SandboxAccount, limit: int) -> list[dict[str, Any]] | None:
        entries: list[dict[str, Any]] = []
        cursor: int | None = None
        for _ in range(MAX_PAGES):
            query = f"?limit={limit}" + ("" if cursor is None else f"&cursor={cursor}")
            answer = self.call("GET", f"{account.path}/statement{query}", account)
            if answer.status == 404 and account.id not in account.model.accounts:
                return None
            self.expect(answer, None, 200, f"statement page after {cursor}")
            page = answer.json()
            entries.extend(page["entries"])
            if len(page["entries"]) > limit:
                raise ConformanceError(
                    f"a statement page of limit {limit} held {len(page['entries'])}"
                )
            cursor = page["next_cursor"]
            if cursor is None:
                return entries
        raise ConformanceError(f"a statement went on for more than {MAX_PAGES} pages")

    @rule(slot=st.sampled_from(SLOTS), limit=st.integers(1, 5))
    def statement(self, slot: int, limit: int) -> None:
        account = self.accounts[slot]
        paged = self._statement(account, limit)
        whole = self._statement(account, BIG_PAGE)
        if account.id not in account.model.accounts:
            if paged is not None or whole is not None:
                raise ConformanceError("a statement of an account that never subscribed")
            return
        if paged != whole or whole is None:
            raise ConformanceError(f"statement in pages of {limit} differs from one page")
        balances = dict.fromkeys(("email", "mobile"), 0)
        for seq, entry in enumerate(whole):
            balances[entry["pool"]] += entry["amount"]
            if entry["seq"] != seq or entry["balance_after"] != balances[entry["pool"]]:
                raise ConformanceError(
                    f"statement entry {seq}: seq {entry['seq']}, balance_after "
                    f"{entry['balance_after']}, expected running balance {balances[entry['pool']]}"
                )
        self._check_past_balances(account, whole)
        model = account.model.balance(account.id)
        if balances != {pool.value: model[pool] for pool in Channel}:
            raise ConformanceError(
                f"the statement sums to {balances}, the model's balance is {model}"
            )

    def _check_past_balances(self, account: SandboxAccount, whole: list[dict[str, Any]]) -> None:
        """R21: balance-at at the first, a middle and the last entry's instant, and a
        microsecond before each: the running balances after the entries up to then."""
        instants = sorted({instant(entry["at"]) for entry in whole})
        if not instants:
            return
        picked = {instants[0], instants[len(instants) // 2], instants[-1]}
        for probe in sorted(picked | {at - TICK for at in picked}):
            want = dict.fromkeys(("email", "mobile"), 0)
            for entry in whole:
                if instant(entry["at"]) <= probe:
                    want[entry["pool"]] = entry["balance_after"]
            query = urllib.parse.urlencode({"at": wire_instant(probe)})
            answer = self.call("GET", f"{account.path}/balance-at?{query}", account)
            self.expect(answer, None, 200, f"balance-at {wire_instant(probe)}")
            got = answer.json()
            if {"email": got.get("email"), "mobile": got.get("mobile")} != want:
                raise ConformanceError(
                    f"balance-at {wire_instant(probe)}: {got}, the statement says {want}"
                )

    @rule(slot=st.sampled_from(SLOTS))
    def another_accounts_key(self, slot: int) -> None:
        account, other = self.accounts[slot], self.accounts[1 - slot]
        answer = self.call("GET", f"{account.path}/balance", other)
        self.expect(answer, UnknownAccount(account.id), 200, "a balance with another's key")

    @invariant()
    def agrees_with_the_model(self) -> None:
        for account in self.accounts:
            account.model.advance(account.now)
            modelled = account.model.accounts.get(account.id)
            balance = self.call("GET", f"{account.path}/balance", account)
            subscription = self.call("GET", f"{account.path}/subscription", account)
            if modelled is None:
                self.expect(balance, UnknownAccount(account.id), 200, "balance")
                self.expect(subscription, UnknownAccount(account.id), 200, "subscription")
                continue
            self.expect(balance, None, 200, "balance")
            self.expect(subscription, None, 200, "subscription")
            got, want = balance.json(), account.model.balance(account.id)
            expected = {
                "email": want[Channel.EMAIL],
                "mobile": want[Channel.MOBILE],
                "email_available": want[Channel.EMAIL],
                "mobile_available": want[Channel.MOBILE],
            }
            if got != expected:
                raise ConformanceError(f"balance {got}, the model's {expected}")
            sub = subscription.json()
            if sub.get("status") != modelled.status:
                raise ConformanceError(
                    f"subscription status {sub.get('status')}, the model's {modelled.status}"
                )
            if modelled.status != "lapsed":
                pending = None if modelled.pending is None else modelled.pending.name
                start = wire_instant(nth_month(modelled.anchor, modelled.index))
                seen = (
                    sub["plan"],
                    sub["pending_plan"],
                    sub["period"]["index"],
                    sub["period"]["start"],
                )
                want_sub = (modelled.plan.name, pending, modelled.index, start)
                if seen != want_sub:
                    raise ConformanceError(
                        f"subscription (plan, pending, period, start) {seen}, "
                        f"the model's {want_sub}"
                    )


# -- running it -----------------------------------------------------------------------------


def make_http_machine(
    base_url: str,
    *,
    timeout_s: float = 10.0,
    on_example: Callable[[], None] | None = None,
) -> type[HttpServiceMachine]:
    """The machine for the server at `base_url` (in test mode); `.TestCase` for pytest.
    `on_example`, if given, is called as each example starts (a progress bar)."""
    client = HttpClient(base_url, timeout_s=timeout_s)
    return type(
        "HttpServiceMachineFor",
        (HttpServiceMachine,),
        {"client": client, "on_example": on_example},
    )


@attrs.frozen
class ConformanceResult:
    passed: bool
    report: str  # on failure: the error and the shrunk failing steps


def conformance_settings(*, max_examples: int, max_steps: int, seed: int | None) -> settings:
    """Bounded; derandomized unless a seed is given; no example database, no deadline."""
    check(1 <= max_examples <= 100_000 and 1 <= max_steps <= 1_000, "bounded by the caller")
    return settings(
        max_examples=max_examples,
        stateful_step_count=max_steps,
        derandomize=seed is None,
        database=None,
        deadline=None,
        print_blob=False,
        report_multiple_bugs=False,  # one failure, shrunk, rather than several half-shrunk
        suppress_health_check=list(HealthCheck),
    )


def run_conformance(
    base_url: str,
    *,
    max_examples: int = 25,
    max_steps: int = 20,
    seed: int | None = None,
    timeout_s: float = 10.0,
    shrink_s: float = 60.0,
    on_example: Callable[[], None] | None = None,
) -> ConformanceResult:
    """Run the machine against `base_url`; on failure, the report holds the shrunk steps.

    Shrinking a failure stops after `shrink_s` seconds (over HTTP each attempt replays a
    sequence of requests), through the bound Hypothesis leaves to be patched for this."""
    check(0 < shrink_s <= 3_600, "the shrinking time is bounded by the caller")
    machine = make_http_machine(base_url, timeout_s=timeout_s, on_example=on_example)
    try:
        probe = machine.client.request("POST", "/v1/test/accounts", body={})
    except ConformanceError as exc:
        return ConformanceResult(passed=False, report=f"{base_url}: {exc}")
    if probe.status != 201:
        return ConformanceResult(
            passed=False,
            report=f"{base_url} is not in test mode: POST /v1/test/accounts answered "
            f"{probe.status}, not 201 (start it with credits serve --test-mode)",
        )
    if seed is not None:
        machine = hypothesis.seed(seed)(machine)
    lines: list[str] = []
    bound_s = engine.MAX_SHRINKING_SECONDS
    engine.MAX_SHRINKING_SECONDS = shrink_s  # type: ignore[assignment]
    try:
        with with_reporter(lambda value: lines.append(str(value))):
            run_state_machine_as_test(
                machine,
                settings=conformance_settings(
                    max_examples=max_examples, max_steps=max_steps, seed=seed
                ),
            )
    except Exception as exc:  # any failure of the service: a wrong answer, or garbage
        notes = getattr(exc, "__notes__", [])
        text = "\n".join([f"{type(exc).__name__}: {exc}", *lines, *notes])
        return ConformanceResult(passed=False, report=text)
    finally:
        engine.MAX_SHRINKING_SECONDS = bound_s
    return ConformanceResult(passed=True, report="\n".join(lines))
