"""The SQL adapter's tests, for any SQL database: each database's test file only says
how to get a fresh, empty database (the `db_url` fixture).

- `SqlAdapterChecks` (not collected by itself: its name does not start with Test): what
  the adapter promises beyond the Repository contract. The schema enforces the rules on
  its own (R1, R6, R12, R15, R17, R18, R19), schema revisions and their upgrades, the
  exact round trip of every stored type, the locking of a unit of work, bounded work.
  Its `repository` fixture also serves the shared `RepositoryContract`.
- `SqlApiKeyStoreChecks`: the shared ApiKeyStore contract on `SqlApiKeyStore`.
- `sql_state_machine()`: the shared state machine on a database reset for each example.
"""

from __future__ import annotations

import math
import threading
import unittest
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from hypothesis import settings
from sqlalchemy import event

from adapters.clock import ManualClock
from adapters.sql import (
    SchemaOutOfDate,
    SqlApiKeyStore,
    SqlRepository,
    UnknownSchemaRevision,
    create_engine,
    schema_head,
    schema_revision,
    schema_script,
    upgrade,
)
from adapters.sql.codecs import result_to_json
from adapters.sql.migrate import MIGRATIONS, VERSION_TABLE
from adapters.sql.schema import idempotency, ledger
from adapters.sql.schema import metadata as sql_metadata
from adapters.sql.unit_of_work import OWNERSHIP_CHUNK
from adapters.verifier import ScriptedVerifier
from credits_domain import (
    AlreadyRefunded,
    Cause,
    Channel,
    ChargeResult,
    ConcurrencyConflict,
    Contact,
    Credits,
    CreditService,
    IdempotencyKeyReused,
    IdempotencyRecord,
    ItemResult,
    NotCharged,
    Operation,
    Outcome,
    Ownership,
    Plan,
    Price,
    Status,
    Verdict,
    Wallet,
)
from credits_domain.charging import fingerprint
from credits_domain.plans import PLANS
from credits_domain.ports import ApiKeyStore, Repository
from credits_domain.testing import ApiKeyStoreContract, make_state_machine
from credits_domain.testing.contract import T0

START = datetime(2025, 1, 31, 9, 30, 15, 123456, tzinfo=UTC)

MOBILE_HEAVY = Plan(
    name="mobile-heavy",
    monthly=Credits(email=20_000, mobile=0),
    prices={
        Channel.EMAIL: Price(pool=Channel.EMAIL),
        Channel.MOBILE: Price(pool=Channel.EMAIL, credits=15),  # R2: a mobile at 15 email
    },
    rollover_cap=Credits(email=30_000, mobile=0),
)


def emails(count: int, prefix: str = "user") -> list[Contact]:
    return [Contact.email(f"{prefix}{n}@corp.example.com") for n in range(count)]


def service_on(repository: SqlRepository, clock: ManualClock | None = None) -> CreditService:
    return CreditService(
        repository=repository,
        verifier=ScriptedVerifier(),
        clock=clock if clock is not None else ManualClock(START),
    )


def refused(repository: SqlRepository, statement: str | sa.Executable, **params: Any) -> None:
    """The statement, run in its own transaction, is refused by the schema itself."""
    if isinstance(statement, str):
        statement = sa.text(statement)
    with pytest.raises(sa.exc.IntegrityError), repository.engine.begin() as connection:
        connection.execute(statement, params)


def entry(**values: Any) -> sa.Executable:
    """An INSERT of ledger entry 99 of `acme`, with the given columns overridden."""
    row = {
        "account": "acme",
        "seq": 99,
        "kind": "grant",
        "pool": "email",
        "amount": 1,
        "at": START,
        "balance_after": 5,
        "operation": "grant",
    }
    return sa.insert(ledger).values({**row, **values})


class StatementCounter:
    """Counts the statements (round trips) sent to the database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: object) -> None:
        self.count += 1


def downgrade(url: str, revision: str) -> None:
    """Take the database down to `revision` (the migrations' downgrade steps)."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", MIGRATIONS)
            config.set_main_option("version_table", VERSION_TABLE)
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        engine.dispose()


def reset_database(url: str) -> None:
    """Empty a test's own database, so that the next example starts from nothing."""
    engine = create_engine(url)
    try:
        if engine.dialect.name == "postgresql":
            with engine.begin() as connection:
                connection.execute(sa.text("DROP SCHEMA public CASCADE"))
                connection.execute(sa.text("CREATE SCHEMA public"))
            return
    finally:
        engine.dispose()
    database = sa.make_url(url).database
    assert database, "a test database is a file"
    for suffix in ("", "-wal", "-shm"):
        Path(database + suffix).unlink(missing_ok=True)


def sql_state_machine() -> type[unittest.TestCase]:
    """The shared state machine, on the test's `db_url` database, reset per example."""
    urls: list[str] = []

    def fresh_repository() -> Repository:
        reset_database(urls[-1])
        return SqlRepository.connect(urls[-1], migrate=True)

    machine = make_state_machine(fresh_repository)

    class SqlStateMachine(machine.TestCase):  # type: ignore[name-defined, misc]
        # The step count of the in-memory machine: all machines made by
        # make_state_machine share one key in Hypothesis' example database.
        settings = settings(
            max_examples=min(30, settings().max_examples),
            stateful_step_count=30,
            deadline=None,
        )

        @pytest.fixture(autouse=True)
        def _database(self, db_url: str) -> Iterator[None]:
            urls.append(db_url)
            yield
            urls.remove(db_url)

    return SqlStateMachine


class SqlApiKeyStoreChecks(ApiKeyStoreContract):
    @pytest.fixture
    def key_store(self, db_url: str) -> Iterator[ApiKeyStore]:
        with SqlRepository.connect(db_url, migrate=True) as repository:
            yield SqlApiKeyStore(repository.engine, clock=ManualClock(T0))


class SqlAdapterChecks:
    # -- fixtures ---------------------------------------------------------------------

    @pytest.fixture
    def repository(self, db_url: str) -> Iterator[SqlRepository]:
        with SqlRepository.connect(db_url, migrate=True) as repository:
            yield repository

    @pytest.fixture
    def acme(self, repository: SqlRepository) -> CreditService:
        """A service on the repository with account `acme` on boost (12,000 + 800)."""
        service = service_on(repository)
        service.subscribe("acme", "boost")
        return service

    # -- schema revisions and migrations ----------------------------------------------

    def test_an_empty_database_is_refused_with_the_upgrade_command(self, db_url: str) -> None:
        with pytest.raises(SchemaOutOfDate) as raised:
            SqlRepository.connect(db_url)
        assert f"run `credits db upgrade --db {db_url}`" in str(raised.value)
        assert raised.value.current == ()
        assert raised.value.head == schema_head()

    def test_upgrade_from_empty_reaches_head_and_is_idempotent(self, db_url: str) -> None:
        upgrade(db_url)
        upgrade(db_url)  # a second run finds nothing to do
        engine = create_engine(db_url)
        try:
            assert len(schema_head()) == 1  # one line of revisions, no branches
            assert schema_revision(engine) == schema_head()
            tables = set(sa.inspect(engine).get_table_names())
        finally:
            engine.dispose()
        assert {
            "credits_wallets",
            "credits_holds",
            "credits_ledger",
            "credits_ownership",
            "credits_idempotency",
        } <= tables
        with SqlRepository.connect(db_url) as repository:
            service_on(repository).subscribe("acme", "boost")

    def test_two_processes_upgrading_at_once_both_succeed(self, db_url: str) -> None:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                upgrade(db_url)
            except BaseException as error:  # collected and asserted below
                errors.append(error)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        with SqlRepository.connect(db_url):
            pass

    def test_upgrade_from_the_previous_revision_keeps_data_and_adds_the_guards(
        self, db_url: str
    ) -> None:
        # An account's history written at head (revision 0007 added columns the adapter
        # writes), then the database taken down to revision 0001 with it.
        upgrade(db_url)
        clock = ManualClock(START)
        with SqlRepository.connect(db_url) as head:
            service = service_on(head, clock)
            service.subscribe("acme", "boost")
            service.unlock("acme", emails(3))
            service.report_bounce("acme", emails(1)[0])
            clock.advance(timedelta(days=40))
            service.renew_due()
            before = (service.balance("acme"), list(service.statement("acme")))
        downgrade(db_url, "0001")
        with pytest.raises(SchemaOutOfDate, match="revision 0001") as raised:
            SqlRepository.connect(db_url)
        assert f"credits db upgrade --db {db_url}" in str(raised.value)
        old = SqlRepository(create_engine(db_url))
        # 0001 had no append-only guard yet: an UPDATE of the ledger went through.
        with old.engine.connect() as connection, connection.begin() as transaction:
            changed = connection.execute(sa.text("UPDATE credits_ledger SET note = 'x'"))
            assert changed.rowcount == len(before[1])
            transaction.rollback()
        old.close()

        with SqlRepository.connect(db_url, migrate=True) as repository:
            service = service_on(repository, clock)
            assert (service.balance("acme"), list(service.statement("acme"))) == before
            assert service.unlock("acme", emails(3)).charged(Channel.EMAIL) == 0
            refused(repository, "UPDATE credits_ledger SET note = 'x'")
            indexes = {
                ix["name"] for ix in sa.inspect(repository.engine).get_indexes("credits_ledger")
            }
            assert {"ix_ledger_account_at", "ix_ledger_account_pool_at"} <= indexes

    def test_upgrade_from_0004_keeps_charges_keys_and_takes_top_ups_keys(self, db_url: str) -> None:
        # The account's rows through the adapter at head, taken down to revision 0004 ...
        upgrade(db_url)
        clock = ManualClock(START)
        with SqlRepository.connect(db_url) as head:
            service = service_on(head, clock)
            service.subscribe("acme", "boost")
            first = service.unlock("acme", emails(3))
            before = (service.balance("acme"), list(service.statement("acme")))
        downgrade(db_url, "0004")
        old = SqlRepository(create_engine(db_url))
        # ... and two idempotency keys as revision 0004 stored them: a finished unlock
        # and one in flight (its columns only).
        keys_0004 = sa.Table(
            "credits_idempotency",
            sa.MetaData(),
            *(sa.Column(c.name, c.type) for c in idempotency.c if c.name != "entry_seq"),
        )
        finished = attrs.evolve(first, idempotency_key="order-1")
        with old.engine.begin() as connection:
            connection.execute(
                sa.insert(keys_0004),
                [
                    {
                        "account": "acme",
                        "key": "order-1",
                        "fingerprint": fingerprint(Operation.UNLOCK, emails(3), None),
                        "hold_id": None,
                        "created_at": START,
                        "result": result_to_json(finished),
                    },
                    {
                        "account": "acme",
                        "key": "order-2",
                        "fingerprint": "e" * 64,
                        "hold_id": "acme#9",
                        "created_at": START,
                        "result": None,
                    },
                ],
            )
        old.close()

        with SqlRepository.connect(db_url, migrate=True) as repository:
            assert schema_revision(repository.engine) == schema_head()
            service = service_on(repository, clock)
            assert (service.balance("acme"), list(service.statement("acme"))) == before
            replay = service.unlock("acme", emails(3), idempotency_key="order-1")
            assert replay == attrs.evolve(finished, replayed=True)
            with pytest.raises(IdempotencyKeyReused):
                service.top_up(
                    "acme", Credits(email=5), reason="goodwill", idempotency_key="order-2"
                )
            granted = service.top_up(
                "acme", Credits(email=5, mobile=1), reason="goodwill", idempotency_key="grant-1"
            )
            again = service.top_up(
                "acme", Credits(email=5, mobile=1), reason="goodwill", idempotency_key="grant-1"
            )
            assert again == attrs.evolve(granted, replayed=True)
            assert service.balance("acme").email == before[0].email + 5
            # The schema keeps a top-up's record apart from a charge's.
            refused(
                repository,
                "UPDATE credits_idempotency SET hold_id = 'acme#1' WHERE key = 'grant-1'",
            )
            refused(
                repository, "UPDATE credits_idempotency SET entry_seq = 3 WHERE key = 'order-1'"
            )

        # And back: 0004 has no top-up keys, so they go with the column.
        downgrade(db_url, "0004")
        engine = create_engine(db_url)
        try:
            with engine.connect() as connection:
                keys = connection.execute(sa.text("SELECT key FROM credits_idempotency"))
                assert sorted(keys.scalars()) == ["order-1", "order-2"]
        finally:
            engine.dispose()

    def test_every_earlier_revision_upgrades_to_head(self, db_url: str) -> None:
        earlier = [r.revision for r in schema_script().walk_revisions() if not r.is_head]
        assert "0001" in earlier
        for revision in earlier:
            reset_database(db_url)
            upgrade(db_url, revision=revision)
            with pytest.raises(SchemaOutOfDate, match=f"revision {revision}"):
                SqlRepository.connect(db_url)
            with SqlRepository.connect(db_url, migrate=True) as repository:
                service_on(repository).subscribe("acme", "boost")

    def test_the_adapter_uses_exactly_the_columns_the_migrations_create(self, db_url: str) -> None:
        # The adapter's table objects and the migrations are written separately; a column,
        # type or nullability that differs would fail only at run time, on one dialect.
        upgrade(db_url)
        engine = create_engine(db_url)
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(connection, opts={"compare_type": True})
                differences = compare_metadata(context, sql_metadata)
        finally:
            engine.dispose()
        ours = set(sql_metadata.tables)
        column_level = [
            d
            for d in differences
            if not isinstance(d, tuple)  # a list of modify_* tuples for one column
            or d[0] in ("add_table", "add_column", "remove_column")
            or (d[0] == "remove_table" and d[1].name in ours)
        ]
        assert column_level == []

    def test_a_database_newer_than_the_package_is_refused(self, db_url: str) -> None:
        upgrade(db_url)
        engine = create_engine(db_url)
        try:
            with engine.begin() as connection:
                connection.execute(
                    sa.text("UPDATE credits_alembic_version SET version_num = 'f00d'")
                )
        finally:
            engine.dispose()
        with pytest.raises(UnknownSchemaRevision, match="f00d"):
            SqlRepository.connect(db_url)

    # -- the schema enforces the rules by itself ---------------------------------------

    def test_no_pool_balance_below_zero(
        self, repository: SqlRepository, acme: CreditService
    ) -> None:
        # R1, R15: whatever the caller, the database refuses a negative balance.
        refused(repository, "UPDATE credits_wallets SET email_balance = -1")
        refused(repository, "UPDATE credits_wallets SET mobile_balance = -1")
        refused(repository, entry(kind="charge", amount=-1, balance_after=-1))

    def test_a_lapsed_wallet_holds_nothing(
        self, repository: SqlRepository, acme: CreditService
    ) -> None:
        # R6: a lapsed account's balance is zero, and it has no next boundary.
        refused(
            repository,
            "UPDATE credits_wallets SET status = 'lapsed', next_boundary_at = NULL",
        )

    def test_ledger_entries_have_the_sign_of_their_kind(
        self, repository: SqlRepository, acme: CreditService
    ) -> None:
        # R19: grants, top-ups and refunds add; charges and forfeits take away.
        refused(repository, entry(kind="charge", amount=1))
        refused(repository, entry(kind="forfeit", amount=1))
        refused(repository, entry(kind="grant", amount=-1))
        refused(repository, entry(kind="refund", amount=0))
        refused(repository, entry(kind="grant", amount=1, pool="sms"))

    def test_the_ledger_is_append_only(
        self, repository: SqlRepository, acme: CreditService
    ) -> None:
        # R19: entries are never changed or deleted, whoever asks.
        acme.unlock("acme", emails(2))
        refused(repository, "UPDATE credits_ledger SET amount = amount - 1")
        refused(repository, "UPDATE credits_ledger SET note = 'rewritten'")
        refused(repository, "DELETE FROM credits_ledger WHERE seq = 2")
        if repository.dialect == "postgresql":
            refused(repository, "TRUNCATE credits_ledger CASCADE")
        assert [e.seq for e in acme.statement("acme")] == [0, 1, 2, 3]

    def test_ownership_is_unique_and_permanent(
        self, repository: SqlRepository, acme: CreditService
    ) -> None:
        # R12: an account owns a datum at most once; R18: a refund keeps it owned.
        ann = Contact.email("ann@corp.example.com")
        acme.unlock("acme", [ann])
        with repository.unit_of_work() as uow:
            record = uow.dedup.owned("acme", [ann])[ann]
        with pytest.raises(ConcurrencyConflict), repository.unit_of_work() as uow:
            uow.dedup.add([record])
        refused(
            repository,
            "INSERT INTO credits_ownership (account, channel, value, pool, credits, charged_at,"
            " entry_seq) SELECT account, channel, value, pool, credits, charged_at, entry_seq"
            " FROM credits_ownership",
        )
        refused(repository, "DELETE FROM credits_ownership")
        refused(repository, "UPDATE credits_ownership SET credits = 2")
        refused(repository, "UPDATE credits_ownership SET refunded_at = NULL")
        acme.report_bounce("acme", ann)
        # Refunded once: the refund mark cannot move or be cleared.
        refused(repository, "UPDATE credits_ownership SET refunded_at = charged_at")
        with pytest.raises(AlreadyRefunded), repository.unit_of_work() as uow:
            uow.dedup.mark_refunded("acme", ann, START)
        with pytest.raises(NotCharged), repository.unit_of_work() as uow:
            uow.dedup.mark_refunded("acme", Contact.email("bob@corp.example.com"), START)

    def test_an_idempotency_key_is_unique_per_account(
        self, repository: SqlRepository, acme: CreditService
    ) -> None:
        acme.unlock("acme", emails(1), idempotency_key="k")
        refused(
            repository,
            "INSERT INTO credits_idempotency (account, key, fingerprint, created_at)"
            " SELECT account, key, 'other', created_at FROM credits_idempotency",
        )

    # -- round trips -----------------------------------------------------------------

    def test_a_wallet_and_its_entries_read_back_exactly(self, repository: SqlRepository) -> None:
        wallet = Wallet.open("acme", MOBILE_HEAVY, START)
        wallet.change_plan(PLANS["ignite"], START + timedelta(days=1))  # pending downgrade
        hold = wallet.place_hold(Credits(email=40, mobile=0), START, ttl_s=900)
        cause = Cause(
            operation=Operation.EXPORT,
            datum="email:ann@corp.example.com",
            plan="mobile-heavy",
            period=0,
            idempotency_key="key-1",
            destination="hubspot",
            note="a note",
        )
        wallet.charge(Channel.EMAIL, 15, START + timedelta(microseconds=1), cause)
        wallet.top_up(Channel.MOBILE, 7, START, Cause(operation=Operation.GRANT, note="goodwill"))
        wallet.cancel()
        wallet.pause()
        entries = list(wallet.pending_entries)
        with repository.unit_of_work() as uow:
            uow.add_wallet(wallet)
            uow.commit()
        with repository.unit_of_work() as uow:
            loaded = uow.load_wallet("acme")
        assert loaded is not None
        for field in (
            "account",
            "plan",
            "status",
            "anchor",
            "period_index",
            "ends_at",
            "pending_plan",
            "balances",
            "holds",
            "next_seq",
            "next_hold_no",
        ):
            assert getattr(loaded, field) == getattr(wallet, field), field
        assert loaded.status is Status.PAUSED
        assert loaded.holds == {hold.hold_id: hold}
        assert loaded.pending_entries == []
        assert loaded.anchor.tzinfo is not None and loaded.anchor.utcoffset() == timedelta(0)
        assert list(repository.entries("acme")) == entries

    def test_ownership_and_idempotency_records_read_back_exactly(
        self, repository: SqlRepository, acme: CreditService
    ) -> None:
        ann = Contact.email("ann@corp.example.com")
        acme.unlock("acme", [ann])
        with repository.unit_of_work() as uow:
            record = uow.dedup.owned("acme", [ann, Contact.email("no@corp.example.com")])
        assert set(record) == {ann}
        charge = list(repository.entries("acme"))[-1]
        assert record[ann] == Ownership(
            account="acme",
            contact=ann,
            pool=Channel.EMAIL,
            credits=1,
            charged_at=START,
            entry_seq=charge.seq,
        )

        phone = Contact.mobile("+447700900123")
        result = ChargeResult(
            operation=Operation.ENRICH,
            items=(
                ItemResult(
                    contact=ann,
                    outcome=Outcome.CHARGED,
                    verdict=Verdict.VALID,
                    pool=Channel.EMAIL,
                    credits=1,
                ),
                ItemResult(contact=phone, outcome=Outcome.ALREADY_OWNED),
                ItemResult(contact=ann, outcome=Outcome.DUPLICATE_IN_REQUEST),
                ItemResult(contact=phone, outcome=Outcome.NOT_VERIFIED, verdict=Verdict.CATCH_ALL),
                ItemResult(contact=ann, outcome=Outcome.INSUFFICIENT_CREDITS),
                ItemResult(
                    contact=phone,
                    outcome=Outcome.CHARGED,
                    verdict=Verdict.VALID,
                    pool=Channel.EMAIL,
                    credits=15,
                ),
            ),
            idempotency_key="key-2",
        )
        later = START + timedelta(seconds=1, microseconds=7)
        in_flight = IdempotencyRecord(
            account="acme", key="key-2", fingerprint="f" * 64, hold_id="acme#9", created_at=START
        )
        done = IdempotencyRecord(
            account="acme",
            key="key-2",
            fingerprint="f" * 64,
            hold_id=None,
            created_at=later,
            result=result,
        )
        with repository.unit_of_work() as uow:
            uow.load_wallet("acme")
            uow.idempotency.put(in_flight)
            assert uow.idempotency.get("acme", "key-2") == in_flight
            uow.commit()
        with repository.unit_of_work() as uow:
            assert uow.idempotency.get("acme", "key-2") == in_flight
            assert uow.idempotency.get("acme", "key-3") is None
            uow.load_wallet("acme")
            uow.idempotency.put(done)  # insert or replace
            uow.commit()
        with repository.unit_of_work() as uow:
            assert uow.idempotency.get("acme", "key-2") == done

    def test_instants_in_any_offset_compare_as_instants(
        self, repository: SqlRepository, acme: CreditService
    ) -> None:
        entries = list(repository.entries("acme"))
        assert [e.at for e in entries] == [START, START]
        plus_two = timezone(timedelta(hours=2))
        just_after = (START + timedelta(microseconds=1)).astimezone(plus_two)
        assert repository.entries("acme", since=START.astimezone(plus_two)) == entries
        assert repository.entries("acme", since=just_after) == []
        assert repository.entries("acme", until=just_after) == entries
        assert (
            repository.last_entry("acme", Channel.EMAIL, START.astimezone(plus_two)) == entries[0]
        )
        before = (START - timedelta(microseconds=1)).astimezone(plus_two)
        assert repository.last_entry("acme", Channel.EMAIL, before) is None

    # -- units of work: atomicity, locking, the version guard -------------------------

    def test_leaving_without_commit_rolls_everything_back(
        self, repository: SqlRepository, acme: CreditService
    ) -> None:
        with repository.unit_of_work() as uow:
            wallet = uow.load_wallet("acme")
            assert wallet is not None
            wallet.top_up(Channel.EMAIL, 5, START, Cause(operation=Operation.GRANT, note="x"))
            uow.save_wallet(wallet)
        assert acme.balance("acme").email == 12_000
        assert len(repository.entries("acme")) == 2

    def test_a_loaded_wallet_is_locked_until_its_unit_of_work_ends(self, db_url: str) -> None:
        with SqlRepository.connect(db_url, migrate=True, lock_wait_s=0.2) as repository:
            service = service_on(repository)
            service.subscribe("acme", "boost")
            service.subscribe("globex", "boost")
            with repository.unit_of_work() as first:
                assert first.load_wallet("acme") is not None
                # Another writer of the same account waits, then loses (bounded wait).
                with pytest.raises(ConcurrencyConflict), repository.unit_of_work() as second:
                    second.load_wallet("acme")
                if repository.dialect == "postgresql":
                    # Row locks: another account is not held up by this one.
                    with repository.unit_of_work() as other:
                        assert other.load_wallet("globex") is not None
            # The lock ends with the unit of work, committed or not.
            with repository.unit_of_work() as third:
                assert third.load_wallet("acme") is not None
                third.commit()
            with pytest.raises(RuntimeError), repository.unit_of_work() as failing:
                failing.load_wallet("acme")
                raise RuntimeError("the caller failed mid-way")
            assert service.balance("acme").email == 12_000

    def test_no_lock_is_held_while_the_verifier_runs(self, db_url: str) -> None:
        # R16: between reserve and settle, nothing of the request's is open: another
        # writer locks the account at once, from inside the verifier.
        with (
            SqlRepository.connect(db_url, migrate=True) as repository,
            SqlRepository.connect(db_url, lock_wait_s=0.1) as other,
        ):
            locked_meanwhile: list[bool] = []

            def lock_the_account(batch: object) -> None:
                with other.unit_of_work() as uow:
                    locked_meanwhile.append(uow.load_wallet("acme") is not None)
                    uow.commit()

            service = CreditService(
                repository=repository,
                verifier=ScriptedVerifier(before_answer=lock_the_account),
                clock=ManualClock(START),
            )
            service.subscribe("acme", "boost")
            result = service.unlock("acme", emails(3), idempotency_key="k")
        assert result.charged(Channel.EMAIL) == 3
        assert locked_meanwhile == [True]

    def test_a_unit_of_work_is_unusable_after_commit(
        self, repository: SqlRepository, acme: CreditService
    ) -> None:
        with repository.unit_of_work() as uow:
            uow.load_wallet("acme")
            uow.commit()
            with pytest.raises(AssertionError, match="only inside its `with` block"):
                uow.load_wallet("acme")

    def test_saving_a_wallet_changed_meanwhile_is_a_conflict(
        self, repository: SqlRepository, acme: CreditService
    ) -> None:
        with pytest.raises(ConcurrencyConflict), repository.unit_of_work() as uow:
            wallet = uow.load_wallet("acme")
            assert wallet is not None
            uow.connection.execute(sa.text("UPDATE credits_wallets SET version = version + 1"))
            uow.save_wallet(wallet)

    def test_adding_an_existing_account_is_a_conflict(
        self, repository: SqlRepository, acme: CreditService
    ) -> None:
        with pytest.raises(ConcurrencyConflict), repository.unit_of_work() as uow:
            uow.add_wallet(Wallet.open("acme", PLANS["boost"], START))

    # -- bounded work ------------------------------------------------------------------

    def test_a_batch_costs_a_bounded_number_of_statements(
        self, repository: SqlRepository, acme: CreditService
    ) -> None:
        counter = StatementCounter(repository.engine)
        acme.unlock("acme", emails(1, "one"))
        one = counter.count
        counter.count = 0
        big = 3 * OWNERSHIP_CHUNK + 1
        result = acme.unlock("acme", emails(big, "many"))
        assert result.charged(Channel.EMAIL) == big
        # Only the ownership lookups grow, by one per chunk, in reserve and in settle.
        assert counter.count <= one + 2 * (math.ceil(big / OWNERSHIP_CHUNK) - 1)

    def test_a_charge_costs_the_same_whatever_the_history(
        self, repository: SqlRepository, acme: CreditService
    ) -> None:
        counter = StatementCounter(repository.engine)
        acme.unlock("acme", emails(1, "first"))
        young = counter.count
        acme.unlock("acme", emails(1_200, "history"))
        counter.count = 0
        acme.unlock("acme", emails(1, "again"))
        assert counter.count == young
