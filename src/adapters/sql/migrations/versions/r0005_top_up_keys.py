"""Idempotency keys for top-ups (R8 with R17).

A top-up is done in one unit of work: its ledger entries and its idempotency record
commit together, so the record never waits "in flight" and needs no stored answer. It
holds the seq of the top-up's first ledger entry (`entry_seq`), and a repeat's answer is
read back from the ledger, whose entries never change (R19). A record is either a
charge's (hold and result, `entry_seq` NULL) or a top-up's (`entry_seq` only): a CHECK
says so. Existing records are charges' and keep NULL.

SQLite cannot add a constraint to a table, but it takes a column with its own CHECK, and
checks it against the rows already there (none can fail: the column is new and NULL).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CHECK_NAME = "ck_idempotency_top_up_holds_nothing_else"
CHECK = "entry_seq IS NULL OR (entry_seq >= 0 AND hold_id IS NULL AND result IS NULL)"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE credits_idempotency ADD COLUMN entry_seq BIGINT "
            f"CONSTRAINT {CHECK_NAME} CHECK ({CHECK})"
        )
        return
    op.add_column("credits_idempotency", sa.Column("entry_seq", sa.BigInteger(), nullable=True))
    op.create_check_constraint(CHECK_NAME, "credits_idempotency", CHECK)


def downgrade() -> None:
    # Top-ups' keys would become records of no request at all: drop them with the column.
    op.execute("DELETE FROM credits_idempotency WHERE entry_seq IS NOT NULL")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(CHECK_NAME, "credits_idempotency", type_="check")
    op.drop_column("credits_idempotency", "entry_seq")
