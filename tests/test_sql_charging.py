"""Set-based charging on SQL (ports.ChargePath): one call per phase, same rows as the
units-of-work path, one account per statement, and an upgrade that keeps open holds.

Run on SQLite and PostgreSQL alike; PostgreSQL's own round trips are counted at the
driver (tests/statement_capture.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from adapters.clock import ManualClock
from adapters.sql import SqlRepository, create_engine, upgrade
from adapters.sql.fast_path import _array
from adapters.verifier import ScriptedVerifier
from credits_domain import (
    ChargePolicy,
    Contact,
    Credits,
    CreditService,
    LedgerEntry,
    Repository,
    Verdict,
)
from credits_domain.testing import ChosenPaths
from sql_checks import downgrade
from statement_capture import Sent, captured, flat_values

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ACCOUNT_TABLES = re.compile(
    r"credits_(wallets|holds|ledger|ownership|idempotency|reserve|settle)\b", re.IGNORECASE
)
POLICY = ChargePolicy(hold_ttl_s=60)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'charging.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


def service_on(repository: Repository, clock: ManualClock) -> CreditService:
    verifier = ScriptedVerifier({"bad@corp.com": Verdict.INVALID, "+447700900999": Verdict.UNKNOWN})
    return CreditService(repository=repository, verifier=verifier, clock=clock, policy=POLICY)


def story(service: CreditService, account: str, clock: ManualClock) -> None:
    """Charging of every kind, with keys, repeats, failures and data owned before."""
    service.subscribe(account, "ignite")
    service.unlock(account, [Contact.email("ann@corp.com")], idempotency_key="k1")
    clock.advance(timedelta(minutes=1))
    service.unlock(
        account,
        [
            Contact.email("ann@corp.com"),
            Contact.email("bad@corp.com"),
            Contact.email("bob@corp.com"),
            Contact.email("bob@corp.com"),
            Contact.mobile("+447700900001"),
            Contact.mobile("+447700900999"),
        ],
        idempotency_key="k2",
    )
    service.unlock(account, [Contact.email("bob@corp.com")], idempotency_key="k2-other")
    clock.advance(timedelta(minutes=1))
    service.export(
        account, [Contact.email("cy@corp.com"), Contact.email("ann@corp.com")], destination="csv"
    )
    service.enrich(account, [Contact.mobile("+447700900002")], idempotency_key="k3")
    assert service.unlock(account, [Contact.email("ann@corp.com")], idempotency_key="k1").replayed


def comparable(entries: Sequence[LedgerEntry]) -> list[tuple[Any, ...]]:
    return [
        (e.seq, e.kind, e.pool, e.amount, e.at, e.balance_after, e.cause.operation,
         e.cause.datum, e.cause.plan, e.cause.period, e.cause.idempotency_key,
         e.cause.destination)
        for e in entries
    ]  # fmt: skip


def test_the_one_call_path_leaves_what_units_of_work_leave(db_url: str) -> None:
    with SqlRepository.connect(db_url, migrate=True) as repository:
        fast_clock, slow_clock = ManualClock(START), ManualClock(START)
        fast = service_on(repository, fast_clock)
        slow = service_on(ChosenPaths(repository, reserve=False, settle=False), slow_clock)
        story(fast, "fast", fast_clock)
        story(slow, "slow", slow_clock)
        assert comparable(list(fast.statement("fast"))) == comparable(list(slow.statement("slow")))
        assert fast.balance("fast") == slow.balance("slow")
        with repository.engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT account, channel, value, pool, credits, charged_at, entry_seq "
                    "FROM credits_ownership ORDER BY account, channel, value"
                )
            ).all()
            results = connection.execute(
                sa.text(
                    "SELECT account, key, fingerprint, hold_id, result FROM credits_idempotency "
                    "ORDER BY account, key"
                )
            ).all()
            holds = connection.execute(sa.text("SELECT count(*) FROM credits_holds")).scalar()
        assert [r[1:] for r in rows if r[0] == "fast"] == [r[1:] for r in rows if r[0] == "slow"]
        assert [r[1:] for r in results if r[0] == "fast"] == [
            r[1:] for r in results if r[0] == "slow"
        ]
        assert holds == 0


def charging_calls(sent: Sequence[Sent]) -> list[str]:
    return [s.statement.split("FROM ")[1].split("(")[0] for s in sent if "credits_" in s.statement]


@pytest.mark.postgres
def test_a_single_contact_unlock_is_two_round_trips_on_postgresql(postgres_url: str) -> None:
    with SqlRepository.connect(postgres_url, migrate=True) as repository:
        service = service_on(repository, ManualClock(START))
        service.subscribe("acme", "boost")
        service.unlock("acme", [Contact.email("warm@corp.com")])  # the pool has a connection
        with captured(repository.engine) as sent:
            result = service.unlock("acme", [Contact.email("ann@corp.com")], idempotency_key="k")
        assert result.charged_credits == Credits(email=1)
        assert [s.kind for s in sent] == ["execute", "execute"], sent
        assert charging_calls(sent) == ["credits_reserve", "credits_settle"]


def test_every_statement_serving_an_account_names_that_account_and_no_other(
    db_url: str,
) -> None:
    """Ready to shard by account (Citus, the account as distribution column): while the
    service serves account A, every statement that carries data names A, and none names
    another account (so no statement, and no transaction, spans two accounts)."""
    others = {"acme-2", "acm"}
    with SqlRepository.connect(db_url, migrate=True) as repository:
        clock = ManualClock(START)
        service = service_on(repository, clock)
        for other in others:
            service.subscribe(other, "boost")
            service.unlock(other, [Contact.email("ann@corp.com")])
        with captured(repository.engine) as sent:
            story(service, "acme", clock)
            service.report_bounce("acme", Contact.email("bob@corp.com"))
            service.top_up("acme", Credits(email=5), reason="goodwill")
            service.change_plan("acme", "boost")
            service.pause("acme")
            service.resume("acme")
            clock.advance(timedelta(days=40))  # a renewal due: the units-of-work path
            service.unlock("acme", [Contact.email("dee@corp.com")])
            assert service.balance_at("acme", START + timedelta(minutes=1)).email > 0
            list(service.statement("acme"))
            service.cancel("acme")
        # Every statement on an account's tables (or calling the charging functions).
        carrying = [s for s in sent if s.kind == "execute" and ACCOUNT_TABLES.search(s.statement)]
        assert len(carrying) > 20
        for statement in carrying:
            values = {v for v in flat_values(statement.parameters) if isinstance(v, str)}
            assert "acme" in values, statement
            assert not values & others, statement
        with repository.engine.connect() as connection:
            inspector = sa.inspect(connection)
            for table in inspector.get_table_names():
                if table in (
                    "credits_api_keys",
                    "credits_webhook_endpoints",
                    "credits_alembic_version",
                ):
                    continue  # reference tables, not an account's rows
                keys: list[list[Any]] = [inspector.get_pk_constraint(table)["constrained_columns"]]
                keys += [u["column_names"] for u in inspector.get_unique_constraints(table)]
                keys += [i["column_names"] for i in inspector.get_indexes(table) if i["unique"]]
                for columns in keys:
                    assert columns[0] == "account", (table, columns)


@pytest.mark.postgres
def test_array_literals_keep_awkward_text(postgres_url: str) -> None:
    awkward = ['a"b', "c\\d", "e,f", "{g}", "h i", "ünï", "", "NULL", "x'y"]
    with psycopg.connect(postgres_url.replace("+psycopg", "")) as connection:
        row = connection.execute("SELECT %s::text[]", (_array(awkward),)).fetchone()
    assert row is not None and row[0] == awkward


class Crash(BaseException):
    """A process dying between reserve and settle (not an Exception: nothing catches it)."""


def test_an_upgrade_keeps_data_and_open_holds_and_the_request_completes_once(
    db_url: str,
) -> None:
    """Revision 0004 on a database holding data and a request that died between reserve
    and settle: the data and the open hold are kept and honoured, and the request, retried
    after its hold expired, charges once (then replays, R17)."""
    # Written at head (later revisions add columns the adapter writes), then taken down
    # to revision 0003 with its data and the open hold.
    upgrade(db_url)
    old = SqlRepository(create_engine(db_url))
    clock = ManualClock(START)
    service = service_on(old, clock)
    service.subscribe("acme", "boost")
    service.unlock("acme", [Contact.email("ann@corp.com")])

    def crash(batch: Sequence[Contact]) -> None:
        raise Crash

    dying = CreditService(
        repository=old,
        verifier=ScriptedVerifier(before_answer=crash),
        clock=clock,
        policy=POLICY,
    )
    batch = [Contact.email("bob@corp.com"), Contact.email("cy@corp.com")]
    with pytest.raises(Crash):  # no key: revision 0003's records lack what this code reads
        dying.unlock("acme", batch)
    before = (service.balance("acme"), list(service.statement("acme")))
    assert before[0].email_available == before[0].email - 2  # the crashed request's hold
    old.close()
    downgrade(db_url, "0003")

    upgrade(db_url)
    with SqlRepository.connect(db_url) as repository:
        service = service_on(repository, clock)
        assert (service.balance("acme"), list(service.statement("acme"))) == before
        clock.advance(timedelta(seconds=POLICY.hold_ttl_s + 1))
        done = service.unlock("acme", batch, idempotency_key="import-1")
        assert done.charged_credits == Credits(email=2) and not done.replayed
        again = service.unlock("acme", batch, idempotency_key="import-1")
        assert again.replayed and again.items == done.items
        balance = service.balance("acme")
        assert balance.email == balance.email_available == before[0].email - 2
        charged = [e.cause.datum for e in service.statement("acme") if e.amount < 0]
        assert charged == ["email:ann@corp.com", "email:bob@corp.com", "email:cy@corp.com"]
        with captured(repository.engine) as sent:
            service.unlock("acme", [Contact.email("dee@corp.com")])
        if repository.dialect == "postgresql":
            assert charging_calls(sent) == ["credits_reserve", "credits_settle"]
