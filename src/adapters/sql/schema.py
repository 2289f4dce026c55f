"""The tables this adapter reads and writes, and the column type of an instant.

The schema is created and upgraded by the Alembic migrations in `migrations/`; its
constraints and triggers enforce the rules by themselves. These table objects describe
the same columns, for building statements; `tests/sql_checks.py` checks that the two agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from credits_domain.errors import invariant
from credits_domain.periods import require_utc

# -- column types ----------------------------------------------------------------------


class UtcInstant(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC instant.

    PostgreSQL: TIMESTAMPTZ. SQLite has no time type: the instant is stored as
    fixed-width ISO-8601 UTC text with microseconds, so that comparing and ordering the
    text in SQL is comparing and ordering the instants.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(32))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        utc = require_utc(value, "a stored instant")
        if dialect.name == "sqlite":
            return utc.isoformat(timespec="microseconds")
        return utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        invariant(isinstance(value, datetime), "a stored instant reads back as a datetime")
        return require_utc(value, "a stored instant")


INSTANT = UtcInstant()
JSON_COLUMN = sa.JSON(none_as_null=True)  # a Python None is SQL NULL, not the JSON text 'null'

metadata = sa.MetaData()

wallets = sa.Table(
    "credits_wallets",
    metadata,
    sa.Column("account", sa.String(200), primary_key=True),
    sa.Column("plan", JSON_COLUMN, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("anchor", UtcInstant, nullable=False),
    sa.Column("period_index", sa.Integer, nullable=False),
    sa.Column("ends_at", UtcInstant),
    sa.Column("pending_plan", JSON_COLUMN),
    sa.Column("email_balance", sa.BigInteger, nullable=False),
    sa.Column("mobile_balance", sa.BigInteger, nullable=False),
    sa.Column("next_seq", sa.BigInteger, nullable=False),
    sa.Column("next_hold_no", sa.BigInteger, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("next_boundary_at", UtcInstant),
    sa.Column("grants", JSON_COLUMN),  # revision 0007: expiring grants (R23), NULL if none
    sa.Column("members", JSON_COLUMN),  # revision 0007: team members (R22), NULL if none
    # revision 0008 (R24): the next event's seq; the thresholds set (JSON, NULL if none);
    # each pool's threshold in force, written on every save, read by the one-call paths.
    sa.Column("next_event_seq", sa.BigInteger, nullable=False, server_default="1"),
    sa.Column("low_thresholds", JSON_COLUMN),
    sa.Column("low_email", sa.BigInteger),
    sa.Column("low_mobile", sa.BigInteger),
    # revision 0008 (R25 for R24's guarantee.breached): the emails charged in the current
    # period (both charging paths count them), its bounces (a copy, for the one-call
    # paths), and the counts of the periods kept (JSON).
    sa.Column("period_emails", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("period_bounces", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("tallies", JSON_COLUMN),
)

events = sa.Table(  # revision 0008 (R24): the outbox, written with the wallet
    "credits_events",
    metadata,
    sa.Column("account", sa.String(200), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("at", UtcInstant, nullable=False),
    sa.Column("data", JSON_COLUMN, nullable=False),
)

holds = sa.Table(
    "credits_holds",
    metadata,
    sa.Column("account", sa.String(200), primary_key=True),
    sa.Column("hold_id", sa.String(230), primary_key=True),
    sa.Column("email_credits", sa.BigInteger, nullable=False),
    sa.Column("mobile_credits", sa.BigInteger, nullable=False),
    sa.Column("created_at", UtcInstant, nullable=False),
    sa.Column("expires_at", UtcInstant, nullable=False),
    sa.Column("member", sa.String(200)),  # revision 0007: Hold.member (R22)
)

ledger = sa.Table(
    "credits_ledger",
    metadata,
    sa.Column("account", sa.String(200), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("pool", sa.String(16), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("at", UtcInstant, nullable=False),
    sa.Column("balance_after", sa.BigInteger, nullable=False),
    sa.Column("operation", sa.String(16), nullable=False),
    sa.Column("datum", sa.String(330)),
    sa.Column("plan", sa.Text),
    sa.Column("period", sa.Integer),
    sa.Column("idempotency_key", sa.String(255)),
    sa.Column("destination", sa.String(100)),
    sa.Column("note", sa.Text),
    sa.Column("grant_seq", sa.BigInteger),  # revision 0007: Cause.grant (R23)
    sa.Column("expires_at", UtcInstant),  # revision 0007: Cause.expires_at (R23)
    sa.Column("member", sa.String(200)),  # revision 0007: Cause.member (R22)
)

ownership = sa.Table(
    "credits_ownership",
    metadata,
    sa.Column("account", sa.String(200), primary_key=True),
    sa.Column("channel", sa.String(16), primary_key=True),
    sa.Column("value", sa.String(320), primary_key=True),
    sa.Column("pool", sa.String(16), nullable=False),
    sa.Column("credits", sa.BigInteger, nullable=False),
    sa.Column("charged_at", UtcInstant, nullable=False),
    sa.Column("entry_seq", sa.BigInteger, nullable=False),
    sa.Column("refunded_at", UtcInstant),
    sa.Column("grant_seq", sa.BigInteger),  # revision 0007: Ownership.grant (R23)
    sa.Column("member", sa.String(200)),  # revision 0007: Ownership.member (R22)
)

idempotency = sa.Table(
    "credits_idempotency",
    metadata,
    sa.Column("account", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("hold_id", sa.String(230)),
    sa.Column("created_at", UtcInstant, nullable=False),
    sa.Column("result", JSON_COLUMN),
    sa.Column("entry_seq", sa.BigInteger),  # revision 0005: a top-up's first ledger entry
)
