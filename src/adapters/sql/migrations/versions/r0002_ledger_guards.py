"""Append-only ledger, permanent ownership, and the indexes that read the ledger back.

- R19: entries are never changed or deleted. A trigger refuses UPDATE and DELETE on the
  ledger (and TRUNCATE on PostgreSQL), whoever asks.
- R12, R18: an account pays at most once, ever, for a datum, and a refunded datum stays
  owned, so it is never charged again. A trigger refuses deleting an ownership and any
  change of it except setting `refunded_at` once.
- R21: statements read an account's entries by time, and the balance at an instant is
  the newest entry of a pool at or before it: two indexes make both one index range scan.

Triggers are dialect-specific by nature: PostgreSQL runs a PL/pgSQL function, SQLite a
`RAISE(ABORT, ...)` in the trigger body. Both report an integrity violation.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

LEDGER_REFUSAL = "credits_ledger is append-only (R19)"
OWNERSHIP_REFUSAL = "credits_ownership is permanent; only refunded_at may be set, once (R12, R18)"

# The columns of an ownership that never change once it is recorded.
FIXED_OWNERSHIP = ("account", "channel", "value", "pool", "credits", "charged_at", "entry_seq")

POSTGRESQL_UP = (
    f"""
    CREATE FUNCTION credits_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{LEDGER_REFUSAL}: % refused', TG_OP
            USING ERRCODE = 'integrity_constraint_violation';
    END $$
    """,
    """
    CREATE TRIGGER credits_ledger_no_change BEFORE UPDATE OR DELETE ON credits_ledger
        FOR EACH ROW EXECUTE FUNCTION credits_ledger_append_only()
    """,
    """
    CREATE TRIGGER credits_ledger_no_truncate BEFORE TRUNCATE ON credits_ledger
        FOR EACH STATEMENT EXECUTE FUNCTION credits_ledger_append_only()
    """,
    f"""
    CREATE FUNCTION credits_ownership_permanent() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        -- Two IFs: OLD and NEW are not rows in a DELETE or TRUNCATE trigger.
        IF TG_OP <> 'UPDATE' THEN
            RAISE EXCEPTION '{OWNERSHIP_REFUSAL}: % refused', TG_OP
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF OLD.refunded_at IS NOT NULL
           OR NEW.refunded_at IS NULL
           OR ({", ".join(f"NEW.{c}" for c in FIXED_OWNERSHIP)})
              IS DISTINCT FROM ({", ".join(f"OLD.{c}" for c in FIXED_OWNERSHIP)})
        THEN
            RAISE EXCEPTION '{OWNERSHIP_REFUSAL}: % refused', TG_OP
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER credits_ownership_guard BEFORE UPDATE OR DELETE ON credits_ownership
        FOR EACH ROW EXECUTE FUNCTION credits_ownership_permanent()
    """,
    """
    CREATE TRIGGER credits_ownership_no_truncate BEFORE TRUNCATE ON credits_ownership
        FOR EACH STATEMENT EXECUTE FUNCTION credits_ownership_permanent()
    """,
)

POSTGRESQL_DOWN = (
    "DROP TRIGGER credits_ownership_no_truncate ON credits_ownership",
    "DROP TRIGGER credits_ownership_guard ON credits_ownership",
    "DROP FUNCTION credits_ownership_permanent()",
    "DROP TRIGGER credits_ledger_no_truncate ON credits_ledger",
    "DROP TRIGGER credits_ledger_no_change ON credits_ledger",
    "DROP FUNCTION credits_ledger_append_only()",
)

SQLITE_UP = (
    f"""
    CREATE TRIGGER credits_ledger_no_update BEFORE UPDATE ON credits_ledger
    BEGIN SELECT RAISE(ABORT, '{LEDGER_REFUSAL}: UPDATE refused'); END
    """,
    f"""
    CREATE TRIGGER credits_ledger_no_delete BEFORE DELETE ON credits_ledger
    BEGIN SELECT RAISE(ABORT, '{LEDGER_REFUSAL}: DELETE refused'); END
    """,
    f"""
    CREATE TRIGGER credits_ownership_no_delete BEFORE DELETE ON credits_ownership
    BEGIN SELECT RAISE(ABORT, '{OWNERSHIP_REFUSAL}: DELETE refused'); END
    """,
    f"""
    CREATE TRIGGER credits_ownership_refund_only BEFORE UPDATE ON credits_ownership
    WHEN OLD.refunded_at IS NOT NULL
      OR NEW.refunded_at IS NULL
      OR {" OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in FIXED_OWNERSHIP)}
    BEGIN SELECT RAISE(ABORT, '{OWNERSHIP_REFUSAL}: UPDATE refused'); END
    """,
)

SQLITE_DOWN = (
    "DROP TRIGGER credits_ownership_refund_only",
    "DROP TRIGGER credits_ownership_no_delete",
    "DROP TRIGGER credits_ledger_no_delete",
    "DROP TRIGGER credits_ledger_no_update",
)


def _statements(postgresql: tuple[str, ...], sqlite: tuple[str, ...]) -> tuple[str, ...]:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql
    if dialect == "sqlite":
        return sqlite
    raise NotImplementedError(f"credits has no triggers for the {dialect} dialect")


def upgrade() -> None:
    # R21: a statement is an index range over (account, at); the balance at an instant is
    # the last row of (account, pool, at, seq) at or before it.
    op.create_index("ix_ledger_account_at", "credits_ledger", ["account", "at", "seq"])
    op.create_index("ix_ledger_account_pool_at", "credits_ledger", ["account", "pool", "at", "seq"])
    for statement in _statements(POSTGRESQL_UP, SQLITE_UP):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(POSTGRESQL_DOWN, SQLITE_DOWN):
        op.execute(statement)
    op.drop_index("ix_ledger_account_pool_at", table_name="credits_ledger")
    op.drop_index("ix_ledger_account_at", table_name="credits_ledger")
