"""The limits on what a client controls, defined once: the core enforces them and the
adapters (the API's schemas, the SQL columns, the CLI) read them from here.

Each check raises `InvalidRequest` naming the field, the rule and the value refused.
"""

from __future__ import annotations

from typing import Final

from credits_domain.errors import InvalidRequest

MAX_ACCOUNT_ID_LENGTH: Final = 200
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 255
MAX_DESTINATION_LENGTH: Final = 100
STATEMENT_PAGE_SIZE: Final = 1_000
"""Ledger entries read per round trip when a statement is streamed."""
DEFAULT_API_BATCH: Final = 1_000
"""Contacts per HTTP request unless the operator sets another bound (the service's own
bound, `ChargePolicy.max_batch`, still applies)."""
MAX_CONTACT_INPUT_LENGTH: Final = 320
"""Characters of one contact datum as a client writes it, before its canonical form: an
email is at most 64 + 1 + 253 characters, with room for stray spaces around it."""
MAX_PLAN_NAME_LENGTH: Final = 100
"""Characters of a plan name a client asks for (a longer one names no plan)."""
MAX_STATEMENT_PAGE: Final = 1_000
"""Ledger entries a client may ask for in one page of a statement."""
DEFAULT_STATEMENT_PAGE: Final = 100
"""Ledger entries in one page of a statement when the client does not say."""
MAX_PERIOD_INDEX: Final = 1_200
"""The highest billing period index a client may name: 1,200 months is a century, the
horizon of renewals (`wallet.MAX_RENEWALS_PER_CATCH_UP`); beyond it dates leave the
calendar's range."""
MAX_STATEMENT_CURSOR: Final = 10**15
"""The highest ledger sequence number a client may give as a statement cursor."""
MAX_REASON_LENGTH: Final = 200
"""Characters of a top-up's reason (R8): it is kept on every ledger entry it makes."""
MAX_ACCOUNTS_PAGE: Final = 1_000
MAX_EVENTS_PAGE: Final = 1_000
"""R24: the most events one call of `service.events` answers."""
MAX_LOW_THRESHOLD: Final = 10**12
"""R24: the highest low-balance threshold one may set (credits)."""
"""Accounts a client may ask for in one page of the list of accounts."""
MAX_API_KEYS_PAGE: Final = 1_000
"""API keys a client may ask for in one page of the list of keys."""


def _printable(text: str) -> bool:
    # Control characters (NUL above all, which PostgreSQL text cannot hold) are refused.
    return text.isprintable()


def check_account(account: object) -> str:
    """An account id: a non-empty, trimmed, printable string of bounded length."""
    if (
        not isinstance(account, str)
        or not account
        or account != account.strip()
        or len(account) > MAX_ACCOUNT_ID_LENGTH
        or not _printable(account)
    ):
        raise InvalidRequest(
            f"account must be a non-empty trimmed printable string of at most "
            f"{MAX_ACCOUNT_ID_LENGTH} characters, got {account!r}"
        )
    return account


def check_addressable_account(account: object) -> str:
    """An account id that can also be one segment of a URL path (API keys, the API)."""
    checked = check_account(account)
    if "/" in checked:
        raise InvalidRequest(
            f"account must be a non-empty trimmed printable string of at most "
            f"{MAX_ACCOUNT_ID_LENGTH} characters without '/', got {account!r}"
        )
    return checked


def check_idempotency_key(key: object) -> str | None:
    """An idempotency key (R17), or None for a request without one."""
    if key is None:
        return None
    if (
        not isinstance(key, str)
        or not key
        or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH
        or not _printable(key)
    ):
        raise InvalidRequest(
            f"idempotency_key must be a non-empty printable string of at most "
            f"{MAX_IDEMPOTENCY_KEY_LENGTH} characters, got {key!r}"
        )
    return key


def check_destination(destination: object) -> str:
    """Where an export goes (R13): a file format or CRM name."""
    if (
        not isinstance(destination, str)
        or not destination.strip()
        or len(destination) > MAX_DESTINATION_LENGTH
        or not _printable(destination)
    ):
        raise InvalidRequest(
            f"destination must name a file format or CRM ('csv', 'hubspot') of at most "
            f"{MAX_DESTINATION_LENGTH} printable characters, got {destination!r}"
        )
    return destination


def check_reason(reason: object) -> str:
    """Why credits are granted outside the plan (R8): 'promotion', 'goodwill', ..."""
    if (
        not isinstance(reason, str)
        or not reason.strip()
        or len(reason) > MAX_REASON_LENGTH
        or not _printable(reason)
    ):
        raise InvalidRequest(
            f"a top-up needs a reason (promotion, goodwill, ...) of at most "
            f"{MAX_REASON_LENGTH} printable characters, got {reason!r}"
        )
    return reason
