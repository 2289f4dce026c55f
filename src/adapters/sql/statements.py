"""Statements, built once: a call binds parameters, it never rebuilds or re-keys SQL."""

from __future__ import annotations

import operator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Dialect

from adapters.sql.schema import (
    INSTANT,
    events,
    holds,
    idempotency,
    ledger,
    ownership,
    wallets,
)

_P = sa.bindparam
SELECT_WALLET = sa.select(wallets).where(wallets.c.account == _P("account")).with_for_update()
INSERT_WALLET = sa.insert(wallets)
# Parameters named after columns are the SET clause; the WHERE takes prefixed names.
UPDATE_WALLET = sa.update(wallets).where(
    wallets.c.account == _P("w_account"), wallets.c.version == _P("w_version")
)
SELECT_HOLDS = sa.select(holds).where(holds.c.account == _P("account"))
SELECT_HOLD_IDS = sa.select(holds.c.hold_id).where(holds.c.account == _P("account"))
INSERT_HOLDS = sa.insert(holds)
DELETE_HOLDS = sa.delete(holds).where(
    holds.c.account == _P("account"), holds.c.hold_id.in_(_P("hold_ids", expanding=True))
)
# Repository.renew_hold: a live hold's expiry moves on, never back; a lapsed or gone hold
# matches no row. The wallet row is not touched: no lock on it, no version bump.
_UNTIL = _P("r_until", type_=INSTANT)
RENEW_HOLD = (
    sa.update(holds)
    .where(
        holds.c.account == _P("r_account"),
        holds.c.hold_id == _P("r_hold_id"),
        holds.c.expires_at > _P("r_now", type_=INSTANT),
    )
    .values(expires_at=sa.case((holds.c.expires_at < _UNTIL, _UNTIL), else_=holds.c.expires_at))
)
SELECT_OWNED = sa.select(ownership).where(
    ownership.c.account == _P("account"),
    ownership.c.channel == _P("channel"),
    ownership.c.value.in_(_P("values", expanding=True)),
)
# PostgreSQL: the same lookup as one primary-key probe per value, whatever the planner's
# statistics. With `value IN (...)`, PostgreSQL 15 keys the index scan on (account,
# channel) only and filters the values, reading the account's whole ownership history
# per lookup when statistics are missing (a fresh table before autovacuum's first
# ANALYZE: a batch of 10,000 then took 17 s at 20,000 owned data), or picks a seq scan
# when they are skewed. A LATERAL subquery with LIMIT is never flattened into a join, so
# each value is a nested-loop probe of the full key: O(log n) per value, with or without
# statistics (tests/test_sql_lookup_plans.py checks the plan). SQLite probes the key once
# per IN value by itself.
_WANTED = (
    sa.func.unnest(sa.cast(_P("values"), postgresql.ARRAY(sa.String)))
    .table_valued("value")
    .render_derived(name="wanted")
)
_PROBE = (
    sa.select(ownership)
    .where(
        ownership.c.account == _P("account"),
        ownership.c.channel == _P("channel"),
        ownership.c.value == _WANTED.c.value,
    )
    .limit(1)  # at most one row per key anyway; the LIMIT is what keeps the probe a probe
    .lateral("found")
)
SELECT_OWNED_POSTGRESQL = sa.select(_PROBE).select_from(_WANTED).join(_PROBE, sa.true())
_OWNERSHIP_KEY = (
    ownership.c.account == _P("o_account"),
    ownership.c.channel == _P("o_channel"),
    ownership.c.value == _P("o_value"),
)
MARK_REFUNDED = sa.update(ownership).where(*_OWNERSHIP_KEY, ownership.c.refunded_at.is_(None))
SELECT_REFUNDED_AT = sa.select(ownership.c.refunded_at).where(*_OWNERSHIP_KEY)
SELECT_RECORD = sa.select(idempotency).where(
    idempotency.c.account == _P("account"), idempotency.c.key == _P("key")
)
UPDATE_RECORD = sa.update(idempotency).where(
    idempotency.c.account == _P("r_account"), idempotency.c.key == _P("r_key")
)
INSERT_RECORD = sa.insert(idempotency)


_MISSING = object()


class RowInsert:
    """An INSERT of every column of one table, for many rows: Core's own statement,
    compiled once per dialect, sent with one executemany at the driver level.

    Why not `connection.execute(sa.insert(table), rows)`: that builds each row's
    parameters anew and runs each column's bind processor per row, which was about a
    third of the adapter's time in a batch of 10,000 charges (bench/bench_sql.py). Here
    a row is built once, directly as the driver takes it; the instants go through
    `UtcInstant.process_bind_param`, exactly as SQLAlchemy would send them. Only ledger
    entries and ownership records, the rows a batch multiplies, are written this way.
    """

    def __init__(self, table: sa.Table, instants: frozenset[str]) -> None:
        self._table = table
        self._instants = instants
        # (dialect, paramstyle) -> (SQL text, parameter order if positional)
        self._compiled: dict[tuple[str, str], tuple[str, tuple[str, ...] | None]] = {}

    def _statement(self, dialect: Dialect) -> tuple[str, tuple[str, ...] | None]:
        style = (dialect.name, dialect.paramstyle)
        found = self._compiled.get(style)
        if found is None:
            keys = [column.key for column in self._table.c]
            compiled = sa.insert(self._table).compile(dialect=dialect, column_keys=keys)
            positions = tuple(compiled.positiontup or ()) if compiled.positional else None
            found = self._compiled[style] = (compiled.string, positions)
        return found

    def execute(self, connection: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert `rows` (column key -> domain value; converted in place: pass fresh dicts)."""
        dialect = connection.dialect
        sql, positions = self._statement(dialect)
        # A batch's rows share a few instants (its `now`, None): convert each once.
        converted: dict[datetime | None, Any] = {}
        for row in rows:
            for key in self._instants:
                instant = row[key]
                value = converted.get(instant, _MISSING)
                if value is _MISSING:
                    value = converted[instant] = INSTANT.process_bind_param(instant, dialect)
                row[key] = value
        params: list[Any] = rows
        if positions is not None:
            as_tuple = operator.itemgetter(*positions)  # a table has several columns
            params = [as_tuple(row) for row in rows]
        connection.exec_driver_sql(sql, params)


INSERT_ENTRIES = RowInsert(ledger, frozenset({"at"}))
INSERT_EVENTS = sa.insert(events)  # R24: the outbox, a few rows per unit of work at most
INSERT_OWNERSHIP = RowInsert(ownership, frozenset({"charged_at", "refunded_at"}))
