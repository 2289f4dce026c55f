"""The pages for people in a real browser: headless Chromium (Debian's) under Selenium.

The server is what `credits serve` runs (the composition root's app, under uvicorn on
127.0.0.1, on a real SQLite database), with a scripted clock and verifier. The tests sign
in through the form, read the account page as a person sees it, act through the API
and reload, follow the paging links, sign out, and use the reference's console.

`make screenshots` runs them with CREDITS_SCREENSHOTS=docs/screenshots, and the account
page and the reference are saved there as PNG files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import attrs
import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

import browser_support
from adapters import bootstrap
from adapters.clock import ManualClock
from browser_support import WAIT_S, chromium, resources
from credits_domain import Contact, Verdict
from http_api_support import START, serve

pytestmark = pytest.mark.browser


@attrs.define
class Served:
    base_url: str
    wiring: bootstrap.Wiring
    clock: ManualClock

    def key(self, account: str) -> str:
        return self.wiring.keys.create(account).token

    def api(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10.0
        )


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


@pytest.fixture
def served(tmp_path: Path, browser: WebDriver) -> Iterator[Served]:
    clock = ManualClock(START)
    settings = bootstrap.Settings(
        database_url=f"sqlite:///{tmp_path / 'credits.db'}",
        migrate=True,
        verifier_script={"bad@corp.com": Verdict.INVALID},
    )
    with (
        bootstrap.build(settings, clock=clock) as wiring,
        serve(bootstrap.build_app(wiring)) as url,
    ):
        yield Served(url, wiring, clock)
        browser.delete_all_cookies()


def sign_in(browser: WebDriver, served: Served, token: str) -> None:
    browser.get(served.base_url + "/ui")
    assert browser.current_url == served.base_url + "/ui/sign-in"
    browser.find_element(By.ID, "key").send_keys(token)
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, WAIT_S).until(expected_conditions.url_to_be(served.base_url + "/ui"))


def pool(browser: WebDriver, name: str, field: str) -> int:
    element = browser.find_element(
        By.CSS_SELECTOR, f'#pools [data-pool="{name}"] [data-field="{field}"]'
    )
    return int(element.text.replace(",", ""))


def steps(browser: WebDriver, name: str) -> list[tuple[str, int, int]]:
    marks = browser.find_elements(By.CSS_SELECTOR, f'svg[data-pool="{name}"] circle.step')
    return [
        (
            str(m.get_attribute("data-kind")),
            int(str(m.get_attribute("data-amount"))),
            int(str(m.get_attribute("data-balance"))),
        )
        for m in marks
    ]


def rows(browser: WebDriver, selector: str) -> list[WebElement]:
    return browser.find_elements(By.CSS_SELECTOR, selector)


def only_this_server(browser: WebDriver, served: Served) -> None:
    loaded = resources(browser)
    assert loaded and all(name.startswith(served.base_url + "/") for name in loaded), loaded


def screenshot(browser: WebDriver, name: str, *, whole_page: bool) -> None:
    folder = os.environ.get("CREDITS_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        if whole_page:
            height = browser.execute_script("return document.body.scrollHeight")
            browser.set_window_size(1280, int(height) + 40)
        assert browser.save_screenshot(str(Path(folder) / name))
        browser.set_window_size(1280, 1800)


def test_the_account_page_after_a_scripted_unlock(browser: WebDriver, served: Served) -> None:
    s = served.wiring.service
    s.subscribe("acme", "boost")
    s.unlock("acme", [Contact.email(f"jan{i}@corp.com") for i in range(40)])
    served.clock.advance(timedelta(days=10))
    s.unlock("acme", [Contact.mobile("+15550000001"), Contact.email("late@corp.com")])
    served.clock.advance(timedelta(days=21))  # 28 Feb: period 2 begins (R4)
    token = served.key("acme")
    sign_in(browser, served, token)
    assert (pool(browser, "email", "available"), pool(browser, "mobile", "available")) == (
        12_000 - 41 + 12_000,
        800 - 1 + 800,
    )
    cookie = next(c for c in browser.get_cookies() if c["name"] == "credits_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert token not in cookie["value"]

    # Act through the API, as a program would, then look again.
    served.clock.advance(timedelta(days=2))
    with served.api(token) as api:
        unlocked = api.post(
            "/v1/accounts/acme/unlock",
            json={
                "contacts": [
                    {"channel": "email", "value": "ann@corp.com"},
                    {"channel": "email", "value": "bad@corp.com"},
                    {"channel": "email", "value": "jan1@corp.com"},
                    {"channel": "mobile", "value": "+1 555 000 0002"},
                ]
            },
        )
        assert unlocked.json()["charged"] == {"email": 1, "mobile": 1}
        served.clock.advance(timedelta(days=1))
        topped = api.post("/v1/accounts/acme/top-ups", json={"email": 500, "reason": "promo"})
        assert topped.status_code == 201
    browser.refresh()
    assert pool(browser, "email", "available") == 24_000 - 41 - 1 + 500
    assert pool(browser, "mobile", "available") == 1_600 - 1 - 1
    unlock_row = browser.find_element(By.CSS_SELECTOR, '#usage tr[data-operation="unlock"]')
    assert [c.text for c in unlock_row.find_elements(By.TAG_NAME, "td")] == [
        "unlock",
        "2",
        "1",
        "1",
    ]
    assert steps(browser, "email") == [
        ("grant", 12_000, 12_000),
        ("charge", -40, 11_960),
        ("charge", -1, 11_959),
        ("grant", 12_000, 23_959),
        ("charge", -1, 23_958),
        ("top_up", 500, 24_458),
    ]
    assert steps(browser, "mobile") == [
        ("grant", 800, 800),
        ("charge", -1, 799),
        ("grant", 800, 1_599),
        ("charge", -1, 1_598),
    ]
    renewal = browser.find_element(By.CSS_SELECTOR, '#renewal [data-field="renews-at"]')
    assert renewal.text == "31 Mar 2025 09:00 UTC"
    only_this_server(browser, served)
    screenshot(browser, "account-page.png", whole_page=True)

    browser.find_element(By.ID, "sign-out").click()
    WebDriverWait(browser, WAIT_S).until(
        expected_conditions.url_to_be(served.base_url + "/ui/sign-in")
    )
    assert not [c for c in browser.get_cookies() if c["name"] == "credits_session"]
    browser.get(served.base_url + "/ui")
    assert browser.current_url == served.base_url + "/ui/sign-in"


def test_paging_and_another_accounts_data(browser: WebDriver, served: Served) -> None:
    s = served.wiring.service
    for account in ("acme", "globex"):
        s.subscribe(account, "boost")
    s.unlock("acme", [Contact.email(f"a{i:02d}@corp.com") for i in range(25)])
    s.unlock("globex", [Contact.email("theirs@globex.example"), Contact.mobile("+15559990000")])
    sign_in(browser, served, served.key("acme"))

    seqs = [r.get_attribute("data-seq") for r in rows(browser, "#statement tbody tr")]
    assert seqs == [str(n) for n in range(20)]
    browser.find_element(By.CSS_SELECTOR, '#statement a[data-rel="statement-next"]').click()
    seqs = [r.get_attribute("data-seq") for r in rows(browser, "#statement tbody tr")]
    assert seqs == [str(n) for n in range(20, 27)]
    assert not rows(browser, '#statement a[data-rel="statement-next"]')
    browser.find_element(By.CSS_SELECTOR, '#statement a[data-rel="statement-first"]').click()
    assert len(rows(browser, "#statement tbody tr")) == 20

    owned = [r.get_attribute("data-datum") for r in rows(browser, "#owned tbody tr")]
    assert owned == [f"email:a{i:02d}@corp.com" for i in range(20)]
    browser.find_element(By.CSS_SELECTOR, '#owned a[data-rel="owned-next"]').click()
    owned = [r.get_attribute("data-datum") for r in rows(browser, "#owned tbody tr")]
    assert owned == [f"email:a{i:02d}@corp.com" for i in range(20, 25)]
    # The statement's place is kept while the data owned move on, and the other way.
    assert len(rows(browser, "#statement tbody tr")) == 20

    source = browser.page_source
    for theirs in ("globex", "theirs@globex.example", "+15559990000"):
        assert theirs not in source
    only_this_server(browser, served)


def test_the_reference_and_its_console(browser: WebDriver, served: Served) -> None:
    served.wiring.service.subscribe("acme", "boost")
    token = served.key("acme")
    browser.get(served.base_url + "/docs")
    assert "credits-domain API" in browser.title + browser.find_element(By.TAG_NAME, "h1").text
    operations = rows(browser, "section.operation")
    assert len(operations) >= 14
    balance = browser.find_element(By.CSS_SELECTOR, "#op-balance button.try")
    browser.execute_script("arguments[0].scrollIntoView();", balance)
    balance.click()
    assert browser.find_element(By.ID, "try-path").get_attribute("value") == (
        "/v1/accounts/{account}/balance"
    )
    browser.find_element(By.ID, "try-account").send_keys("acme")
    browser.find_element(By.ID, "try-key").send_keys(token)
    browser.find_element(By.ID, "try-send").click()
    answer = browser.find_element(By.ID, "try-answer")
    WebDriverWait(browser, WAIT_S).until(lambda _: answer.get_attribute("data-status") == "200")
    assert '"email_available": 12000' in answer.text
    top_up = browser.find_element(By.CSS_SELECTOR, "#op-topUp button.try")
    browser.execute_script("arguments[0].scrollIntoView();", top_up)
    top_up.click()
    browser.find_element(By.ID, "try-idempotency").send_keys("grant-1")
    browser.find_element(By.ID, "try-send").click()
    WebDriverWait(browser, WAIT_S).until(lambda _: answer.get_attribute("data-status") == "201")
    assert served.wiring.service.balance("acme").email == 12_500
    only_this_server(browser, served)
    browser.execute_script("window.scrollTo(0, 0);")
    screenshot(browser, "api-reference.png", whole_page=False)


def test_without_chromium_ci_fails_and_a_developer_skips(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        browser_support.require_chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="chromium-driver"):
        browser_support.require_chromium()
