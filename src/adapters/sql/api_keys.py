"""`SqlApiKeyStore`: the API keys in the SQL database, table `credits_api_keys`.

The table is created by the Alembic revision 0003 (`migrations/`); keys are
stored as `credits_domain.keys` says: the SHA-256 of the key, never the key.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

import sqlalchemy as sa

from adapters.sql.engine import READ_ONLY_OPTION
from adapters.sql.errors import ApiKeysTableMissing, translated
from adapters.sql.schema import UtcInstant
from credits_domain import ApiKeyInfo, Clock, InvalidRequest, UnknownApiKey
from credits_domain.keys import (
    DUMMY_HASH,
    KEY_ENTROPY_BYTES,
    ApiKeyRecord,
    IssuedKey,
    check_key_id,
    hash_key,
    key_id_of,
    new_key,
    verify_found,
)
from credits_domain.limits import MAX_ACCOUNT_ID_LENGTH, check_account

metadata = sa.MetaData()

MAX_INT64: Final = 2**63 - 1  # the widest LIMIT either database takes

TABLE_NAME: Final = "credits_api_keys"  # the credits_ prefix of the schema's other tables

# A key id as `credits_domain.keys` makes them; anything else names no key, and is never
# sent to the database (PostgreSQL text cannot even hold a NUL).
_KEY_ID = re.compile(r"[0-9a-f]{16}")

# The table's definition; the Alembic revision 0003 creates it (keep the two equal).
api_keys = sa.Table(
    TABLE_NAME,
    metadata,
    sa.Column("key_id", sa.String(16), primary_key=True),
    sa.Column("account", sa.String(MAX_ACCOUNT_ID_LENGTH), nullable=False, index=True),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("created_at", UtcInstant(), nullable=False),
    sa.Column("revoked_at", UtcInstant(), nullable=True),
)


_FOUND = sa.select(
    api_keys.c.key_hash,
    api_keys.c.account,
    api_keys.c.revoked_at.is_not(None).label("revoked"),
    sa.literal(1).label("found"),
).where(api_keys.c.key_id == sa.bindparam("key_id"))
_DUMMY = sa.select(
    sa.bindparam("dummy", type_=sa.String),
    sa.literal(""),
    sa.literal(True),
    sa.literal(0),
)
_AUTHENTICATE = sa.union_all(_FOUND, _DUMMY).order_by(sa.desc("found")).limit(1)


class SqlApiKeyStore:
    """The port on SQLAlchemy Core: the table `credits_api_keys`, one row per key.

    A key that authenticated is remembered for `cache_ttl_s` (default 5 s), so that a
    busy client does not cost a database round trip per request (the HTTP layer's budget
    is about a millisecond, and a lookup costs 0.3 to 0.8 ms). The price: a key revoked
    by *another* process (`credits keys revoke`) keeps working on this one for at most
    `cache_ttl_s`; a revocation through this store acts at once. `cache_ttl_s=0` turns
    the cache off. Failed lookups are never cached. The cache holds at most
    `MAX_CACHED_KEYS` entries (it is emptied when full).
    """

    MAX_CACHED_KEYS: Final = 10_000

    def __init__(
        self,
        engine: sa.Engine,
        *,
        clock: Clock,
        cache_ttl_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not cache_ttl_s >= 0:
            raise InvalidRequest(f"cache_ttl_s must be >= 0, got {cache_ttl_s!r}")
        self._engine = engine
        self._clock = clock
        self._cache_ttl_s = cache_ttl_s
        self._monotonic = monotonic
        self._cache_lock = threading.Lock()
        # sha256 of the key -> (key_id, account, valid until on the monotonic clock)
        self._cache: dict[str, tuple[str, str, float]] = {}
        # Bumped (under _cache_lock) by every revocation once it is committed: a lookup
        # that began before may have read the row still active, and must not cache it.
        self._revocations = 0
        # Read-only: on SQLite, a plain connection would begin IMMEDIATE and wait for
        # (then lose to) any writer of the file.
        with (
            translated("looking for the API keys table", url=engine.url),
            engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn,
        ):
            present = sa.inspect(conn).has_table(TABLE_NAME)
        if not present:
            raise ApiKeysTableMissing(
                f"the database {engine.url.render_as_string(hide_password=True)} has no "
                f"{TABLE_NAME} table; apply the migrations first (credits db upgrade)"
            )

    def create(self, account: str) -> IssuedKey:
        issued, record = new_key(
            account, self._clock.now(), entropy=secrets.token_bytes(KEY_ENTROPY_BYTES)
        )
        with translated("storing an API key", url=self._engine.url), self._engine.begin() as conn:
            conn.execute(
                api_keys.insert().values(
                    key_id=record.key_id,
                    account=record.account,
                    key_hash=record.key_hash,
                    created_at=record.created_at,
                    revoked_at=None,
                )
            )
        return issued

    def _record(self, conn: sa.Connection, key_id: str) -> ApiKeyRecord | None:
        row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).one_or_none()
        if row is None:
            return None
        return ApiKeyRecord(
            key_id=row.key_id,
            account=row.account,
            key_hash=row.key_hash,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )

    def authenticate(self, token: str) -> str | None:
        key_id = key_id_of(token)
        if key_id is None:
            return None
        # The cache is keyed by the key's SHA-256: a dict lookup may take more or less
        # time with the digest, which tells nothing about the key itself.
        digest = hash_key(token)
        now = self._monotonic()
        with self._cache_lock:
            cached = self._cache.get(digest)
            revocations = self._revocations
        if cached is not None and cached[2] > now:
            return cached[1]
        # Read-only: on SQLite, begin deferred rather than BEGIN IMMEDIATE, so that a key
        # lookup never waits for (or holds) the write lock; WAL reads beside the writer.
        with (
            translated("looking up an API key", url=self._engine.url),
            self._engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn,
        ):
            # One row whether or not the key id exists (a dummy row stands in for an
            # unknown one), with no instant to parse: a wrong secret for a real key id
            # costs what an unknown key id does, so the timing tells no key id apart.
            key_hash, owner, revoked, found = conn.execute(
                _AUTHENTICATE, {"key_id": key_id, "dummy": DUMMY_HASH}
            ).one()
        account = verify_found(
            token, key_hash=key_hash, account=owner, found=bool(found), revoked=bool(revoked)
        )
        if account is not None and self._cache_ttl_s > 0:
            with self._cache_lock:
                if self._revocations != revocations:
                    return account  # concurrent with a revocation: answer, do not remember
                if len(self._cache) >= self.MAX_CACHED_KEYS:
                    self._cache.clear()
                self._cache[digest] = (key_id, account, now + self._cache_ttl_s)
        return account

    def revoke(self, key_id: str) -> bool:
        if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
            raise UnknownApiKey(key_id)
        try:
            with (
                translated("revoking an API key", url=self._engine.url),
                self._engine.begin() as conn,
            ):
                if self._record(conn, key_id) is None:
                    raise UnknownApiKey(key_id)
                done = conn.execute(
                    api_keys.update()
                    .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=self._clock.now())
                )
                return done.rowcount == 1
        finally:
            # After the commit, not before: a lookup between an earlier purge and the
            # commit read the row still active and cached it for the whole TTL. The
            # counter stops lookups already under way from caching what they read.
            with self._cache_lock:
                self._revocations += 1
                for digest in [d for d, (kid, _, _) in self._cache.items() if kid == key_id]:
                    del self._cache[digest]

    def list_keys(
        self, *, account: str | None = None, after: str | None = None, limit: int
    ) -> Sequence[ApiKeyInfo]:
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_INT64:
            raise InvalidRequest(f"limit must be a whole number from 0 to 2**63-1, got {limit!r}")
        query = sa.select(
            api_keys.c.key_id, api_keys.c.account, api_keys.c.created_at, api_keys.c.revoked_at
        )
        if account is not None:
            query = query.where(api_keys.c.account == check_account(account))
        if after is not None:
            # Key ids are lowercase hex: every collation orders them as Python does.
            query = query.where(api_keys.c.key_id > check_key_id(after))
        query = query.order_by(api_keys.c.key_id).limit(limit)
        with (
            translated("listing API keys", url=self._engine.url),
            self._engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn,
        ):
            rows = conn.execute(query).all()
        return [
            ApiKeyInfo(
                key_id=row.key_id,
                account=row.account,
                created_at=row.created_at,
                revoked_at=row.revoked_at,
            )
            for row in rows
        ]
