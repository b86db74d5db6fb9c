"""The admin UI (/ui) in a real browser: Debian's Chromium driven through chromedriver (Selenium),
against the session's gateway. Signing in, deployment health, creating a key whose secret then works
with the official OpenAI SDK, revoking it in the page (the SDK is then refused), spend reports, and a
key name full of markup shown as text. `scripts/test.sh` installs the browser when it is missing."""

from __future__ import annotations

import os
import shutil
import time
from typing import Callable, Iterator, TypeVar

import openai
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from helpers import FILE_KEY, MASTER_KEY

T = TypeVar("T")
WAIT_S = 10.0


def _browser_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    assert browser and driver, (
        "the admin UI tests need Chromium and chromedriver (Debian: chromium, chromium-driver); "
        "scripts/test.sh installs them"
    )
    return browser, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    binary, driver = _browser_paths()
    # Selenium must not look for drivers on the internet
    os.environ["SE_OFFLINE"] = "true"
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions"]:
        opts.add_argument(arg)
    b = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    b.set_page_load_timeout(WAIT_S)
    yield b
    b.quit()


def wait_for(what: str, check: Callable[[], T], timeout: float = WAIT_S) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = check()
            if v:
                return v
        except Exception as e:  # an element not there yet
            last = e
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last})" if last else ""))


def visible(b: WebDriver, css: str) -> WebElement | None:
    els = [e for e in b.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
    return els[0] if els else None


def status(b: WebDriver) -> str:
    return b.find_element(By.ID, "status").text


def sign_in(b: WebDriver, gw: str, key: str) -> None:
    b.get(f"{gw}/ui")
    # a tab that is still signed in (an earlier test) starts over
    b.execute_script("sessionStorage.clear()")
    b.refresh()
    field = wait_for("the sign-in form", lambda: visible(b, "#master-key"))
    field.clear()
    field.send_keys(key)
    b.find_element(By.CSS_SELECTOR, "#sign-in-form button[type=submit]").click()


def test_signing_in_needs_the_master_key_and_shows_deployment_health(browser, gw):
    b = browser
    sign_in(b, gw, "sk-not-the-master-key")
    wait_for("the refusal", lambda: "not the master key" in status(b))
    assert visible(b, "#sign-in") and not visible(b, "#overview")

    sign_in(b, gw, MASTER_KEY)
    table = wait_for("the health table", lambda: visible(b, "#health"))
    rows = wait_for("deployment rows", lambda: table.find_elements(By.CSS_SELECTOR, "tbody tr"))
    names = [r.find_element(By.CSS_SELECTOR, "td").text for r in rows]
    assert "oai/gpt-4.1" in names and "aws/anthropic.claude-sonnet-4-5-20250929-v1:0" in names, names
    assert b.execute_script("return sessionStorage.getItem('tollway.masterKey')") == MASTER_KEY
    assert MASTER_KEY not in b.current_url

    # the model groups with their deployments and prices, and the routers
    b.find_element(By.CSS_SELECTOR, "#nav button[data-view=models]").click()

    def gpt_row() -> list[str] | None:
        for r in b.find_elements(By.CSS_SELECTOR, "#model-list tbody tr"):
            cells = [c.text for c in r.find_elements(By.CSS_SELECTOR, "td")]
            if cells and cells[0] == "gpt":
                return cells
        return None

    cells = wait_for("the gpt group", gpt_row)
    assert cells[1] == "failover" and cells[2] == "oai/gpt-4.1" and float(cells[3]) > 0, cells
    routers = [[c.text for c in r.find_elements(By.CSS_SELECTOR, "td")]
               for r in b.find_elements(By.CSS_SELECTOR, "#router-list tbody tr")]
    assert ["auto", "learned", "claude, gpt"] in routers, routers
    b.find_element(By.CSS_SELECTOR, "#nav button[data-view=overview]").click()

    # the config reloads from the page
    b.find_element(By.ID, "reload-config").click()
    wait_for("the reload", lambda: "The config was reloaded" in status(b))

    # signed out: the key leaves the tab, and a reload asks again
    b.find_element(By.ID, "sign-out").click()
    wait_for("the sign-in form", lambda: visible(b, "#sign-in"))
    assert b.execute_script("return sessionStorage.getItem('tollway.masterKey')") is None
    b.refresh()
    wait_for("the sign-in form after a reload", lambda: visible(b, "#master-key"))
    assert not visible(b, "#overview")


def test_a_key_made_in_the_page_works_until_it_is_revoked_there(browser, gw):
    b = browser
    sign_in(b, gw, MASTER_KEY)
    wait_for("the overview", lambda: visible(b, "#overview"))
    b.find_element(By.CSS_SELECTOR, "#nav button[data-view=keys]").click()
    form = wait_for("the key form", lambda: visible(b, "#create-key"))

    # markup in a name is shown as text, never run
    name = '<img src=x onerror="window.__pwned=1">ui-key'
    form.find_element(By.NAME, "name").send_keys(name)
    form.find_element(By.NAME, "team").send_keys("ui-team")
    form.find_element(By.NAME, "models").send_keys("gpt")
    form.find_element(By.NAME, "rpm").send_keys("50")
    form.find_element(By.NAME, "budget_usd").send_keys("2.50")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    secret_box = wait_for("the new secret", lambda: visible(b, "#new-secret"))
    secret = secret_box.find_element(By.ID, "new-secret-value").text
    assert secret.startswith("sk-tw-"), secret
    assert secret_box.find_element(By.ID, "new-secret-name").text == name

    def our_row() -> WebElement | None:
        for r in b.find_elements(By.CSS_SELECTOR, "#key-list tbody tr"):
            if r.find_elements(By.CSS_SELECTOR, "td") and r.find_element(By.CSS_SELECTOR, "td").text == name:
                return r
        return None

    row = wait_for("the key in the list", our_row)
    cells = [c.text for c in row.find_elements(By.CSS_SELECTOR, "td")]
    key_id = cells[1]
    assert key_id.startswith("key_") and cells[3] == "ui-team" and cells[4] == "gpt", cells
    assert cells[5] == "50" and cells[7].startswith("$2.5") and cells[8] == "active", cells
    assert not b.find_elements(By.CSS_SELECTOR, "#key-list img"), "markup in a name became an element"
    assert b.execute_script("return window.__pwned") is None
    assert secret not in b.find_element(By.ID, "key-list").text, "the list never shows a secret"

    # the secret works with the official SDK, for the models it allows
    client = openai.OpenAI(base_url=f"{gw}/v1", api_key=secret, max_retries=0)
    r = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "from the UI's key"}])
    assert r.choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])

    # its spend shows up under Usage, by key and model (the refused request has a row of its own)
    b.find_element(By.CSS_SELECTOR, "#nav button[data-view=usage]").click()
    form = wait_for("the usage form", lambda: visible(b, "#usage-form"))
    for box in form.find_elements(By.CSS_SELECTOR, "input[name=group]"):
        if box.is_selected() != (box.get_attribute("value") in ("key", "model")):
            box.click()

    def spend_row() -> list[str] | None:
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        time.sleep(0.1)
        for r in b.find_elements(By.CSS_SELECTOR, "#usage-table tbody tr"):
            cells = [c.text for c in r.find_elements(By.CSS_SELECTOR, "td")]
            if key_id in cells and "gpt" in cells:
                return cells
        return None

    cells = wait_for("the key's spend in the report", spend_row)
    heads = [h.text for h in b.find_elements(By.CSS_SELECTOR, "#usage-table thead th")]
    assert set(heads[:2]) == {"key", "model"}, heads
    by = dict(zip(heads, cells))
    assert by["model"] == "gpt" and by["Requests"] == "1", by
    assert float(by["Cost (USD)"]) > 0, by
    assert "by month end" in b.find_element(By.ID, "forecast").text

    # the request log, filtered to the key: the answered request and the refused one, newest first
    b.find_element(By.CSS_SELECTOR, "#nav button[data-view=requests]").click()
    form = wait_for("the request log's filters", lambda: visible(b, "#requests-form"))
    form.find_element(By.NAME, "key").send_keys(key_id)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    def logged() -> list[list[str]] | None:
        rows = [[c.text for c in r.find_elements(By.CSS_SELECTOR, "td")]
                for r in b.find_elements(By.CSS_SELECTOR, "#request-log tbody tr")]
        return rows if len(rows) == 2 and all(len(r) == 12 and r[2] == key_id for r in rows) else None

    rows = wait_for("the key's two requests", logged)
    assert [(r[3], r[5]) for r in rows] == [("claude", "403"), ("gpt", "200")], rows
    assert rows[1][4] == "oai/gpt-4.1" and float(rows[1][10]) > 0, rows[1]
    Select(form.find_element(By.NAME, "status")).select_by_value("error")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for("only the refused request", lambda: [
        r.find_elements(By.CSS_SELECTOR, "td")[5].text
        for r in b.find_elements(By.CSS_SELECTOR, "#request-log tbody tr")] == ["403"])

    # revoked in two clicks (the first asks again); the SDK is then refused
    b.find_element(By.CSS_SELECTOR, "#nav button[data-view=keys]").click()
    row = wait_for("the key in the list", our_row)
    revoke = row.find_element(By.CSS_SELECTOR, "button.danger")
    revoke.click()
    assert "Click again" in revoke.text
    revoke.click()
    wait_for("the revocation", lambda: f"Revoked {key_id}" in status(b))
    row = wait_for("the revoked key", lambda: (r := our_row()) and "revoked" in r.text and r)
    assert not row.find_elements(By.CSS_SELECTOR, "button"), "a revoked key has no actions"
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    client.close()


def test_a_key_declared_in_the_config_file_works_and_is_the_files(browser, gw):
    # the official SDK with the file's key, within the models the file gives it
    client = openai.OpenAI(base_url=f"{gw}/v1", api_key=FILE_KEY, max_retries=0)
    r = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "from the file's key"}])
    assert r.choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    client.close()

    # listed in the page as the file's: no rotate or revoke there
    b = browser
    sign_in(b, gw, MASTER_KEY)
    wait_for("the overview", lambda: visible(b, "#overview"))
    b.find_element(By.CSS_SELECTOR, "#nav button[data-view=keys]").click()

    def file_row() -> WebElement | None:
        for r in b.find_elements(By.CSS_SELECTOR, "#key-list tbody tr"):
            cells = r.find_elements(By.CSS_SELECTOR, "td")
            if cells and cells[0].text == "file-key":
                return r
        return None

    row = wait_for("the file's key in the list", file_row)
    cells = [c.text for c in row.find_elements(By.CSS_SELECTOR, "td")]
    assert cells[1].startswith("key_cfg_") and cells[3] == "conformance" and cells[8] == "active", cells
    assert cells[10] == "config file", cells
    assert not row.find_elements(By.CSS_SELECTOR, "button")
    assert FILE_KEY not in b.find_element(By.ID, "key-list").text
