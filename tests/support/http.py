"""Checking the API's answers: the one error shape (consumer/api/errors.py)."""

from __future__ import annotations

from typing import Any

import httpx

# The personal data the error tests send, which no error body may echo.
EMAIL = "marty@hillvalley.edu"
PHONE = "5550199"


def error(response: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """The body's `error` object, after checking the status, the shape and that nothing is echoed."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    detail: dict[str, Any] = body["error"]
    assert detail["code"] == code
    assert detail["field"] == field
    assert detail["message"]
    assert EMAIL not in response.text.lower()
    assert PHONE not in response.text
    return detail
