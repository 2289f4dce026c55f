"""`/ui`: an API key's own account, for people, in a browser.

Sign in with the key in a form (POST: the key never goes into a URL, a log line or the
browser's history); the server answers with a session cookie and keeps the session,
the key included, in its memory only:
- the cookie holds a random id (256 bits from `secrets`), nothing else; it is HttpOnly
  (no script reads it), SameSite=Strict (no other site's page sends it), scoped to
  /ui, Secure when the page came over HTTPS, and it and its session expire
  `lifetime_s` after sign-in (an hour by default), active or not;
- every page checks the key again (`ApiKeyStore.authenticate`): a revoked key ends its
  sessions within the key store's cache time (5 s on SQL);
- the sign-in and sign-out forms are refused (403) unless the browser says they come
  from this origin (Origin, else Referer): SameSite keeps the cookie from other sites,
  and the check keeps other sites from signing a browser in or out.
- sessions are bounded (`max_sessions`; the oldest goes first) and forgotten on restart.

The page shows only the session's account: its id comes from the key, never from the
URL or a parameter, so another account's data cannot be asked for.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import attrs
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response

from adapters.api.chart import balance_chart
from adapters.api.pages import esc, html_response, layout
from adapters.api.problems import ProblemKind, kind_of
from credits_domain import (
    ApiKeyStore,
    Channel,
    Contact,
    CreditsError,
    CreditService,
    EntryKind,
    InvalidRequest,
    LedgerEntry,
    MalformedContact,
    Operation,
    Ownership,
    Status,
)
from credits_domain.limits import MAX_CONTACT_INPUT_LENGTH, MAX_STATEMENT_CURSOR
from credits_domain.periods import Period

COOKIE: Final = "credits_session"
COOKIE_PATH: Final = "/ui"
SIGN_IN: Final = "/ui/sign-in"
SIGN_OUT: Final = "/ui/sign-out"
MAX_FORM_BYTES: Final = 2_048
MAX_KEY_LENGTH: Final = 200  # keys read ck_<16>_<43>: 63 characters
PAGE: Final = 20  # rows of the statement and of the data owned per page
MAX_CHART_ENTRIES: Final = 20_000
"""Ledger entries read per period for the chart and the usage; past it the page says so."""

CROSS_ORIGIN = ProblemKind(
    slug="cross-origin-form", status=403, title="The form was not sent from this site"
)

_OPERATIONS: Final = (Operation.UNLOCK, Operation.EXPORT, Operation.ENRICH)


@attrs.define
class _Session:
    account: str
    token: str
    expires: float


class Sessions:
    """Server-side sessions: a random id -> (account, key), each ending `lifetime_s`
    after it began (on `now`, a monotonic clock: a change of the wall clock moves no
    session's end)."""

    def __init__(
        self,
        *,
        lifetime_s: int = 60 * 60,
        max_sessions: int = 10_000,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if lifetime_s <= 0 or max_sessions < 1:
            raise ValueError("lifetime_s must be > 0 and max_sessions >= 1")
        self.lifetime_s = lifetime_s
        self._max = max_sessions
        self._now = now
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def open(self, account: str, token: str) -> str:
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            while len(self._sessions) >= self._max:
                self._sessions.popitem(last=False)  # the oldest goes
            self._sessions[session_id] = _Session(account, token, self._now() + self.lifetime_s)
        return session_id

    def find(self, session_id: str) -> _Session | None:
        """The live session of this id, else None (an ended one is forgotten)."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if self._now() >= session.expires:
                del self._sessions[session_id]
                return None
            return session

    def close(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


def _same_origin(request: Request) -> bool:
    """Did the browser send this form from one of our own pages?"""
    claimed = request.headers.get("origin")
    if claimed is None or claimed == "null":
        referer = request.headers.get("referer")
        if referer is None:
            return False
        parts = urlsplit(referer)
        claimed = f"{parts.scheme}://{parts.netloc}"
    host = request.headers.get("host")
    return host is not None and claimed == f"{request.url.scheme}://{host}"


async def _form(request: Request) -> dict[str, str] | None:
    """The url-encoded form of a POST, or None if it is not one or is above the limit."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return None
    body = b""
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return None
    except ClientDisconnect:  # gone mid-form: nobody reads the answer, no traceback
        return None
    try:
        fields = parse_qs(body.decode("ascii"), max_num_fields=4, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    return {name: values[0] for name, values in fields.items() if len(values) == 1}


def _header(account: str | None) -> str:
    out = ""
    if account is not None:
        out = (
            f'<form method="post" action="{SIGN_OUT}"><span class="muted">{esc(account)}</span> '
            '<button type="submit" id="sign-out">Sign out</button></form>'
        )
    return f'<header class="bar"><h1>Credits</h1>{out}</header>'


def _sign_in_page(message: str | None = None) -> str:
    error = f'<p class="error" role="alert">{esc(message)}</p>' if message else ""
    body = (
        f"{_header(None)}<main>"
        f'<form class="sign-in card" method="post" action="{SIGN_IN}">'
        "<h2>Sign in to your account</h2>"
        '<p class="muted">With an API key of the account (<code>credits keys create '
        "ACCOUNT</code> prints one). It is sent once, in this form, and kept on the "
        "server for this session only.</p>"
        f'{error}<label for="key">API key</label>'
        f'<input id="key" name="key" type="password" autocomplete="off" required '
        f'maxlength="{MAX_KEY_LENGTH}" spellcheck="false">'
        '<input type="submit" id="sign-in" value="Sign in"></form>'
        '<p class="muted">The API reference: <a href="/docs">/docs</a></p></main>'
    )
    return layout("Sign in · Credits", body)


def _error_page(kind: ProblemKind, detail: str, account: str | None = None) -> Response:
    body = (
        f'{_header(account)}<main><section class="card"><h2>{esc(kind.title)}</h2>'
        f'<p class="error" data-problem="{esc(kind.slug)}">{esc(detail)}</p>'
        f'<p><a href="/ui">Back to your account</a></p></section></main>'
    )
    return html_response(layout(f"{kind.title} · Credits", body), kind.status)


def _cookie(response: Response, request: Request, value: str, max_age: int) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


# -- the account page -----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Query:
    """What the page may be asked: a statement period and cursor, a cursor of owned data."""

    period: int | None
    after: int | None
    owned_after: Contact | None

    @classmethod
    def parse(cls, params: Mapping[str, list[str]]) -> _Query:
        unknown = sorted(set(params) - {"period", "after", "owned_after"})
        if unknown:
            raise InvalidRequest(f"unknown query parameter(s): {', '.join(unknown)}")
        values = {name: given[-1] for name, given in params.items()}
        return cls(
            period=_whole(values.get("period"), "period", 1_200),
            after=_whole(values.get("after"), "after", MAX_STATEMENT_CURSOR),
            owned_after=_contact(values.get("owned_after")),
        )


def _whole(raw: str | None, name: str, high: int) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 16 or int(raw) > high:
        raise InvalidRequest(f"{name} must be a whole number from 0 to {high}, got {raw!r}")
    return int(raw)


def _contact(raw: str | None) -> Contact | None:
    if raw is None:
        return None
    channel, _, value = raw.partition(":")
    if len(raw) > MAX_CONTACT_INPUT_LENGTH + 10 or channel not in ("email", "mobile"):
        raise InvalidRequest(f"owned_after must read email:<value> or mobile:<value>, got {raw!r}")
    try:
        if channel == "email":
            return Contact.email(value)
        return Contact.mobile(value)
    except MalformedContact as exc:
        raise InvalidRequest(f"owned_after: {exc}") from exc


def _link(query: Mapping[str, object], text: str, rel: str) -> str:
    shown = {k: str(v) for k, v in query.items() if v is not None}
    href = "/ui" + ("?" + urlencode(shown, quote_via=quote) if shown else "")
    return f'<a href="{esc(href)}" rel="{rel}" data-rel="{rel}">{esc(text)}</a>'


def _when(at: datetime) -> str:
    return f"{at:%d %b %Y %H:%M} UTC"


def _n(value: int) -> str:
    return f"{value:,}"


def _read_period(
    service: CreditService, account: str, period: Period
) -> tuple[list[LedgerEntry], bool]:
    entries: list[LedgerEntry] = []
    for entry in service.statement(account, period):
        if len(entries) == MAX_CHART_ENTRIES:
            return entries, True
        entries.append(entry)
    return entries, False


def _pools(service: CreditService, account: str) -> str:
    balance = service.balance(account)
    cards = []
    for pool in Channel:
        total = balance.of(pool)
        available = balance.email_available if pool is Channel.EMAIL else balance.mobile_available
        cards.append(
            f'<div class="pool" data-pool="{pool.value}"><div class="muted">'
            f"{pool.value.capitalize()} credits available</div>"
            f'<div class="big" data-field="available">{_n(available)}</div>'
            f'<div class="muted">balance <span data-field="balance">{_n(total)}</span>, '
            f'on hold <span data-field="held">{_n(total - available)}</span></div></div>'
        )
    return (
        '<section class="card" id="pools"><h2>Pools</h2>'
        f'<div class="pools">{"".join(cards)}</div></section>'
    )


def _renewal(service: CreditService, account: str) -> tuple[str, Period]:
    sub = service.subscription(account)
    period = sub.period
    plan = sub.pending_plan or sub.plan
    if sub.status is Status.LAPSED:
        text = "The subscription has lapsed: nothing renews. Subscribe again to start afresh."
    elif sub.ends_at is not None:
        text = (
            f"Cancelled: the subscription ends on {_when(sub.ends_at)}, and the credits "
            "left then are forfeited."
        )
    elif sub.status is Status.PAUSED:
        text = (
            f"Paused: the period boundary on {_when(period.end)} grants nothing until the "
            "subscription resumes."
        )
    else:
        change = (
            f" on the {esc(plan.name)} plan (from {esc(sub.plan.name)})" if sub.pending_plan else ""
        )
        text = (
            f'Renews on <span data-field="renews-at">{_when(period.end)}</span>{change}: '
            f'<span data-field="grant-email">{_n(plan.monthly.email)}</span> email and '
            f'<span data-field="grant-mobile">{_n(plan.monthly.mobile)}</span> mobile credits '
            "are granted, and unused credits roll over."
        )
    summary = (
        f'<section class="card" id="subscription"><h2>Subscription</h2>'
        f'<p>Plan <strong data-field="plan">{esc(sub.plan.name)}</strong>, '
        f'<span data-field="status">{esc(sub.status.value)}</span>; period {period.index + 1} '
        f"runs from {_when(period.start)} to {_when(period.end)}.</p>"
        f'<p id="renewal">{text}</p></section>'
    )
    return summary, period


def _charts(service: CreditService, account: str, current: Period) -> tuple[str, str]:
    previous = service.period(account, current.index - 1) if current.index > 0 else None
    start = previous.start if previous is not None else current.start
    earlier = start - timedelta(microseconds=1)
    opening = service.balance_at(account, earlier) if previous is not None else None
    entries: list[LedgerEntry] = []
    cut = False
    for period in (previous, current):
        if period is not None:
            read, more = _read_period(service, account, period)
            entries.extend(read)
            cut = cut or more
    charts = "".join(
        f"<figure><figcaption>{pool.value.capitalize()} credits</figcaption>"
        + balance_chart(
            pool,
            start=start,
            end=current.end,
            boundaries=[current.start] if previous is not None else [],
            opening=0 if opening is None else opening.of(pool),
            entries=entries,
        )
        + "</figure>"
        for pool in Channel
    )
    note = (
        f'<p class="muted">The chart shows the first {_n(MAX_CHART_ENTRIES)} changes of '
        "each period.</p>"
        if cut
        else ""
    )
    chart_section = (
        '<section class="card" id="charts"><h2>Balance, previous and current period</h2>'
        '<p class="muted">Each dot is a change: green grants, blue charges, orange refunds, '
        "red forfeits; dashed: no change since.</p>"
        f'<div class="charts">{charts}</div>{note}</section>'
    )
    in_current = [e for e in entries if current.start <= e.at < current.end]
    return chart_section, _usage(in_current, cut)


def _usage(entries: Sequence[LedgerEntry], cut: bool) -> str:
    rows = []
    for operation in _OPERATIONS:
        charges = [
            e for e in entries if e.kind is EntryKind.CHARGE and e.cause.operation is operation
        ]
        by_pool = {pool: -sum(e.amount for e in charges if e.pool is pool) for pool in Channel}
        rows.append(
            f'<tr data-operation="{operation.value}"><td>{operation.value}</td>'
            f'<td class="num" data-field="data">{_n(len(charges))}</td>'
            f'<td class="num" data-field="email">{_n(by_pool[Channel.EMAIL])}</td>'
            f'<td class="num" data-field="mobile">{_n(by_pool[Channel.MOBILE])}</td></tr>'
        )
    refunds = [e for e in entries if e.kind is EntryKind.REFUND]
    note = " (at least: the period has more changes than the page reads)" if cut else ""
    return (
        '<section class="card" id="usage"><h2>This period\'s usage</h2>'
        '<table><thead><tr><th>operation</th><th class="num">data charged</th>'
        '<th class="num">email credits</th><th class="num">mobile credits</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        f'<p class="muted">Refunded bounces: <span data-field="refunds">{_n(len(refunds))}'
        f"</span>{note}.</p></section>"
    )


def _cause(entry: LedgerEntry) -> str:
    """The statement's cause cell: the operation, datum and note; who charged (R22); the
    expiring grant drawn on or expired, and a grant's expiry (R23)."""
    cause = entry.cause
    parts = [" ".join(p for p in (cause.operation.value, cause.datum, cause.note) if p)]
    if cause.member is not None:
        parts.append(f"member {cause.member}")
    if cause.expires_at is not None:
        parts.append(f"expires {_when(cause.expires_at)}")
    if entry.kind is not EntryKind.TOP_UP and cause.grant is not None:
        parts.append(f"grant of entry {cause.grant}")
    return ", ".join(parts)


def _statement(service: CreditService, account: str, current: Period, query: _Query) -> str:
    index = current.index if query.period is None else query.period
    if index > current.index:
        raise InvalidRequest(f"period must be from 0 to {current.index}, got {index}")
    period = current if index == current.index else service.period(account, index)
    after = -1 if query.after is None else query.after
    rows: list[LedgerEntry] = []
    for entry in service.statement(account, period, after_seq=after):
        rows.append(entry)
        if len(rows) > PAGE:
            break
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    owned_cursor = None if query.owned_after is None else str(query.owned_after)
    here = {"period": query.period, "owned_after": owned_cursor}
    body = "".join(
        f'<tr data-seq="{e.seq}"><td class="num">{e.seq}</td><td>{_when(e.at)}</td>'
        f"<td>{e.kind.value}</td><td>{e.pool.value}</td>"
        f'<td class="num">{"+" if e.amount > 0 else ""}{_n(e.amount)}</td>'
        f'<td class="num">{_n(e.balance_after)}</td>'
        f"<td>{esc(_cause(e))}</td></tr>"
        for e in rows
    )
    links = []
    if query.after is not None:
        links.append(_link(here, "First page", "statement-first"))
    if more:
        links.append(_link({**here, "after": rows[-1].seq}, "Next page", "statement-next"))
    if index > 0:
        links.append(
            _link(
                {"period": index - 1, "owned_after": owned_cursor},
                "Previous period",
                "period-previous",
            )
        )
    if index < current.index:
        links.append(_link({"owned_after": owned_cursor}, "Current period", "period-current"))
    empty = "" if rows else '<p class="muted">No entries on this page.</p>'
    return (
        f'<section class="card" id="statement" data-period="{index}"><h2>Statement, period '
        f"{index + 1} ({_when(period.start)} to {_when(period.end)})</h2>"
        '<table><thead><tr><th class="num">#</th><th>when</th><th>kind</th><th>pool</th>'
        '<th class="num">amount</th><th class="num">balance</th><th>cause</th></tr></thead>'
        f'<tbody>{body}</tbody></table>{empty}<nav class="pager">{"".join(links)}</nav></section>'
    )


def _owned(service: CreditService, account: str, query: _Query) -> str:
    page: Sequence[Ownership] = service.owned(account, after=query.owned_after, limit=PAGE + 1)
    more = len(page) > PAGE
    page = page[:PAGE]
    here = {"period": query.period, "after": query.after}
    body = "".join(
        f'<tr data-datum="{esc(r.contact)}"><td>{r.contact.channel.value}</td>'
        f'<td>{esc(r.contact.value)}</td><td class="num">{_n(r.credits)} {r.pool.value}</td>'
        f"<td>{_when(r.charged_at)}</td>"
        f"<td>{'' if r.refunded_at is None else 'refunded ' + _when(r.refunded_at)}</td></tr>"
        for r in page
    )
    links = []
    if query.owned_after is not None:
        links.append(_link(here, "First page", "owned-first"))
    if more:
        links.append(
            _link({**here, "owned_after": str(page[-1].contact)}, "Next page", "owned-next")
        )
    empty = "" if page else '<p class="muted">No data on this page.</p>'
    return (
        '<section class="card" id="owned"><h2>Data owned</h2><p class="muted">Paid for once, '
        "yours for good: asking for them again is free (R12).</p>"
        '<table><thead><tr><th>channel</th><th>datum</th><th class="num">paid</th>'
        f"<th>since</th><th></th></tr></thead><tbody>{body}</tbody></table>{empty}"
        f'<nav class="pager">{"".join(links)}</nav></section>'
    )


def account_page(service: CreditService, account: str, params: Mapping[str, list[str]]) -> str:
    """The whole page of `account` (synchronous: it reads storage)."""
    query = _Query.parse(params)
    subscription, current = _renewal(service, account)
    charts, usage = _charts(service, account, current)
    body = (
        f"{_header(account)}<main>"
        f"{_pools(service, account)}{subscription}{charts}{usage}"
        f"{_statement(service, account, current, query)}{_owned(service, account, query)}"
        "</main>"
    )
    return layout(f"{account} · Credits", body)


# -- the routes ---------------------------------------------------------------------------


class AccountPages:
    """The /ui routes' handlers over one service, key store and session store."""

    def __init__(self, service: CreditService, keys: ApiKeyStore, sessions: Sessions) -> None:
        self.service = service
        self.keys = keys
        self.sessions = sessions

    def _signed_in(self, request: Request) -> tuple[str, str] | None:
        """(session id, account) of a live session whose key still authenticates."""
        session_id = request.cookies.get(COOKIE)
        if not session_id or len(session_id) > 100:
            return None
        session = self.sessions.find(session_id)
        if session is None:
            return None
        if self.keys.authenticate(session.token) != session.account:
            self.sessions.close(session_id)  # revoked since: the session ends with its key
            return None
        return session_id, session.account

    async def page(self, request: Request) -> Response:
        def work() -> Response:
            found = self._signed_in(request)
            if found is None:
                return RedirectResponse(SIGN_IN, status_code=303)
            account = found[1]
            params: dict[str, list[str]] = {}
            for name, value in request.query_params.multi_items():
                params.setdefault(name, []).append(value)
            try:
                return html_response(account_page(self.service, account, params))
            except CreditsError as exc:
                return _error_page(kind_of(exc), str(exc), account)

        return await run_in_threadpool(work)

    async def sign_in_form(self, request: Request) -> Response:
        return html_response(_sign_in_page())

    async def sign_in(self, request: Request) -> Response:
        if not _same_origin(request):
            return _error_page(CROSS_ORIGIN, "Sign in from this site's own sign-in page.")
        form = await _form(request)
        key = None if form is None else form.get("key", "").strip()
        if not key or len(key) > MAX_KEY_LENGTH:
            return html_response(_sign_in_page("Give an API key."), 400)
        account = await run_in_threadpool(self.keys.authenticate, key)
        if account is None:
            return html_response(_sign_in_page("That key is unknown or revoked."), 401)
        response = RedirectResponse("/ui", status_code=303)
        session_id = self.sessions.open(account, key)
        _cookie(response, request, session_id, self.sessions.lifetime_s)
        return response

    async def sign_out(self, request: Request) -> Response:
        if not _same_origin(request):
            return _error_page(CROSS_ORIGIN, "Sign out from this site's own pages.")
        session_id = request.cookies.get(COOKIE)
        if session_id:
            self.sessions.close(session_id)
        response = RedirectResponse(SIGN_IN, status_code=303)
        _cookie(response, request, "", 0)
        return response
