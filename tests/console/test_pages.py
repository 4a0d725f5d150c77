"""Sign-in, search and the identity page, in the browser."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions

from consumer.core import reconcile
from tests.console.conftest import HILLVALLEY, Browser, signed_in
from tests.core.helpers import at, request


def test_sign_in_then_search_the_worked_example_and_see_its_graph(
    browser: Browser, hillvalley: list[int], admin_key: str
) -> None:
    browser.sign_in(admin_key)
    browser.search("email", "  Lorraine@HillValley.edu ")

    first, second = hillvalley
    browser.title_is(f"Identity #{first}")
    assert browser.driver.current_url.endswith(f"/console/identities/{first}")
    browser.wait.until(lambda d: d.execute_script("return Boolean(window.identityGraph)"))
    assert browser.script("return identityGraph.nodes().length") == 2
    assert browser.script("return identityGraph.edges().length") == 1
    assert browser.script("return identityGraph.nodes('[?primary]').map(n => n.id())") == [str(first)]
    label = browser.script("return identityGraph.edges()[0].data('label')")
    assert label == "phone \u2022\u2022\u202256", "edges show the kind and a masked value"
    assert browser.script("return identityGraph.edges()[0].data('full')") == "phone: 123456"
    assert "lorraine@hillvalley.edu, mcfly@hillvalley.edu" in browser.text()

    # Why are they linked: the path between the two rows is drawn highlighted and told in text.
    browser.find("#from").send_keys(f"#{first}")
    browser.find("#to").send_keys(f"#{second}")
    browser.submit("#why-h ~ button")
    browser.find("#path ol.path")
    assert "linked through 1 shared value(s)" in browser.find("#path").text
    highlighted = "return window.identityGraph && identityGraph.edges('.path').length"
    browser.wait.until(lambda d: d.execute_script(highlighted))
    on_path = browser.script("return identityGraph.edges('.path').map(e => e.id())")
    assert on_path == [f"{first}-{second}-phone"]
    browser.screenshot("identity", docs=True)


def test_search_by_phone_and_by_contact_id_and_nothing_found(
    browser: Browser, hillvalley: list[int], admin_key: str, db: psycopg.Connection[Any]
) -> None:
    browser.sign_in(admin_key)
    browser.search("phone", "12-34-56")
    browser.title_is(f"Identity #{hillvalley[0]}")
    browser.search("contact", str(hillvalley[1]))
    browser.title_is(f"Identity #{hillvalley[0]}")

    rows_before = db.execute("SELECT count(*) FROM contact").fetchone()
    browser.search("email", "doc@hillvalley.edu")
    assert browser.find("#search-error").text == "no live identity holds this email"
    browser.screenshot("search", docs=True)
    assert db.execute("SELECT count(*) FROM contact").fetchone() == rows_before, "a search creates nothing"
    browser.search("contact", "not-a-number")
    assert "positive whole number" in browser.find("#search-error").text


def test_keyboard_only_search(browser: Browser, hillvalley: list[int], admin_key: str) -> None:
    browser.sign_in(admin_key)
    browser.open("/console/search")
    # The value field has focus on arrival; the radio group and the button are reachable with Tab.
    active = browser.driver.switch_to.active_element
    assert active.get_attribute("id") == "value"
    page = browser.find("html")
    active.send_keys(HILLVALLEY[1][0], Keys.TAB, Keys.ENTER)
    browser.wait.until(expected_conditions.staleness_of(page))
    browser.title_is(f"Identity #{hillvalley[0]}")


def test_every_page_needs_a_sign_in(browser: Browser, hillvalley: list[int]) -> None:
    for path in ("/console/search", f"/console/identities/{hillvalley[0]}", "/console/pipeline"):
        browser.open(path)
        browser.title_is("Sign in")
    browser.screenshot("sign-in", docs=True)


UNLABELLED = """return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
  .map(e => e.outerHTML)"""

FIRST_FOCUSABLE = """return document.querySelector(
  'a[href], button, input:not([type=hidden]), select, textarea, [tabindex]:not([tabindex="-1"])').className"""


def test_every_page_fits_1280_px_and_labels_every_control(
    browser: Browser, hillvalley: list[int], admin_key: str
) -> None:
    browser.sign_in(admin_key)
    for path in (
        "/console/search",
        f"/console/identities/{hillvalley[0]}?from={hillvalley[0]}&to={hillvalley[1]}",
        "/console/blocked-values",
        "/console/erasure",
        "/console/pipeline",
    ):
        browser.open(path)
        browser.find("h1")
        assert browser.script("return document.documentElement.scrollWidth") <= 1280, path
        assert browser.script(UNLABELLED) == [], path
        # Tab order is document order (no positive tabindex), and it starts with the skip link.
        assert browser.script(FIRST_FOCUSABLE) == "skip", path
        assert not browser.all("[tabindex]:not([tabindex='-1']):not([tabindex='0'])"), path


def test_the_history_shows_the_merge_that_joined_two_customers(
    http: httpx.Client, admin_key: str, db: psycopg.Connection[Any]
) -> None:
    story = [
        ("george@hillvalley.edu", "919191", "2023-04-11"),
        ("biffsucks@hillvalley.edu", "717171", "2023-04-21"),
        ("george@hillvalley.edu", "717171", "2023-04-22"),
    ]
    george, biff, bridge = (
        reconcile(db, request(email, phone, event=f"g-{i}", when=at(day))).contact_id
        for i, (email, phone, day) in enumerate(story)
    )
    assert bridge is None, "both values were known: the merge inserted no row"
    page = signed_in(http, admin_key).get(f"/identities/{george}").text
    assert f"merge: #{biff} joined #{george}" in page
