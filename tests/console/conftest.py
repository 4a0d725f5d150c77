"""The console in a real headless Chromium (Debian's), driven by Selenium, against the real API process.

Every test's browser traffic is recorded (Chrome's performance log): at the end of each test, no URL the
browser requested may hold an email or a phone number of the test data. Screenshots are kept as test
artefacts in test-artifacts/console/; with UPDATE_DOCS_SCREENSHOTS=1 the documented ones are also written
to docs/console/.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from consumer.clients import Scope
from consumer.core.reconcile import reconcile
from consumer.local.embedded import free_port
from tests.core.helpers import at, request
from tests.support.keys import new_key
from tests.support.processes import ApiServer, api_server

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / "test-artifacts" / "console"
DOCS_SCREENSHOTS = ROOT / "docs" / "console"
WAIT_S = 15
WIDTH, HEIGHT = 1280, 900

# The spec's worked example: Lorraine and Marty share a phone, one identity of two rows and one link.
HILLVALLEY = (
    ("lorraine@hillvalley.edu", "123456", "2023-04-01"),
    ("mcfly@hillvalley.edu", "123456", "2023-04-20"),
)


@pytest.fixture(scope="session")
def worker_metrics_port() -> int:
    """Where the console looks for the worker's metrics; test_pipeline starts a worker there."""
    return free_port()


@pytest.fixture(scope="session")
def console(
    database_url: str, worker_metrics_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    env = {
        "CONSOLE_WORKER_METRICS_URL": f"http://127.0.0.1:{worker_metrics_port}/metrics",
        "CONSOLE_REFRESH_S": "1",
    }
    with api_server(database_url, tmp_path_factory.mktemp("console"), env=env) as server:
        yield server


@pytest.fixture(scope="session")
def chrome() -> Iterator[webdriver.Chrome]:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # No sandbox: CI runs as root, where Chromium refuses to start with one.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WIDTH},{HEIGHT}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # An explicit driver path: Selenium Manager downloads nothing.
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def performance_log(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """Chrome's network log since the last call (reading it empties it)."""
    entries: list[dict[str, Any]] = driver.get_log("performance")  # type: ignore[no-untyped-call]
    return entries


class Browser:
    """One test's view of the console: navigation helpers, waits on conditions, screenshots."""

    def __init__(self, driver: webdriver.Chrome, base_url: str, test_name: str) -> None:
        self.driver = driver
        self.base_url = base_url
        self.test_name = test_name
        self.wait = WebDriverWait(driver, WAIT_S)

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def find(self, css: str) -> WebElement:
        return self.wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text_of(self, element_id: str) -> str:
        """An element's text read in one step: safe while htmx swaps the element for a fresh copy."""
        text: str = self.script(f"return document.getElementById('{element_id}')?.innerText ?? ''")
        return text

    def text(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "body").text

    def title_is(self, title: str) -> None:
        self.wait.until(lambda d: d.find_element(By.TAG_NAME, "h1").text == title)

    def submit(self, button: str) -> None:
        """Click a form's button and wait until the page it loads has replaced this one."""
        page = self.driver.find_element(By.TAG_NAME, "html")
        self.find(button).click()
        # While the old page is torn down, Chrome may answer "node does not belong to the document"
        # instead of a stale reference: a later poll then sees the stale reference.
        leaving = WebDriverWait(self.driver, WAIT_S, ignored_exceptions=[WebDriverException])
        leaving.until(expected_conditions.staleness_of(page))

    def sign_in(self, api_key: str) -> None:
        self.open("/console/sign-in")
        self.find("#api_key").send_keys(api_key)
        self.submit("main form button[type=submit]")
        self.title_is("Search")

    def search(self, kind: str, value: str) -> None:
        self.open("/console/search")
        self.find(f"input[name=kind][value={kind}]").click()
        field = self.find("#value")
        field.clear()
        field.send_keys(value)
        self.submit("main form button[type=submit]")

    def script(self, source: str) -> Any:
        return self.driver.execute_script(source)

    def screenshot(self, name: str, *, docs: bool = False) -> Path:
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTEFACTS / f"{self.test_name}-{name}.png"
        # The whole page, at the width it is used at: grow the window to the page's height for the shot.
        height = self.script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(WIDTH, max(HEIGHT, height + 140))
        try:
            self.driver.save_screenshot(str(path))
        finally:
            self.driver.set_window_size(WIDTH, HEIGHT)
        if docs and os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_SCREENSHOTS / f"{name}.png")
        return path

    def requested_urls(self) -> list[str]:
        """Every URL the browser asked for since the last call (pages, scripts, htmx requests)."""
        urls = []
        for entry in performance_log(self.driver):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls


@pytest.fixture
def browser(
    chrome: webdriver.Chrome, console: ApiServer, request: pytest.FixtureRequest
) -> Iterator[Browser]:
    chrome.get(console.url + "/console/sign-in")
    chrome.delete_all_cookies()
    performance_log(chrome)  # start this test's record afresh
    page = Browser(chrome, console.url, request.node.name)
    yield page
    with contextlib.suppress(WebDriverException):
        page.screenshot("last")
    personal = [u for u in page.requested_urls() if "@" in u or any(p in u for _, p, _ in HILLVALLEY)]
    assert not personal, f"personal data in requested URLs: {personal}"


TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def http(console: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=console.url + "/console", timeout=10) as client:
        yield client


def csrf(http: httpx.Client, path: str) -> str:
    match = TOKEN.search(http.get(path).text)
    assert match is not None, f"no CSRF token on {path}"
    return match.group(1)


def signed_in(http: httpx.Client, api_key: str) -> httpx.Client:
    http.post("/sign-in", data={"api_key": api_key, "csrf_token": csrf(http, "/sign-in")})
    return http


@pytest.fixture
def hillvalley(db: psycopg.Connection[Any]) -> list[int]:
    """The worked example in an empty database; returns the contact ids, oldest first."""
    return [
        reconcile(db, request(email, phone, event=f"hv-{i}", when=at(day))).contact_id or 0
        for i, (email, phone, day) in enumerate(HILLVALLEY)
    ]


@pytest.fixture
def admin_key(database_url: str) -> str:
    return new_key(database_url, [Scope.READ, Scope.ADMIN])


@pytest.fixture
def read_key(database_url: str) -> str:
    return new_key(database_url, [Scope.READ])
