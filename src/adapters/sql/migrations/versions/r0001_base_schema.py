"""The base schema: wallets, holds, ledger, ownership, idempotency keys.

The constraints enforce the rules themselves, so that even a buggy caller cannot break
them: no pool below zero (R1, R15), a lapsed wallet holds nothing (R6), every ledger
entry has the sign of its kind and a non-negative running balance (R19, R20), an account
owns a datum at most once (R12), an idempotency key is unique per account (R17).

Ownership and idempotency rows carry no foreign key to the wallet or the ledger: the
Repository port stores them independently (its contract records them for an account
without a wallet), so the schema does not demand more than the port does.

Revision ID: 0001
Revises:
Create Date: 2025-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Instants are timezone-aware UTC. PostgreSQL has TIMESTAMPTZ; SQLite has no time type,
# so it stores fixed-width ISO-8601 UTC text ("2025-01-31T00:00:00.000000+00:00"), whose
# text order is time order (the adapter writes exactly that form).
INSTANT = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")
ACCOUNT = sa.String(200)  # service.MAX_ACCOUNT_ID_LENGTH
CHANNELS = "('email', 'mobile')"


def upgrade() -> None:
    op.create_table(
        "credits_wallets",
        sa.Column("account", ACCOUNT, primary_key=True),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("anchor", INSTANT, nullable=False),
        sa.Column("period_index", sa.Integer(), nullable=False),
        sa.Column("ends_at", INSTANT, nullable=True),
        sa.Column("pending_plan", sa.JSON(), nullable=True),
        sa.Column("email_balance", sa.BigInteger(), nullable=False),
        sa.Column("mobile_balance", sa.BigInteger(), nullable=False),
        sa.Column("next_seq", sa.BigInteger(), nullable=False),
        sa.Column("next_hold_no", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("next_boundary_at", INSTANT, nullable=True),
        sa.CheckConstraint("email_balance >= 0", name="ck_wallet_email_balance_not_negative"),
        sa.CheckConstraint("mobile_balance >= 0", name="ck_wallet_mobile_balance_not_negative"),
        sa.CheckConstraint(
            "status IN ('active', 'paused', 'lapsed')", name="ck_wallet_status_known"
        ),
        sa.CheckConstraint(
            "status <> 'lapsed' OR (email_balance = 0 AND mobile_balance = 0)",
            name="ck_wallet_lapsed_holds_nothing",
        ),
        sa.CheckConstraint(
            "(status = 'lapsed') = (next_boundary_at IS NULL)",
            name="ck_wallet_boundary_unless_lapsed",
        ),
        sa.CheckConstraint(
            "period_index >= 0 AND next_seq >= 0 AND next_hold_no >= 0 AND version >= 0",
            name="ck_wallet_counters_not_negative",
        ),
    )
    # renew-due scans the accounts whose boundary has passed, oldest first.
    op.create_index("ix_wallets_next_boundary", "credits_wallets", ["next_boundary_at", "account"])

    op.create_table(
        "credits_holds",
        sa.Column("account", ACCOUNT, sa.ForeignKey("credits_wallets.account"), primary_key=True),
        sa.Column("hold_id", sa.String(230), primary_key=True),
        sa.Column("email_credits", sa.BigInteger(), nullable=False),
        sa.Column("mobile_credits", sa.BigInteger(), nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("expires_at", INSTANT, nullable=False),
        sa.CheckConstraint(
            "email_credits >= 0 AND mobile_credits >= 0", name="ck_hold_credits_not_negative"
        ),
        sa.CheckConstraint("expires_at > created_at", name="ck_hold_expires_after_creation"),
    )

    op.create_table(
        "credits_ledger",
        sa.Column("account", ACCOUNT, sa.ForeignKey("credits_wallets.account"), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("pool", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("at", INSTANT, nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("datum", sa.String(330), nullable=True),
        sa.Column("plan", sa.Text(), nullable=True),
        sa.Column("period", sa.Integer(), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("destination", sa.String(100), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint("seq >= 0", name="ck_ledger_seq_not_negative"),
        sa.CheckConstraint("balance_after >= 0", name="ck_ledger_balance_not_negative"),
        sa.CheckConstraint(f"pool IN {CHANNELS}", name="ck_ledger_pool_known"),
        sa.CheckConstraint(
            "(kind IN ('grant', 'top_up', 'refund') AND amount > 0)"
            " OR (kind IN ('charge', 'forfeit') AND amount < 0)"
            " OR kind = 'adjustment'",
            name="ck_ledger_sign_of_kind",
        ),
    )

    op.create_table(
        "credits_ownership",
        sa.Column("account", ACCOUNT, primary_key=True),
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("value", sa.String(320), primary_key=True),
        sa.Column("pool", sa.String(16), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("charged_at", INSTANT, nullable=False),
        sa.Column("entry_seq", sa.BigInteger(), nullable=False),
        sa.Column("refunded_at", INSTANT, nullable=True),
        sa.CheckConstraint(f"channel IN {CHANNELS}", name="ck_ownership_channel_known"),
        sa.CheckConstraint(f"pool IN {CHANNELS}", name="ck_ownership_pool_known"),
        sa.CheckConstraint("credits > 0", name="ck_ownership_credits_positive"),
    )

    op.create_table(
        "credits_idempotency",
        sa.Column("account", ACCOUNT, primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("hold_id", sa.String(230), nullable=True),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("credits_idempotency")
    op.drop_table("credits_ownership")
    op.drop_table("credits_ledger")
    op.drop_table("credits_holds")
    op.drop_index("ix_wallets_next_boundary", table_name="credits_wallets")
    op.drop_table("credits_wallets")
