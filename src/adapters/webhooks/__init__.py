"""Webhooks (R24): the endpoint registry (`endpoints`, `memory_store`, and
`adapters.sql.SqlEndpointStore`) and delivery (`delivery`, `runner`; these need the
`http` extra and are imported on their own, so the registry works without it)."""

from adapters.webhooks.endpoints import (
    DISABLE_AFTER,
    MAX_ENDPOINTS_PER_ACCOUNT,
    MAX_URL_LENGTH,
    Endpoint,
    EndpointStore,
    EventSource,
    InvalidWebhookUrl,
    TooManyEndpoints,
    UnknownEndpoint,
    check_url,
    new_endpoint_id,
    new_secret,
    register,
)
from adapters.webhooks.memory_store import MemoryEndpointStore

__all__ = [
    "DISABLE_AFTER",
    "MAX_ENDPOINTS_PER_ACCOUNT",
    "MAX_URL_LENGTH",
    "Endpoint",
    "EndpointStore",
    "EventSource",
    "InvalidWebhookUrl",
    "MemoryEndpointStore",
    "TooManyEndpoints",
    "UnknownEndpoint",
    "check_url",
    "new_endpoint_id",
    "new_secret",
    "register",
]
