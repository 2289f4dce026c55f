"""API keys: each bound to one account, stored only as a hash, revocable.

A key reads `ck_<key_id>_<secret>`: `key_id` is 16 hex digits, public, and finds the
stored record; `secret` is 32 random bytes (base64url, 43 characters). The store keeps
the SHA-256 of the whole key, never the key: a stolen table does not authenticate. The
key is shown once, when it is created. Hashes are compared with `hmac.compare_digest`,
and an unknown key_id is compared against a dummy hash, so that timing tells nothing.

`ApiKeyStore` is the port; `InMemoryApiKeyStore` is for tests and demos;
`adapters.http.sql_keys.SqlApiKeyStore` keeps the keys in the SQL database (a module of
its own, so that this one, and the API, need no SQLAlchemy).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from datetime import datetime
from typing import Final, Protocol, runtime_checkable

import attrs

from adapters.memory import SystemClock
from credits_domain import Clock, InvalidRequest
from credits_domain.service import MAX_ACCOUNT_ID_LENGTH

KEY_PREFIX: Final = "ck_"
_KEY = re.compile(r"^ck_(?P<key_id>[0-9a-f]{16})_[A-Za-z0-9_-]{43}$")
_DUMMY_HASH: Final = hashlib.sha256(b"no such key").hexdigest()


class UnknownApiKey(LookupError):
    """No API key has this key_id."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key has the id {key_id!r}")
        self.key_id = key_id


@attrs.frozen(kw_only=True)
class IssuedKey:
    """A new key. `token` is the secret itself: show it once, then forget it."""

    key_id: str
    account: str
    token: str = attrs.field(repr=False)
    created_at: datetime


@attrs.frozen(kw_only=True)
class ApiKeyRecord:
    """What the store keeps of a key."""

    key_id: str
    account: str
    key_hash: str = attrs.field(repr=False)
    created_at: datetime
    revoked_at: datetime | None = None


@runtime_checkable
class ApiKeyStore(Protocol):
    def create(self, account: str) -> IssuedKey:
        """A new key bound to `account` (which need not have subscribed yet)."""
        ...

    def authenticate(self, token: str) -> str | None:
        """The account of an active key; None for a malformed, unknown or revoked key."""
        ...

    def revoke(self, key_id: str) -> bool:
        """Revoke a key: True if it was active, False if it was revoked already.

        Raises UnknownApiKey if no key has this id."""
        ...


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def check_account(account: object) -> str:
    """The core's rule for account ids (a key for an account the core would refuse is
    useless)."""
    if (
        not isinstance(account, str)
        or not account
        or account != account.strip()
        or len(account) > MAX_ACCOUNT_ID_LENGTH
        or not account.isprintable()  # as the core's own check (no NUL, no controls)
        or "/" in account  # an account id is one path segment of the API's URLs
    ):
        raise InvalidRequest(
            f"account must be a non-empty trimmed printable string of at most "
            f"{MAX_ACCOUNT_ID_LENGTH} characters without '/', got {account!r}"
        )
    return account


def new_key(account: str, now: datetime) -> tuple[IssuedKey, ApiKeyRecord]:
    account = check_account(account)
    key_id = secrets.token_hex(8)
    token = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    issued = IssuedKey(key_id=key_id, account=account, token=token, created_at=now)
    record = ApiKeyRecord(key_id=key_id, account=account, key_hash=hash_key(token), created_at=now)
    return issued, record


def key_id_of(token: str) -> str | None:
    match = _KEY.match(token)
    return None if match is None else match.group("key_id")


def verify(token: str, record: ApiKeyRecord | None) -> str | None:
    """The record's account if `token` is its key and it is active; compares in constant
    time whether or not there is a record."""
    expected = _DUMMY_HASH if record is None else record.key_hash
    matches = hmac.compare_digest(expected.encode(), hash_key(token).encode())
    if record is None or not matches or record.revoked_at is not None:
        return None
    return record.account


class InMemoryApiKeyStore:
    """The port in memory; safe to share between threads."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._lock = threading.Lock()
        self._records: dict[str, ApiKeyRecord] = {}

    def create(self, account: str) -> IssuedKey:
        issued, record = new_key(account, self._clock.now())
        with self._lock:
            self._records[record.key_id] = record
        return issued

    def authenticate(self, token: str) -> str | None:
        key_id = key_id_of(token)
        if key_id is None:
            return None
        with self._lock:
            record = self._records.get(key_id)
        return verify(token, record)

    def revoke(self, key_id: str) -> bool:
        with self._lock:
            record = self._records.get(key_id)
            if record is None:
                raise UnknownApiKey(key_id)
            if record.revoked_at is not None:
                return False
            self._records[key_id] = attrs.evolve(record, revoked_at=self._clock.now())
            return True
