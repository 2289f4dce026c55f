"""`SqlEndpointStore`: webhook endpoints (R24) in the SQL database, table
`credits_webhook_endpoints` (Alembic revision 0009)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from adapters.sql.engine import READ_ONLY_OPTION
from adapters.sql.errors import translated
from adapters.sql.schema import UtcInstant
from adapters.webhooks.endpoints import (
    MAX_ENDPOINTS_PER_ACCOUNT,
    Endpoint,
    TooManyEndpoints,
    UnknownEndpoint,
    check_endpoint_id,
    check_limit,
)
from credits_domain.limits import check_account
from credits_domain.periods import require_utc

TABLE_NAME: Final = "credits_webhook_endpoints"

metadata = sa.MetaData()

# The table's definition; the Alembic revision 0009 creates it (keep the two equal).
endpoints = sa.Table(
    TABLE_NAME,
    metadata,
    sa.Column("endpoint_id", sa.String(27), primary_key=True),
    sa.Column("account", sa.String(200), nullable=False, index=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("secret", sa.String(100), nullable=False),
    sa.Column("created_at", UtcInstant(), nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("failing_since", UtcInstant(), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UtcInstant(), nullable=True),
    sa.Column("disabled_at", UtcInstant(), nullable=True),
    sa.Column("disabled_reason", sa.String(500), nullable=True),
)

# What delivery changes; the rest is written once, by `add`.
_STATE = (
    "last_seq",
    "failing_since",
    "attempts",
    "next_attempt_at",
    "disabled_at",
    "disabled_reason",
)


def _row(endpoint: Endpoint) -> dict[str, Any]:
    return {column.name: getattr(endpoint, column.name) for column in endpoints.columns}


def _endpoint(row: sa.Row[Any]) -> Endpoint:
    return Endpoint(**{column.name: getattr(row, column.name) for column in endpoints.columns})


class SqlEndpointStore:
    """The endpoint registry on SQLAlchemy Core (SQLite or PostgreSQL)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def _reading(self) -> sa.Connection:
        return self._engine.connect().execution_options(**{READ_ONLY_OPTION: True})

    def add(self, endpoint: Endpoint) -> Endpoint:
        with (
            translated("adding a webhook endpoint", url=self._engine.url),
            self._engine.begin() as conn,
        ):
            if conn.dialect.name == "postgresql":
                # Two adds for one account at once: the second counts after the first.
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                    {"key": f"credits-webhooks:{endpoint.account}"},
                )
            # SQLite: the transaction began IMMEDIATE (adapters.sql.engine), one writer.
            owned = conn.execute(
                sa.select(sa.func.count())
                .select_from(endpoints)
                .where(endpoints.c.account == endpoint.account)
            ).scalar_one()
            if owned >= MAX_ENDPOINTS_PER_ACCOUNT:
                raise TooManyEndpoints(endpoint.account)
            conn.execute(endpoints.insert().values(**_row(endpoint)))
        return endpoint

    def endpoints(self, account: str) -> Sequence[Endpoint]:
        query = (
            sa.select(endpoints)
            .where(endpoints.c.account == check_account(account))
            .order_by(endpoints.c.endpoint_id)
            .limit(MAX_ENDPOINTS_PER_ACCOUNT)
        )
        with translated("listing webhook endpoints", url=self._engine.url), self._reading() as conn:
            return [_endpoint(row) for row in conn.execute(query)]

    def remove(self, account: str, endpoint_id: str) -> None:
        check_account(account)
        if not isinstance(endpoint_id, str) or len(endpoint_id) > 27:
            raise UnknownEndpoint(account, str(endpoint_id)[:40])
        with (
            translated("removing a webhook endpoint", url=self._engine.url),
            self._engine.begin() as conn,
        ):
            done = conn.execute(
                endpoints.delete().where(
                    endpoints.c.account == account, endpoints.c.endpoint_id == endpoint_id
                )
            )
            if done.rowcount != 1:
                raise UnknownEndpoint(account, endpoint_id)

    def due(self, now: datetime, *, after_id: str | None = None, limit: int) -> Sequence[Endpoint]:
        require_utc(now, "now")
        query = sa.select(endpoints).where(
            endpoints.c.disabled_at.is_(None),
            sa.or_(endpoints.c.next_attempt_at.is_(None), endpoints.c.next_attempt_at <= now),
        )
        if after_id is not None:
            # Ids are "ep_" and lowercase hex: every collation orders them as Python does.
            query = query.where(endpoints.c.endpoint_id > check_endpoint_id(after_id))
        query = query.order_by(endpoints.c.endpoint_id).limit(check_limit(limit))
        with (
            translated("finding due webhook endpoints", url=self._engine.url),
            self._reading() as conn,
        ):
            return [_endpoint(row) for row in conn.execute(query)]

    def save_state(self, endpoint: Endpoint) -> None:
        with (
            translated("saving a webhook endpoint", url=self._engine.url),
            self._engine.begin() as conn,
        ):
            conn.execute(
                endpoints.update()
                .where(
                    endpoints.c.endpoint_id == endpoint.endpoint_id,
                    endpoints.c.last_seq <= endpoint.last_seq,
                )
                .values(**{name: getattr(endpoint, name) for name in _STATE})
            )
