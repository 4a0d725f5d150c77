"""Blocking, unblocking and erasing from the console, each previewed then confirmed, in the browser."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from consumer.core.reconcile import reconcile
from tests.console.conftest import HILLVALLEY, Browser
from tests.core.helpers import at, request

HUB_PHONE = "5550000"
# Three customers typed the same call-centre phone: under rules 3-7 alone, one identity of three rows.
HUB = [(f"caller{i}@hillvalley.edu", HUB_PHONE, f"2024-01-0{i + 1}") for i in range(3)]


@pytest.fixture
def hub(db: psycopg.Connection[Any]) -> list[int]:
    return [
        reconcile(db, request(email, phone, event=f"hub-{i}", when=at(day))).contact_id or 0
        for i, (email, phone, day) in enumerate(HUB)
    ]


def graph_size(browser: Browser) -> tuple[int, int]:
    browser.wait.until(lambda d: d.execute_script("return Boolean(window.identityGraph)"))
    nodes, edges = browser.script("return [identityGraph.nodes().length, identityGraph.edges().length]")
    return nodes, edges


def test_a_block_preview_shows_the_split_and_changes_nothing(
    browser: Browser, hub: list[int], admin_key: str, db: psycopg.Connection[Any]
) -> None:
    browser.sign_in(admin_key)
    browser.open("/console/blocked-values")
    browser.find("input[name=kind][value=phone]").click()
    browser.find("#value").send_keys(HUB_PHONE)
    browser.submit("main form.stack button[type=submit]")
    assert browser.find("#effect-h").text == "Blocking phone \u2022\u2022\u202200 would split 1 identity"
    now, afterwards = browser.all("#effect ul.views")
    assert now.text.count("Identity #") == 1
    assert "(3 rows)" in now.text
    assert [li.text.split(":")[0] for li in afterwards.find_elements("css selector", "li")] == [
        f"Identity #{i}" for i in hub
    ]
    browser.screenshot("block-preview", docs=True)
    assert db.execute("SELECT count(*) FROM blocked_value").fetchone() == (0,)
    assert db.execute("SELECT count(DISTINCT coalesce(linked_id, id)) FROM contact").fetchone() == (1,)


def test_block_a_hub_value_then_unblock_it(browser: Browser, hub: list[int], admin_key: str) -> None:
    browser.sign_in(admin_key)
    browser.open(f"/console/identities/{hub[0]}")
    assert graph_size(browser) == (3, 2)

    browser.open("/console/blocked-values")
    browser.find("input[name=kind][value=phone]").click()
    browser.find("#value").send_keys(HUB_PHONE)
    browser.submit("main form.stack button[type=submit]")
    browser.submit("#confirm")
    assert browser.find("#effect-h").text.startswith("Blocked phone")
    browser.open(f"/console/identities/{hub[0]}")
    assert graph_size(browser) == (1, 0), "the identity split on screen"

    browser.open("/console/blocked-values?reason=operator")
    assert HUB_PHONE[-2:] in browser.find("#blocks tbody").text
    browser.screenshot("blocked-values", docs=True)
    browser.submit("#blocks tbody button")
    assert browser.find("#effect-h").text.endswith("would merge 3 identities")
    browser.submit("#confirm")
    browser.open(f"/console/identities/{hub[0]}")
    assert graph_size(browser) == (3, 2), "unblocking merged them again"


def test_erase_with_a_preview(
    browser: Browser, hillvalley: list[int], admin_key: str, db: psycopg.Connection[Any]
) -> None:
    lorraine, marty = hillvalley
    browser.sign_in(admin_key)
    browser.open("/console/erasure")
    browser.find("input[name=kind][value=email]").click()
    browser.find("#value").send_keys(HILLVALLEY[0][0])
    browser.submit("main form button[type=submit]")
    assert f"Rows deleted: #{lorraine}." in browser.text()
    browser.screenshot("erasure-preview", docs=True)
    assert db.execute("SELECT count(*) FROM contact WHERE deleted_at IS NULL").fetchone() == (2,)

    browser.submit("#confirm")
    browser.find("#events")
    assert "/console/erasures/" in browser.driver.current_url
    events = browser.find("#events").text
    assert "identity.erased" in events
    assert "identity.split" in events
    assert f"#{marty}" in events
    browser.screenshot("erasure-done", docs=True)
