"""Webhook endpoints (R24): where an account's events are sent, and how far each got.

The registry is a port of this adapter, not of the core: nothing in the core sends or
reads webhooks. Its stores (`MemoryEndpointStore` here, `adapters.sql.SqlEndpointStore`)
keep per endpoint its URL, its signing secret, its cursor (the seq of the last event it
acknowledged) and its failure state; `tests/endpoint_store_contract.py` holds them to
one behaviour.
"""

from __future__ import annotations

import base64
import string
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import attrs

from credits_domain import CreditsError, InvalidRequest
from credits_domain.events import Event
from credits_domain.limits import check_account
from credits_domain.periods import require_utc

MAX_URL_LENGTH: Final = 2_048  # what browsers and proxies agree on
MAX_ENDPOINTS_PER_ACCOUNT: Final = 10
SECRET_PREFIX: Final = "whsec_"  # the Standard Webhooks specification's
SECRET_BYTES: Final = 32  # the specification asks for 24 to 64 random bytes
MAX_SECRET_LENGTH: Final = 100
ENDPOINT_ID_PREFIX: Final = "ep_"
ENDPOINT_ID_LENGTH: Final = len(ENDPOINT_ID_PREFIX) + 24
MAX_REASON_LENGTH: Final = 500
MAX_PAGE: Final = 1_000  # endpoints a `due` call returns at most
DISABLE_AFTER: Final = timedelta(days=3)  # an endpoint failing this long is disabled

_URL_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%")


class InvalidWebhookUrl(InvalidRequest):
    """A webhook URL that cannot be delivered to, or is too long."""

    def __init__(self, url: object, why: str) -> None:
        shown = url[:80] + "..." if isinstance(url, str) and len(url) > 80 else url
        super().__init__(f"webhook URL {shown!r} {why}")
        self.url = url


class TooManyEndpoints(CreditsError):
    """An account has its maximum of endpoints already; remove one first."""

    def __init__(self, account: str) -> None:
        super().__init__(
            f"account {account!r} has {MAX_ENDPOINTS_PER_ACCOUNT} webhook endpoints already, "
            "the most it may have; remove one first (credits webhooks remove)"
        )
        self.account = account


class UnknownEndpoint(CreditsError, LookupError):
    """No endpoint of that id belongs to that account."""

    def __init__(self, account: str, endpoint_id: str) -> None:
        super().__init__(
            f"account {account!r} has no webhook endpoint {endpoint_id!r}; "
            "see credits webhooks list"
        )
        self.account = account
        self.endpoint_id = endpoint_id


def check_url(url: object) -> str:
    """The URL, if an endpoint may have it: http or https, a host, at most
    `MAX_URL_LENGTH` characters of printable ASCII, no user or password in it."""
    if not isinstance(url, str):
        raise InvalidWebhookUrl(url, "must be a string")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(url, f"is longer than {MAX_URL_LENGTH} characters")
    if not url or not set(url) <= _URL_CHARACTERS:
        raise InvalidWebhookUrl(url, "must be printable ASCII without spaces (percent-encode)")
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError as error:
        raise InvalidWebhookUrl(url, f"is malformed ({error})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidWebhookUrl(url, "must start with http:// or https://")
    if not parts.hostname or not port_ok:
        raise InvalidWebhookUrl(url, "must name a host (and a port from 1 to 65535)")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhookUrl(
            url, "must not carry a user or password: receivers check the signature instead"
        )
    return url


def new_secret(entropy: bytes) -> str:
    """A signing secret as the Standard Webhooks specification writes it: `whsec_` and
    the base64 of `entropy` (24 to 64 random bytes)."""
    if not 24 <= len(entropy) <= 64:
        raise InvalidRequest(f"a signing secret needs 24 to 64 random bytes, got {len(entropy)}")
    return SECRET_PREFIX + base64.b64encode(entropy).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: its base64 part, decoded."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def new_endpoint_id(entropy: bytes) -> str:
    if len(entropy) != 12:
        raise InvalidRequest(f"an endpoint id takes 12 random bytes, got {len(entropy)}")
    return ENDPOINT_ID_PREFIX + entropy.hex()


def check_endpoint_id(endpoint_id: object) -> str:
    valid = (
        isinstance(endpoint_id, str)
        and len(endpoint_id) == ENDPOINT_ID_LENGTH
        and endpoint_id.startswith(ENDPOINT_ID_PREFIX)
        and set(endpoint_id[len(ENDPOINT_ID_PREFIX) :]) <= set(string.hexdigits.lower())
    )
    if not valid:
        raise InvalidRequest(
            f"an endpoint id is {ENDPOINT_ID_PREFIX!r} and 24 hex digits, got {endpoint_id!r}"
        )
    return endpoint_id  # type: ignore[return-value]


def _secret(_i: object, _a: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not value.startswith(SECRET_PREFIX):
        raise ValueError(f"a signing secret starts with {SECRET_PREFIX!r}")
    if len(value) > MAX_SECRET_LENGTH or not 24 <= len(secret_key(value)) <= 64:
        raise ValueError("a signing secret holds 24 to 64 bytes in base64")


def _utc_or_none(_i: object, attribute: attrs.Attribute[Any], value: datetime | None) -> None:
    if value is not None:
        require_utc(value, attribute.name)


def _not_negative(_i: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"{attribute.name} must be an int of at least 0, got {value!r}")


def _reason(_i: object, _a: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not 0 < len(value) <= MAX_REASON_LENGTH:
        raise ValueError(f"a disabled reason has 1 to {MAX_REASON_LENGTH} characters")


@attrs.frozen(kw_only=True)
class Endpoint:
    """One endpoint of one account, with its delivery state.

    - `last_seq`: the seq of the last event the endpoint acknowledged (0: none yet); the
      next one sent is the account's next event, and only once this one was (R24 order).
    - `failing_since`, `attempts`, `next_attempt_at`: set by a failure, cleared by a
      success; `attempts` counts the failed tries of the event at `last_seq + 1`.
    - `disabled_at`, `disabled_reason`: set once it failed for `DISABLE_AFTER` (3 days).
    """

    endpoint_id: str = attrs.field(validator=lambda _i, _a, v: check_endpoint_id(v))
    account: str = attrs.field(validator=lambda _i, _a, v: check_account(v))
    url: str = attrs.field(validator=lambda _i, _a, v: check_url(v))
    secret: str = attrs.field(validator=_secret, repr=False)
    created_at: datetime = attrs.field(validator=lambda _i, a, v: require_utc(v, a.name))
    last_seq: int = attrs.field(default=0, validator=_not_negative)
    failing_since: datetime | None = attrs.field(default=None, validator=_utc_or_none)
    attempts: int = attrs.field(default=0, validator=_not_negative)
    next_attempt_at: datetime | None = attrs.field(default=None, validator=_utc_or_none)
    disabled_at: datetime | None = attrs.field(default=None, validator=_utc_or_none)
    disabled_reason: str | None = attrs.field(default=None, validator=_reason)

    def __attrs_post_init__(self) -> None:
        if (self.failing_since is None) != (self.attempts == 0):
            raise ValueError("an endpoint is failing (failing_since set) iff attempts > 0")
        if (self.disabled_at is None) != (self.disabled_reason is None):
            raise ValueError("a disabled endpoint has both disabled_at and disabled_reason")
        if self.disabled_at is not None and self.next_attempt_at is not None:
            raise ValueError("a disabled endpoint has no next attempt")

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    def delivered(self, seq: int) -> Endpoint:
        """After the event `seq` was acknowledged: the cursor moves on, failures clear."""
        if seq <= self.last_seq:
            raise InvalidRequest(f"event {seq} is not after the cursor {self.last_seq}")
        return attrs.evolve(
            self, last_seq=seq, failing_since=None, attempts=0, next_attempt_at=None
        )

    def failed(self, at: datetime, *, retry_in_s: float, why: str) -> Endpoint:
        """After a failed try at `at`: the next try in `retry_in_s` seconds, or disabled
        once it has been failing for `DISABLE_AFTER`."""
        since = at if self.failing_since is None else self.failing_since
        attempts = self.attempts + 1
        if at - since >= DISABLE_AFTER:
            reason = (
                f"failing since {since.isoformat()} ({attempts} attempts, last: {why}); "
                "disabled after 3 days"
            )[:MAX_REASON_LENGTH]
            return attrs.evolve(
                self,
                failing_since=since,
                attempts=attempts,
                next_attempt_at=None,
                disabled_at=at,
                disabled_reason=reason,
            )
        return attrs.evolve(
            self,
            failing_since=since,
            attempts=attempts,
            next_attempt_at=at + timedelta(seconds=retry_in_s),
        )


class EndpointStore(Protocol):
    """Where endpoints are kept (memory, SQLite, PostgreSQL)."""

    def add(self, endpoint: Endpoint) -> Endpoint:
        """Store a new endpoint; `TooManyEndpoints` past `MAX_ENDPOINTS_PER_ACCOUNT`."""
        ...

    def endpoints(self, account: str) -> Sequence[Endpoint]:
        """The account's endpoints, by id (at most `MAX_ENDPOINTS_PER_ACCOUNT`)."""
        ...

    def remove(self, account: str, endpoint_id: str) -> None:
        """Remove one of the account's endpoints; `UnknownEndpoint` if it has none such."""
        ...

    def due(self, now: datetime, *, after_id: str | None = None, limit: int) -> Sequence[Endpoint]:
        """Enabled endpoints whose next attempt is due at `now` (or who have none), by id,
        after `after_id`, at most `limit` (at most `MAX_PAGE`)."""
        ...

    def save_state(self, endpoint: Endpoint) -> None:
        """Store the endpoint's delivery state (cursor, failures, disabled). A cursor
        never goes back: a state older than the stored one is not saved. A removed
        endpoint stays removed."""
        ...


class EventSource(Protocol):
    """The outbox, read: `CreditService.events` has this signature."""

    def events(
        self, account: str, *, after_seq: int | None = None, limit: int = 100
    ) -> list[Event]:
        """The account's events after `after_seq`, in seq order (1, 2, 3, ... no gaps)."""
        ...


def check_limit(limit: object) -> int:
    if type(limit) is not int or not 0 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be a whole number from 0 to {MAX_PAGE}, got {limit!r}")
    return limit


def register(
    store: EndpointStore,
    account: str,
    url: str,
    *,
    at: datetime,
    random_bytes: Callable[[int], bytes],
) -> Endpoint:
    """Add an endpoint for `account` at `url`, with a new id and signing secret drawn
    from `random_bytes` (`secrets.token_bytes` in production). It receives the events
    that happen from `at` on."""
    endpoint = Endpoint(
        endpoint_id=new_endpoint_id(random_bytes(12)),
        account=account,
        url=check_url(url),
        secret=new_secret(random_bytes(SECRET_BYTES)),
        created_at=at,
    )
    return store.add(endpoint)
