"""The composition root: one place wires ports to adapters, nothing at import time."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters import bootstrap
from adapters.bootstrap import DEFAULT_DATABASE_URL, Settings
from adapters.clock import ManualClock, SystemClock
from adapters.heartbeat import ThreadHeartbeat
from adapters.sql import DEFAULT_URL, SqlRepository
from adapters.verifier import HttpVerifier, NoVerifier, ScriptedVerifier, VerifierNotConfigured
from credits_domain import Contact, InvalidRequest, Verdict

SRC = Path(__file__).resolve().parent.parent / "src"


def test_importing_the_root_connects_to_nothing_and_loads_no_driver() -> None:
    program = (
        "import sys, adapters.bootstrap\n"
        "print(sorted(m for m in ('sqlalchemy', 'httpx', 'psycopg', 'starlette') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(SRC)},
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_the_default_database_is_the_same_everywhere() -> None:
    assert DEFAULT_DATABASE_URL == DEFAULT_URL == "sqlite:///credits.db"


def test_build_wires_sql_storage_a_scripted_verifier_and_the_given_clock(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 1, 5, tzinfo=UTC))
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'wired.db'}",
        migrate=True,
        verifier_script={"bad@corp.com": Verdict.INVALID},
    )
    with bootstrap.build(settings, clock=clock) as wiring:
        assert isinstance(wiring.repository, SqlRepository)
        assert isinstance(wiring.verifier, ScriptedVerifier)
        assert wiring.clock is clock
        # A request's lease is renewed while it is verified (R16): a crashed one's lapses.
        assert isinstance(wiring.service.heartbeat, ThreadHeartbeat)
        wiring.service.subscribe("acme", "boost")
        result = wiring.service.unlock(
            "acme", [Contact.email("ann@corp.com"), Contact.email("bad@corp.com")]
        )
        assert result.charged_credits.email == 1
        issued = wiring.keys.create("acme")
        assert wiring.keys.authenticate(issued.token) == "acme"
        assert issued.created_at == clock.now()


def test_without_a_verifier_the_service_reads_but_never_charges(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'read.db'}", migrate=True)
    with bootstrap.build(settings) as wiring:
        assert isinstance(wiring.verifier, NoVerifier)
        assert isinstance(wiring.clock, SystemClock)
        wiring.service.subscribe("acme", "boost")
        with pytest.raises(VerifierNotConfigured):
            wiring.verifier.verify([Contact.email("ann@corp.com")])


def test_a_verifier_url_makes_the_http_client(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'http.db'}",
        migrate=True,
        verifier_url="http://127.0.0.1:9",
        verifier_dialect="vendor_status",
    )
    with bootstrap.build(settings) as wiring:
        assert isinstance(wiring.verifier, HttpVerifier)


def test_conflicting_or_unknown_verifier_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="either a verifier URL or a verifier script"):
        Settings(verifier_url="http://127.0.0.1:9", verifier_script={})
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
        migrate=True,
        verifier_url="http://127.0.0.1:9",
        verifier_dialect="klingon",
    )
    with pytest.raises(InvalidRequest, match="native, vendor_status, vendor_result"):
        bootstrap.build(settings)
