"""The `credits` command (driving side): `main()` is its entry point.

- `main`: the Typer app, the order of its commands, `renew-due` and `db upgrade`;
- `reading`: `accounts`, `balance`, `statement` (tables, or CSV and JSON through
  `output`);
- `operating`: `subscribe`, `change-plan`, `cancel`, `pause`, `resume`, `top-up`,
  `bounce`;
- `charging`: `unlock`, `export`, `enrich`, from arguments or a CSV file (`csvfile`);
- `demo`, `story`, `replay`: `credits demo`, its scripted story and its replay;
- `serve`: `credits keys ...` and `credits serve` (the HTTP API, with the `http` extra);
- `conformance`: `credits conformance BASE_URL` (the HTTP harness, `testing` extra);
- `render`, `output`, `support`: tables, the three output formats, help pages, and what
  every command shares (options, errors and exit statuses, wiring).

This module imports nothing outside the standard library: the package installs without
extras (the core alone), and `credits` must then say which extra to install rather
than fail with a traceback.
"""

from __future__ import annotations

import sys
from importlib import metadata

DISTRIBUTION = "credits-domain"

# Which extra brings each third-party module the command imports, and who needs it.
_EXTRA_OF_MODULE = {
    "typer": "sql",
    "rich": "sql",
    "sqlalchemy": "sql",
    "alembic": "sql",
    "psycopg": "sql",
    "uvicorn": "http",
    "starlette": "http",
    "httpx": "http",
    "phonenumbers": "http",
    "hypothesis": "testing",
    "pytest": "testing",
}
_NEEDED_BY = {
    "sql": "the credits command",
    "http": "credits serve",
    "testing": "credits conformance",
}
_NEEDED_BY_MODULE = {
    "httpx": "a verification service (--verifier-url) or credits serve",
    "phonenumbers": "reading mobile numbers (unlock, export, enrich) or credits serve",
}


def version_line() -> str:
    """What `credits --version` prints."""
    try:
        return f"{DISTRIBUTION} {metadata.version(DISTRIBUTION)}"
    except metadata.PackageNotFoundError:
        return f"{DISTRIBUTION} (version unknown: run from a source tree, not installed)"


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """The one line to print when `error` is a module of one of our extras, else None."""
    module = (error.name or "").partition(".")[0]
    extra = _EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    needed_by = _NEEDED_BY_MODULE.get(module, _NEEDED_BY[extra])
    return (
        f"credits: error: {needed_by} needs the {extra} extra ({module} is not "
        f"installed); install it with: pip install '{DISTRIBUTION}[{extra}]'"
    )


def main() -> None:
    # `--version` alone answers without the extras, to check what is installed.
    if sys.argv[1:] == ["--version"]:
        print(version_line())
        return
    try:
        from adapters.cli.main import run

        run()
    except ModuleNotFoundError as error:
        # At import (no `sql` extra) or when a command first needs a module (`serve`
        # without the `http` extra; a PostgreSQL URL without psycopg).
        line = missing_extra(error)
        if line is None:
            raise
        print(line, file=sys.stderr)
        raise SystemExit(1) from None
