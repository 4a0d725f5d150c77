"""An API process's cache of blocked values (docs/guardrails.md), in process: shared by its calls, its
blocklist routes and its console, so an unblock through this process is forgotten at once."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Mount

from consumer.api.app import create_app
from consumer.config import Settings
from consumer.core import Guardrails
from consumer.core.blocklist import BlockedCache, value_hash

HUB = "5550100"


@pytest.fixture
def app(db: psycopg.Connection[Any], database_url: str) -> Iterator[FastAPI]:
    """An API app on the emptied database, without access control (its routes are not under test)."""
    try:
        yield create_app(Settings(database_url=database_url, api_auth=False, log_level="ERROR"))
    finally:
        gc.unfreeze()  # the lifespan freezes the heap it finds: this test's too


def cache_of(app: FastAPI) -> BlockedCache:
    guard: Guardrails = app.state.guard
    assert guard.blocked_cache is not None
    return guard.blocked_cache


def test_an_unblock_through_the_api_forgets_the_value_at_once(app: FastAPI) -> None:
    hub = value_hash("phone", HUB, app.state.guard.hash_key)
    with TestClient(app) as http:
        doc = http.post("/identify", json={"email": "doc@hillvalley.edu", "phoneNumber": HUB}).json()
        block = http.post("/blocked-values", json={"phoneNumber": HUB}).json()["block"]
        http.post("/identify", json={"email": "marty@hillvalley.edu", "phoneNumber": HUB})
        assert hub in cache_of(app), "the call found the phone blocked"

        assert http.delete(f"/blocked-values/{block['id']}").status_code == 200

        assert hub not in cache_of(app)
        biff = http.post("/identify", json={"email": "biff@hillvalley.edu", "phoneNumber": HUB}).json()
    assert biff["contact"]["primaryContactId"] == doc["contact"]["primaryContactId"]


def test_the_console_shares_the_cache() -> None:
    app = create_app(Settings(log_level="ERROR"))
    (console,) = [route.app for route in app.routes if isinstance(route, Mount) and route.path == "/console"]
    assert isinstance(console, FastAPI)
    assert console.state.guardrails is app.state.guard


def test_a_ttl_of_zero_turns_the_cache_off() -> None:
    app = create_app(Settings(api_blocklist_cache_ttl_s=0, log_level="ERROR"))
    assert app.state.guard.blocked_cache is None
