"""The wire shapes of the HTTP API, declared once as msgspec Structs.

Every JSON body the API reads or writes is one of these classes, and nothing else says
what a body looks like: requests are decoded into them (strictly: unknown fields refused,
types and bounds checked), answers are rendered from them, and the OpenAPI document takes
its component schemas from them (`openapi.py`, through `msgspec.json.schema_components`).
A field's `Meta` is both the check and its documentation; the docstrings are the
components' descriptions.

They are kept apart from the domain classes so that the wire format changes only on
purpose (tests/snapshots/openapi.json shows any change as a diff). The enums are the
core's own (`Channel`, `Outcome`, ...): a value the core adds shows in that diff too.

The batch limit is the operator's choice (`create_app(max_batch=...)`), so the request
shapes that carry contacts are made per app by `RequestShapes.bounded`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal, TypeVar, cast

import attrs
import msgspec
from msgspec import UNSET, Meta, UnsetType

from credits_domain import (
    Channel,
    EntryKind,
    EventType,
    Operation,
    Outcome,
    PlanChange,
    Status,
    Verdict,
)
from credits_domain.limits import (
    MAX_ACCOUNT_ID_LENGTH,
    MAX_CONTACT_INPUT_LENGTH,
    MAX_DESTINATION_LENGTH,
    MAX_LOW_THRESHOLD,
    MAX_PLAN_NAME_LENGTH,
    MAX_REASON_LENGTH,
)
from credits_domain.plans import MAX_CREDITS

REGION_PATTERN: Final = "^[A-Z]{2}$"
# Room for one contact in JSON ({"channel":"mobile","value":"...","region":"GB"} with a
# value of MAX_CONTACT_INPUT_LENGTH and generous white space), and for the rest of a body.
BODY_BYTES_PER_CONTACT: Final = 512
BODY_BYTES_BASE: Final = 16 * 1024


def max_body_bytes(max_batch: int) -> int:
    """The largest request body an app with this batch limit reads (413 above)."""
    return BODY_BYTES_BASE + BODY_BYTES_PER_CONTACT * max_batch


Count = Annotated[int, Meta(ge=0)]
Instant = Annotated[datetime, Meta(tz=True)]  # RFC 3339 with a zone: "date-time"


class Shape(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The base of every wire shape: immutable, and strict on decoding (a typo in a field
    name must not pass silently); in the document, `additionalProperties: false`."""


# -- requests -----------------------------------------------------------------------------


class ContactIn(Shape, frozen=True):
    """One contact datum as a client sends it."""

    channel: Channel
    value: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=MAX_CONTACT_INPUT_LENGTH,
            description="An email address, or a mobile number in E.164 ('+' and digits; "
            "spaces, dashes, dots and parentheses are ignored), or in national form with a "
            "region. Put in canonical form before anything else (R12): an email trimmed "
            "and lower-cased, a number in E.164. A value that cannot be is refused with "
            "422 malformed-contact.",
        ),
    ]
    region: (
        Annotated[
            str,
            Meta(
                pattern=REGION_PATTERN,
                description="Mobile only: the ISO 3166 alpha-2 region of a number in "
                "national form, like 'GB'.",
            ),
        ]
        | UnsetType
    ) = UNSET


class PlanRequest(Shape, frozen=True):
    """The plan to subscribe to, or to change to."""

    plan: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=MAX_PLAN_NAME_LENGTH,
            description="A plan of the catalogue (ignite, boost, power); another name is "
            "refused with 422 unknown-plan.",
        ),
    ]


TopUpCredits = Annotated[
    int,
    Meta(
        ge=0,
        le=MAX_CREDITS,
        description="Credits granted to this pool (0 or absent: none); a top-up grants "
        "some to at least one pool.",
    ),
]


class TopUpRequest(Shape, frozen=True, kw_only=True):
    """Credits granted outside the plan: a top-up, promotion or goodwill (R8). They are
    spent and rolled over like the allowance."""

    email: TopUpCredits = 0
    mobile: TopUpCredits = 0
    reason: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=MAX_REASON_LENGTH,
            description="Why the credits are granted ('promotion', 'goodwill', an order "
            "number): printable, kept on every ledger entry of the top-up.",
        ),
    ]
    expires_at: Annotated[
        Instant | None,
        Meta(
            description="R23: an expiring grant: spent before plan credits, the "
            "soonest-expiring first; what is left at this instant (after now) leaves the "
            "pool as an expire entry. Absent: the credits never expire."
        ),
    ] = None


Destination = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_DESTINATION_LENGTH,
        description="A file format or CRM: 'csv', 'hubspot', ...",
    ),
]


# The three shapes that carry contacts are unbounded here: an app reads them through
# RequestShapes, which adds its batch limit.


MemberId = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_ACCOUNT_ID_LENGTH,
        description="A team member of the account (R22), as added to it; same rules as an "
        "account id.",
    ),
]
OptionalMember = Annotated[
    MemberId | None,
    Meta(
        description="R22: the team member asking (absent: the account itself). Items past "
        "their allowance are member_allowance_exceeded."
    ),
]


class UnlockRequest(Shape, frozen=True):
    """Contacts to reveal (R9)."""

    contacts: list[ContactIn]
    member: OptionalMember = None


class ExportRequest(Shape, frozen=True):
    """Contacts to export to a file or CRM (R13)."""

    contacts: list[ContactIn]
    destination: Destination
    member: OptionalMember = None


class EnrichRequest(Shape, frozen=True):
    """Data an enrichment found on an existing lead (R14)."""

    found: list[ContactIn]
    member: OptionalMember = None


class MemberRequest(Shape, frozen=True):
    """A team member to add to the account (R22)."""

    member: MemberId


class PoolCredits(Shape, frozen=True):
    """Credits per pool."""

    email: Annotated[int, Meta(ge=0, le=MAX_CREDITS)] = 0
    mobile: Annotated[int, Meta(ge=0, le=MAX_CREDITS)] = 0


class AllowanceRequest(Shape, frozen=True):
    """A member's allowance per pool and billing period (R22); null removes it (the member
    then draws on the team pool freely)."""

    member: MemberId
    allowance: PoolCredits | None


class MemberAdded(Shape, frozen=True):
    member: str
    added: Annotated[bool, Meta(description="False when they were a member already.")]


class MemberAllowance(Shape, frozen=True):
    member: str
    allowance: PoolCredits | None


class MemberUsage(Shape, frozen=True):
    """What a member was charged in a billing period, less bounce refunds (R22)."""

    member: str
    period: Period
    used: PoolCredits


_S = TypeVar("_S", bound=Shape)


def _contacts(max_batch: int) -> Any:
    return Annotated[
        list[ContactIn],
        Meta(
            max_length=max_batch,
            description=f"At most {max_batch} contacts (422 batch-too-large above); settled "
            "in this order (R15). The same datum twice is charged once (R12).",
        ),
    ]


def _bounded(shape: type[_S], field: str, max_batch: int) -> type[_S]:
    # A subclass of the same name that re-declares only the contacts field with its
    # bound: decoding checks the bound, and the document shows it as maxItems.
    namespace = {
        "__annotations__": {field: _contacts(max_batch)},
        "__module__": shape.__module__,
        "__qualname__": shape.__qualname__,
        "__doc__": shape.__doc__,
    }
    return cast("type[_S]", type(shape.__name__, (shape,), namespace))


@attrs.frozen(kw_only=True)
class RequestShapes:
    """The request shapes of one app, their contact lists bounded by its batch limit."""

    max_batch: int
    max_body_bytes: int
    unlock: type[UnlockRequest]
    export: type[ExportRequest]
    enrich: type[EnrichRequest]

    @classmethod
    def bounded(cls, max_batch: int) -> RequestShapes:
        return cls(
            max_batch=max_batch,
            max_body_bytes=max_body_bytes(max_batch),
            unlock=_bounded(UnlockRequest, "contacts", max_batch),
            export=_bounded(ExportRequest, "contacts", max_batch),
            enrich=_bounded(EnrichRequest, "found", max_batch),
        )


# -- answers ------------------------------------------------------------------------------


class ChargeItem(Shape, frozen=True):
    """What happened to one contact of the request."""

    channel: Channel
    value: Annotated[str, Meta(description="The datum in canonical form.")]
    outcome: Outcome
    verdict: Verdict | None
    revealed: Annotated[
        bool, Meta(description="May the datum be handed out as verified (charged or owned).")
    ]
    pool: Channel | None
    credits: Count


class Charged(Shape, frozen=True):
    """Credits this request took from each pool."""

    email: Count
    mobile: Count


ChargingOperation = Literal["unlock", "export", "enrich"]


class ChargeResult(Shape, frozen=True):
    """One item per contact, in request order. A replay (R17) is this body byte for byte;
    the header Idempotent-Replayed says it is one."""

    operation: ChargingOperation
    idempotency_key: str | None
    items: list[ChargeItem]
    charged: Charged


class Period(Shape, frozen=True):
    """A billing period [start, end) of the current subscription (R4)."""

    index: Count
    start: Instant
    end: Instant


class Subscription(Shape, frozen=True):
    """An account's subscription."""

    account: str
    plan: str
    status: Status
    period: Period
    ends_at: Instant | None
    pending_plan: str | None


class PlanChangeResult(Shape, frozen=True):
    """What a plan change did (R7), and the subscription after it."""

    change: PlanChange
    subscription: Subscription


class Balance(Shape, frozen=True):
    """Both pools now; *_available subtract open holds (R16, R20)."""

    email: Count
    mobile: Count
    email_available: Count
    mobile_available: Count


class PastBalance(Shape, frozen=True):
    """Both pools at an instant, read from the ledger (R21)."""

    at: Instant
    email: Count
    mobile: Count


class Event(Shape, frozen=True):
    """One event of the account (R24), written with the change it reports."""

    id: Annotated[str, Meta(description="The same in every read and on every webhook retry.")]
    type: EventType
    account: str
    seq: Annotated[int, Meta(ge=1, description="1, 2, 3, ... per account, without gaps.")]
    at: Instant
    data: dict[str, Any]


class Events(Shape, frozen=True):
    """A page of the account's events, oldest first (R24)."""

    events: list[Event]
    next_after_seq: Annotated[
        int,
        Meta(ge=0, description="The after_seq of the next page (the last seq read)."),
    ]


class LowBalanceThresholdRequest(Shape, frozen=True):
    """R24: credits.low fires when the pool's balance falls to `credits` or below; null
    goes back to the default (10% of the plan's monthly allowance, rounded up)."""

    pool: Channel
    credits: Annotated[int, Meta(ge=0, le=MAX_LOW_THRESHOLD)] | None


class LowBalanceThresholds(Shape, frozen=True):
    """Each pool's low-balance threshold now (R24)."""

    email: Count
    mobile: Count


class Guarantee(Shape, frozen=True):
    """The deliverability guarantee for one billing period (R25), from the ledger."""

    account: str
    period: Period
    emails_charged: Annotated[
        int, Meta(ge=0, description="Emails charged in the period; refunds do not reduce it.")
    ]
    bounces: Annotated[
        int, Meta(ge=0, description="Bounces reported (R18) for emails charged in the period.")
    ]
    bounce_rate: Annotated[
        float, Meta(ge=0, le=1, description="bounces / emails_charged; 0 when none charged.")
    ]
    breached: Annotated[
        bool, Meta(description="More than 1% bounced, with at least 100 emails charged.")
    ]


class Cause(Shape, frozen=True):
    """Why a ledger entry was made (R19)."""

    operation: Operation
    datum: str | None
    plan: str | None
    period: Count | None
    idempotency_key: str | None
    destination: str | None
    note: str | None
    grant: Annotated[
        Count | None,
        Meta(
            description="R23: the expiring grant involved, by the seq of its top_up entry "
            "(on that entry, on its expire entry, on a charge it paid, on a refund back to it)."
        ),
    ] = None
    expires_at: Annotated[
        Instant | None, Meta(description="R23: when an expiring grant's top_up expires.")
    ] = None
    member: Annotated[
        str | None,
        Meta(description="R22: the team member who charged (or whose charge was refunded)."),
    ] = None


class LedgerEntry(Shape, frozen=True):
    """One change of a pool's balance (R19), with the balance after it (R21)."""

    seq: Count
    kind: EntryKind
    pool: Channel
    amount: Annotated[int, Meta(description="Signed: grants > 0, charges < 0.")]
    at: Instant
    balance_after: Count
    cause: Cause


class TopUpResult(Shape, frozen=True):
    """The top-up's ledger entries, one per pool topped up, email first. A replay (R17)
    is this body byte for byte; the header Idempotent-Replayed says it is one."""

    idempotency_key: str | None
    entries: list[LedgerEntry]


class Statement(Shape, frozen=True):
    """One page of the ledger; next_cursor is null on the last page."""

    entries: list[LedgerEntry]
    next_cursor: Count | None
    period: Period | None
