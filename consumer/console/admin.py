"""Blocked values and erasure pages (admin scope): rules 12, 16 and 17 through the core.

Each change is a two-step form: a preview (the core call, rolled back) and a confirmation.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Form, Path, Query, Request
from starlette.responses import Response

from consumer.clients import Client
from consumer.console import lifecycle
from consumer.console.lifecycle import Effect, Kind, Reason
from consumer.console.pages import MAX_ID, lookup_value, redirect, render
from consumer.console.session import Admin, CsrfChecked, database
from consumer.core.blocking import BlockRefused

router = APIRouter()

KindField = Annotated[Literal["email", "phone"], Form()]
ValueField = Annotated[str, Form(max_length=512)]
Id = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.get("/blocked-values", name="blocked_values")
async def blocked_values(
    request: Request, _: Admin, reason: Annotated[Reason | None, Query()] = None
) -> Response:
    work = partial(lifecycle.blocks, reason=reason)
    return await _page(request, "blocked_values.html", "Blocked values", work, reason=reason)


@router.post("/blocked-values/preview", name="block_preview", dependencies=[CsrfChecked])
async def block_preview(request: Request, operator: Admin, kind: KindField, value: ValueField) -> Response:
    return await _value_change(request, operator, lifecycle.block, "block", kind, value)


@router.post("/blocked-values", name="block", dependencies=[CsrfChecked])
async def block(request: Request, operator: Admin, kind: KindField, value: ValueField) -> Response:
    return await _value_change(request, operator, lifecycle.block, "blocked", kind, value)


@router.post("/blocked-values/{block_id}/preview", name="unblock_preview", dependencies=[CsrfChecked])
async def unblock_preview(request: Request, operator: Admin, block_id: Id) -> Response:
    return await _unblock(request, operator, block_id, "unblock")


@router.post("/blocked-values/{block_id}/remove", name="unblock", dependencies=[CsrfChecked])
async def unblock(request: Request, operator: Admin, block_id: Id) -> Response:
    return await _unblock(request, operator, block_id, "unblocked")


@router.get("/erasure", name="erasure_form")
async def erasure_form(request: Request, _: Admin) -> Response:
    return render(request, "erasure.html", title="Erasure", kind="email")


@router.post("/erasure/preview", name="erasure_preview", dependencies=[CsrfChecked])
async def erasure_preview(request: Request, operator: Admin, kind: KindField, value: ValueField) -> Response:
    return await _value_change(request, operator, lifecycle.erase, "erase", kind, value)


@router.post("/erasure", name="erase", dependencies=[CsrfChecked])
async def erase(request: Request, operator: Admin, kind: KindField, value: ValueField) -> Response:
    """Erase, then show the events by the request's id: the value itself is not shown again."""
    normalized = _normalized(request, kind, value)
    work = partial(lifecycle.erase, kind=kind, value=normalized, **_by(request, operator), dry_run=False)
    effect: Effect = await database(request).run(work)
    return redirect(request, "erasure_done", request_id=effect.cause_id)


@router.get("/erasures/{request_id}", name="erasure_done")
async def erasure_done(request: Request, _: Admin, request_id: Id) -> Response:
    work = partial(lifecycle.erasure_events, request_id=request_id)
    return await _page(request, "erasure_done.html", f"Erasure #{request_id}", work, request_id=request_id)


_TITLES = {
    "block": "Block a value?",
    "blocked": "Value blocked",
    "unblock": "Unblock this value?",
    "unblocked": "Value unblocked",
    "erase": "Erase?",
}


async def _value_change(
    request: Request,
    operator: Client,
    change: ValueChange,
    action: Literal["block", "blocked", "erase"],
    kind: Kind,
    value: str,
) -> Response:
    """A block or an erasure of one value: previewed (rolled back) unless `action` says it is done."""
    normalized = _normalized(request, kind, value)
    work = partial(change, kind=kind, value=normalized, **_by(request, operator), dry_run=action != "blocked")
    title = _TITLES[action]
    return await _page(request, "effect.html", title, work, action=action, kind=kind, value=normalized)


async def _unblock(
    request: Request, operator: Client, block_id: int, action: Literal["unblock", "unblocked"]
) -> Response:
    dry_run = action == "unblock"
    work = partial(lifecycle.unblock, block_id=block_id, **_by(request, operator), dry_run=dry_run)
    return await _page(request, "effect.html", _TITLES[action], work, action=action, block_id=block_id)


def _by(request: Request, operator: Client) -> dict[str, Any]:
    """Who acts, and the guardrails they act under: what every change to the blocklist or the data takes."""
    return {"by": operator.name, "guardrails": request.app.state.guardrails}


def _normalized(request: Request, kind: Kind, value: str) -> str:
    found = lookup_value(request.app.state.api.state.normalizer, kind, value)
    assert isinstance(found, str)
    return found


Work = Callable[[psycopg.Connection[Any]], Any]
ValueChange = Callable[..., Effect]


async def _page(request: Request, template: str, title: str, work: Work, **context: Any) -> Response:
    """Run `work` and render its result as `found`, or why the core refused."""
    try:
        found = await database(request).run(work)
    except BlockRefused as exc:
        status = 404 if exc.code == "not_found" else 409
        return render(request, "error.html", status=status, title=title, message=str(exc))
    return render(request, template, title=title, found=found, **context)
