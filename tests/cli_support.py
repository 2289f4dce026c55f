"""The `credits` command in process, for the CLI's tests: Typer's CliRunner on a real
SQLite file, with the clock the commands read set by the test (the composition root's
SystemClock is replaced; nothing else is)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
from typer.testing import CliRunner

from adapters import bootstrap
from adapters.cli.main import app
from adapters.clock import ManualClock

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
WIDE = {"COLUMNS": "220"}  # rich wraps tables at the terminal's width


@attrs.frozen
class Done:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def error_line(self) -> str:
        """The one line of an expected error (no traceback)."""
        lines = self.err.strip().splitlines()
        assert self.code != 0
        assert "Traceback" not in self.err + self.out
        assert len(lines) == 1, self.err
        return lines[0]


class Cli:
    """`credits ...` on the file `credits.db` of a test's directory, at `clock`."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.dir = directory
        self.url = f"sqlite:///{directory / 'credits.db'}"
        self.clock = ManualClock(T0)
        monkeypatch.setattr(bootstrap, "SystemClock", lambda: self.clock)

    def run(self, *args: str, env: Mapping[str, str] | None = None, db: bool = True) -> Done:
        argv = [*args, *(["--db", self.url] if db else [])]
        result = CliRunner().invoke(app, argv, env={**WIDE, **(env or {})})
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # a bug: let the test show its traceback
        return Done(result.exit_code, result.stdout, result.stderr)

    def ok(self, *args: str, env: Mapping[str, str] | None = None) -> Done:
        done = self.run(*args, env=env)
        assert done.code == 0, done.err
        return done

    def entries(self, account: str) -> list[dict[str, Any]]:
        """The account's ledger, read through `credits statement --format json`."""
        return list(self.ok("statement", account, "--format", "json").json()["entries"])

    def charged(self, account: str) -> list[str]:
        """The data charged to the account, in ledger order."""
        return [e["datum"] for e in self.entries(account) if e["kind"] == "charge"]


def new_cli(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """A Cli on a new, upgraded database."""
    made = Cli(directory, monkeypatch)
    made.ok("db", "upgrade")
    return made
