"""What a user installs: the core needs no extra; the `credits` command says which extra
to install instead of failing with a traceback; the wheel carries its licence and
metadata and works in a fresh environment without extras."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from credits_domain import PLANS

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
VERSION = metadata.version("credits-domain")


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


# -- the `credits` command without its extras -----------------------------------------

SQL_EXTRA = ("typer", "rich", "sqlalchemy", "alembic", "psycopg")
HTTP_EXTRA = ("uvicorn", "starlette", "httpx", "phonenumbers")


def credits_without(
    blocked: tuple[str, ...], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`credits ARGS` through the entry point, in a process where the `blocked` modules
    cannot be imported, as if their extra were not installed."""
    program = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None  # any import of it now fails\n"
        f"sys.argv = ['credits', *{list(args)!r}]\n"
        "from adapters.cli import main\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        cwd=cwd,
        check=False,
    )


def assert_says_install(done: subprocess.CompletedProcess[str], extra: str) -> None:
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr  # exactly one line
    assert f"pip install 'credits-domain[{extra}]'" in done.stderr
    assert done.stderr.startswith("credits: error: ")


@pytest.mark.parametrize("args", [[], ["--help"], ["balance", "acme"], ["demo"]], ids=repr)
def test_without_the_sql_extra_credits_says_which_extra_to_install(
    tmp_path: Path, args: list[str]
) -> None:
    done = credits_without(SQL_EXTRA, *args, cwd=tmp_path)
    assert_says_install(done, "sql")
    assert list(tmp_path.iterdir()) == []  # no credits.db left behind


def test_without_the_sql_extra_the_version_still_answers() -> None:
    done = credits_without(SQL_EXTRA, "--version")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"credits-domain {VERSION}\n"


def test_without_the_http_extra_serve_says_which_extra_to_install(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'credits.db'}"
    assert_says_install(
        credits_without(HTTP_EXTRA, "serve", "--demo-verifier", "--db", url), "http"
    )
    assert_says_install(credits_without(HTTP_EXTRA, "serve", "--db", url), "http")
    helped = credits_without(HTTP_EXTRA, "--help")
    assert helped.returncode == 0, helped.stderr
    assert " serve " in helped.stdout and " keys " in helped.stdout  # listed, not vanished
    assert list(tmp_path.iterdir()) == []


def test_without_the_http_extra_the_demo_runs_and_says_webhooks_were_not_sent(
    tmp_path: Path,
) -> None:
    done = credits_without(HTTP_EXTRA, "demo", "--db", f"sqlite:///{tmp_path / 'demo.db'}")
    assert done.returncode == 0, done.stderr
    assert "Webhooks: not delivered; delivery needs the http extra" in done.stdout
    assert "Balances at the end of the story" in done.stdout


def test_without_the_http_extra_keys_and_reading_commands_work(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'credits.db'}"
    created = credits_without(HTTP_EXTRA, "keys", "create", "acme", "--db", url)
    assert created.returncode == 0, created.stderr
    key_id = created.stdout.split()[2]
    revoked = credits_without(HTTP_EXTRA, "keys", "revoke", key_id, "--db", url)
    assert (revoked.returncode, revoked.stdout) == (0, f"API key {key_id} revoked.\n")
    renewed = credits_without(HTTP_EXTRA, "renew-due", "--db", url)
    assert (renewed.returncode, renewed.stdout) == (0, "Renewed 0 accounts.\n"), renewed.stderr


# -- the wheel, installed without extras -----------------------------------------------


def _copy_distribution(name: str, site_packages: Path) -> None:
    """Install `name` into `site_packages` by copying the files this interpreter has of
    it (per its RECORD): the test then needs no index and no network."""
    distribution = metadata.distribution(name)
    for file in distribution.files or ():
        if file.parts[0] == ".." or "__pycache__" in file.parts:
            continue  # scripts outside site-packages; byte code is rebuilt
        source = Path(str(distribution.locate_file(file)))
        if source.is_file():
            target = site_packages / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    # Outside the source tree, and without its path: only what is installed is found.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=Path(str(command[0])).parent,
        check=False,
    )


@pytest.mark.slow
def test_the_wheel_installs_and_runs_without_extras(tmp_path: Path) -> None:
    built = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--no-index", "--wheel-dir", tmp_path / "dist", ROOT,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("credits_domain-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        info = f"credits_domain-{VERSION}.dist-info"
        shipped = archive.read(f"{info}/licenses/LICENSE").decode()
        fields = archive.read(f"{info}/METADATA").decode().split("\n\n", 1)[0].splitlines()
    assert shipped == (ROOT / "LICENSE").read_text()
    assert "License-Expression: MIT" in fields
    assert "Project-URL: Homepage, https://credits-domain.dev" in fields
    assert "Requires-Dist: attrs>=23.1" in fields  # the core's one dependency, unconditional
    assert sum(f.startswith("Classifier: ") for f in fields) >= 5

    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    python = venv / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    _copy_distribution("attrs", Path(purelib.stdout.strip()))
    pip = (sys.executable, "-m", "pip", "--python", python)
    installed = _run(*pip, "install", "--no-index", "--no-cache-dir", wheel)
    assert installed.returncode == 0, installed.stderr
    checked = _run(*pip, "check")  # every requirement met: attrs, and nothing else needed
    assert checked.returncode == 0, checked.stdout + checked.stderr

    facade = "import credits_domain as c; print(c.__file__); print(sorted(c.PLANS))"
    imported = _run(python, "-c", facade)
    assert imported.returncode == 0, imported.stderr
    where, plans = imported.stdout.splitlines()
    assert Path(where).is_relative_to(venv)  # the installed copy, not the source tree
    assert plans == repr(sorted(PLANS))
    command = venv / "bin" / "credits"
    version = _run(command, "--version")
    assert (version.returncode, version.stdout) == (0, f"credits-domain {VERSION}\n")
    assert_says_install(_run(command, "balance", "acme"), "sql")
