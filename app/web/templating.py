"""Jinja2 rendering for the console."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def render(request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200) -> HTMLResponse:
    ctx = {"csrf_token": request.session.get("csrf", ""), **(context or {})}
    return templates.TemplateResponse(request, name, ctx, status_code=status_code)
