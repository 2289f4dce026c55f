"""A real browser for the tests: Debian's headless Chromium, driven by Selenium.

Selenium is given the driver's path, so Selenium Manager never runs (it would try to
download a driver or a browser). Chromium starts with a fresh profile and with every host
name but 127.0.0.1 resolving to nothing, so a page that tried to load anything from
another server would show it as a failed load, not quietly fetch it.

Without /usr/bin/chromium and /usr/bin/chromedriver (`apt-get install chromium
chromium-driver`) the browser tests skip with that reason, except under CI=true, where
they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM: Final = "/usr/bin/chromium"
CHROMEDRIVER: Final = "/usr/bin/chromedriver"
WAIT_S: Final = 10.0
FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--window-size=1280,1800",
)


def require_chromium() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not missing:
        return
    reason = (
        f"no {' and no '.join(missing)}: install Debian's chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@contextmanager
def chromium(profile: Path) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile in `profile`; quit on exit."""
    require_chromium()
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(WAIT_S * 3)
        yield driver
    finally:
        driver.quit()


def resources(driver: WebDriver) -> list[str]:
    """Every address the current page loaded something from (the browser's own record)."""
    names = driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
        ".concat([location.href]);"
    )
    assert isinstance(names, list)
    return [str(name) for name in names]
