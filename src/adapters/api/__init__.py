"""The HTTP API (driving side): `create_app(service, keys)`, a Starlette app over the
CreditService facade, authenticated by API keys (`credits_domain.ports.ApiKeyStore`).

- `app`: routes, authentication, idempotency header, answers;
- `schemas`: request bodies parsed into domain values, results rendered as JSON;
- `problems`: every refusal as an RFC 9457 problem (`application/problem+json`);
- `openapi`: the OpenAPI document.
"""

from adapters.api.app import create_app

__all__ = ["create_app"]
