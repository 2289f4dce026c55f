"""The core imports nothing optional: the harness's extras are never needed to use it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def test_core_and_memory_adapters_import_without_the_testing_extra() -> None:
    """hypothesis, pytest, sqlalchemy and httpx blocked: the facade still imports and runs."""
    program = """
import sys
for name in ("hypothesis", "pytest", "sqlalchemy", "httpx", "starlette", "psycopg"):
    sys.modules[name] = None  # any import of it now fails
from datetime import UTC, datetime
from credits_domain import Contact, CreditService
from adapters.memory import InMemoryRepository
from adapters.clock import ManualClock
from adapters.verifier import ScriptedVerifier
service = CreditService(repository=InMemoryRepository(), verifier=ScriptedVerifier(),
                        clock=ManualClock(datetime(2026, 1, 1, tzinfo=UTC)))
service.subscribe("acme", "boost")
print(service.unlock("acme", [Contact.email("a@corp.com")]).charged_credits.email)
"""
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(SRC)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


def test_both_packages_ship_their_type_marker() -> None:
    assert (SRC / "credits_domain" / "py.typed").is_file()
    assert (SRC / "adapters" / "py.typed").is_file()
