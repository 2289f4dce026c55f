"""Set-based charging (ports.ChargePath): reserve and settle as one call each.

PostgreSQL: one statement per phase, `SELECT * FROM credits_reserve(...)` and
`credits_settle(...)` (Alembic revision 0004), sent in autocommit: one round trip, and the
wallet row's lock lives as long as the function call. SQLite: the same steps as a few
statements in one BEGIN IMMEDIATE transaction (an embedded database has no round trips
to save; what is saved is the Python of the units-of-work path: no Wallet, no holds
loaded, rows written as columns).

Both answer None whenever the request needs the aggregate path; see `ports.ChargePath`.
Statements are sent with `exec_driver_sql`, built once: the charging path compiles
nothing per call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import psycopg
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from adapters.sql.codecs import result_to_json
from adapters.sql.errors import translated
from adapters.sql.schema import INSTANT
from credits_domain import (
    BoughtMeanwhile,
    Channel,
    ChargeResult,
    Contact,
    Credits,
    FastReservation,
    Price,
    Settled,
)
from credits_domain.charging import Candidates, ChargeRequest
from credits_domain.errors import invariant
from credits_domain.guarantee import GUARANTEE_MIN_EMAILS, breaches

_POOLS: Final = {channel.value: channel for channel in Channel}

# -- PostgreSQL -------------------------------------------------------------------------

# Every parameter goes as text and is cast by the server: psycopg's dumpers for lists
# and instants cost more client CPU than the rest of a single-contact unlock.
_PG_RESERVE: Final = (
    "SELECT status, hold_id, held_email, held_mobile, owned::text, plan::text "
    "FROM credits_reserve(%s, %s::timestamptz, %s::timestamptz, %s, %s, %s::text[], %s::text[])"
)
_PG_SETTLE: Final = (
    "SELECT status, owned::text FROM credits_settle(%s, %s::timestamptz, %s, %s, %s, %s, "
    "%s::text[], %s::text[], %s::text[], %s::bigint[], %s::json)"
)


def _array(items: Sequence[object]) -> str:
    """A PostgreSQL array literal of `items` as text: every element quoted and escaped."""
    return (
        "{"
        + ",".join(
            '"' + str(item).replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items
        )
        + "}"
    )


def _positions(owned: str) -> list[int]:
    """The 1-based positions an `owned` bigint[] answer names ('{1,3}' -> [1, 3])."""
    inner = owned[1:-1]
    return [int(n) for n in inner.split(",")] if inner else []


# -- SQLite -----------------------------------------------------------------------------

_LITE_WALLET: Final = (
    "SELECT status, next_boundary_at, plan, email_balance, mobile_balance, next_seq, "
    "next_hold_no, period_index, low_email, low_mobile, period_emails, period_bounces "
    "FROM credits_wallets WHERE account = ? "
    "AND grants IS NULL"  # R23: a wallet with expiring grants charges through the Wallet
)
_LITE_EXPIRED_HOLD: Final = (
    "SELECT 1 FROM credits_holds WHERE account = ? AND expires_at <= ? LIMIT 1"
)
_LITE_HOLDING: Final = (
    "SELECT coalesce(sum(email_credits), 0), coalesce(sum(mobile_credits), 0) "
    "FROM credits_holds WHERE account = ?"
)
_LITE_HOLD: Final = "SELECT email_credits, mobile_credits, expires_at FROM credits_holds " + (
    "WHERE account = ? AND hold_id = ?"
)
_LITE_KEY: Final = (
    "SELECT hold_id, result IS NOT NULL FROM credits_idempotency WHERE account = ? AND key = ?"
)
_LITE_OWNED_CHUNK: Final = 500  # values per IN list: bounded statements
_LITE_INSERT_HOLD: Final = (
    "INSERT INTO credits_holds (account, hold_id, email_credits, mobile_credits, "
    "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)"
)
_LITE_BUMP_HOLD_NO: Final = (
    "UPDATE credits_wallets SET next_hold_no = next_hold_no + 1, version = version + 1 "
    "WHERE account = ?"
)
_LITE_INSERT_KEY: Final = (
    "INSERT INTO credits_idempotency (account, key, fingerprint, hold_id, created_at, result) "
    "VALUES (?, ?, ?, ?, ?, NULL)"
)
_LITE_LAST_AT: Final = "SELECT at FROM credits_ledger WHERE account = ? ORDER BY seq DESC LIMIT 1"
_LITE_INSERT_ENTRY: Final = (
    "INSERT INTO credits_ledger (account, seq, kind, pool, amount, at, balance_after, "
    "operation, datum, plan, period, idempotency_key, destination, note) "
    "VALUES (?, ?, 'charge', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)"
)
_LITE_INSERT_OWNED: Final = (
    "INSERT INTO credits_ownership (account, channel, value, pool, credits, charged_at, "
    "entry_seq, refunded_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)"
)
_LITE_DELETE_HOLD: Final = "DELETE FROM credits_holds WHERE account = ? AND hold_id = ?"
_LITE_CHARGE_WALLET: Final = (
    "UPDATE credits_wallets SET email_balance = email_balance - ?, "
    "mobile_balance = mobile_balance - ?, next_seq = next_seq + ?, version = version + 1, "
    "period_emails = period_emails + ? WHERE account = ?"
)
_LITE_STORE_RESULT: Final = (
    "UPDATE credits_idempotency SET result = ?, hold_id = NULL, created_at = ? "
    "WHERE account = ? AND key = ?"
)


def _fires_nothing(
    cost: Credits, emails: int, balances: Sequence[int], stored: Sequence[Any]
) -> bool:
    """R24, as Wallet.fires_nothing: every pool charged stays above its threshold in
    force (unknown until the wallet is saved after revision 0008: then no), and the
    charge cannot first breach the period's guarantee (R25)."""
    low_email, low_mobile, counted, bounced = stored
    if low_email is None or low_mobile is None:
        return False
    return (
        (not cost.email or balances[0] - cost.email > low_email)
        and (not cost.mobile or balances[1] - cost.mobile > low_mobile)
        and not (
            counted < GUARANTEE_MIN_EMAILS <= counted + emails
            and breaches(GUARANTEE_MIN_EMAILS, bounced)  # at the 100th email, if anywhere
        )
    )


class FastPath:
    """ports.ChargePath on an engine made by `create_engine` (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        # False once PostgreSQL said the functions do not exist: a database wrapped as is
        # at a revision before 0004 charges through units of work.
        self._functions = True
        # A stored plan's name and price list, parsed once per distinct plan.
        self._plans: dict[str, tuple[str, Mapping[Channel, Price]]] = {}

    # -- the port -----------------------------------------------------------------------

    def reserve_fast(
        self, request: ChargeRequest, *, now: datetime, expires_at: datetime
    ) -> FastReservation | None:
        channels = [c.channel._value_ for c in request.unique]
        values = [c.value for c in request.unique]
        key = request.idempotency_key
        with translated("reserving credits", url=self._engine.url, outcome_unknown=True):
            if self._postgres:
                row = self._call(
                    _PG_RESERVE,
                    (
                        request.account,
                        now.isoformat(),
                        expires_at.isoformat(),
                        key,
                        request.fingerprint,
                        _array(channels),
                        _array(values),
                    ),
                )
                if row is None:
                    return None
                status, hold_id, held_email, held_mobile, owned_at, plan = row
                if status != "reserved":
                    return None
                owned = frozenset(request.unique[i - 1] for i in _positions(owned_at))
                capacity = Credits(email=held_email, mobile=held_mobile)
                return FastReservation(
                    hold_id=hold_id, capacity=capacity, owned=owned, prices=self._plan(plan)[1]
                )
            with self._engine.begin() as connection:
                return self._lite_reserve(connection, request, now, expires_at)

    def settle_fast(
        self,
        request: ChargeRequest,
        *,
        now: datetime,
        hold_id: str | None,
        charged: Candidates,
        result: ChargeResult,
    ) -> Settled | BoughtMeanwhile | None:
        key = request.idempotency_key
        stored = None if key is None else json.dumps(result_to_json(result))
        prices = charged.prices
        with translated("settling a charge", url=self._engine.url, outcome_unknown=True):
            if self._postgres:
                row = self._call(
                    _PG_SETTLE,
                    (
                        request.account, now.isoformat(), hold_id, key,
                        request.operation._value_, request.destination,
                        _array([c.channel._value_ for c in charged.contacts]),
                        _array([c.value for c in charged.contacts]),
                        _array([prices[c.channel].pool._value_ for c in charged.contacts]),
                        _array([prices[c.channel].credits for c in charged.contacts]),
                        stored,
                    ),
                )  # fmt: skip
                if row is None:
                    return None
                status, owned_at = row
                if status == "settled":
                    return Settled()
                if status == "conflict":
                    return BoughtMeanwhile(
                        contacts=frozenset(charged.contacts[i - 1] for i in _positions(owned_at))
                    )
                return None
            with self._engine.begin() as connection:
                return self._lite_settle(connection, request, now, hold_id, charged, stored)

    def _call(self, statement: str, parameters: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """One function call in autocommit (one round trip); None if the functions do not
        exist in this database.

        On the driver's connection itself, not through SQLAlchemy's Connection: a
        single-contact unlock is two of these calls, and SQLAlchemy's per-execution
        machinery was a third of the client's CPU. The pool (and its checkout check of
        dropped connections) is still SQLAlchemy's; errors are wrapped as SQLAlchemy
        wraps them, for `translated`.
        """
        if not self._functions:
            return None
        try:
            pooled = self._engine.raw_connection()
        except psycopg.Error as error:
            # The pool connecting anew raises the driver's own error (Engine.connect would
            # have wrapped it): wrapped here, so that `translated` sorts it like the rest.
            raise sa_exc.DBAPIError.instance(statement, parameters, error, psycopg.Error) from error
        driver: Any = pooled.driver_connection
        try:
            invariant(driver is not None, "a pooled connection has its driver's connection")
            driver.autocommit = True
            try:
                with driver.cursor() as cursor:
                    cursor.execute(statement, parameters, prepare=True)
                    row = cursor.fetchone()
            finally:
                if not driver.closed:
                    driver.autocommit = False  # back to the pool as the pool gave it
        except psycopg.errors.UndefinedFunction:
            self._functions = False
            return None
        except psycopg.errors.IntegrityConstraintViolation as error:
            if "invariant broken" in str(error):  # a bug, as errors.invariant() says one
                raise AssertionError(str(error)) from error
            raise sa_exc.DBAPIError.instance(statement, parameters, error, psycopg.Error) from error
        except psycopg.Error as error:
            broken = bool(getattr(driver, "broken", False) or driver.closed)
            if broken:
                pooled.invalidate(error)
            raise sa_exc.DBAPIError.instance(
                statement, parameters, error, psycopg.Error, connection_invalidated=broken
            ) from error
        finally:
            pooled.close()
        invariant(row is not None, "a charging function answers one row")
        return tuple(row)

    # -- SQLite -------------------------------------------------------------------------

    def _lite_reserve(
        self, connection: Connection, request: ChargeRequest, now: datetime, expires_at: datetime
    ) -> FastReservation | None:
        account, key = request.account, request.idempotency_key
        run = connection.exec_driver_sql
        at = self._instant(now, connection)
        wallet = run(_LITE_WALLET, (account,)).one_or_none()
        if wallet is None or wallet[0] != "active" or wallet[1] <= at:
            return None
        if run(_LITE_EXPIRED_HOLD, (account, at)).first() is not None:
            return None
        if key is not None and run(_LITE_KEY, (account, key)).first() is not None:
            return None
        prices = self._plan(wallet[2])[1]
        owned = self._lite_owned(connection, account, request.unique)
        need = dict.fromkeys(Channel, 0)
        for contact in request.unique:
            if contact not in owned:
                price = prices[contact.channel]
                need[price.pool] += price.credits
        holding_email, holding_mobile = run(_LITE_HOLDING, (account,)).one()
        capacity = Credits(
            email=min(need[Channel.EMAIL], wallet[3] - holding_email),
            mobile=min(need[Channel.MOBILE], wallet[4] - holding_mobile),
        )
        hold_id = None
        if capacity.email or capacity.mobile:
            hold_id = f"{account}#{wallet[6]}"  # as Wallet.place_hold numbers them
            run(
                _LITE_INSERT_HOLD,
                (account, hold_id, capacity.email, capacity.mobile, at,
                 self._instant(expires_at, connection)),
            )  # fmt: skip
            run(_LITE_BUMP_HOLD_NO, (account,))
        if key is not None:
            run(_LITE_INSERT_KEY, (account, key, request.fingerprint, hold_id, at))
        return FastReservation(hold_id=hold_id, capacity=capacity, owned=owned, prices=prices)

    def _lite_settle(
        self,
        connection: Connection,
        request: ChargeRequest,
        now: datetime,
        hold_id: str | None,
        charged: Candidates,
        stored: str | None,
    ) -> Settled | BoughtMeanwhile | None:
        account, key = request.account, request.idempotency_key
        run = connection.exec_driver_sql
        at = self._instant(now, connection)
        wallet = run(_LITE_WALLET, (account,)).one_or_none()
        if wallet is None or wallet[0] != "active" or wallet[1] <= at:
            return None
        held = Credits()
        if hold_id is not None:
            hold = run(_LITE_HOLD, (account, hold_id)).one_or_none()
            if hold is None or hold[2] <= at:
                return None  # the aggregate path says HoldExpired (R16)
            held = Credits(email=hold[0], mobile=hold[1])
        if key is not None:
            record = run(_LITE_KEY, (account, key)).one_or_none()
            if record is None or record[1] or record[0] != hold_id:
                return None  # replayed or taken over meanwhile (R17)
        bought = self._lite_owned(connection, account, charged.contacts)
        if bought:
            return BoughtMeanwhile(contacts=bought)
        emails = sum(1 for contact in charged.contacts if contact.channel is Channel.EMAIL)
        if not _fires_nothing(charged.cost, emails, wallet[3:5], wallet[8:12]):
            return None  # R24: the charge may fire an event; the Wallet writes it
        last = run(_LITE_LAST_AT, (account,)).first()
        charged_at = at if last is None or last[0] <= at else last[0]  # never before the last
        plan_name = self._plan(wallet[2])[0]
        balances = {Channel.EMAIL: wallet[3], Channel.MOBILE: wallet[4]}
        total = dict.fromkeys(Channel, 0)
        seq = wallet[5]
        entries: list[tuple[Any, ...]] = []
        owned: list[tuple[Any, ...]] = []
        operation, destination = request.operation._value_, request.destination
        priced = {
            channel: (price.pool, price.pool._value_, price.credits)
            for channel, price in charged.prices.items()
        }
        for contact in charged.contacts:
            channel = contact.channel
            pool, pool_name, credits = priced[channel]
            total[pool] += credits
            balances[pool] -= credits
            entries.append(
                (account, seq, pool_name, -credits, charged_at, balances[pool], operation,
                 f"{channel._value_}:{contact.value}", plan_name, wallet[7], key,
                 destination)
            )  # fmt: skip
            owned.append(
                (account, channel._value_, contact.value, pool_name, credits, charged_at, seq)
            )
            seq += 1
        invariant(
            total[Channel.EMAIL] <= held.email and total[Channel.MOBILE] <= held.mobile,
            "a charge within its hold (R15, R16)",
        )
        if entries:
            run(_LITE_INSERT_ENTRY, entries)
            run(_LITE_INSERT_OWNED, owned)
        if hold_id is not None:
            run(_LITE_DELETE_HOLD, (account, hold_id))
        run(
            _LITE_CHARGE_WALLET,
            (total[Channel.EMAIL], total[Channel.MOBILE], len(entries), emails, account),
        )
        if key is not None:
            run(_LITE_STORE_RESULT, (stored, at, account, key))
        return Settled()

    def _lite_owned(
        self, connection: Connection, account: str, contacts: Sequence[Contact]
    ) -> frozenset[Contact]:
        """Which of `contacts` the account owns: one primary-key probe per value."""
        by_key = {(c.channel._value_, c.value): c for c in contacts}
        found: set[Contact] = set()
        for channel in Channel:
            values = [value for (name, value) in by_key if name == channel._value_]
            for start in range(0, len(values), _LITE_OWNED_CHUNK):
                chunk = values[start : start + _LITE_OWNED_CHUNK]
                marks = ", ".join("?" * len(chunk))
                rows = connection.exec_driver_sql(
                    "SELECT value FROM credits_ownership WHERE account = ? AND channel = ? "
                    f"AND value IN ({marks})",
                    (account, channel._value_, *chunk),
                )
                found.update(by_key[(channel._value_, value)] for (value,) in rows)
        return frozenset(found)

    # -- shared -------------------------------------------------------------------------

    @staticmethod
    def _instant(at: datetime, connection: Connection) -> Any:
        return INSTANT.process_bind_param(at, connection.dialect)

    def _plan(self, text: str) -> tuple[str, Mapping[Channel, Price]]:
        """A stored plan's name and price list (R2), parsed once per distinct plan."""
        found = self._plans.get(text)
        if found is None:
            data = json.loads(text)
            prices = {
                _POOLS[channel]: Price(pool=_POOLS[price["pool"]], credits=int(price["credits"]))
                for channel, price in data["prices"].items()
            }
            if len(self._plans) >= 1_000:  # plans are few; bounded all the same
                self._plans.clear()
            found = self._plans[text] = (str(data["name"]), prices)
        return found
