"""A gallery of planted bugs: copies of the in-memory adapter, each wrong in one way that
adapters of document stores really got wrong (the issue "The harness catches what
adapters really get wrong"). `tests/test_harness_gallery.py` runs the harness on each and
counts what it catches.

Every planted adapter answers None on the one-call charging path (`ports.ChargePath`), so
that the service charges through units of work and reads, where the bug is: a correct
one-call path would otherwise hide a bug in a unit of work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import attrs

from adapters.memory import (
    InMemoryRepository,
    InMemoryUnitOfWork,
    _check_key,
    _Idempotency,
    _Owned,
)
from credits_domain import (
    BoughtMeanwhile,
    Channel,
    FastReservation,
    IdempotencyRecord,
    LedgerEntry,
    Ownership,
    Settled,
    Wallet,
)
from credits_domain.charging import Candidates, ChargeRequest, ChargeResult
from credits_domain.errors import invariant
from credits_domain.limits import check_account

EVERYTHING = 2**63 - 1


class _UnitsOfWorkOnly(InMemoryRepository):
    """The in-memory adapter without its one-call charging path."""

    def _checked(
        self,
        account: str,
        after_seq: int,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> None:
        """Refuse what the real adapter refuses: a planted bug is wrong in one way only."""
        self._check_limit(limit)
        InMemoryRepository.entries(
            self, account, after_seq=after_seq, since=since, until=until, limit=0
        )

    def reserve_fast(
        self, request: ChargeRequest, *, now: datetime, expires_at: datetime
    ) -> FastReservation | None:
        return None

    def settle_fast(
        self,
        request: ChargeRequest,
        *,
        now: datetime,
        hold_id: str | None,
        charged: Candidates,
        result: ChargeResult,
    ) -> Settled | BoughtMeanwhile | None:
        return None


# -- 1. ownership checked, then inserted, outside one transaction -----------------------


class _UnlockedUnitOfWork(InMemoryUnitOfWork):
    """A document store without multi-document transactions: each call checks what is
    stored when it is made, and commit writes without checking again, so two units of work
    that overlap both find a datum unowned and both charge it."""

    def __enter__(self) -> Self:
        invariant(self._state == "new", "a unit of work is entered once")
        self._state = "open"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._state = "closed"


class NonAtomicOwnership(_UnitsOfWorkOnly):
    def unit_of_work(self) -> InMemoryUnitOfWork:
        return _UnlockedUnitOfWork(self)


# -- 2. an idempotency key stored once for all accounts ---------------------------------

_ANY = ""  # not an account id the core accepts, so it clashes with none


class _GlobalKeys(_Idempotency):
    def get(self, account: str, key: str) -> IdempotencyRecord | None:
        with self._uow.step():
            account, ident = check_account(account), (_ANY, _check_key(key))
            record = self._uow.staged_keys.get(ident) or self._uow.repository.keys.get(ident)
        return record if record is not None and record.account == account else None

    def put(self, record: IdempotencyRecord) -> None:
        super().put(record)
        staged = self._uow.staged_keys.pop((record.account, record.key))
        self._uow.staged_keys[(_ANY, record.key)] = staged


class _GlobalKeysUnitOfWork(InMemoryUnitOfWork):
    def __init__(self, repository: InMemoryRepository) -> None:
        super().__init__(repository)
        self.idempotency = _GlobalKeys(self)


class GlobalIdempotencyKeys(_UnitsOfWorkOnly):
    def unit_of_work(self) -> InMemoryUnitOfWork:
        return _GlobalKeysUnitOfWork(self)


# -- 3. the ledger read in the text order of its keys (0, 1, 10, 2, ...) -----------------


class TextOrderLedger(_UnitsOfWorkOnly):
    def entries(
        self,
        account: str,
        *,
        after_seq: int = -1,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> Sequence[LedgerEntry]:
        self._checked(account, after_seq, since, until, limit)
        every = super().entries(account, since=since, until=until, limit=EVERYTHING)
        by_text = sorted(every, key=lambda e: str(e.seq))
        return [e for e in by_text if str(e.seq) > str(after_seq)][:limit]

    def last_entry(self, account: str, pool: Channel, at: datetime) -> LedgerEntry | None:
        every = super().entries(account, limit=EVERYTHING)
        mine = sorted((e for e in every if e.pool is pool and e.at <= at), key=lambda e: str(e.seq))
        super().last_entry(account, pool, at)  # its checks of the arguments
        return mine[-1] if mine else None


# -- 4. statement pages: one short, or repeating the boundary entry ----------------------


class ShortPage(_UnitsOfWorkOnly):
    def entries(
        self,
        account: str,
        *,
        after_seq: int = -1,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> Sequence[LedgerEntry]:
        page = super().entries(account, after_seq=after_seq, since=since, until=until, limit=limit)
        return page[:-1] if len(page) == limit > 1 else page


class RepeatedBoundary(_UnitsOfWorkOnly):
    def entries(
        self,
        account: str,
        *,
        after_seq: int = -1,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> Sequence[LedgerEntry]:
        start = after_seq - 1 if after_seq >= 0 else after_seq  # "from the cursor", inclusive
        return super().entries(account, after_seq=start, since=since, until=until, limit=limit)


# -- 5. off by one at an exact instant -------------------------------------------------


class SinceExclusive(_UnitsOfWorkOnly):
    def entries(
        self,
        account: str,
        *,
        after_seq: int = -1,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> Sequence[LedgerEntry]:
        self._checked(account, after_seq, since, until, limit)
        page = super().entries(
            account, after_seq=after_seq, since=since, until=until, limit=EVERYTHING
        )
        return [e for e in page if since is None or e.at > since][:limit]


class RenewalDueNowMissed(_UnitsOfWorkOnly):
    def due_accounts(self, now: datetime, limit: int) -> Sequence[str]:
        self._check_limit(limit)
        due = super().due_accounts(now, EVERYTHING)
        return [
            a
            for a in due
            if (boundary := self.wallets[a].next_boundary_at) is not None and boundary < now
        ][:limit]


class PastBalanceExclusive(_UnitsOfWorkOnly):
    def last_entry(self, account: str, pool: Channel, at: datetime) -> LedgerEntry | None:
        found = super().last_entry(account, pool, at)
        while found is not None and found.at == at:  # "before", where "at or before" is meant
            earlier = [
                e for e in super().entries(account, limit=found.seq) if e.pool is pool and e.at < at
            ]
            found = earlier[-1] if earlier else None
        return found


# -- 6. the wallet's version ignored: a lost update -------------------------------------


class _VersionBlindUnitOfWork(InMemoryUnitOfWork):
    def save_wallet(self, wallet: Wallet) -> None:
        current = self.staged_wallets.get(wallet.account) or self.repository.wallets.get(
            wallet.account
        )
        if current is not None:
            self._versions[wallet.account] = current.version  # whatever was loaded
        super().save_wallet(wallet)


class WalletVersionIgnored(_UnitsOfWorkOnly):
    def unit_of_work(self) -> InMemoryUnitOfWork:
        return _VersionBlindUnitOfWork(self)


# -- 7. account ids not escaped in storage keys ------------------------------------------


class UnescapedAccountKeys(_UnitsOfWorkOnly):
    """Ledger entries kept under "<account>:<seq>" and read by the prefix "<account>:",
    which is also the prefix of every key of account "<account>:<anything>"."""

    def entries(
        self,
        account: str,
        *,
        after_seq: int = -1,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> Sequence[LedgerEntry]:
        found = list(
            super().entries(account, after_seq=after_seq, since=since, until=until, limit=limit)
        )
        for other in sorted(self.ledgers):
            if other.startswith(f"{account}:"):
                found.extend(
                    super().entries(
                        other, after_seq=after_seq, since=since, until=until, limit=limit
                    )
                )
        return found[:limit]


# -- 8. a refund mark lost when the same unit of work saves the wallet ------------------


class _EmbeddedOwnershipUnitOfWork(InMemoryUnitOfWork):
    """Ownership kept inside the account's document: saving the wallet writes the document
    back as it was loaded, over the refund marks made meanwhile (report_bounce does both)."""

    def __init__(self, repository: InMemoryRepository) -> None:
        super().__init__(repository)
        self._loaded: dict[str, dict[str, Ownership | int]] = {}

    def load_wallet(self, account: str) -> Wallet | None:
        wallet = super().load_wallet(account)
        if wallet is not None:
            self._loaded[account] = dict(self.repository.owned_of(account).by_key)
        return wallet

    def commit(self) -> None:
        marked = {
            account: [key for key in records if key in self._loaded.get(account, {})]
            for account, records in self.staged_owned.items()
            if account in self.staged_wallets
        }
        super().commit()
        for account, keys in marked.items():
            stored = self.repository.owned_of(account).by_key
            stored.update({key: self._loaded[account][key] for key in keys})


class RefundMarkLost(_UnitsOfWorkOnly):
    def unit_of_work(self) -> InMemoryUnitOfWork:
        return _EmbeddedOwnershipUnitOfWork(self)


# -- 9. idempotency keys compared without case (a case-insensitive collation) ------------


class _CaseBlindKeys(_Idempotency):
    """The key column of a table with a case-insensitive collation (MySQL's default, SQL
    Server's): "K1" finds the record of "k1"."""

    def get(self, account: str, key: str) -> IdempotencyRecord | None:
        return super().get(account, _check_key(key).casefold())

    def put(self, record: IdempotencyRecord) -> None:
        super().put(attrs.evolve(record, key=_check_key(record.key).casefold()))


class _CaseBlindKeysUnitOfWork(InMemoryUnitOfWork):
    def __init__(self, repository: InMemoryRepository) -> None:
        super().__init__(repository)
        self.idempotency = _CaseBlindKeys(self)


class CaseBlindIdempotencyKeys(_UnitsOfWorkOnly):
    def unit_of_work(self) -> InMemoryUnitOfWork:
        return _CaseBlindKeysUnitOfWork(self)


# -- 10. ownership keyed by account without case (a case-insensitive collation) ----------


class _CaseBlindAccounts(dict[str, _Owned]):
    """Ownership rows found by an account column that ignores case: "Acme" owns what
    "acme" bought."""

    def get(self, account: str, default: Any = None) -> Any:
        return super().get(account.casefold(), default)

    def __getitem__(self, account: str) -> _Owned:
        return super().__getitem__(account.casefold())

    def __setitem__(self, account: str, owned: _Owned) -> None:
        super().__setitem__(account.casefold(), owned)


class CaseBlindOwnership(_UnitsOfWorkOnly):
    def __init__(self) -> None:
        super().__init__()
        self.owned_by = _CaseBlindAccounts()


@attrs.frozen
class Planted:
    name: str
    bug: str
    make: Callable[[], InMemoryRepository]
    # The harness's tests that may catch it: a failure anywhere else means the copy is
    # wrong in more than its one way, and catches nothing of interest.
    caught_by: tuple[str, ...]


GALLERY: tuple[Planted, ...] = (
    Planted(
        "NonAtomicOwnership",
        "ownership checked then inserted outside one transaction",
        NonAtomicOwnership,
        caught_by=("overlapping_units_of_work", "concurrent_requests", "Machine"),
    ),
    Planted(
        "GlobalIdempotencyKeys",
        "an idempotency key stored once for all accounts",
        GlobalIdempotencyKeys,
        caught_by=("separator_characters", "one_idempotency_key_on_two_accounts", "Machine"),
    ),
    Planted(
        "TextOrderLedger",
        "ledger entries in the text order of their seq",
        TextOrderLedger,
        caught_by=("long_ledger", "exact_instants", "Machine"),
    ),
    Planted(
        "ShortPage",
        "a full page of entries one short",
        ShortPage,
        caught_by=("long_ledger", "page_by_seq", "Machine"),
    ),
    Planted(
        "RepeatedBoundary",
        "the next page repeats the cursor's entry",
        RepeatedBoundary,
        caught_by=("long_ledger", "page_by_seq", "Machine"),
    ),
    Planted(
        "SinceExclusive",
        "entries(since=...) misses the entry at since",
        SinceExclusive,
        caught_by=("exact_instants", "page_by_seq", "Machine"),
    ),
    Planted(
        "RenewalDueNowMissed",
        "a renewal due exactly now is missed",
        RenewalDueNowMissed,
        caught_by=("due_exactly_now", "Machine"),
    ),
    Planted(
        "PastBalanceExclusive",
        "a past balance misses the entry at exactly that instant",
        PastBalanceExclusive,
        caught_by=("exact_instants", "past_balance", "Machine"),
    ),
    Planted(
        "WalletVersionIgnored",
        "a stale wallet saves over a newer one",
        WalletVersionIgnored,
        caught_by=("stale_wallet", "overlapping_units_of_work", "Machine"),
    ),
    Planted(
        "UnescapedAccountKeys",
        "account a reads the ledger of account a:b",
        UnescapedAccountKeys,
        caught_by=("separator_characters", "Machine"),
    ),
    Planted(
        "RefundMarkLost",
        "a refund mark lost when its unit of work saves the wallet (a double refund)",
        RefundMarkLost,
        caught_by=("refund_mark", "Machine"),
    ),
    Planted(
        "CaseBlindIdempotencyKeys",
        "idempotency keys compared without case: K1 replays or refuses k1's request",
        CaseBlindIdempotencyKeys,
        caught_by=("Machine",),
    ),
    Planted(
        "CaseBlindOwnership",
        "ownership found by account without case: Acme owns what acme bought",
        CaseBlindOwnership,
        caught_by=("Machine",),
    ),
)
