"""credits-domain: the reference model of a prepaid credit system for verified lead data.

A customer spends one credit per verified contact datum (email or mobile), never pays for
invalid or duplicate data, and keeps unused credits from month to month. The rules are
numbered R1..R21 in docs/rules.md; the code cites them.

The facade::

    from credits_domain import Contact, CreditService
    from adapters.memory import InMemoryRepository, ManualClock, ScriptedVerifier

    service = CreditService(repository=InMemoryRepository(),
                            verifier=ScriptedVerifier({}), clock=ManualClock(start))
    service.subscribe("acme", "boost")
    result = service.unlock("acme", [Contact.email("Ann@Corp.com")])
    service.balance("acme").email   # 11_999
"""

from credits_domain.charging import ChargeResult, ItemResult, Outcome
from credits_domain.contact import Channel, Contact
from credits_domain.dedup import Ownership
from credits_domain.errors import (
    AlreadyRefunded,
    AlreadySubscribed,
    BatchTooLarge,
    ConcurrencyConflict,
    CreditsError,
    GrantExpiryNotAhead,
    HoldExpired,
    IdempotencyKeyReused,
    InvalidPlan,
    InvalidRequest,
    MalformedContact,
    NoActiveSubscription,
    NotAnEmail,
    NotCharged,
    PeriodOutOfRange,
    RefundRefused,
    RefundWindowClosed,
    RequestInFlight,
    StorageError,
    StorageUnavailable,
    SubscriptionPaused,
    TooManyGrants,
    TooManyMembers,
    UnknownAccount,
    UnknownApiKey,
    UnknownMember,
    UnknownPlan,
)
from credits_domain.events import Event, EventType
from credits_domain.guarantee import Guarantee
from credits_domain.keys import ApiKeyRecord, IssuedKey
from credits_domain.ledger import Cause, EntryKind, LedgerEntry, Operation
from credits_domain.periods import Period
from credits_domain.plans import PLANS, Credits, Plan, Price
from credits_domain.policy import ChargePolicy
from credits_domain.ports import (
    ApiKeyInfo,
    ApiKeyStore,
    BoughtMeanwhile,
    ChargePath,
    Clock,
    DedupRegistry,
    FastReservation,
    Heartbeat,
    IdempotencyRecord,
    IdempotencyStore,
    Repository,
    Settled,
    UnitOfWork,
    Verifier,
)
from credits_domain.service import Balance, CreditService, Subscription, TopUp
from credits_domain.verdict import CheckResult, LineType, Verdict, email_verdict, mobile_verdict
from credits_domain.wallet import Grant, Hold, Member, PlanChange, Status, Wallet

__all__ = [
    "PLANS",
    "AlreadyRefunded",
    "AlreadySubscribed",
    "ApiKeyInfo",
    "ApiKeyRecord",
    "ApiKeyStore",
    "Balance",
    "BatchTooLarge",
    "BoughtMeanwhile",
    "Cause",
    "Channel",
    "ChargePath",
    "ChargePolicy",
    "ChargeResult",
    "CheckResult",
    "Clock",
    "ConcurrencyConflict",
    "Contact",
    "CreditService",
    "Credits",
    "CreditsError",
    "DedupRegistry",
    "EntryKind",
    "Event",
    "EventType",
    "FastReservation",
    "Grant",
    "GrantExpiryNotAhead",
    "Guarantee",
    "Heartbeat",
    "Hold",
    "HoldExpired",
    "IdempotencyKeyReused",
    "IdempotencyRecord",
    "IdempotencyStore",
    "InvalidPlan",
    "InvalidRequest",
    "IssuedKey",
    "ItemResult",
    "LedgerEntry",
    "LineType",
    "MalformedContact",
    "Member",
    "NoActiveSubscription",
    "NotAnEmail",
    "NotCharged",
    "Operation",
    "Outcome",
    "Ownership",
    "Period",
    "PeriodOutOfRange",
    "Plan",
    "PlanChange",
    "Price",
    "RefundRefused",
    "RefundWindowClosed",
    "Repository",
    "RequestInFlight",
    "Settled",
    "Status",
    "StorageError",
    "StorageUnavailable",
    "Subscription",
    "SubscriptionPaused",
    "TooManyGrants",
    "TooManyMembers",
    "TopUp",
    "UnitOfWork",
    "UnknownAccount",
    "UnknownApiKey",
    "UnknownMember",
    "UnknownPlan",
    "Verdict",
    "Verifier",
    "Wallet",
    "email_verdict",
    "mobile_verdict",
]
