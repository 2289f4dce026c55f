"""Events (R24): the outbox table, and what the one-call paths need to leave events alone.

- `credits_events` (account, seq, type, at, data): an account's events, numbered 1, 2,
  3, ... without gaps; written by the unit of work that saves the wallet, in the same
  transaction as the change they report (an outbox); never updated nor deleted (the
  same append-only triggers as the ledger's).
- `credits_wallets.next_event_seq`: the seq of the account's next event (1 for every
  existing account: it has none yet).
- `credits_wallets.low_thresholds`: the low-balance thresholds set per pool (JSON, NULL
  if none: the plan's default); `low_email` and `low_mobile`: each pool's threshold in
  force, written on every save of the wallet. NULL until a wallet is saved after this
  revision: the one-call paths then decline.
- `credits_wallets.period_emails` (the emails charged in the current period, counted
  by both charging paths; 0 for existing accounts), `period_bounces` (its bounces, a
  copy of the JSON's for the one-call paths) and `tallies` (JSON: the guarantee's
  counts of the periods kept, R25), so that `guarantee.breached` is decided in the unit
  of work of the charge or bounce that breaches.
- The one-call settle (`credits_settle`, as revision 0007 left it) answers 'fallback'
  unless every pool it charges stays above its threshold after the charge and the
  charge cannot first breach the period's guarantee (it takes the period's emails from
  below 100 to 100 or more, and at the 100th more than 1% of them have bounced, the
  highest rate the batch passes through): a charge
  that may fire `credits.low`, `credits.depleted` or `guarantee.breached` is settled by
  the Wallet, which writes the event with it. The check runs under the row lock, before
  anything is written; the call adds its emails to `period_emails`.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

INSTANT = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")

# Where the check goes in credits_settle: after the charge's totals are summed, before
# the check that the charge is within its hold (nothing has been written yet).
_BEFORE = "    IF charge_email > coalesce(hold.email_credits, 0)"
_LOW_CHECK = """    SELECT count(*) FILTER (WHERE t.channel = 'email') INTO charged_emails
      FROM unnest(p_channels) AS t(channel);
    IF w.low_email IS NULL OR w.low_mobile IS NULL
       OR (charge_email > 0 AND w.email_balance - charge_email <= w.low_email)
       OR (charge_mobile > 0 AND w.mobile_balance - charge_mobile <= w.low_mobile)
       OR (w.period_emails < 100 AND w.period_emails + charged_emails >= 100
           AND w.period_bounces * 100 > 100) THEN  -- a breach at the 100th email (R25)
        status := 'fallback';  -- R24: the charge may fire an event; the Wallet writes it
        RETURN;
    END IF;
"""
# The emails the call charges, counted in the period's total (R25).
_DECLARE = "    charge_mobile bigint;\n"
_COUNTED = (
    "           next_seq = next_seq + cardinality(p_values),\n",
    "           next_seq = next_seq + cardinality(p_values),\n"
    "           period_emails = period_emails + charged_emails,\n",
)

_SQLITE_TRIGGERS = (
    "CREATE TRIGGER credits_events_no_update BEFORE UPDATE ON credits_events "
    "BEGIN SELECT RAISE(ABORT, 'credits_events is append-only (R24)'); END",
    "CREATE TRIGGER credits_events_no_delete BEFORE DELETE ON credits_events "
    "BEGIN SELECT RAISE(ABORT, 'credits_events is append-only (R24)'); END",
)
_PG_GUARD = (
    "CREATE FUNCTION credits_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN RAISE EXCEPTION 'credits_events is append-only (R24)' "
    "USING ERRCODE = 'integrity_constraint_violation'; END $$",
    "CREATE TRIGGER credits_events_append_only BEFORE UPDATE OR DELETE ON credits_events "
    "FOR EACH ROW EXECUTE FUNCTION credits_events_append_only()",
)


def _r0007_functions() -> tuple[str, str]:
    r0007 = importlib.import_module("adapters.sql.migrations.versions.r0007_grants_and_members")
    reserve, settle = r0007._functions(r0007.NO_GRANTS)
    return str(reserve), str(settle)


def settle_with_low_check() -> str:
    """Revision 0007's credits_settle with the R24 check before its hold check."""
    settle = _r0007_functions()[1]
    if settle.count(_BEFORE) != 1:  # pragma: no cover - revision 0004's text changed
        raise RuntimeError("credits_settle has no hold check to put R24's check before")
    for needle in (_DECLARE, _COUNTED[0]):
        if settle.count(needle) != 1:  # pragma: no cover - revision 0004's text changed
            raise RuntimeError(f"credits_settle has no {needle.strip()!r} to extend")
    return (
        settle.replace(_BEFORE, _LOW_CHECK + _BEFORE)
        .replace(_DECLARE, _DECLARE + "    charged_emails bigint;\n")
        .replace(*_COUNTED)
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.add_column(
        "credits_wallets",
        sa.Column("next_event_seq", sa.BigInteger(), nullable=False, server_default="1"),
    )
    op.add_column("credits_wallets", sa.Column("low_thresholds", sa.JSON(), nullable=True))
    op.add_column("credits_wallets", sa.Column("low_email", sa.BigInteger(), nullable=True))
    op.add_column("credits_wallets", sa.Column("low_mobile", sa.BigInteger(), nullable=True))
    op.add_column(
        "credits_wallets",
        sa.Column("period_emails", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.add_column(
        "credits_wallets",
        sa.Column("period_bounces", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.add_column("credits_wallets", sa.Column("tallies", sa.JSON(), nullable=True))
    op.create_table(
        "credits_events",
        sa.Column("account", sa.String(200), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("at", INSTANT, nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("account", "seq", name="pk_credits_events"),
        sa.CheckConstraint("seq >= 1", name="ck_events_seq_positive"),
    )
    if dialect == "sqlite":
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)
    elif dialect == "postgresql":
        for statement in _PG_GUARD:
            op.execute(statement)
        op.execute(settle_with_low_check())


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(_r0007_functions()[1])
        op.execute("DROP TRIGGER credits_events_append_only ON credits_events")
        op.execute("DROP FUNCTION credits_events_append_only()")
    op.drop_table("credits_events")  # SQLite drops its triggers with it
    op.drop_column("credits_wallets", "tallies")
    op.drop_column("credits_wallets", "period_bounces")
    op.drop_column("credits_wallets", "period_emails")
    op.drop_column("credits_wallets", "low_mobile")
    op.drop_column("credits_wallets", "low_email")
    op.drop_column("credits_wallets", "low_thresholds")
    op.drop_column("credits_wallets", "next_event_seq")
