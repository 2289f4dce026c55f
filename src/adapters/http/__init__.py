"""HTTP adapters: the Verifier port over HTTP (driven side).

- `adapters.http.verifier`: `HttpVerifier`, a resilient client of a verification service
  (our JSON protocol or a vendor dialect), with triple verification composed in the core.
- `adapters.http.phones`: `parse_phone`, national phone formats into E.164.
"""

from adapters.http.phones import parse_phone
from adapters.http.verifier import (
    CircuitBreaker,
    CircuitState,
    Dialect,
    EmailEvidence,
    HttpVerifier,
    MalformedAnswer,
    RetryPolicy,
    Timeouts,
)

__all__ = [
    "CircuitBreaker",
    "CircuitState",
    "Dialect",
    "EmailEvidence",
    "HttpVerifier",
    "MalformedAnswer",
    "RetryPolicy",
    "Timeouts",
    "parse_phone",
]
