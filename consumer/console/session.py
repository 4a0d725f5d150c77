"""Console sessions: the API key in a signed, HttpOnly cookie, and a CSRF token for every form.

Starlette's SessionMiddleware signs the cookie (itsdangerous), so it cannot be forged or altered; the key
never appears in a URL or in JavaScript. Each state-changing form carries the session's CSRF token
(a synchronizer token), checked before the request is handled; the cookie is also SameSite=Strict.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request

from consumer.api.db import Database
from consumer.clients import Client, Scope
from consumer.console.access import admit

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_KEY = "api_key"
_CSRF = "csrf"


class SignInRequired(Exception):
    """No valid sign-in: the console answers with a redirect to its sign-in page."""


class Forbidden(Exception):
    """Signed in, but without the scope this needs, or a form without a valid CSRF token: 403."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def database(request: Request) -> Database:
    """The API's connection pool: the console is mounted in the API app, which owns it."""
    db: Database = request.app.state.api.state.database
    return db


def csrf_token(request: Request) -> str:
    """This session's CSRF token, created on first use."""
    token = request.session.get(_CSRF)
    if not isinstance(token, str):
        token = request.session[_CSRF] = secrets.token_urlsafe(32)
    return token


async def check_csrf(request: Request) -> None:
    """Refuse a state-changing request whose form field (or htmx header) does not carry the token."""
    expected = request.session.get(_CSRF)
    sent = (await request.form()).get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    valid = isinstance(expected, str) and isinstance(sent, str) and secrets.compare_digest(sent, expected)
    if not valid:
        raise Forbidden("the form's security token is missing or stale; reload the page and try again")


def sign_in(request: Request, api_key: str) -> None:
    # A new session on sign-in: a token seen before it (session fixation) is no use afterwards.
    request.session.clear()
    request.session[_KEY] = api_key
    csrf_token(request)


def sign_out(request: Request) -> None:
    request.session.clear()


async def _reader(request: Request) -> Client:
    """The signed-in client, which needs the read scope to see anything."""
    api_key = request.session.get(_KEY)
    if not isinstance(api_key, str):
        raise SignInRequired
    client = await admit(request, api_key, Scope.READ)
    request.state.operator = client
    return client


async def _admin(client: Annotated[Client, Depends(_reader)]) -> Client:
    if Scope.ADMIN not in client.scopes:
        raise Forbidden("this needs an API key with the admin scope")
    return client


Reader = Annotated[Client, Depends(_reader)]
Admin = Annotated[Client, Depends(_admin)]
CsrfChecked = Depends(check_csrf)
