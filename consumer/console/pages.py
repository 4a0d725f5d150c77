"""The console's pages: sign-in, search, identity, pipeline health (docs/console.md)."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse, Response

from consumer.api.errors import ApiError
from consumer.clients import Client, Scope
from consumer.console import display, pipeline, session
from consumer.console.access import admit
from consumer.console.identity import picture
from consumer.console.session import CsrfChecked, Reader, database
from consumer.core.lookup import LookupKind, primary_of
from consumer.normalize import IdentifierError, Normalizer

router = APIRouter()
templates = Jinja2Templates(directory=FilePath(__file__).parent / "templates")
templates.env.filters.update(mask=display.mask, when=display.when, age=display.age)

MAX_ID = 2**63 - 1
ContactId = Annotated[int, Query(ge=1, le=MAX_ID)]


class BadInput(ValueError):
    """A value typed into a form that cannot be used; the message never repeats the value."""


def render(
    request: Request, name: str, *, status: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> Response:
    operator: Client | None = getattr(request.state, "operator", None)
    return templates.TemplateResponse(
        request,
        name,
        {"operator": operator, "csrf_token": session.csrf_token(request), **context},
        status_code=status,
        headers=headers,
    )


def redirect(request: Request, name: str, **params: Any) -> Response:
    return RedirectResponse(request.url_for(name, **params), status_code=303)


@router.get("/", name="home")
async def home(request: Request) -> Response:
    return redirect(request, "search_form")


@router.get("/sign-in", name="sign_in_form")
async def sign_in_form(request: Request) -> Response:
    return render(request, "sign_in.html", title="Sign in")


@router.post("/sign-in", name="sign_in", dependencies=[CsrfChecked])
async def sign_in(request: Request, api_key: Annotated[str, Form(max_length=512)] = "") -> Response:
    key = api_key.strip()
    if not key:
        return render(request, "sign_in.html", status=401, title="Sign in", error="enter an API key")
    try:
        await admit(request, key, Scope.READ)
    except ApiError as exc:
        error = _SIGN_IN_ERRORS.get(exc.status, exc.message)
        status, headers = exc.status, exc.headers
        return render(request, "sign_in.html", status=status, headers=headers, title="Sign in", error=error)
    session.sign_in(request, key)
    return redirect(request, "search_form")


_SIGN_IN_ERRORS = {
    401: "this API key is not valid (unknown, expired or revoked)",
    403: "this API key has no read scope: the console needs read to show anything",
}


@router.post("/sign-out", name="sign_out", dependencies=[CsrfChecked])
async def sign_out(request: Request) -> Response:
    session.sign_out(request)
    return redirect(request, "sign_in_form")


@router.get("/search", name="search_form")
async def search_form(request: Request, _: Reader) -> Response:
    return render(request, "search.html", title="Search", kind="email")


@router.post("/search", name="search", dependencies=[CsrfChecked])
async def search(
    request: Request,
    _: Reader,
    kind: Annotated[Literal["email", "phone", "contact"], Form()],
    value: Annotated[str, Form(max_length=512)] = "",
) -> Response:
    """Look an identity up by a POSTed value, so no email or phone ever lands in a URL or a log line."""
    form: dict[str, Any] = {"title": "Search", "kind": kind, "value": value}
    try:
        query = lookup_value(request.app.state.api.state.normalizer, kind, value)
    except BadInput as exc:
        return render(request, "search.html", status=422, error=str(exc), **form)
    primary = await database(request).run(partial(primary_of, kind=kind, value=query))
    if primary is None:
        return render(request, "search.html", status=404, error=f"no live identity holds this {kind}", **form)
    return redirect(request, "identity", contact_id=primary)


def lookup_value(normalizer: Normalizer, kind: LookupKind, value: str) -> str | int:
    if kind == "contact":
        if not value.strip().isdigit() or not 1 <= int(value) <= MAX_ID:
            raise BadInput("a contact id is a positive whole number")
        return int(value)
    try:
        ids = normalizer.identifiers(value if kind == "email" else None, value if kind == "phone" else None)
    except IdentifierError as exc:
        raise BadInput(str(exc)) from None
    found = ids.email if kind == "email" else ids.phone
    assert found is not None
    return found


@router.get("/identities/{contact_id}", name="identity")
async def identity(
    request: Request,
    operator: Reader,
    contact_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    from_: Annotated[int | None, Query(alias="from", ge=1, le=MAX_ID)] = None,
    to: ContactId | None = None,
) -> Response:
    start = from_ or contact_id
    guardrails = request.app.state.guardrails
    work = partial(picture, contact_id=start, to=to, client=operator, guardrails=guardrails)
    found = await database(request).run(work)
    if found is None:
        message = "no live contact has this id"
        return render(request, "error.html", status=404, title="Not found", message=message)
    title = f"Identity #{found.view.primary_id}"
    graph = display.graph(found, full_values=Scope.READ in operator.scopes)
    return render(request, "identity.html", title=title, p=found, graph=graph, start=start, to=to)


@router.get("/pipeline", name="pipeline")
async def pipeline_page(request: Request, _: Reader) -> Response:
    return render(request, "pipeline.html", title="Pipeline health", health=await _health(request))


@router.get("/pipeline/panel", name="pipeline_panel")
async def pipeline_panel(request: Request, _: Reader) -> Response:
    """The figures alone, for the page to refresh (htmx) and its charts to plot."""
    return render(request, "pipeline_panel.html", health=await _health(request))


async def _health(request: Request) -> pipeline.Health:
    state = request.app.state
    db = database(request)
    backlog, oldest = await db.run(pipeline.outbox_health)
    worker = await pipeline.worker_stats(state.worker_metrics_url)
    at = time.time()
    rate = None if worker is None else state.rate.rate(at, worker.events_processed)
    return pipeline.Health(at, backlog, oldest, worker, rate, await db.run(pipeline.recent_auto_blocks))
