"""Expiring grants (R23) and team members (R22).

- `credits_wallets.grants`: the wallet's open expiring grants as JSON (NULL when it has
  none): each grant's id (the seq of its TOP_UP entry), pool, credits, what is left, its
  expiry instant and whether that has passed while holds might still charge it.
- `credits_ledger.grant_seq` and `expires_at`: `Cause.grant` and `Cause.expires_at`; the
  ledger's sign check takes the new kind `expire` (negative).
- `credits_ownership.grant_seq`: the grant that paid for a datum, where a bounce refund
  goes back to (R18).
- R22: `credits_wallets.members` (JSON: each member's allowance and usage this period,
  NULL when the team has none), and the member of a hold, a ledger entry and an
  ownership (`member` columns; NULL: the account itself). Members' requests never take
  the one-call paths (the service keeps them on the units-of-work path).
- The one-call charging functions of revision 0004 answer 'fallback' for a wallet with
  grants: charges draw on grants first, which the Wallet does (the units-of-work path).

SQLite cannot change a CHECK constraint: the ledger is rebuilt from its own DDL with the
new check (its append-only triggers dropped first and created again after, its indexes
too, its rows copied as they are).

Written against revision 0005 (another revision 0006 may be chained in before it).

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None

INSTANT = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")
SIGN_CHECK = "ck_ledger_sign_of_kind"
SIGN_BEFORE = (
    "(kind IN ('grant', 'top_up', 'refund') AND amount > 0)"
    " OR (kind IN ('charge', 'forfeit') AND amount < 0)"
    " OR kind = 'adjustment'"
)
SIGN_AFTER = (
    "(kind IN ('grant', 'top_up', 'refund') AND amount > 0)"
    " OR (kind IN ('charge', 'forfeit', 'expire') AND amount < 0)"
    " OR kind = 'adjustment'"
)
MEMBER_TABLES = ("credits_holds", "credits_ledger", "credits_ownership")
# The condition under which revision 0004's functions charge in one call; 'fallback' too
# for a wallet holding expiring grants.
ONE_CALL = "w.next_boundary_at <= p_now"
NO_GRANTS = "w.next_boundary_at <= p_now OR w.grants IS NOT NULL"


def _functions(condition: str) -> tuple[str, str]:
    """Revision 0004's two functions, replaced, with `condition` as their fallback test."""
    r0004 = importlib.import_module("adapters.sql.migrations.versions.r0004_charging_functions")
    reserve, settle = (
        str(text)
        .replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")
        .replace(ONE_CALL, condition)
        for text in (r0004.RESERVE, r0004.SETTLE)
    )
    return reserve, settle


def _sqlite_ledger(sign_from: str, sign_to: str) -> None:
    """Rebuild the SQLite ledger as it is, but for its sign check: `sign_from` becomes
    `sign_to`. Its DDL is read back from the database, so nothing else changes."""
    r0002 = importlib.import_module("adapters.sql.migrations.versions.r0002_ledger_guards")
    bind = op.get_bind()
    ddl = bind.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'credits_ledger'")
    ).scalar_one()
    rebuilt = ddl.replace("credits_ledger", "credits_ledger_rebuilt", 1).replace(sign_from, sign_to)
    if sign_to not in rebuilt:  # pragma: no cover - a database not made by these migrations
        raise RuntimeError(f"credits_ledger has no check {sign_from!r} to replace: {ddl}")
    op.execute("DROP TRIGGER credits_ledger_no_update")
    op.execute("DROP TRIGGER credits_ledger_no_delete")
    op.execute(rebuilt)
    op.execute("INSERT INTO credits_ledger_rebuilt SELECT * FROM credits_ledger")
    op.execute("DROP INDEX ix_ledger_account_at")
    op.execute("DROP INDEX ix_ledger_account_pool_at")
    op.execute("DROP TABLE credits_ledger")
    op.execute("ALTER TABLE credits_ledger_rebuilt RENAME TO credits_ledger")
    op.create_index("ix_ledger_account_at", "credits_ledger", ["account", "at", "seq"])
    op.create_index("ix_ledger_account_pool_at", "credits_ledger", ["account", "pool", "at", "seq"])
    for statement in r0002.SQLITE_UP[:2]:  # the ledger's append-only triggers
        op.execute(statement)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.add_column("credits_wallets", sa.Column("grants", sa.JSON(), nullable=True))
    op.add_column("credits_ownership", sa.Column("grant_seq", sa.BigInteger(), nullable=True))
    op.add_column("credits_ledger", sa.Column("grant_seq", sa.BigInteger(), nullable=True))
    op.add_column("credits_ledger", sa.Column("expires_at", INSTANT, nullable=True))
    op.add_column("credits_wallets", sa.Column("members", sa.JSON(), nullable=True))
    for table in MEMBER_TABLES:
        op.add_column(table, sa.Column("member", sa.String(200), nullable=True))
    if dialect == "sqlite":
        _sqlite_ledger(SIGN_BEFORE, SIGN_AFTER)
        return
    op.drop_constraint(SIGN_CHECK, "credits_ledger", type_="check")
    op.create_check_constraint(SIGN_CHECK, "credits_ledger", SIGN_AFTER)
    if dialect == "postgresql":
        for statement in _functions(NO_GRANTS):
            op.execute(statement)


def downgrade() -> None:
    # Expiry entries have no kind before this revision: a database that has some stays.
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _sqlite_ledger(SIGN_AFTER, SIGN_BEFORE)
    else:
        if dialect == "postgresql":
            for statement in _functions(ONE_CALL):
                op.execute(statement)
        op.drop_constraint(SIGN_CHECK, "credits_ledger", type_="check")
        op.create_check_constraint(SIGN_CHECK, "credits_ledger", SIGN_BEFORE)
    for table in MEMBER_TABLES:
        op.drop_column(table, "member")
    op.drop_column("credits_wallets", "members")
    op.drop_column("credits_ledger", "expires_at")
    op.drop_column("credits_ledger", "grant_seq")
    op.drop_column("credits_ownership", "grant_seq")
    op.drop_column("credits_wallets", "grants")
