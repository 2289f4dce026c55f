"""The HTTP API: every use case of `CreditService` over JSON (the driving side).

`create_app(service, keys)` returns a Starlette ASGI application. Routes, under
`/v1/accounts/{account}` (the OpenAPI document at `/openapi.json` is the reference):

    POST /subscription           {"plan": "boost"}          subscribe (201)
    GET  /subscription                                      the subscription
    PUT  /subscription/plan      {"plan": "power"}          change plan (R7)
    POST /subscription/cancel | /pause | /resume            R6
    POST /unlock                 {"contacts": [...]}        R9..R17, Idempotency-Key
    POST /export                 {"contacts": [...], "destination": "csv"}   R13
    POST /enrich                 {"found": [...]}           R14
    POST /bounces                {"channel": "email", "value": "..."}        R18 (201)
    POST /top-ups                {"email": 500, "reason": "promotion"}       R8 (201), R17
    GET  /balance                                           R20
    GET  /balance-at?at=2025-01-31T00:00:00Z                R21
    GET  /statement?cursor=&limit=&period=                  R21, paged by seq
    GET  /guarantee?period=                                 R25
    GET  /events?after_seq=&limit=                          R24, paged by seq
    PUT  /low-balance-threshold  {"pool": "email", "credits": 50}  R24
    POST /members                {"member": "alice"}        R22
    PUT  /members/allowance      {"member": "alice", "allowance": {"email": 50}}  R22
    GET  /members/usage?member=&period=                     R22

and, for people: /docs (the reference, from the OpenAPI document) and /ui (an API key's
own account, after signing in with the key; see `ui.py`).

Every request is checked in the same order, so that an answer leaks nothing it should
not: (1) the API key (401), (2) the key's account against the URL's (404, exactly the
answer for an account that does not exist), (3) the body and parameters, parsed whole
before any use case runs (4xx: nothing charged, nothing stored), (4) the use case.

The service is synchronous (it does storage and verifier I/O), so steps 1 to 4 run in
one hop to the thread pool; the event loop only reads the body and writes the answer.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import quote

import attrs
import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.api import schemas, shapes
from adapters.api.docs import SCRIPT, docs_page
from adapters.api.openapi import openapi_document
from adapters.api.pages import SCRIPT_PATH, STYLE, STYLE_PATH, asset_response, html_response
from adapters.api.problems import (
    BODY_TOO_LARGE,
    INTERNAL_ERROR,
    MALFORMED_HEADER,
    MALFORMED_JSON,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    UNAUTHORIZED,
    UNSUPPORTED_MEDIA_TYPE,
    ProblemError,
    domain_problem,
    problem_response,
)
from adapters.api.sandbox import (
    TEST_ACCOUNTS_PATH,
    TEST_CLOCK_PATH,
    ClockAdvance,
    Sandbox,
    SandboxAccountRequest,
    with_test_paths,
)
from adapters.api.shapes import RequestShapes
from adapters.api.ui import SIGN_IN, SIGN_OUT, AccountPages, Sessions
from credits_domain import (
    ApiKeyStore,
    ChargeResult,
    Credits,
    CreditsError,
    CreditService,
    UnknownAccount,
)
from credits_domain.limits import DEFAULT_API_BATCH, MAX_IDEMPOTENCY_KEY_LENGTH

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
_IDEMPOTENCY_KEY = re.compile(rf"^[!-~]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}$")
_JSON_MEDIA_TYPE = re.compile(r"^application/(?:[a-z0-9.+-]+\+)?json$")


# The query parameters each use case reads; any other is refused (a typo such as
# ?limt=5 must not silently read the default).
_QUERY_PARAMETERS: Final[Mapping[str, tuple[str, ...]]] = {
    "statement": ("cursor", "limit", "period"),
    "balance_at": ("at",),
    "guarantee": ("period",),
    "events": ("after_seq", "limit"),
    "member_usage": ("member", "period"),
}


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # With two equal names the last would win silently, and a proxy or log reading the
    # first would see another request than the one charged (RFC 8259 section 4).
    # msgspec's parser keeps the last one silently too (its issue #648): see _Call.json.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        names = [name for name, _ in pairs]
        twice = next(name for i, name in enumerate(names) if name in names[:i])
        raise ValueError(f"the field {twice!r} is given twice in one object")
    return obj


@attrs.frozen(kw_only=True)
class _Call:
    """What a handler may look at: the request, already read, and the caller's account."""

    account: str
    headers: Mapping[str, str]
    idempotency_keys: tuple[str, ...]
    query: Mapping[str, list[str]]
    body: bytes | None  # None: above the body limit
    content_type: str | None

    def json(self) -> object:
        """The body as JSON, after the media type and size checks (415, 413, 400)."""
        media, *parameters = (self.content_type or "").split(";")
        if not _JSON_MEDIA_TYPE.match(media.strip().lower()):
            raise ProblemError(
                UNSUPPORTED_MEDIA_TYPE,
                f"send the body as application/json, not {self.content_type or 'no type'}",
            )
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            charset = value.strip().strip('"').lower()
            if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
                raise ProblemError(
                    UNSUPPORTED_MEDIA_TYPE, f"JSON is UTF-8 (RFC 8259), not {charset or '?'}"
                )
        if self.body is None:
            raise ProblemError(BODY_TOO_LARGE, "the request body is above the limit")
        try:
            # json.loads would guess UTF-16 and UTF-32 from bytes and read them: a proxy
            # or log reading the bytes as UTF-8 (RFC 8259) would see another request.
            text = self.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProblemError(
                MALFORMED_JSON, f"the body is not valid JSON: not UTF-8 ({exc})"
            ) from exc
        # The standard library's C scanner reads the text, and msgspec then converts the
        # result to its shape (schemas.decode): msgspec's own parser would keep the last
        # of two equal names, and would call an escaped lone surrogate ("\ud800")
        # malformed JSON, where the core's printable rule names the field (422). The hook
        # costs a dict() per object; the scan and the conversion stay in C.
        try:
            return json.loads(
                text, parse_constant=_reject_constant, object_pairs_hook=_unique_fields
            )
        except (ValueError, RecursionError) as exc:  # includes JSONDecodeError
            raise ProblemError(MALFORMED_JSON, f"the body is not valid JSON: {exc}") from exc

    def idempotency_key(self) -> str | None:
        if not self.idempotency_keys:
            return None
        if len(self.idempotency_keys) > 1:
            raise ProblemError(MALFORMED_HEADER, f"give one {IDEMPOTENCY_HEADER} header")
        key = self.idempotency_keys[0]
        if not _IDEMPOTENCY_KEY.match(key):
            raise ProblemError(
                MALFORMED_HEADER,
                f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} visible "
                "ASCII characters",
            )
        return key


@attrs.frozen
class _Answer:
    status: int
    body: shapes.Shape
    headers: Mapping[str, str] = attrs.field(factory=dict)


Handler = Callable[[_Call], _Answer]


def _bearer_token(request: Request) -> str:
    values = request.headers.getlist("authorization")
    if not values:
        raise ProblemError(UNAUTHORIZED, "send an API key: Authorization: Bearer <key>")
    scheme, _, token = values[0].partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer" or not token.strip():
        raise ProblemError(UNAUTHORIZED, "the Authorization header must read: Bearer <key>")
    return token.strip()


class _Api:
    def __init__(
        self,
        service: CreditService,
        keys: ApiKeyStore,
        max_batch: int,
        sandbox: Sandbox | None = None,
    ) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a whole number >= 1, got {max_batch!r}")
        if max_batch > service.policy.max_batch:
            raise ValueError(
                f"max_batch {max_batch} is above the service's own limit "
                f"{service.policy.max_batch}; the API must refuse first"
            )
        self.default_service = service
        self.keys = keys
        self.sandbox = sandbox
        self.requests = RequestShapes.bounded(max_batch)
        self.max_body_bytes = self.requests.max_body_bytes
        document = openapi_document(self.requests)
        self.document = document if sandbox is None else with_test_paths(document)

    def service(self, account: str) -> CreditService:
        """The service of `account`: in test mode, a sandbox account has its own."""
        found = None if self.sandbox is None else self.sandbox.service_for(account)
        return self.default_service if found is None else found

    # -- plumbing ---------------------------------------------------------------------

    async def _read_body(self, request: Request) -> bytes | None:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                return None  # stop reading: the server drops the rest with the connection
            chunks.append(chunk)
        return b"".join(chunks)

    def _authorize(self, token: str, account: str) -> str:
        owner = self.keys.authenticate(token)
        if owner is None:
            raise ProblemError(UNAUTHORIZED, "the API key is unknown or revoked")
        if owner != account:
            # Isolation: the same answer as for an account that does not exist.
            raise UnknownAccount(account)
        return owner

    def endpoint(
        self, handler: Handler, *, reads_body: bool, authenticated: bool = True
    ) -> Callable[..., Any]:
        """`authenticated=False` (test mode's account creation only): no API key is read,
        and the handler's call has no account."""

        async def run(request: Request) -> Response:
            instance: str = request.scope["path"]
            try:
                token = _bearer_token(request) if authenticated else ""
                body = await self._read_body(request) if reads_body else b""
                account = request.path_params.get("account", "")
                query: dict[str, list[str]] = {}
                if request.scope["query_string"]:
                    for name, value in request.query_params.multi_items():
                        query.setdefault(name, []).append(value)

                def work() -> Response:
                    owner = self._authorize(token, account) if authenticated else ""

                    schemas.check_query_names(query, _QUERY_PARAMETERS.get(handler.__name__, ()))
                    call = _Call(
                        account=owner,
                        headers=request.headers,
                        idempotency_keys=tuple(request.headers.getlist(IDEMPOTENCY_HEADER)),
                        query=query,
                        body=body,
                        content_type=request.headers.get("content-type"),
                    )
                    answer = handler(call)
                    # Rendered here, in the worker thread, not on the event loop.
                    return Response(
                        schemas.encode(answer.body),
                        status_code=answer.status,
                        headers=dict(answer.headers),
                        media_type="application/json",
                    )

                return await run_in_threadpool(work)
            except ProblemError as exc:
                return problem_response(
                    exc.kind, exc.detail, instance=instance, headers=exc.headers
                )
            except CreditsError as exc:
                return domain_problem(exc, instance)
            except ClientDisconnect:
                # The client left mid-body: nothing was charged, nobody reads an answer;
                # an ERROR with a traceback would page someone for a dropped connection.
                log.info("the client left during %s %s", request.method, instance)
                return Response(status_code=400)
            except Exception:  # a bug: log it, answer 500 in the same shape, never a traceback
                log.exception("unhandled error on %s %s", request.method, instance)
                return problem_response(
                    INTERNAL_ERROR, "the server failed; the error is logged", instance=instance
                )

        return run

    # -- use cases --------------------------------------------------------------------

    def subscribe(self, call: _Call) -> _Answer:
        plan = schemas.to_plan(schemas.decode(call.json(), shapes.PlanRequest))
        subscription = self.service(call.account).subscribe(call.account, plan)
        return _Answer(
            201,
            schemas.render_subscription(subscription),
            # A URL: the account percent-encoded ('?', '#', ' ' and non-Latin-1 ids; the
            # raw id failed to encode as a header *after* subscribing).
            {"Location": f"/v1/accounts/{quote(call.account, safe='')}/subscription"},
        )

    def get_subscription(self, call: _Call) -> _Answer:
        subscription = self.service(call.account).subscription(call.account)
        return _Answer(200, schemas.render_subscription(subscription))

    def change_plan(self, call: _Call) -> _Answer:
        plan = schemas.to_plan(schemas.decode(call.json(), shapes.PlanRequest))
        change = self.service(call.account).change_plan(call.account, plan)
        subscription = self.service(call.account).subscription(call.account)
        return _Answer(200, schemas.render_plan_change(change, subscription))

    def cancel(self, call: _Call) -> _Answer:
        self.service(call.account).cancel(call.account)
        return self.get_subscription(call)

    def pause(self, call: _Call) -> _Answer:
        self.service(call.account).pause(call.account)
        return self.get_subscription(call)

    def resume(self, call: _Call) -> _Answer:
        self.service(call.account).resume(call.account)
        return self.get_subscription(call)

    def _charged(self, result: ChargeResult) -> _Answer:
        headers = {REPLAYED_HEADER: "true"} if result.replayed else {}
        return _Answer(200, schemas.render_charge(result), headers)

    def unlock(self, call: _Call) -> _Answer:
        request = schemas.decode(call.json(), self.requests.unlock)
        contacts = schemas.to_contacts(request.contacts, "contacts")
        key = call.idempotency_key()
        return self._charged(
            self.service(call.account).unlock(
                call.account, contacts, idempotency_key=key, member=request.member
            )
        )

    def export(self, call: _Call) -> _Answer:
        request = schemas.decode(call.json(), self.requests.export)
        contacts = schemas.to_contacts(request.contacts, "contacts")
        key = call.idempotency_key()
        result = self.service(call.account).export(
            call.account,
            contacts,
            destination=request.destination,
            idempotency_key=key,
            member=request.member,
        )
        return self._charged(result)

    def enrich(self, call: _Call) -> _Answer:
        request = schemas.decode(call.json(), self.requests.enrich)
        found = schemas.to_contacts(request.found, "found")
        key = call.idempotency_key()
        return self._charged(
            self.service(call.account).enrich(
                call.account, found, idempotency_key=key, member=request.member
            )
        )

    def report_bounce(self, call: _Call) -> _Answer:
        contact = schemas.to_contact(schemas.decode(call.json(), shapes.ContactIn), "")
        entry = self.service(call.account).report_bounce(call.account, contact)
        return _Answer(201, schemas.render_entry(entry))

    def top_up(self, call: _Call) -> _Answer:
        credits, reason, expires_at = schemas.to_top_up(
            schemas.decode(call.json(), shapes.TopUpRequest)
        )
        key = call.idempotency_key()
        done = self.service(call.account).top_up(
            call.account, credits, reason=reason, idempotency_key=key, expires_at=expires_at
        )
        headers = {REPLAYED_HEADER: "true"} if done.replayed else {}
        return _Answer(201, schemas.render_top_up(done), headers)

    def balance(self, call: _Call) -> _Answer:
        return _Answer(
            200, schemas.render_balance(self.service(call.account).balance(call.account))
        )

    def balance_at(self, call: _Call) -> _Answer:
        at = schemas.parse_instant_param(call.query, "at")
        past = self.service(call.account).balance_at(call.account, at)
        return _Answer(200, schemas.render_past_balance(at, past))

    def add_member(self, call: _Call) -> _Answer:
        request = schemas.decode(call.json(), shapes.MemberRequest)
        added = self.service(call.account).add_member(call.account, request.member)
        return _Answer(200, shapes.MemberAdded(member=request.member, added=added))

    def set_member_allowance(self, call: _Call) -> _Answer:
        request = schemas.decode(call.json(), shapes.AllowanceRequest)
        given = request.allowance
        credits = None if given is None else Credits(email=given.email, mobile=given.mobile)
        self.service(call.account).set_member_allowance(call.account, request.member, credits)
        return _Answer(200, shapes.MemberAllowance(member=request.member, allowance=given))

    def member_usage(self, call: _Call) -> _Answer:
        member = schemas.parse_member_param(call.query)
        index = schemas.parse_period_param(call.query)
        period = self.service(call.account).period(call.account, index)
        used = self.service(call.account).member_usage(call.account, member, period)
        return _Answer(
            200,
            shapes.MemberUsage(
                member=member,
                period=schemas.render_period(period),
                used=shapes.PoolCredits(email=used.email, mobile=used.mobile),
            ),
        )

    def guarantee(self, call: _Call) -> _Answer:
        index = schemas.parse_period_param(call.query)
        period = None if index is None else self.service(call.account).period(call.account, index)
        return _Answer(
            200,
            schemas.render_guarantee(self.service(call.account).guarantee(call.account, period)),
        )

    def events(self, call: _Call) -> _Answer:
        query = schemas.EventsQuery.parse(call.query)
        found = self.service(call.account).events(
            call.account, after_seq=query.after_seq, limit=query.limit
        )
        return _Answer(200, schemas.render_events(found, query.after_seq))

    def set_low_balance_threshold(self, call: _Call) -> _Answer:
        request = schemas.decode(call.json(), shapes.LowBalanceThresholdRequest)
        self.service(call.account).set_low_balance_threshold(
            call.account, request.pool, request.credits
        )
        now = self.service(call.account).low_balance_thresholds(call.account)
        return _Answer(200, shapes.LowBalanceThresholds(email=now.email, mobile=now.mobile))

    def statement(self, call: _Call) -> _Answer:
        query = schemas.StatementQuery.parse(call.query)
        period = (
            None
            if query.period is None
            else self.service(call.account).period(call.account, query.period)
        )
        page = []
        # One more than the page is read to learn whether there is a next page.
        after_seq = -1 if query.cursor is None else query.cursor
        for entry in self.service(call.account).statement(
            call.account, period, after_seq=after_seq
        ):
            page.append(entry)
            if len(page) > query.limit:
                break
        more = len(page) > query.limit
        page = page[: query.limit]
        next_cursor = page[-1].seq if more else None
        return _Answer(200, schemas.render_statement(page, next_cursor, period))

    # -- test mode (sandbox.py) -------------------------------------------------------

    def create_test_account(self, call: _Call) -> _Answer:
        assert self.sandbox is not None  # routed in test mode only
        request = schemas.decode(call.json(), SandboxAccountRequest)
        return _Answer(201, self.sandbox.create(self.keys, request))

    def advance_test_clock(self, call: _Call) -> _Answer:
        assert self.sandbox is not None  # routed in test mode only
        request = schemas.decode(call.json(), ClockAdvance)
        return _Answer(200, self.sandbox.advance(call.account, request.seconds))


def create_app(
    service: CreditService,
    keys: ApiKeyStore,
    *,
    max_batch: int = DEFAULT_API_BATCH,
    sessions: Sessions | None = None,
    sandbox: Sandbox | None = None,
) -> Starlette:
    """The ASGI application of the API, with its pages for people (/docs, /ui).

    `max_batch` bounds the contacts of one request (422 batch-too-large above it); it must
    not exceed the service policy's own bound. The body is bounded by it too, in bytes
    (`max_body_bytes`, 413 body-too-large above). `sessions` keeps the signed-in
    browsers of /ui (default: in this process's memory, an hour each). `sandbox` turns
    test mode on (`sandbox.py`): its routes, and a service per sandbox account."""
    api = _Api(service, keys, max_batch, sandbox)
    pages = AccountPages(service, keys, sessions if sessions is not None else Sessions())
    base = "/v1/accounts/{account}"

    def route(path: str, methods: Mapping[str, Handler]) -> Route:
        """One route per path, so that a 405 lists every method of the path in Allow."""
        endpoints = {
            method: api.endpoint(handler, reads_body=method in ("POST", "PUT"))
            for method, handler in methods.items()
        }

        async def dispatch(request: Request) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            response: Response = await endpoints[method](request)
            return response

        return Route(base + path, dispatch, methods=list(methods))

    document = msgspec.json.encode(api.document)  # rendered once: it never changes

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)  # registered for HTTPException only
        kinds = {404: NOT_FOUND, 405: METHOD_NOT_ALLOWED}
        kind = kinds.get(exc.status_code, INTERNAL_ERROR)
        detail = {
            404: f"no resource at {request.url.path}; see /openapi.json",
            405: f"{request.method} is not served at {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        return problem_response(
            kind, detail, instance=request.url.path, headers=dict(exc.headers or {})
        )

    docs = html_response(docs_page(api.document))  # rendered once, as the document

    async def reference(request: Request) -> Response:
        return docs

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)  # browsers ask; a 404 would be logged as an error

    async def style(request: Request) -> Response:
        return asset_response(STYLE, "text/css")

    async def script(request: Request) -> Response:
        return asset_response(SCRIPT, "text/javascript")

    def page(path: str, methods: Mapping[str, Callable[[Request], Awaitable[Response]]]) -> Route:
        """One route per path (a 405 lists every method of the path in Allow)."""

        async def dispatch(request: Request) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await methods[method](request)

        return Route(path, dispatch, methods=list(methods))

    routes = [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", reference, methods=["GET"]),
        Route(STYLE_PATH, style, methods=["GET"]),
        Route("/favicon.ico", no_icon, methods=["GET"]),
        Route(SCRIPT_PATH, script, methods=["GET"]),
        page("/ui", {"GET": pages.page}),
        page(SIGN_IN, {"GET": pages.sign_in_form, "POST": pages.sign_in}),
        page(SIGN_OUT, {"POST": pages.sign_out}),
        route("/subscription", {"POST": api.subscribe, "GET": api.get_subscription}),
        route("/subscription/plan", {"PUT": api.change_plan}),
        route("/subscription/cancel", {"POST": api.cancel}),
        route("/subscription/pause", {"POST": api.pause}),
        route("/subscription/resume", {"POST": api.resume}),
        route("/unlock", {"POST": api.unlock}),
        route("/export", {"POST": api.export}),
        route("/enrich", {"POST": api.enrich}),
        route("/bounces", {"POST": api.report_bounce}),
        route("/top-ups", {"POST": api.top_up}),
        route("/balance", {"GET": api.balance}),
        route("/balance-at", {"GET": api.balance_at}),
        route("/statement", {"GET": api.statement}),
        route("/guarantee", {"GET": api.guarantee}),
        route("/events", {"GET": api.events}),
        route("/low-balance-threshold", {"PUT": api.set_low_balance_threshold}),
        route("/members", {"POST": api.add_member}),
        route("/members/allowance", {"PUT": api.set_member_allowance}),
        route("/members/usage", {"GET": api.member_usage}),
    ]
    if sandbox is not None:
        routes += [
            Route(
                TEST_ACCOUNTS_PATH,
                api.endpoint(api.create_test_account, reads_body=True, authenticated=False),
                methods=["POST"],
            ),
            Route(
                TEST_CLOCK_PATH,
                api.endpoint(api.advance_test_clock, reads_body=True),
                methods=["POST"],
            ),
        ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    # Starlette answers /balance/ with a 307 to the URL built from the Host header: an
    # open redirect to any host a client names. A path with a trailing slash is a 404.
    app.router.redirect_slashes = False
    return app
