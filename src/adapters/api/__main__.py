"""`python -m adapters.api` prints the OpenAPI document of an app with the default limits:
the text kept in tests/snapshots/openapi.json (`> tests/snapshots/openapi.json` renews it;
review the diff: it is the change of the public contract)."""

import sys

from adapters.api.openapi import document_text, openapi_document
from adapters.api.shapes import RequestShapes
from credits_domain.limits import DEFAULT_API_BATCH

sys.stdout.buffer.write(
    document_text(openapi_document(RequestShapes.bounded(DEFAULT_API_BATCH))).encode()
)
