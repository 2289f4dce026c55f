"""The HTTP API (driving side): `create_app(service, keys)`, a Starlette app over the
CreditService facade, authenticated by API keys (`credits_domain.ports.ApiKeyStore`).

- `app`: routes, authentication, idempotency header, answers;
- `shapes`: every request and answer body, declared once (msgspec Structs);
- `schemas`: bodies decoded into the shapes and on into domain values, results rendered
  through the shapes;
- `problems`: every refusal as an RFC 9457 problem (`application/problem+json`);
- `openapi`: the OpenAPI document, generated from the shapes
  (`python -m adapters.api` prints it).
"""

from adapters.api.app import create_app

__all__ = ["create_app"]
