"""The OpenAPI document: generated from the wire shapes, kept as a reviewed snapshot.

tests/snapshots/openapi.json is the document of an app with the default limits. A change
of the public contract (a field, a bound, an enum value, a status code) changes the
generated document, and this test fails until the snapshot is renewed with

    .venv/bin/python -m adapters.api > tests/snapshots/openapi.json

so that the change shows as a diff to review. The document takes its limits from the
core (`credits_domain.limits`), and the API refuses exactly at them.
"""

from __future__ import annotations

import difflib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.api.openapi import document_text, openapi_document
from adapters.api.shapes import RequestShapes, max_body_bytes
from credits_domain.limits import (
    DEFAULT_API_BATCH,
    MAX_ACCOUNT_ID_LENGTH,
    MAX_CONTACT_INPUT_LENGTH,
    MAX_DESTINATION_LENGTH,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_PERIOD_INDEX,
    MAX_PLAN_NAME_LENGTH,
    MAX_STATEMENT_CURSOR,
    MAX_STATEMENT_PAGE,
)
from http_api_support import PROBLEM, ApiWorld, api_world

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "tests" / "snapshots" / "openapi.json"
REGENERATE = ".venv/bin/python -m adapters.api > tests/snapshots/openapi.json"
ACME = "acme"
BASE = f"/v1/accounts/{ACME}"

Json = dict[str, Any]


def default_document() -> Json:
    return openapi_document(RequestShapes.bounded(DEFAULT_API_BATCH))


def test_the_document_is_its_reviewed_snapshot() -> None:
    generated = document_text(default_document())
    stored = SNAPSHOT.read_text(encoding="utf-8")
    if generated != stored:
        diff = "".join(
            difflib.unified_diff(
                stored.splitlines(keepends=True),
                generated.splitlines(keepends=True),
                fromfile="tests/snapshots/openapi.json (reviewed)",
                tofile="generated from src/adapters/api",
            )
        )
        pytest.fail(
            "the public contract changed; if that is meant, renew the snapshot with\n"
            f"    {REGENERATE}\nand review this diff with the change:\n{diff}",
            pytrace=False,
        )


def test_the_regeneration_command_writes_the_snapshot() -> None:
    """The command the failure message gives prints exactly the stored text."""
    done = subprocess.run(
        [sys.executable, "-m", "adapters.api"],
        capture_output=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""
    assert done.stdout == document_text(default_document()).encode("utf-8")


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_reference_names_a_component() -> None:
    document = default_document()
    components = document["components"]["schemas"]
    refs = set(_refs(document))
    assert refs, "bodies are referenced from the paths"
    assert {ref.removeprefix("#/components/schemas/") for ref in refs} <= set(components)
    # Nothing is declared that no body uses.
    assert set(components) == {ref.removeprefix("#/components/schemas/") for ref in refs}


def test_the_limits_are_the_cores() -> None:
    document = openapi_document(RequestShapes.bounded(7))
    schemas = document["components"]["schemas"]
    assert schemas["UnlockRequest"]["properties"]["contacts"]["maxItems"] == 7
    assert schemas["ExportRequest"]["properties"]["contacts"]["maxItems"] == 7
    assert schemas["EnrichRequest"]["properties"]["found"]["maxItems"] == 7
    assert schemas["ContactIn"]["properties"]["value"]["maxLength"] == MAX_CONTACT_INPUT_LENGTH
    destination = schemas["ExportRequest"]["properties"]["destination"]
    assert destination["maxLength"] == MAX_DESTINATION_LENGTH
    assert schemas["PlanRequest"]["properties"]["plan"]["maxLength"] == MAX_PLAN_NAME_LENGTH
    unlock = document["paths"]["/v1/accounts/{account}/unlock"]
    (account,) = unlock["parameters"]
    assert account["schema"]["maxLength"] == MAX_ACCOUNT_ID_LENGTH
    (key,) = unlock["post"]["parameters"]
    assert key["schema"]["pattern"] == f"^[!-~]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}$"
    statement = {
        p["name"]: p["schema"]["maximum"]
        for p in document["paths"]["/v1/accounts/{account}/statement"]["get"]["parameters"]
    }
    assert statement == {
        "cursor": MAX_STATEMENT_CURSOR,
        "limit": MAX_STATEMENT_PAGE,
        "period": MAX_PERIOD_INDEX,
    }
    assert f"at most {max_body_bytes(7)} bytes" in document["info"]["description"]


# -- the API refuses exactly at the documented limits -------------------------------------


@pytest.fixture
def acme() -> Iterator[httpx.Client]:
    world: ApiWorld
    with api_world(max_batch=50) as world, world.client_for(ACME) as c:
        assert c.post(f"{BASE}/subscription", json={"plan": "boost"}).status_code == 201
        yield c


def _problem(response: httpx.Response, slug: str) -> str:
    assert response.status_code == 422, response.text
    body: Json = response.json()
    assert body["type"] == PROBLEM + slug
    detail: str = body["detail"]
    return detail


def test_a_contact_value_is_refused_one_character_past_the_limit(acme: httpx.Client) -> None:
    # Spaces around an address count: they are what the client sent.
    padded = "a@corp.com".rjust(MAX_CONTACT_INPUT_LENGTH)
    ok = acme.post(f"{BASE}/unlock", json={"contacts": [{"channel": "email", "value": padded}]})
    assert ok.status_code == 200 and ok.json()["items"][0]["value"] == "a@corp.com"
    over = acme.post(
        f"{BASE}/unlock", json={"contacts": [{"channel": "email", "value": " " + padded}]}
    )
    detail = _problem(over, "invalid-request")
    assert detail == f"contacts[0].value must be at most {MAX_CONTACT_INPUT_LENGTH} characters long"


def test_a_destination_is_refused_one_character_past_the_limit(acme: httpx.Client) -> None:
    contacts = [{"channel": "email", "value": "a@corp.com"}]
    fits = "x" * MAX_DESTINATION_LENGTH
    ok = acme.post(f"{BASE}/export", json={"contacts": contacts, "destination": fits})
    assert ok.status_code == 200
    over = acme.post(f"{BASE}/export", json={"contacts": contacts, "destination": fits + "x"})
    assert "destination" in _problem(over, "invalid-request")


def test_a_plan_name_past_the_limit_is_an_invalid_request(acme: httpx.Client) -> None:
    # At the limit the name is read, and names no plan; past it, it is not even read.
    at_limit = acme.put(f"{BASE}/subscription/plan", json={"plan": "p" * MAX_PLAN_NAME_LENGTH})
    _problem(at_limit, "unknown-plan")
    over = acme.put(f"{BASE}/subscription/plan", json={"plan": "p" * (MAX_PLAN_NAME_LENGTH + 1)})
    assert _problem(over, "invalid-request") == (
        f"plan must be at most {MAX_PLAN_NAME_LENGTH} characters long"
    )
