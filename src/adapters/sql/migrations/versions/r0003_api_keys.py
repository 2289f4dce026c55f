"""API keys of the HTTP API (adapters.http.keys.SqlApiKeyStore).

One row per key, bound to one account. Only the SHA-256 of the key is stored, never the
key itself; a revoked key keeps its row (revoked_at set) so that its id stays taken and
the revocation is on record. The account is not a foreign key: a key may be created
before its account subscribes (the first call of a new customer is the subscription).

Revision ID: 0003
Revises: 0002
Create Date: 2025-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# As in 0001: timezone-aware instants; fixed-width ISO-8601 UTC text on SQLite.
INSTANT = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")
ACCOUNT = sa.String(200)  # service.MAX_ACCOUNT_ID_LENGTH


def upgrade() -> None:
    op.create_table(
        "credits_api_keys",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("account", ACCOUNT, nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("revoked_at", INSTANT, nullable=True),
        sa.CheckConstraint("length(key_hash) = 64", name="ck_api_key_hash_is_sha256_hex"),
    )
    op.create_index("ix_credits_api_keys_account", "credits_api_keys", ["account"])


def downgrade() -> None:
    op.drop_index("ix_credits_api_keys_account", table_name="credits_api_keys")
    op.drop_table("credits_api_keys")
