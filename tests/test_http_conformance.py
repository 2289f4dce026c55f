"""`credits conformance BASE_URL` against real servers on 127.0.0.1.

It passes against `credits serve --test-mode` on SQLite, and fails, printing the shrunk
failing steps, against the same server behind a proxy that drops the Idempotency-Key
request header (a service that ignores R17's key). The machine itself
(`credits_domain.testing.http`) also runs under pytest, as a third party would run it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from credits_domain.testing.http import (
    ConformanceError,
    HttpClient,
    make_http_machine,
    run_conformance,
)
from header_proxy import HeaderDroppingProxy
from http_api_support import api_world, free_port, serve, wait_listening

CREDITS = Path(sys.executable).parent / "credits"
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
RUN_TIMEOUT_S = 600.0


@contextmanager
def credits_test_mode(directory: Path, url: str | None = None) -> Iterator[str]:
    """`credits serve --test-mode` on a new database (SQLite by default), until it listens."""
    url = url or f"sqlite:///{directory / 'sandbox.db'}"
    upgraded = subprocess.run(
        [str(CREDITS), "db", "upgrade", "--db", url], capture_output=True, text=True, check=False
    )
    assert upgraded.returncode == 0, upgraded.stderr
    port = free_port()
    command = [str(CREDITS), "serve", "--test-mode", "--db", url, "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--no-access-log"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(port, server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(STOP_TIMEOUT_S)


def conformance(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CREDITS), "conformance", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=RUN_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with credits_test_mode(tmp_path_factory.mktemp("conformance")) as base_url:
        yield base_url


def test_credits_serve_in_test_mode_conforms(server: str) -> None:
    done = conformance(server, "--examples", "30", "--steps", "20")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"credits: {server} conforms: 30 examples of up to 20 steps (derandomized)" in (
        done.stderr
    )


def test_credits_serve_in_test_mode_on_postgresql_conforms(
    tmp_path: Path, postgres_url: str
) -> None:
    with credits_test_mode(tmp_path, postgres_url) as base_url:
        done = conformance(base_url, "--examples", "10", "--steps", "15", "--seed", "3")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_server_that_drops_the_idempotency_key_fails_with_the_shrunk_steps(server: str) -> None:
    proxy = HeaderDroppingProxy(upstream=server, drop="Idempotency-Key")
    with serve(proxy) as proxied:
        done = conformance(
            proxied, "--examples", "30", "--steps", "20", "--seed", "1", "--shrink-seconds", "20"
        )
    assert proxy.dropped > 0
    assert done.returncode == 1, done.stdout + done.stderr
    assert "does not conform; the failing steps are above (seed 1)" in done.stderr
    assert "state = HttpServiceMachineFor()" in done.stdout
    assert "key='k" in done.stdout  # the shrunk steps name the key that was ignored
    assert "Traceback" not in done.stderr


def test_the_machine_runs_under_pytest_as_a_third_party_runs_it(server: str) -> None:
    from hypothesis import settings

    machine = make_http_machine(server)
    machine.TestCase.settings = settings(max_examples=5, stateful_step_count=10, deadline=None)
    machine.TestCase().runTest()


def test_a_refused_connection_is_retried_a_bounded_number_of_times_then_fails() -> None:
    client = HttpClient(f"http://127.0.0.1:{free_port()}", attempts=3, first_pause_s=0.01)
    with pytest.raises(ConformanceError, match="refused 3 times"):
        client.request("GET", "/openapi.json")
    result = run_conformance(f"http://127.0.0.1:{free_port()}", max_examples=1, max_steps=1)
    assert not result.passed
    assert "refused" in result.report


def test_a_server_not_in_test_mode_is_named_as_such() -> None:
    with api_world() as world:
        done = conformance(world.base_url)
    assert done.returncode == 1
    assert "is not in test mode: POST /v1/test/accounts answered 404" in done.stdout


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "127.0.0.1:8000", "http://"])
def test_a_base_url_that_is_not_one_is_refused_in_one_line(url: str) -> None:
    done = conformance(url)
    assert done.returncode == 1
    assert done.stderr.startswith("credits: error: a base URL is http(s)://host")
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "option", [("--examples", "0"), ("--examples", "10001"), ("--steps", "201"), ("--seed", "-1")]
)
def test_the_run_is_bounded(option: tuple[str, str]) -> None:
    done = conformance("http://127.0.0.1:1", *option)
    assert done.returncode == 2, done.stderr
