"""HTTP adapters: the Verifier port over HTTP (driven side), the API (driving side).

- `adapters.http.verifier`: `HttpVerifier`, a resilient client of a verification service
  (our JSON protocol or a vendor dialect), with triple verification composed in the core.
- `adapters.http.phones`: `parse_phone`, national phone formats into E.164.
- `adapters.http.api`: `create_app(service, keys)`, the HTTP API over CreditService
  (Starlette); `adapters.http.keys`: API keys (`ApiKeyStore`, `InMemoryApiKeyStore`;
  the SQL store is `adapters.http.sql_keys.SqlApiKeyStore`).
"""

from adapters.http.api import create_app
from adapters.http.keys import ApiKeyStore, InMemoryApiKeyStore, IssuedKey, UnknownApiKey
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
    "ApiKeyStore",
    "CircuitBreaker",
    "CircuitState",
    "Dialect",
    "EmailEvidence",
    "HttpVerifier",
    "InMemoryApiKeyStore",
    "IssuedKey",
    "MalformedAnswer",
    "RetryPolicy",
    "Timeouts",
    "UnknownApiKey",
    "create_app",
    "parse_phone",
]
