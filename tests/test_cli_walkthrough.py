"""The README's command-line walk-through, run as a reader would on a fresh clone: `make
demo`, then every command of "The command line, step by step" in order, then the HTTP
API's section (its curl calls sent by httpx to a real `credits serve`), in one new
directory with the `credits` script of this environment. Each must succeed: in particular
the demo's accounts must not stand in the way of the walk-through's or the API's.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from adapters.cli.support import EXIT_STATUSES

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CREDITS = Path(sys.executable).parent / "credits"


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def shell_lines(text: str) -> list[str]:
    """The commands of a section's ```sh blocks, continuation lines joined."""
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        joined = block.replace("\\\n", " ")
        commands += [line.strip() for line in joined.splitlines() if line.strip()]
    return commands


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{CREDITS.parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def curl_request(line: str, port: int, key: str) -> httpx.Request:
    """The request a README curl line sends (its -H, -d, -X and URL), to our port."""
    words = shlex.split(line.replace("$KEY", key))
    assert words[0] == "curl"
    headers, body, url, chosen = {}, None, None, None
    it = iter(words[1:])
    for word in it:
        if word == "-H":
            name, _, value = next(it).partition(": ")
            headers[name] = value
        elif word == "-d":
            body = next(it)
        elif word == "-X":
            chosen = next(it)
        else:
            url = word.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    assert url is not None, line
    method = chosen or ("GET" if body is None else "POST")
    return httpx.Request(method, url, headers=headers, content=body)


def test_the_readme_lists_the_exit_statuses_the_command_uses() -> None:
    table = section("The command line, step by step").split("**Exit status**", 1)[1]
    listed = re.findall(r"^\| (\d+) \|", table, re.M)
    assert listed == [code for code, _ in EXIT_STATUSES]


@pytest.mark.slow
def test_the_readme_walk_through_runs_in_order_on_a_fresh_directory(tmp_path: Path) -> None:
    assert CREDITS.is_file(), f"no credits script beside {sys.executable}"
    (tmp_path / "docs").mkdir()
    shutil.copytree(ROOT / "docs" / "examples", tmp_path / "docs" / "examples")

    demo = run("credits demo", tmp_path)  # what `make demo` runs
    assert demo.returncode == 0, demo.stderr
    assert (tmp_path / "credits-demo.db").is_file() and not (tmp_path / "credits.db").exists()

    steps = shell_lines(section("The command line, step by step"))
    assert len(steps) >= 10 and all(step.startswith("credits ") for step in steps)
    for step in steps:
        done = run(step, tmp_path)
        assert done.returncode == 0, f"{step}\n{done.stderr}"
    unlocked = (tmp_path / "unlocked.csv").read_text(encoding="utf-8").splitlines()
    assert (tmp_path / "again.csv").read_text(encoding="utf-8").splitlines() == unlocked
    assert unlocked[1].endswith(";2;already_owned;already_owned")  # Ann, bought just before
    assert (
        "dev@oakridge;07700 900125;5;malformed: expected local@domain.tld;charged" in (unlocked[4])
    )
    assert len((tmp_path / "ledger.csv").read_text(encoding="utf-8").splitlines()) > 10

    api = shell_lines(section("The HTTP API"))
    created = run(api[0], tmp_path)  # credits keys create acme
    assert created.returncode == 0, created.stderr
    key = created.stdout.split()[-1]
    port = free_port()
    server = subprocess.Popen(
        [str(CREDITS), "serve", "--demo-verifier", "--port", str(port), "--no-access-log"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(timeout=10) as client:
            for _ in range(300):  # bounded: fails rather than waits forever
                try:
                    client.get(f"http://127.0.0.1:{port}/openapi.json")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            statuses = [
                client.send(curl_request(line, port, key)).status_code
                for line in api
                if line.startswith("curl ")
            ]
    finally:
        server.terminate()
        server.wait(timeout=30)
    # subscribe (new: the demo's acme is elsewhere), unlock, top-up, balance, guarantee,
    # low-balance threshold, events
    assert statuses == [201, 200, 201, 200, 200, 200, 200]
    revoke = [line for line in api if line.startswith("credits keys revoke")]
    done = run(revoke[0].replace("KEY_ID", key.split("_")[1]), tmp_path)
    assert done.returncode == 0, done.stderr
