"""Set-based charging on PostgreSQL: reserve and settle as one server-side call each.

A charge used to be two transactions of about eight round trips each, holding the
wallet row's lock while the client thought between statements. `credits_reserve` and
`credits_settle` do each phase in one statement (one round trip, in autocommit): the row
lock is taken and released inside the call, so the writers of a hot account queue for the
length of a function call, not of a conversation.

The functions are the adapter's fast path, not a second home of the rules: they handle
the common case (an active wallet with no renewal due, no expired hold to release, a key
never seen), and answer 'fallback' for everything else, which the service then handles on
the aggregate path (the Wallet, in Python). Both paths share the schema, so a request may
reserve on one and settle on the other.

- credits_reserve: lock the wallet row; probe ownership for the request's data (one
  index probe per datum); price the rest with the plan's price list (R2); hold
  min(cost, available) per pool (R15, R16); record the idempotency key in flight (R17).
- credits_settle: lock the wallet row; check the hold and the key are still this
  request's; if a datum was bought meanwhile, answer 'conflict' with it and change
  nothing (R12); else append one charge entry per datum with running balances (R19),
  record ownership, release the hold, store the result on the key.

Every statement names exactly one account, the first column of every key (ready for a
distributed PostgreSQL such as Citus, with the account as distribution column).

SQLite needs no function: it is embedded, a statement costs no round trip, and the
adapter runs the same steps as statements in one BEGIN IMMEDIATE transaction.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The price of each datum of a request, from the wallet's stored plan (R2): its pool and
# credits. The plan is JSON: {"prices": {"email": {"pool": "email", "credits": 1}, ...}}.
_PRICED = """
    SELECT t.i, t.channel, t.value,
           (plan -> 'prices' -> t.channel ->> 'pool') AS pool,
           (plan -> 'prices' -> t.channel ->> 'credits')::bigint AS credits
      FROM unnest(p_channels, p_values) WITH ORDINALITY AS t(channel, value, i)
"""

# Which of the request's data the account owns: the positions (1-based) of those found.
# One primary-key probe per datum, whatever the statistics: a LATERAL subquery with
# LIMIT is never flattened into a join, so the planner cannot turn the lookup into a
# scan of the account's whole history (which it did with EXISTS on a fresh table before
# autovacuum's first ANALYZE: the first 200,000 data of a bulk load took minutes).
# `tests/test_sql_lookup_plans.py` checks the plan of this very text.
OWNED_PROBE = """
    SELECT coalesce(array_agg(t.i ORDER BY t.i), '{{}}')
      FROM unnest({channels}, {values}) WITH ORDINALITY AS t(channel, value, i)
     CROSS JOIN LATERAL (
        SELECT 1 FROM credits_ownership o
         WHERE o.account = {account} AND o.channel = t.channel AND o.value = t.value
         LIMIT 1) AS found
"""
_OWNED = OWNED_PROBE.format(account="p_account", channels="p_channels", values="p_values")

RESERVE = f"""
CREATE FUNCTION credits_reserve(
    p_account text, p_now timestamptz, p_expires_at timestamptz,
    p_key text, p_fingerprint text, p_channels text[], p_values text[],
    OUT status text, OUT hold_id text, OUT held_email bigint, OUT held_mobile bigint,
    OUT owned bigint[], OUT plan json
) LANGUAGE plpgsql AS $$
DECLARE
    w credits_wallets%ROWTYPE;
    need_email bigint;
    need_mobile bigint;
    holding_email bigint;
    holding_mobile bigint;
BEGIN
    SELECT * INTO w FROM credits_wallets WHERE account = p_account FOR UPDATE;
    IF NOT FOUND OR w.status <> 'active' OR w.next_boundary_at <= p_now
       OR EXISTS (SELECT 1 FROM credits_holds h
                   WHERE h.account = p_account AND h.expires_at <= p_now)
       OR (p_key IS NOT NULL AND EXISTS (SELECT 1 FROM credits_idempotency k
                                          WHERE k.account = p_account AND k.key = p_key))
    THEN
        status := 'fallback';
        RETURN;
    END IF;
    plan := w.plan;
    owned := ({_OWNED});
    SELECT coalesce(sum(p.credits) FILTER (WHERE p.pool = 'email'), 0),
           coalesce(sum(p.credits) FILTER (WHERE p.pool = 'mobile'), 0)
      INTO need_email, need_mobile
      FROM ({_PRICED}) AS p
     WHERE NOT (p.i = ANY (owned));
    SELECT coalesce(sum(h.email_credits), 0), coalesce(sum(h.mobile_credits), 0)
      INTO holding_email, holding_mobile
      FROM credits_holds h WHERE h.account = p_account;
    held_email := least(need_email, w.email_balance - holding_email);
    held_mobile := least(need_mobile, w.mobile_balance - holding_mobile);
    IF held_email > 0 OR held_mobile > 0 THEN
        hold_id := p_account || '#' || w.next_hold_no;
        INSERT INTO credits_holds
            (account, hold_id, email_credits, mobile_credits, created_at, expires_at)
        VALUES (p_account, hold_id, held_email, held_mobile, p_now, p_expires_at);
        UPDATE credits_wallets SET next_hold_no = next_hold_no + 1, version = version + 1
         WHERE account = p_account;
    END IF;
    IF p_key IS NOT NULL THEN
        INSERT INTO credits_idempotency (account, key, fingerprint, hold_id, created_at)
        VALUES (p_account, p_key, p_fingerprint, hold_id, p_now);
    END IF;
    status := 'reserved';
END $$
"""

SETTLE = f"""
CREATE FUNCTION credits_settle(
    p_account text, p_now timestamptz, p_hold_id text, p_key text,
    p_operation text, p_destination text,
    p_channels text[], p_values text[], p_pools text[], p_credits bigint[], p_result json,
    OUT status text, OUT owned bigint[]
) LANGUAGE plpgsql AS $$
DECLARE
    w credits_wallets%ROWTYPE;
    hold credits_holds%ROWTYPE;
    keyed credits_idempotency%ROWTYPE;
    last_at timestamptz;
    charged_at timestamptz;
    charge_email bigint;
    charge_mobile bigint;
BEGIN
    SELECT * INTO w FROM credits_wallets WHERE account = p_account FOR UPDATE;
    IF NOT FOUND OR w.status <> 'active' OR w.next_boundary_at <= p_now THEN
        status := 'fallback';
        RETURN;
    END IF;
    IF p_hold_id IS NOT NULL THEN
        SELECT * INTO hold FROM credits_holds
         WHERE account = p_account AND hold_id = p_hold_id;
        IF NOT FOUND OR hold.expires_at <= p_now THEN
            status := 'fallback';  -- the aggregate path says HoldExpired (R16)
            RETURN;
        END IF;
    END IF;
    IF p_key IS NOT NULL THEN
        SELECT * INTO keyed FROM credits_idempotency WHERE account = p_account AND key = p_key;
        IF NOT FOUND OR keyed.result IS NOT NULL
           OR keyed.hold_id IS DISTINCT FROM p_hold_id THEN
            status := 'fallback';  -- replayed or taken over meanwhile (R17)
            RETURN;
        END IF;
    END IF;
    owned := ({_OWNED});
    IF cardinality(owned) > 0 THEN
        status := 'conflict';  -- bought meanwhile: free for this request (R12)
        RETURN;
    END IF;
    SELECT coalesce(sum(c) FILTER (WHERE p = 'email'), 0),
           coalesce(sum(c) FILTER (WHERE p = 'mobile'), 0)
      INTO charge_email, charge_mobile
      FROM unnest(p_pools, p_credits) AS t(p, c);
    IF charge_email > coalesce(hold.email_credits, 0)
       OR charge_mobile > coalesce(hold.mobile_credits, 0) THEN
        RAISE EXCEPTION 'invariant broken: a charge beyond its hold (R15, R16)'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    -- Entries are in time order as well as in seq order: never before the last one.
    SELECT l.at INTO last_at FROM credits_ledger l
     WHERE l.account = p_account ORDER BY l.seq DESC LIMIT 1;
    charged_at := greatest(p_now, coalesce(last_at, p_now));
    INSERT INTO credits_ledger (account, seq, kind, pool, amount, at, balance_after,
                                operation, datum, plan, period, idempotency_key, destination)
    SELECT p_account, w.next_seq + t.i - 1, 'charge', t.pool, -t.credits, charged_at,
           CASE t.pool WHEN 'email' THEN w.email_balance ELSE w.mobile_balance END
             - sum(t.credits) OVER (PARTITION BY t.pool ORDER BY t.i),
           p_operation, t.channel || ':' || t.value, w.plan ->> 'name', w.period_index,
           p_key, p_destination
      FROM unnest(p_channels, p_values, p_pools, p_credits)
           WITH ORDINALITY AS t(channel, value, pool, credits, i);
    INSERT INTO credits_ownership (account, channel, value, pool, credits, charged_at,
                                   entry_seq)
    SELECT p_account, t.channel, t.value, t.pool, t.credits, charged_at, w.next_seq + t.i - 1
      FROM unnest(p_channels, p_values, p_pools, p_credits)
           WITH ORDINALITY AS t(channel, value, pool, credits, i);
    IF p_hold_id IS NOT NULL THEN
        DELETE FROM credits_holds WHERE account = p_account AND hold_id = p_hold_id;
    END IF;
    UPDATE credits_wallets
       SET email_balance = email_balance - charge_email,
           mobile_balance = mobile_balance - charge_mobile,
           next_seq = next_seq + cardinality(p_values),
           version = version + 1
     WHERE account = p_account;
    IF p_key IS NOT NULL THEN
        UPDATE credits_idempotency SET result = p_result, hold_id = NULL, created_at = p_now
         WHERE account = p_account AND key = p_key;
    END IF;
    status := 'settled';
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(RESERVE)
        op.execute(SETTLE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION credits_settle(text, timestamptz, text, text, text, text, "
            "text[], text[], text[], bigint[], json)"
        )
        op.execute(
            "DROP FUNCTION credits_reserve(text, timestamptz, timestamptz, text, text, "
            "text[], text[])"
        )
