"""The statement shows R22..R24 (issue 12: "the API, the CLI and the statement show all
of it"): a charge's member, the expiring grant it drew on, the grant's `expire` entry, in
`credits statement` (table and data formats) and on the /ui account page; the grant's
expiry is reachable as an event through `credits events`. The HTTP API's statement and
`GET /events` are tested in tests/test_http_api.py and tests/test_http_top_ups.py."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

import pytest

from cli_support import Cli, new_cli


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    made = new_cli(tmp_path, monkeypatch)
    made.ok("subscribe", "acme", "boost")
    made.ok("members", "add", "acme", "ana")
    expires = (made.clock.now() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    made.ok("top-up", "acme", "--email", "5", "--reason", "promo", "--expires", expires)
    made.ok("unlock", "acme", "ann@corp.com", "bob@corp.com", "--member", "ana", "--demo-verifier")
    made.clock.advance(timedelta(days=4))
    return made


def test_the_statement_names_the_member_the_grant_and_the_expiry(cli: Cli) -> None:
    entries = cli.entries("acme")
    (top_up,) = [e for e in entries if e["kind"] == "top_up"]
    charges = [e for e in entries if e["kind"] == "charge"]
    (expired,) = [e for e in entries if e["kind"] == "expire"]
    assert top_up["expires_at"] is not None and top_up["grant"] == top_up["seq"]
    assert [(c["member"], c["grant"]) for c in charges] == [("ana", top_up["seq"])] * 2
    assert (expired["amount"], expired["grant"], expired["member"]) == (-3, top_up["seq"], None)
    table = cli.ok("statement", "acme").out
    charge_lines = [line for line in table.splitlines() if " charge " in line]
    assert len(charge_lines) == 2
    assert all(f"member ana, grant of entry {top_up['seq']}" in line for line in charge_lines)
    (expire_line,) = [line for line in table.splitlines() if " expire " in line]
    assert f"grant of entry {top_up['seq']}" in expire_line
    rows = list(csv.DictReader(io.StringIO(cli.ok("statement", "acme", "--format", "csv").out)))
    assert [(r["member"], r["grant"]) for r in rows if r["kind"] == "charge"] == [
        ("ana", str(top_up["seq"]))
    ] * 2


def test_the_grants_expiry_is_an_event(cli: Cli) -> None:
    events = cli.ok("events", "acme", "--format", "json").json()["events"]
    assert "grant.expired" in [e["type"] for e in events]
    assert "grant.expired" in cli.ok("events", "acme").out
