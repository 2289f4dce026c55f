"""The verifier client's public calls other than `verify` (which turns every failure
into UNKNOWN verdicts, R10) raise domain errors only: never httpx's own, nor a
TypeError or UnicodeEncodeError from deep inside it."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.verifier import HttpVerifier
from credits_domain import InvalidRequest


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/", "", "http://[::1", "http://h:abc", "http://h:99999", 5]
)
def test_a_bad_base_url_is_refused_as_invalid_request(url: Any) -> None:
    with pytest.raises(InvalidRequest, match="base_url"):
        HttpVerifier(url)


@pytest.mark.parametrize(
    "headers", [{"x-key": "caf\u00e9"}, {"x-k\u00e9y": "v"}, {"x-key": "a\r\nx-evil: 1"}]
)
def test_a_bad_header_is_refused_as_invalid_request(headers: dict[str, str]) -> None:
    # Non-ASCII made httpx raise UnicodeEncodeError; a line break reached the wire.
    with pytest.raises(InvalidRequest, match="header"):
        HttpVerifier("http://127.0.0.1:9", headers=headers)


def test_close_is_safe_to_repeat() -> None:
    verifier = HttpVerifier("http://127.0.0.1:9", headers={"x-key": "k"})
    verifier.close()
    verifier.close()
