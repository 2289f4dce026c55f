"""Mapping rows to domain objects and back; plans and charge results as JSON.

Plans are data: the Plan itself is stored with the wallet, so a wallet keeps the terms
it was sold on whatever the catalogue says later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Row

from credits_domain import (
    Cause,
    Channel,
    ChargeResult,
    Contact,
    Credits,
    EntryKind,
    Event,
    EventType,
    Grant,
    Hold,
    IdempotencyRecord,
    ItemResult,
    LedgerEntry,
    Member,
    Operation,
    Outcome,
    Ownership,
    Plan,
    Price,
    Status,
    Verdict,
    Wallet,
)
from credits_domain.periods import require_utc
from credits_domain.wallet import Tally

# -- plans and results as JSON (plans are data: the Plan itself is stored) -------------


def _credits_to_json(credits: Credits) -> dict[str, int]:
    return {"email": credits.email, "mobile": credits.mobile}


def _credits_from_json(data: Mapping[str, Any]) -> Credits:
    return Credits(email=int(data["email"]), mobile=int(data["mobile"]))


def plan_to_json(plan: Plan) -> dict[str, Any]:
    return {
        "name": plan.name,
        "monthly": _credits_to_json(plan.monthly),
        "prices": {
            channel.value: {"pool": price.pool.value, "credits": price.credits}
            for channel, price in plan.prices.items()
        },
        "rollover_cap": None if plan.rollover_cap is None else _credits_to_json(plan.rollover_cap),
    }


def plan_from_json(data: Mapping[str, Any]) -> Plan:
    cap = data["rollover_cap"]
    return Plan(
        name=data["name"],
        monthly=_credits_from_json(data["monthly"]),
        prices={
            Channel(channel): Price(pool=Channel(price["pool"]), credits=int(price["credits"]))
            for channel, price in data["prices"].items()
        },
        rollover_cap=None if cap is None else _credits_from_json(cap),
    )


def _optional_value(member: Verdict | Channel | None) -> str | None:
    return None if member is None else member.value


def result_to_json(result: ChargeResult) -> dict[str, Any]:
    """A ChargeResult as JSON; items are compact arrays, since a batch may hold 10,000."""
    return {
        "operation": result.operation.value,
        "idempotency_key": result.idempotency_key,
        "replayed": result.replayed,
        "items": [
            [
                item.contact.channel.value,
                item.contact.value,
                item.outcome.value,
                _optional_value(item.verdict),
                _optional_value(item.pool),
                item.credits,
            ]
            for item in result.items
        ],
    }


def result_from_json(data: Mapping[str, Any]) -> ChargeResult:
    items = []
    for channel, value, outcome, verdict, pool, credits in data["items"]:
        items.append(
            ItemResult(
                contact=Contact(Channel(channel), value),
                outcome=Outcome(outcome),
                verdict=None if verdict is None else Verdict(verdict),
                pool=None if pool is None else Channel(pool),
                credits=int(credits),
            )
        )
    return ChargeResult(
        operation=Operation(data["operation"]),
        items=tuple(items),
        idempotency_key=data["idempotency_key"],
        replayed=bool(data["replayed"]),
    )


# -- rows <-> domain objects -----------------------------------------------------------


def wallet_values(wallet: Wallet) -> dict[str, Any]:
    return {
        "plan": plan_to_json(wallet.plan),
        "status": wallet.status.value,
        "anchor": wallet.anchor,
        "period_index": wallet.period_index,
        "ends_at": wallet.ends_at,
        "pending_plan": None if wallet.pending_plan is None else plan_to_json(wallet.pending_plan),
        "email_balance": wallet.balances[Channel.EMAIL],
        "mobile_balance": wallet.balances[Channel.MOBILE],
        "next_seq": wallet.next_seq,
        "next_hold_no": wallet.next_hold_no,
        "next_boundary_at": wallet.next_boundary_at,
        "grants": grants_to_json(wallet.grants) if wallet.grants else None,
        "members": members_to_json(wallet.members) if wallet.members else None,
        "next_event_seq": wallet.next_event_seq,
        "low_thresholds": {
            p.value: v for p, v in sorted(wallet.low_thresholds.items(), key=_by_pool)
        }
        or None,
        "low_email": wallet.low_threshold(Channel.EMAIL),
        "low_mobile": wallet.low_threshold(Channel.MOBILE),
        "period_emails": wallet.period_emails,
        "period_bounces": wallet.tallies.get(wallet.period_index, Tally()).bounces,
        "tallies": tallies_to_json(wallet.tallies, wallet.period_index),
    }


def tallies_to_json(tallies: Mapping[int, Tally], current: int) -> dict[str, Any] | None:
    """R25's counts by period as JSON; the current period's emails live in the column
    `period_emails` (the one-call paths add to it), so they are 0 here."""
    return {
        str(index): [0 if index == current else t.emails, t.bounces, t.breached]
        for index, t in sorted(tallies.items())
    } or None


def tallies_from_json(
    data: Mapping[str, Any] | None, current: int, period_emails: int
) -> dict[int, Tally]:
    tallies = {
        int(index): Tally(emails=emails, bounces=bounces, breached=breached)
        for index, (emails, bounces, breached) in (data or {}).items()
    }
    if period_emails:
        found = tallies.get(current, Tally())
        tallies[current] = Tally(
            emails=period_emails, bounces=found.bounces, breached=found.breached
        )
    return tallies


def _by_pool(item: tuple[Channel, int]) -> str:
    return item[0].value


def event_values(event: Event) -> dict[str, Any]:
    """R24: an event as a row of `credits_events`."""
    return {
        "account": event.account,
        "seq": event.seq,
        "type": event.type.value,
        "at": event.at,
        "data": dict(event.data),
    }


def event_from_row(row: Row[Any]) -> Event:
    return Event(
        account=row.account, seq=row.seq, type=EventType(row.type), at=row.at, data=row.data
    )


def members_to_json(members: Mapping[str, Member]) -> dict[str, Any]:
    """R22's members by id: allowance (or null), and usage in the period since `since`."""
    return {
        name: {
            "allowance": None if m.allowance is None else _credits_to_json(m.allowance),
            "since": None
            if m.period_start is None
            else m.period_start.isoformat(timespec="microseconds"),
            "used": _credits_to_json(m.used),
        }
        for name, m in sorted(members.items())
    }


def members_from_json(data: Mapping[str, Any] | None) -> dict[str, Member]:
    return {
        name: Member(
            allowance=None if m["allowance"] is None else _credits_from_json(m["allowance"]),
            period_start=None
            if m["since"] is None
            else require_utc(datetime.fromisoformat(m["since"]), "since"),
            used=_credits_from_json(m["used"]),
        )
        for name, m in (data or {}).items()
    }


def grants_to_json(grants: Mapping[int, Grant]) -> list[dict[str, Any]]:
    """R23's open grants, in spending order; NULL when there are none (the fast paths
    charge only a wallet without grants)."""
    return [
        {
            "grant_id": grant.grant_id,
            "pool": grant.pool.value,
            "credits": grant.credits,
            "remaining": grant.remaining,
            "expires_at": grant.expires_at.isoformat(timespec="microseconds"),
            "expired": grant.expired,
        }
        for grant in sorted(grants.values(), key=lambda grant: grant.order)
    ]


def grants_from_json(data: Sequence[Mapping[str, Any]] | None) -> dict[int, Grant]:
    grants = (
        Grant(
            grant_id=item["grant_id"],
            pool=Channel(item["pool"]),
            credits=item["credits"],
            remaining=item["remaining"],
            expires_at=require_utc(datetime.fromisoformat(item["expires_at"]), "expires_at"),
            expired=bool(item["expired"]),
        )
        for item in data or ()
    )
    return {grant.grant_id: grant for grant in grants}


def hold_from_row(row: Row[Any]) -> Hold:
    return Hold(
        hold_id=row.hold_id,
        credits=Credits(email=row.email_credits, mobile=row.mobile_credits),
        created_at=row.created_at,
        expires_at=row.expires_at,
        member=row.member,
    )


def hold_values(account: str, hold: Hold) -> dict[str, Any]:
    return {
        "account": account,
        "hold_id": hold.hold_id,
        "email_credits": hold.credits.email,
        "mobile_credits": hold.credits.mobile,
        "created_at": hold.created_at,
        "expires_at": hold.expires_at,
        "member": hold.member,
    }


def wallet_from_rows(row: Row[Any], hold_rows: Sequence[Row[Any]]) -> Wallet:
    return Wallet.restore(
        account=row.account,
        plan=plan_from_json(row.plan),
        status=Status(row.status),
        anchor=row.anchor,
        period_index=row.period_index,
        ends_at=row.ends_at,
        pending_plan=None if row.pending_plan is None else plan_from_json(row.pending_plan),
        balances={Channel.EMAIL: row.email_balance, Channel.MOBILE: row.mobile_balance},
        holds={hold.hold_id: hold for hold in map(hold_from_row, hold_rows)},
        next_seq=row.next_seq,
        next_hold_no=row.next_hold_no,
        version=row.version,
        grants=grants_from_json(row.grants),
        members=members_from_json(row.members),
        low_thresholds={Channel(p): v for p, v in (row.low_thresholds or {}).items()},
        next_event_seq=row.next_event_seq,
        tallies=tallies_from_json(row.tallies, row.period_index, row.period_emails),
    )


# The builders of rows that a batch multiplies read an enum member's value as `_value_`
# (the documented sunder attribute): `.value` is a Python-level descriptor, several times
# slower, and ran 50,000 times in a batch of 10,000 charges.


def entry_values(entry: LedgerEntry) -> dict[str, Any]:
    cause = entry.cause
    return {
        "account": entry.account,
        "seq": entry.seq,
        "kind": entry.kind._value_,
        "pool": entry.pool._value_,
        "amount": entry.amount,
        "at": entry.at,
        "balance_after": entry.balance_after,
        "operation": cause.operation._value_,
        "datum": cause.datum,
        "plan": cause.plan,
        "period": cause.period,
        "idempotency_key": cause.idempotency_key,
        "destination": cause.destination,
        "note": cause.note,
        "grant_seq": cause.grant,
        "expires_at": cause.expires_at,
        "member": cause.member,
    }


def entry_from_row(row: Row[Any]) -> LedgerEntry:
    return LedgerEntry(
        account=row.account,
        seq=row.seq,
        kind=EntryKind(row.kind),
        pool=Channel(row.pool),
        amount=row.amount,
        at=row.at,
        balance_after=row.balance_after,
        cause=Cause(
            operation=Operation(row.operation),
            datum=row.datum,
            plan=row.plan,
            period=row.period,
            idempotency_key=row.idempotency_key,
            destination=row.destination,
            note=row.note,
            grant=row.grant_seq,
            expires_at=row.expires_at,
            member=row.member,
        ),
    )


def ownership_values(record: Ownership) -> dict[str, Any]:
    return {
        "account": record.account,
        "channel": record.contact.channel._value_,
        "value": record.contact.value,
        "pool": record.pool._value_,
        "credits": record.credits,
        "charged_at": record.charged_at,
        "entry_seq": record.entry_seq,
        "refunded_at": record.refunded_at,
        "grant_seq": record.grant,
        "member": record.member,
    }


def ownership_from_row(row: Row[Any], contact: Contact) -> Ownership:
    return Ownership(
        account=row.account,
        contact=contact,
        pool=Channel(row.pool),
        credits=row.credits,
        charged_at=row.charged_at,
        entry_seq=row.entry_seq,
        refunded_at=row.refunded_at,
        grant=row.grant_seq,
        member=row.member,
    )


def record_from_row(row: Row[Any]) -> IdempotencyRecord:
    return IdempotencyRecord(
        account=row.account,
        key=row.key,
        fingerprint=row.fingerprint,
        hold_id=row.hold_id,
        created_at=row.created_at,
        result=None if row.result is None else result_from_json(row.result),
        entry_seq=row.entry_seq,
    )
