"""GET /contacts/{id}: the consolidated identity of the cluster that holds any contact id."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg


def test_any_id_of_a_merged_cluster_resolves_to_it(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    george = client.post("/identify", json={"email": "george@hillvalley.edu", "phoneNumber": "919191"}).json()
    biff = client.post(
        "/identify", json={"email": "biffsucks@hillvalley.edu", "phoneNumber": "717171"}
    ).json()
    merged = client.post("/identify", json={"email": "george@hillvalley.edu", "phoneNumber": "717171"}).json()

    demoted = biff["contact"]["primaryContactId"]
    for contact_id in (george["contact"]["primaryContactId"], demoted):
        response = client.get(f"/contacts/{contact_id}")
        assert response.status_code == 200
        assert response.json() == merged


def test_unknown_and_deleted_ids_are_a_404(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    contact = client.post("/identify", json={"email": "lorraine@hillvalley.edu"}).json()["contact"]
    primary = contact["primaryContactId"]

    missing = client.get(f"/contacts/{primary + 1000}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "contact_not_found"

    db.execute("UPDATE contact SET deleted_at = now() WHERE id = %s", [primary])
    db.commit()
    assert client.get(f"/contacts/{primary}").status_code == 404
