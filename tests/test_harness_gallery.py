"""The harness catches the bugs adapters really have: each planted bug of
`planted_bugs.GALLERY` must make its contract suite or its state machine fail.

Each bug runs in a pytest of its own (`gallery_suites.py`, stopped at the first failure),
two at a time; the mutation score, and the test that caught each bug, are printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from planted_bugs import GALLERY, Planted

HERE = Path(__file__).parent
RUN_TIMEOUT_S = 600  # an escaped bug runs its whole suite; a hang fails the test
FAILED = re.compile(r"^FAILED (\S+)", re.MULTILINE)


def _run(planted: Planted) -> tuple[Planted, str | None]:
    """The first test that failed on the planted adapter, or None if it escaped."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-x",
            "-q",
            "-rf",
            "-p",
            "no:cacheprovider",
            "-p",
            "_hypothesis_pytestplugin",
            f"gallery_suites.py::Test{planted.name}Contract",
            f"gallery_suites.py::Test{planted.name}Machine",
        ],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        # Only Hypothesis' plugin: the others (schemathesis') cost seconds per run.
        env={**os.environ, "PYTHONPATH": str(HERE), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        check=False,
    )
    if done.returncode == 0:
        return planted, None
    found = FAILED.search(done.stdout)
    assert done.returncode == 1 and found, f"{planted.name}: pytest broke\n{done.stdout[-4000:]}"
    return planted, found.group(1)


def test_the_harness_catches_every_planted_bug() -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(_run, GALLERY))
    caught = [(p, test) for p, test in outcomes if test is not None]
    for planted, test in outcomes:
        print(f"{planted.name:24} {'caught by ' + test if test else 'ESCAPED'}")
    print(f"mutation score: {len(caught)}/{len(GALLERY)}")
    escaped = [p.name for p, test in outcomes if test is None]
    assert not escaped, f"the harness let these planted bugs through: {escaped}"
    astray = [(p.name, test) for p, test in caught if not any(t in test for t in p.caught_by)]
    assert not astray, f"planted bugs caught where they are not: {astray}"
