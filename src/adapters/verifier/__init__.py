"""The Verifier port: the HTTP client of a verification service (production), a
scripted verifier (tests, demos) and one that refuses to be called (reading only).

The HTTP client needs the `http` extra (httpx); it is imported when first named, so the
scripted verifier works with the core alone.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from adapters.verifier.refusing import NoVerifier, VerifierNotConfigured
from adapters.verifier.sandbox import SandboxVerifier
from adapters.verifier.scripted import ScriptedVerifier

if TYPE_CHECKING:
    from adapters.verifier.http import (
        CircuitBreaker,
        CircuitState,
        Dialect,
        EmailEvidence,
        HttpVerifier,
        MalformedAnswer,
        RetryPolicy,
        Timeouts,
    )

_HTTP_NAMES = frozenset(
    {
        "CircuitBreaker",
        "CircuitState",
        "Dialect",
        "EmailEvidence",
        "HttpVerifier",
        "MalformedAnswer",
        "RetryPolicy",
        "Timeouts",
    }
)


def __getattr__(name: str) -> Any:
    # PEP 562: `from adapters.verifier import HttpVerifier` imports httpx only then.
    if name in _HTTP_NAMES:
        return getattr(importlib.import_module("adapters.verifier.http"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CircuitBreaker",
    "CircuitState",
    "Dialect",
    "EmailEvidence",
    "HttpVerifier",
    "MalformedAnswer",
    "NoVerifier",
    "RetryPolicy",
    "SandboxVerifier",
    "ScriptedVerifier",
    "Timeouts",
    "VerifierNotConfigured",
]
