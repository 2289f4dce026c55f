"""The dependency rule of the hexagon (ARCHITECTURE.md, "The house").

import-linter checks the contracts in pyproject.toml (`lint-imports`, run by `make test`);
this file checks what a deny-list cannot (the core imports only the standard library and
attrs), and that the contracts do fail when an adapter imports a sibling.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "src" / "credits_domain"
CORE_MAY_IMPORT = {"attrs", "attr", "credits_domain", "__future__"}
HARNESS_MAY_IMPORT = {"hypothesis", "pytest"}
# The HTTP harness is a client of a whole service: it alone may use the network (and
# sleep between attempts to connect).
HTTP_HARNESS = Path("testing", "http.py")
HTTP_HARNESS_MAY_IMPORT = {"http", "urllib", "time"}
# Standard-library modules that do I/O, read the clock or draw random numbers: the core
# does none of that (it gets time from the Clock port, randomness from its callers).
IO_MODULES = {
    "sqlite3", "socket", "http", "urllib", "asyncio", "subprocess", "os", "shutil",
    "pathlib", "io", "time", "random", "secrets", "threading", "multiprocessing",
}  # fmt: skip


def imported_roots(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def core_breaches(core: Path) -> list[str]:
    breaches = []
    for file in sorted(core.rglob("*.py")):
        harness = file.relative_to(core).parts[0] == "testing"
        for line, module in imported_roots(file):
            where = f"{file.relative_to(core.parent)}:{line}"
            if harness and module in HARNESS_MAY_IMPORT | {"threading"}:
                continue  # the harness runs tests: it may use its tools and threads
            if file.relative_to(core) == HTTP_HARNESS and module in HTTP_HARNESS_MAY_IMPORT:
                continue
            if module in IO_MODULES:
                breaches.append(f"{where}: the core imports {module} (I/O goes behind a port)")
            elif module not in sys.stdlib_module_names and module not in CORE_MAY_IMPORT:
                breaches.append(f"{where}: the core imports third-party {module}")
    return breaches


def test_the_core_imports_only_the_standard_library_and_attrs() -> None:
    assert core_breaches(CORE) == []


def test_the_core_check_catches_a_third_party_import(tmp_path: Path) -> None:
    core = tmp_path / "credits_domain"
    core.mkdir()
    (core / "wallet.py").write_text("import sqlalchemy\nimport time\nimport attrs\n")
    assert core_breaches(core) == [
        "credits_domain/wallet.py:1: the core imports third-party sqlalchemy",
        "credits_domain/wallet.py:2: the core imports time (I/O goes behind a port)",
    ]


def test_only_the_http_harness_may_use_the_network(tmp_path: Path) -> None:
    core = tmp_path / "credits_domain"
    (core / "testing").mkdir(parents=True)
    (core / "testing" / "http.py").write_text("import http.client\nimport urllib.parse\n")
    (core / "testing" / "machine.py").write_text("import http.client\n")
    assert core_breaches(core) == [
        "credits_domain/testing/machine.py:1: the core imports http (I/O goes behind a port)"
    ]


def lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=src.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_contracts_hold() -> None:
    done = lint_imports(ROOT / "src")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("adapters/memory.py", "from adapters.clock import SystemClock", "do not import one"),
        ("adapters/sql/api_keys.py", "import adapters.verifier", "do not import one"),
        ("adapters/api/app.py", "from adapters.sql import SqlRepository", "The API reaches"),
        ("adapters/cli/main.py", "from adapters.memory import InMemoryRepository", "The CLI"),
        ("adapters/verifier/http.py", "import adapters.bootstrap", "know nothing of the"),
        ("credits_domain/wallet.py", "import adapters.memory", "The core knows"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    target = src / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    done = lint_imports(src)
    assert done.returncode == 1, done.stdout
    assert "BROKEN" in done.stdout
    assert broken in done.stdout.split("Broken contracts")[-1]
