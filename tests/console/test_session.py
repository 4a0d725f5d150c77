"""Sign-in sessions and CSRF protection, over plain HTTP against the real API process."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg

from consumer.clients import Scope, create_client, revoke_client
from tests.console.conftest import Browser, csrf, signed_in
from tests.support.keys import UNKNOWN_KEY, new_key
from tests.support.polling import wait_until
from tests.support.processes import ApiServer


def test_sign_in_refuses_a_form_without_the_sessions_csrf_token(http: httpx.Client, admin_key: str) -> None:
    token = csrf(http, "/sign-in")
    for data in ({"api_key": admin_key}, {"api_key": admin_key, "csrf_token": token[:-1] + "x"}):
        refused = http.post("/sign-in", data=data)
        assert refused.status_code == 403
        assert "security token" in refused.text
    # A token is worth nothing without the session it belongs to.
    with httpx.Client(base_url=http.base_url, timeout=10) as stranger:
        assert stranger.post("/sign-in", data={"api_key": admin_key, "csrf_token": token}).status_code == 403
    signed_in = http.post("/sign-in", data={"api_key": admin_key, "csrf_token": token})
    assert signed_in.status_code == 303
    assert signed_in.headers["location"].endswith("/console/search")


def test_every_state_changing_form_checks_the_token(http: httpx.Client, admin_key: str) -> None:
    http.post("/sign-in", data={"api_key": admin_key, "csrf_token": csrf(http, "/sign-in")})
    # Signing in starts a new session, with a new token: the one from before no longer works.
    token = csrf(http, "/search")
    for path, data in (
        ("/search", {"kind": "email", "value": "lorraine@hillvalley.edu"}),
        ("/sign-out", {}),
    ):
        assert http.post(path, data=data).status_code == 403, path
        assert http.post(path, data={**data, "csrf_token": "forged"}).status_code == 403, path
    assert http.get("/search").status_code == 200, "the refused sign-out left the session alone"
    assert http.post("/sign-out", data={"csrf_token": token}).status_code == 303
    assert http.get("/search").status_code == 303, "signed out"


def test_the_session_cookie_is_http_only_strict_and_scoped_to_the_console(
    http: httpx.Client, admin_key: str
) -> None:
    response = http.post("/sign-in", data={"api_key": admin_key, "csrf_token": csrf(http, "/sign-in")})
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/console" in cookie
    assert admin_key not in response.headers["location"]
    assert response.headers["content-security-policy"].startswith("default-src 'self'")


def test_a_wrong_key_is_refused_in_the_browser(browser: Browser) -> None:
    browser.open("/console/sign-in")
    browser.find("#api_key").send_keys(" ")
    browser.submit("main form button[type=submit]")
    assert browser.find("#sign-in-error").text == "enter an API key"
    assert browser.find("#api_key").get_attribute("aria-invalid") == "true"


def test_bad_ids_get_a_page_not_an_error(http: httpx.Client, admin_key: str) -> None:
    http.post("/sign-in", data={"api_key": admin_key, "csrf_token": csrf(http, "/sign-in")})
    for path in ("/identities/0", f"/identities/{2**63}", "/identities/1?to=x"):
        answer = http.get(path)
        assert answer.status_code == 422, path
        assert answer.headers["content-type"].startswith("text/html")
    assert http.get("/identities/999").status_code == 404


def test_a_read_key_sees_no_admin_link_and_admin_forms_are_refused(
    browser: Browser, read_key: str, console: ApiServer, hillvalley: list[int], db: psycopg.Connection[Any]
) -> None:
    browser.sign_in(read_key)
    browser.open(f"/console/identities/{hillvalley[0]}")
    nav = browser.find("nav").text
    assert "Search" in nav
    assert "Blocked values" not in nav
    assert "Erasure" not in nav
    assert not browser.all("form[action*='blocked-values'], form[action*='erasure']")
    # Whatever the page shows, the server refuses: the same key, posting admin forms directly.
    with httpx.Client(base_url=console.url + "/console", timeout=10) as http:
        token = csrf(signed_in(http, read_key), "/search")
        for path, data in (
            ("/blocked-values/preview", {"kind": "phone", "value": "123456"}),
            ("/blocked-values", {"kind": "phone", "value": "123456"}),
            ("/blocked-values/1/preview", {}),
            ("/blocked-values/1/remove", {}),
            ("/erasure/preview", {"kind": "email", "value": "lorraine@hillvalley.edu"}),
            ("/erasure", {"kind": "email", "value": "lorraine@hillvalley.edu"}),
        ):
            assert http.post(path, data={**data, "csrf_token": token}).status_code == 403, path
        for path in ("/blocked-values", "/erasure", "/erasures/1"):
            assert http.get(path).status_code == 403, path
    assert db.execute("SELECT count(*) FROM contact WHERE deleted_at IS NULL").fetchone() == (2,)


def test_a_key_without_read_cannot_sign_in(http: httpx.Client, database_url: str) -> None:
    key = new_key(database_url, [Scope.IDENTIFY, Scope.ADMIN])
    refused = http.post("/sign-in", data={"api_key": key, "csrf_token": csrf(http, "/sign-in")})
    assert refused.status_code == 403
    assert "no read scope" in refused.text
    unknown = http.post("/sign-in", data={"api_key": UNKNOWN_KEY, "csrf_token": csrf(http, "/sign-in")})
    assert unknown.status_code == 401
    assert "not valid" in unknown.text


def test_revoking_a_key_ends_its_console_session(http: httpx.Client, database_url: str) -> None:
    name = f"revoked-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        key = create_client(conn, name, [Scope.READ])
    assert signed_in(http, key).get("/search").status_code == 200
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert revoke_client(conn, name)
    # The API trusts a looked-up key for API_AUTH_CACHE_TTL_S (5 s by default), then asks again.
    wait_until(lambda: http.get("/search").status_code == 303, 30, "the session to end")
    assert http.get("/search").headers["location"].endswith("/console/sign-in")


def test_console_reads_are_audited(
    http: httpx.Client, admin_key: str, hillvalley: list[int], db: psycopg.Connection[Any]
) -> None:
    first, second = hillvalley
    page = signed_in(http, admin_key).get(f"/identities/{first}", params={"from": first, "to": second})
    assert page.status_code == 200
    rows = db.execute("SELECT action, ids FROM audit_log ORDER BY id").fetchall()
    assert rows == [("contact.read", [first, second]), ("contact.explain", [first, second])]
