"""Who is signed in to the console and what they may do: the API's own guard, clients and scopes (rule 19).

Every console request goes through the same `AccessControl.admit` as an API call with that key: the key is
checked (a revoked key is refused within API_AUTH_CACHE_TTL_S), the client's rate limit applies, and
failed sign-ins count against the caller's address like failed API calls.
"""

from __future__ import annotations

from fastapi import Request

from consumer.api.auth import AccessControl
from consumer.clients import Client, Scope


async def admit(request: Request, api_key: str | None, scope: Scope) -> Client:
    """The client owning `api_key` if it holds `scope`; raises the API's 401, 403 or 429 `ApiError`."""
    access: AccessControl = request.app.state.api.state.access
    return await access.admit(request, api_key, scope)
