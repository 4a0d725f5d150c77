"""Access control (DESIGN.md rule 19): every route x {no key, bad key, revoked key, key without the
route's scope, key with it}, rate limits, the per-client idempotency namespace and the audit log.

The routes come from the application itself: its OpenAPI document lists every route with the scope
it requires (from its dependency, `ReadClient` or `AdminClient`, or declared by `/identify`, which
checks its key itself), so a route added later is covered without touching this file.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from consumer.api.app import create_app
from consumer.clients import Scope, revoke_client
from consumer.config import Settings
from tests.support.keys import UNKNOWN_KEY, bearer, new_key
from tests.support.processes import ApiServer, api_server

OPEN_ROUTES = {"/healthz", "/readyz", "/metrics"}
# A read that never finds anyone, so its 404 shows the call got through whatever the database holds.
NOBODY = f"/contacts/{2**63 - 1}"
OPENAPI = create_app(Settings(log_level="ERROR")).openapi()


def required_scope(operation: dict[str, Any]) -> Scope | None:
    """The scope of the operation's one security requirement; None for an open route."""
    match operation.get("security"):
        case None:
            return None
        case [{"apiKey": [scope]}]:
            return Scope(scope)
    raise AssertionError(f"unexpected security requirement {operation['security']}")


ROUTES = [
    (method.upper(), path, required_scope(operation))
    for path, item in OPENAPI["paths"].items()
    for method, operation in item.items()
]
GUARDED = [(method, path, scope) for method, path, scope in ROUTES if path not in OPEN_ROUTES]


def client_name(key: str, db: psycopg.Connection[Any]) -> str:
    row = db.execute(
        "SELECT c.name FROM api_key k JOIN api_client c ON c.id = k.client_id WHERE k.key_id = %s",
        [key[4:16]],
    ).fetchone()
    db.commit()
    assert row is not None
    return str(row[0])


def call(api: ApiServer, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    """The route with every path parameter 1 and, for a body, an empty object: enough to pass or
    fail the access check, which comes before anything else."""
    url = api.url + re.sub(r"\{[^}]+\}", "1", path)
    body: dict[str, object] | None = {} if method in {"POST", "PUT", "PATCH"} else None
    return httpx.request(method, url, json=body, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def guarded(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """No key cache, so a revocation shows at once (failures are unlimited on test servers)."""
    env = {"API_AUTH_CACHE_TTL_S": "0"}
    with api_server(database_url, tmp_path_factory.mktemp("guarded"), env=env) as server:
        yield server


@pytest.fixture(scope="module")
def keys(database_url: str) -> dict[str, str]:
    found = {"revoked": new_key(database_url)}
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT c.name FROM api_key k JOIN api_client c ON c.id = k.client_id WHERE k.key_id = %s",
            [found["revoked"][4:16]],
        ).fetchone()
        assert row is not None
        assert revoke_client(conn, row[0])
    for scope in Scope:
        found[f"only {scope}"] = new_key(database_url, [scope])
        found[f"all but {scope}"] = new_key(database_url, set(Scope) - {scope})
    return found


def test_every_route_but_health_readiness_and_metrics_needs_a_scope() -> None:
    assert {path for _, path, _ in ROUTES} >= OPEN_ROUTES | {"/identify", "/contacts/{contact_id}"}
    for method, path, scope in ROUTES:
        assert (scope is None) == (path in OPEN_ROUTES), f"{method} {path} requires {scope}"
    scopes = {path: scope for _, path, scope in GUARDED}
    assert scopes["/identify"] == Scope.IDENTIFY
    assert scopes["/contacts/{contact_id}"] == Scope.READ


@pytest.mark.parametrize(("method", "path", "scope"), GUARDED, ids=[f"{m} {p}" for m, p, _ in GUARDED])
@pytest.mark.parametrize(
    "case",
    ["no key", "not a key", "unknown key", "revoked key", "key without the scope", "key with the scope"],
)
def test_access_to_every_route(
    guarded: ApiServer, keys: dict[str, str], method: str, path: str, scope: Scope, case: str
) -> None:
    headers = {
        "no key": {},
        "not a key": {"Authorization": "Bearer hunter2"},
        "unknown key": bearer(UNKNOWN_KEY),
        "revoked key": bearer(keys["revoked"]),
        "key without the scope": bearer(keys[f"all but {scope}"]),
        "key with the scope": bearer(keys[f"only {scope}"]),
    }[case]

    response = call(guarded, method, path, headers)

    if case == "key with the scope":
        assert response.status_code not in {401, 403, 429}, response.text
        assert response.status_code < 500, response.text
        return
    expected = (403, "forbidden") if case == "key without the scope" else (401, "unauthorized")
    assert (response.status_code, response.json()["error"]["code"]) == expected, response.text
    assert response.json()["error"]["message"]
    if expected[0] == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_basic_or_empty_authorization_header_is_a_401(guarded: ApiServer) -> None:
    for value in ("Basic dXNlcjpwYXNz", "Bearer", "", f"Token {guarded.key}"):
        response = httpx.post(guarded.url + "/identify", json={}, headers={"Authorization": value})
        assert response.status_code == 401, value


def test_a_revocation_takes_effect_within_the_cache_lifetime(database_url: str, tmp_path: Path) -> None:
    key = new_key(database_url)
    with api_server(database_url, tmp_path, env={"API_AUTH_CACHE_TTL_S": "1"}) as api:
        assert httpx.get(api.url + NOBODY, headers=bearer(key)).status_code == 404
        with psycopg.connect(database_url, autocommit=True) as conn:
            assert revoke_client(conn, client_name(key, conn))
        deadline = time.monotonic() + 20
        while httpx.get(api.url + NOBODY, headers=bearer(key)).status_code != 401:
            assert time.monotonic() < deadline, "the revoked key is still accepted"
            time.sleep(0.1)


def test_a_cached_key_needs_no_lookup(database_url: str, tmp_path: Path) -> None:
    """Within the cache lifetime the process does not ask the database again: proven by a revocation
    it cannot have seen yet."""
    key = new_key(database_url)
    with api_server(database_url, tmp_path, env={"API_AUTH_CACHE_TTL_S": "600"}) as api:
        assert httpx.get(api.url + NOBODY, headers=bearer(key)).status_code == 404
        with psycopg.connect(database_url, autocommit=True) as conn:
            assert revoke_client(conn, client_name(key, conn))
        assert httpx.get(api.url + NOBODY, headers=bearer(key)).status_code == 404


def test_over_the_rate_limit_is_a_429_with_a_retry_after_that_holds(
    api: ApiServer, database_url: str
) -> None:
    limited = bearer(new_key(database_url, rate_per_s=1, burst=2))
    statuses = [httpx.get(api.url + NOBODY, headers=limited).status_code for _ in range(2)]
    assert statuses == [404, 404]

    refused = httpx.get(api.url + NOBODY, headers=limited)

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.headers["retry-after"] == "1"
    assert httpx.get(api.url + NOBODY, headers=api.headers).status_code == 404, "others go on"
    time.sleep(int(refused.headers["retry-after"]))  # what the client was told to do
    assert httpx.get(api.url + NOBODY, headers=limited).status_code == 404


def test_the_rate_limit_holds_across_api_processes(database_url: str, tmp_path: Path) -> None:
    """Two uvicorn workers share one bucket: a burst of 5 is 5 calls in all, whichever worker answers."""
    limited = bearer(new_key(database_url, rate_per_s=0.001, burst=5))
    with api_server(database_url, tmp_path, workers=2) as api:
        statuses = []
        for _ in range(20):
            # A new connection each time, so the kernel hands calls to both workers.
            with httpx.Client(base_url=api.url, headers=limited) as http:
                statuses.append(http.get(NOBODY).status_code)
    assert sorted(statuses) == [404] * 5 + [429] * 15


def test_failed_authentications_are_limited_per_peer(database_url: str, tmp_path: Path) -> None:
    """No key cache: every call looks its key up, so the lockout is what stops the lookups."""
    env = {"API_AUTH_FAILURE_BURST": "3", "API_AUTH_FAILURES_PER_S": "0.2", "API_AUTH_CACHE_TTL_S": "0"}
    with api_server(database_url, tmp_path, env=env) as api:
        assert httpx.get(api.url + NOBODY, headers=api.headers).status_code == 404
        statuses = [httpx.get(api.url + NOBODY, headers=bearer(UNKNOWN_KEY)).status_code for _ in range(4)]
        assert statuses == [401, 401, 401, 429]
        refused = httpx.get(api.url + NOBODY)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 5
        # A client whose key this process has seen valid keeps working from the same address...
        assert httpx.get(api.url + NOBODY, headers=api.headers).status_code == 404
        # ...while a key it has never seen waits, like every other unknown key from there.
        assert httpx.get(api.url + NOBODY, headers=bearer(new_key(database_url))).status_code == 429


def test_idempotency_keys_are_scoped_per_client(
    api: ApiServer, database_url: str, db: psycopg.Connection[Any]
) -> None:
    other = bearer(new_key(database_url))
    key = {"Idempotency-Key": "order-42"}
    mine = httpx.post(
        api.url + "/identify", json={"email": "marty@hillvalley.edu"}, headers=api.headers | key
    )
    theirs = httpx.post(api.url + "/identify", json={"email": "biff@hillvalley.edu"}, headers=other | key)
    assert (mine.status_code, theirs.status_code) == (200, 200), (
        "the same key from two clients is no conflict"
    )
    assert "idempotent-replayed" not in theirs.headers

    again = httpx.post(api.url + "/identify", json={"email": "biff@hillvalley.edu"}, headers=other | key)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == theirs.json()
    reused = httpx.post(
        api.url + "/identify", json={"email": "doc@hillvalley.edu"}, headers=api.headers | key
    )
    assert reused.status_code == 409
    rows = db.execute("SELECT count(*) FROM processed_event WHERE event_id LIKE '%/order-42'").fetchone()
    assert rows == (2,)


def test_reading_a_contact_is_audited(
    client: httpx.Client, api: ApiServer, db: psycopg.Connection[Any]
) -> None:
    first = client.post("/identify", json={"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"})
    client.post("/identify", json={"email": "mcfly@hillvalley.edu", "phoneNumber": "123456"})
    primary = first.json()["contact"]["primaryContactId"]
    contact = client.get(f"/contacts/{primary}").json()["contact"]
    assert client.get("/contacts/999999").status_code == 404

    rows = db.execute("SELECT client, action, ids, at <= now() FROM audit_log ORDER BY id").fetchall()
    db.commit()
    assert rows == [
        (client_name(api.key, db), "contact.read", [primary, *contact["secondaryContactIds"]], True)
    ]


def test_the_openapi_document_states_the_scheme_and_each_route_s_scope(api: ApiServer) -> None:
    document = httpx.get(api.url + "/openapi.json").json()
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "idk_…",
        "description": document["components"]["securitySchemes"]["apiKey"]["description"],
    }
    for method, path, scope in ROUTES:
        operation = document["paths"][path][method.lower()]
        if scope is None:
            assert "security" not in operation, path
        else:
            assert operation["security"] == [{"apiKey": [scope.value]}], path
            assert {"401", "403", "429"} <= set(operation["responses"]), path


def test_auth_off_opens_every_route_and_says_so(
    database_url: str, tmp_path: Path, db: psycopg.Connection[Any]
) -> None:
    with api_server(database_url, tmp_path, env={"API_AUTH": "off", "LOG_LEVEL": "INFO"}) as api:
        answer = httpx.post(api.url + "/identify", json={"email": "doc@hillvalley.edu"})
        assert answer.status_code == 200
        primary = answer.json()["contact"]["primaryContactId"]
        assert httpx.get(f"{api.url}/contacts/{primary}").status_code == 200
    assert "API_AUTH=off: EVERY ROUTE IS OPEN" in api.log_path.read_text()
    assert db.execute("SELECT client FROM audit_log").fetchall() == [("anonymous",)]


def test_admin_actions_are_audited_and_name_the_client(
    client: httpx.Client, api: ApiServer, db: psycopg.Connection[Any]
) -> None:
    created = client.post("/blocked-values", json={"phoneNumber": "555 0100", "reason": "the shop's till"})
    assert created.status_code == 201, created.text
    block = created.json()["block"]
    assert client.get("/blocked-values").json()["items"] == [block]
    assert client.delete(f"/blocked-values/{block['id']}").status_code == 200

    name = client_name(api.key, db)
    assert block["addedBy"] == name
    rows = db.execute("SELECT client, action, ids FROM audit_log ORDER BY id").fetchall()
    db.commit()
    assert rows == [
        (name, "blocked_value.add", [block["id"]]),
        (name, "blocked_value.list", [block["id"]]),
        (name, "blocked_value.remove", [block["id"]]),
    ]
    assert "0100" not in str(rows)
