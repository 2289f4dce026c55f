"""Webhook endpoints (R24): where an account's events are delivered, and how far.

One row per endpoint: its account, URL and signing secret (kept in clear: delivery
signs with it), the seq of the last event it acknowledged (`last_seq`), its failure
state (`failing_since`, `attempts`, `next_attempt_at`) and, once it failed for 3 days,
`disabled_at` and `disabled_reason`. The account is not a foreign key, as for API keys.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INSTANT = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")
TABLE = "credits_webhook_endpoints"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("endpoint_id", sa.String(27), primary_key=True),
        sa.Column("account", sa.String(200), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("failing_since", INSTANT, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", INSTANT, nullable=True),
        sa.Column("disabled_at", INSTANT, nullable=True),
        sa.Column("disabled_reason", sa.String(500), nullable=True),
        sa.CheckConstraint("last_seq >= 0 AND attempts >= 0", name="ck_webhook_counts"),
        sa.CheckConstraint(
            "(disabled_at IS NULL) = (disabled_reason IS NULL)", name="ck_webhook_disabled"
        ),
    )
    op.create_index("ix_credits_webhook_endpoints_account", TABLE, ["account"])


def downgrade() -> None:
    op.drop_index("ix_credits_webhook_endpoints_account", table_name=TABLE)
    op.drop_table(TABLE)
