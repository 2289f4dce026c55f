"""Verification verdicts and how independent checks compose into one (R10, R11)."""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Verdict(enum.Enum):
    """What verification says of one datum. Only VALID is billable by default (R10)."""

    __hash__ = object.__hash__  # singletons compared by identity

    VALID = "valid"
    INVALID = "invalid"
    CATCH_ALL = "catch_all"
    UNKNOWN = "unknown"
    DISPOSABLE = "disposable"


class CheckResult(enum.Enum):
    """The answer of one independent email check (one of the three of R11)."""

    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


def email_verdict(
    checks: Iterable[CheckResult], *, catch_all: bool = False, disposable: bool = False
) -> Verdict:
    """Triple verification (R11): VALID only when all three checks pass.

    A catch-all domain cannot confirm a mailbox, so it is reported as CATCH_ALL whatever
    the checks say, unless a check failed outright (then the address is INVALID).
    A missing or unknown check is UNKNOWN: never VALID by default.
    """
    results = list(checks)
    if CheckResult.FAIL in results:
        return Verdict.INVALID
    if disposable:
        return Verdict.DISPOSABLE
    if catch_all:
        return Verdict.CATCH_ALL
    if len(results) < 3 or CheckResult.UNKNOWN in results:
        return Verdict.UNKNOWN
    return Verdict.VALID


class LineType(enum.Enum):
    """The kind of line a real-time phone lookup reports."""

    MOBILE = "mobile"
    LANDLINE = "landline"
    VOIP = "voip"
    INVALID = "invalid"
    UNKNOWN = "unknown"


def mobile_verdict(line_type: LineType, *, reachable: bool | None) -> Verdict:
    """Real-time mobile verification (R11): only a reachable mobile line is VALID."""
    if line_type in (LineType.INVALID, LineType.LANDLINE):
        return Verdict.INVALID
    if line_type is LineType.MOBILE and reachable is True:
        return Verdict.VALID
    if line_type is LineType.MOBILE and reachable is False:
        return Verdict.INVALID
    return Verdict.UNKNOWN
