"""API keys: each bound to one account, stored only as a hash, revocable.

A key reads `ck_<key_id>_<secret>`: `key_id` is 16 hex digits, public, and finds the
stored record; `secret` is 32 random bytes (base64url, 43 characters). A store keeps the
SHA-256 of the whole key, never the key: a stolen table does not authenticate. The key is
shown once, when it is created. Hashes are compared with `hmac.compare_digest`, and an
unknown key_id is compared against a dummy hash, so that timing tells nothing.

This module is the scheme, pure and deterministic: the randomness comes in as an
argument (`new_key(..., entropy=...)`), from the store that issues the key. The store
itself is a port, `ports.ApiKeyStore`, kept in memory or in SQL by the adapters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime
from typing import Final

import attrs

from credits_domain.errors import InvalidRequest
from credits_domain.limits import check_addressable_account

KEY_PREFIX: Final = "ck_"
KEY_ENTROPY_BYTES: Final = 40
"""Random bytes a new key is made of: 8 for its public id, 32 for its secret."""
_KEY = re.compile(r"^ck_(?P<key_id>[0-9a-f]{16})_[A-Za-z0-9_-]{43}$")
DUMMY_HASH: Final = hashlib.sha256(b"no such key").hexdigest()
"""What an unknown key id is compared against, so that it costs what a known one does."""


@attrs.frozen(kw_only=True)
class IssuedKey:
    """A new key. `token` is the secret itself: show it once, then forget it."""

    key_id: str
    account: str
    token: str = attrs.field(repr=False)
    created_at: datetime


@attrs.frozen(kw_only=True)
class ApiKeyRecord:
    """What a store keeps of a key."""

    key_id: str
    account: str
    key_hash: str = attrs.field(repr=False)
    created_at: datetime
    revoked_at: datetime | None = None


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def new_key(account: str, now: datetime, *, entropy: bytes) -> tuple[IssuedKey, ApiKeyRecord]:
    """A key for `account` made of `entropy` (KEY_ENTROPY_BYTES random bytes)."""
    account = check_addressable_account(account)
    if not isinstance(entropy, bytes) or len(entropy) != KEY_ENTROPY_BYTES:
        raise InvalidRequest(f"a key is made of {KEY_ENTROPY_BYTES} random bytes")
    key_id = entropy[:8].hex()
    secret = base64.urlsafe_b64encode(entropy[8:]).rstrip(b"=").decode("ascii")
    token = f"{KEY_PREFIX}{key_id}_{secret}"
    issued = IssuedKey(key_id=key_id, account=account, token=token, created_at=now)
    record = ApiKeyRecord(key_id=key_id, account=account, key_hash=hash_key(token), created_at=now)
    return issued, record


def key_id_of(token: str) -> str | None:
    """The public id of a well-formed key; None for anything else."""
    match = _KEY.fullmatch(token)
    return None if match is None else match.group("key_id")


def verify(token: str, record: ApiKeyRecord | None) -> str | None:
    """The record's account if `token` is its key and it is active; compares in constant
    time whether or not there is a record."""
    expected = DUMMY_HASH if record is None else record.key_hash
    matches = hmac.compare_digest(expected.encode(), hash_key(token).encode())
    if record is None or not matches or record.revoked_at is not None:
        return None
    return record.account


def verify_found(
    token: str, *, key_hash: str, account: str, found: bool, revoked: bool
) -> str | None:
    """`verify` for a store that reads one row whether or not the key id exists (the
    dummy row carries DUMMY_HASH): the same work either way, in constant time."""
    matches = hmac.compare_digest(key_hash.encode(), hash_key(token).encode())
    return account if found and matches and not revoked else None


_KEY_ID = re.compile(r"[0-9a-f]{16}")


def check_key_id(key_id: object) -> str:
    """A key's public id as `new_key` makes them (16 lowercase hex digits), for reads that
    take one as a cursor; raises InvalidRequest for anything else."""
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise InvalidRequest(
            f"a key id is the 16 hex digits after 'ck_' (as `credits keys create` printed "
            f"it), got {key_id!r}"
        )
    return key_id
