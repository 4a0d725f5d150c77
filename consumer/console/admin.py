"""Blocked values and erasure pages (admin scope): rules 12, 16 and 17 through the core."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from consumer.console.pages import render
from consumer.console.session import Admin

router = APIRouter()

PENDING = "pending: the guardrails and erasure core have not landed in this build yet"


@router.get("/blocked-values", name="blocked_values")
async def blocked_values(request: Request, _: Admin) -> Response:
    return render(request, "error.html", title="Blocked values", message=PENDING)


@router.get("/erasure", name="erasure_form")
async def erasure_form(request: Request, _: Admin) -> Response:
    return render(request, "error.html", title="Erasure", message=PENDING)
