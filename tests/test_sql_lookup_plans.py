"""A batch's ownership lookup probes the primary key per datum, whatever the history (R12).

The issue asks that charging touch a bounded number of rows whatever the size of the
account's history. The lookup of which data of a request an account already owns is the
one read that could grow with it: on PostgreSQL 15 a plain `value IN (...)` is planned,
without statistics (a fresh table, before autovacuum's first ANALYZE), as a scan of the
account's whole key range that filters the values. These tests capture the statement the
adapter really sends for a multi-datum lookup and check its plan on an account owning
2,000 data with no statistics gathered: no ownership row read and thrown away. They
assert the plan, never a duration.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from adapters.sql import SqlRepository
from adapters.sql.migrations.versions.r0004_charging_functions import OWNED_PROBE
from credits_domain import Channel, Contact, Ownership

HISTORY = 2_000  # owned data before the lookup; enough for a range scan to show
AT = datetime(2026, 1, 1, tzinfo=UTC)


def _owned(account: str, count: int) -> list[Ownership]:
    return [
        Ownership(
            account=account,
            contact=Contact.email(f"lead{i}@corp.example.com"),
            pool=Channel.EMAIL,
            credits=1,
            charged_at=AT,
            entry_seq=i,
        )
        for i in range(count)
    ]


def _captured_lookup(repository: SqlRepository) -> tuple[str, Any, list[Any]]:
    """Seed the history, run a 3-datum lookup, and return the SQL it sent (with its
    parameters) and what the lookup found."""
    with repository.unit_of_work() as uow:
        uow.dedup.add(_owned("acme", HISTORY))
        uow.dedup.add(_owned("other", 10))  # another account's rows share the table
        uow.commit()
    asked = [
        Contact.email("lead7@corp.example.com"),
        Contact.email(f"lead{HISTORY - 1}@corp.example.com"),
        Contact.email("never@corp.example.com"),
    ]
    sent: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        if "credits_ownership" in statement:
            sent.append((statement, parameters))

    event.listen(repository.engine, "before_cursor_execute", seen)
    try:
        with repository.unit_of_work() as uow:
            found = uow.dedup.owned("acme", asked)
    finally:
        event.remove(repository.engine, "before_cursor_execute", seen)
    assert len(sent) == 1, sent
    return sent[0][0], sent[0][1], sorted(found)


@pytest.fixture
def sqlite_repository(tmp_path: Path) -> Iterator[SqlRepository]:
    repository = SqlRepository.connect(f"sqlite:///{tmp_path / 'credits.db'}", migrate=True)
    yield repository
    repository.close()


@pytest.fixture
def postgres_repository(postgres_url: str) -> Iterator[SqlRepository]:
    repository = SqlRepository.connect(postgres_url, migrate=True)
    yield repository
    repository.close()


def test_sqlite_probes_the_full_key_per_value(sqlite_repository: SqlRepository) -> None:
    statement, parameters, found = _captured_lookup(sqlite_repository)
    assert [c.value for c in found] == [
        f"lead{HISTORY - 1}@corp.example.com",
        "lead7@corp.example.com",
    ]
    with sqlite_repository.engine.connect() as connection:
        plan = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
    details = [row[-1] for row in plan]
    assert any("account=? AND channel=? AND value=?" in d for d in details), details
    assert not any(d.startswith("SCAN") for d in details), details


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


@pytest.mark.postgres
def test_postgresql_reads_no_ownership_row_it_throws_away(
    postgres_repository: SqlRepository,
) -> None:
    statement, parameters, found = _captured_lookup(postgres_repository)
    assert len(found) == 2
    with postgres_repository.engine.connect() as connection:
        # No ANALYZE: the statistics are missing, as in a fresh table.
        explained = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
        ).scalar_one()
    nodes = list(_nodes(explained[0]["Plan"]))
    scans = [n for n in nodes if n.get("Relation Name") == "credits_ownership"]
    assert scans, nodes
    for scan in scans:
        assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), scan
        assert "value" in scan.get("Index Cond", ""), scan  # the full key, not a range
        assert scan.get("Rows Removed by Filter", 0) == 0, scan
        # At most one row per value asked: nothing of the account's history besides.
        assert scan["Actual Rows"] * scan["Actual Loops"] <= 3, scan


@pytest.mark.postgres
def test_the_charging_functions_probe_the_key_per_datum(
    postgres_repository: SqlRepository,
) -> None:
    """The ownership probe of credits_reserve/credits_settle (revision 0004), planned as
    the function plans it: with parameters, on a fresh table without statistics."""
    _captured_lookup(postgres_repository)  # seeds the history
    probe = OWNED_PROBE.format(account="$1", channels="$2", values="$3")
    asked = ["lead7@corp.example.com", f"lead{HISTORY - 1}@corp.example.com", "nobody@x.io"]
    # EXECUTE takes no bind parameters: the test's own constants, as literals.
    literals = "'acme', ARRAY['email', 'email', 'email'], ARRAY[{}]".format(
        ", ".join(f"'{value}'" for value in asked)
    )
    with postgres_repository.engine.connect() as connection:
        connection.exec_driver_sql(f"PREPARE probe(text, text[], text[]) AS {probe}")
        for _ in range(6):  # past the plan cache's custom plans: the generic one too
            found = connection.exec_driver_sql(f"EXECUTE probe({literals})").scalar_one()
        explained = connection.exec_driver_sql(
            f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE probe({literals})"
        ).scalar_one()
    assert found == [1, 2]
    nodes = list(_nodes(explained[0]["Plan"]))
    scans = [n for n in nodes if n.get("Relation Name") == "credits_ownership"]
    assert scans, nodes
    for scan in scans:
        assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), scan
        assert "value" in scan.get("Index Cond", ""), scan
        assert scan["Actual Rows"] * scan["Actual Loops"] <= 3, scan
