"""Domain errors: every expected refusal has its own class under `CreditsError`.

A rejected request is an expected domain error (one of these). A broken invariant is a
bug and raises `AssertionError` through `invariant()`; it is never caught.
"""

from __future__ import annotations


class CreditsError(Exception):
    """Base class of every error this package raises on purpose."""


class MalformedContact(CreditsError, ValueError):
    """A contact datum could not be put in canonical form (R12)."""

    def __init__(self, channel: str, raw: object, why: str) -> None:
        super().__init__(f"malformed {channel} {raw!r}: {why}")
        self.channel = channel
        self.raw = raw


class InvalidRequest(CreditsError, ValueError):
    """An argument of a call is of the wrong type or out of range; nothing was changed."""


class PeriodOutOfRange(InvalidRequest):
    """A billing period index the account's current subscription has not reached (or a
    negative one): only periods 0 to the current one exist (R4)."""

    def __init__(self, account: str, index: int, current: int) -> None:
        periods = (
            "only period 0 (its current one)"
            if current == 0
            else f"periods 0 to {current} ({current} is the current one)"
        )
        later = " yet" if index > current else ""
        super().__init__(f"account {account!r} has {periods}; there is no period {index}{later}")
        self.account = account
        self.index = index
        self.current = current


class BatchTooLarge(InvalidRequest):
    """A charging request carries more contacts than the policy's batch limit."""


class InvalidPlan(CreditsError, ValueError):
    """A Plan definition breaks its own rules (negative allowance, empty name, ...)."""


class UnknownPlan(CreditsError, LookupError):
    """A plan name is not in the catalogue the service was given."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown plan {name!r}; known plans: {', '.join(sorted(known))}")
        self.name = name


class UnknownAccount(CreditsError, LookupError):
    """The account has never subscribed."""

    def __init__(self, account: str) -> None:
        super().__init__(f"account {account!r} has never subscribed; subscribe it to a plan first")
        self.account = account


class NoActiveSubscription(CreditsError):
    """The account's subscription has lapsed (R6); subscribe again to charge or change plan."""

    def __init__(self, account: str) -> None:
        super().__init__(
            f"account {account!r} has no active subscription (it lapsed); subscribe it to a "
            "plan again to start a new one"
        )
        self.account = account


class AlreadySubscribed(CreditsError):
    """Subscribing an account whose subscription is still running; change its plan instead."""

    def __init__(self, account: str) -> None:
        super().__init__(
            f"account {account!r} already has a subscription; to switch plans, change its "
            "plan instead"
        )
        self.account = account


class SubscriptionPaused(CreditsError):
    """A charge or plan change on a paused subscription (R6); resume it first."""

    def __init__(self, account: str) -> None:
        super().__init__(
            f"account {account!r} is paused; resume its subscription before charging or "
            "changing its plan"
        )
        self.account = account


class IdempotencyKeyReused(CreditsError):
    """The idempotency key was first used with another payload (R17)."""

    def __init__(self, account: str, key: str) -> None:
        super().__init__(
            f"idempotency key {key!r} of account {account!r} was already used for another "
            "request; use a new key for a new request"
        )
        self.account = account
        self.key = key


class RequestInFlight(CreditsError):
    """The first request with this idempotency key is still being verified; retry later.

    `retry_after_s` is how many seconds remain of its lease (at least 1): if the first
    attempt died, a retry after that takes the request over (R16, R17)."""

    def __init__(self, account: str, key: str, *, retry_after_s: int = 1) -> None:
        super().__init__(
            f"a request of account {account!r} with idempotency key {key!r} is still in flight; "
            f"retry in {retry_after_s} s: by then it has finished, or its lease has lapsed "
            "and the retry takes it over"
        )
        self.account = account
        self.key = key
        self.retry_after_s = retry_after_s


class HoldExpired(CreditsError):
    """The request's hold expired or was released before it settled (R16); nothing was charged.

    Retry the request (with the same idempotency key, if it had one).
    """


class ConcurrencyConflict(CreditsError):
    """A storage transaction lost a race with another writer.

    Adapters turn their driver's conflict errors into this one; the service retries the
    whole transaction a bounded number of times before letting it through.
    """


class StorageError(CreditsError):
    """The storage refused or failed an operation for a reason of its own (not a lost
    race, not a domain rule): the message names the operation and the storage's words."""


class StorageUnavailable(StorageError):
    """The storage cannot be reached or used right now (a database restarting, a network
    cut): temporary. Nothing was changed by the call that raised it, unless the error
    came at commit, where the outcome is unknown: retry with the same idempotency key."""


class UnknownApiKey(CreditsError, LookupError):
    """No API key has this key_id."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"no API key has the id {key_id!r}; a key's id is the 16 hex digits after "
            "'ck_', as `credits keys create` printed it"
        )
        self.key_id = key_id


class RefundRefused(CreditsError):
    """A bounce report that cannot be refunded (R18); the subclass says why."""


class NotCharged(RefundRefused):
    """The bounced datum was never charged to this account."""


class AlreadyRefunded(RefundRefused):
    """The bounced datum was refunded before; a datum is refunded at most once."""


class RefundWindowClosed(RefundRefused):
    """The bounce was reported more than the refund window (30 days) after the charge."""


class NotAnEmail(RefundRefused):
    """Only emails bounce; a mobile number cannot be reported as a bounce."""


def invariant(condition: bool, message: str) -> None:
    """Crash on a broken invariant (TIGER_STYLE): a bug, never an expected refusal.

    Unlike `assert`, this stays on under `python -O`.
    """
    if not condition:
        raise AssertionError(f"invariant broken: {message}")


class GrantExpiryNotAhead(InvalidRequest):
    """An expiring grant's `expires_at` is not after now (R23): it would expire unspent."""

    def __init__(self, expires_at: object, now: object) -> None:
        super().__init__(
            f"an expiring grant must expire after now ({now}), got expires_at {expires_at}; "
            "give a later instant, or none for credits that never expire"
        )


class TooManyGrants(CreditsError):
    """An account holds as many open expiring grants as it may (R23); nothing was granted."""

    def __init__(self, account: str, limit: int) -> None:
        super().__init__(
            f"account {account!r} already holds {limit} expiring grants that have not "
            "expired; top up without expires_at, or wait for one to expire"
        )
        self.account = account


class UnknownMember(CreditsError, LookupError):
    """A team member the account never added (R22); add them first."""

    def __init__(self, account: str, member: str) -> None:
        super().__init__(
            f"account {account!r} has no member {member!r}; add them with add_member first"
        )
        self.account = account
        self.member = member


class TooManyMembers(CreditsError):
    """An account has as many team members as it may (R22); nothing was added."""

    def __init__(self, account: str, limit: int) -> None:
        super().__init__(f"account {account!r} has {limit} members already, the most it may")
        self.account = account
