"""The web console: a server-rendered view of keys, tasks and results for people who would
rather look than curl. It calls the same crud functions as the REST API."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.api.deps import SessionDep, get_db, rate_limit
from app.api.routes.account import account_view
from app.core.security import csrf_ok
from app.crud import api_keys, billing
from app.crud import tasks as crud
from app.crud.users import get_active_user
from app.schemas.tasks import TaskCreate
from app.web.templating import render
from common.config import get_settings
from common.extraction import ExtractionRules, csv_columns, csv_rows
from common.models import User
from common.results import download_parts, page_record
from common.storage import get_storage

router = APIRouter(include_in_schema=False)
PREVIEW_ROWS = 50
EXAMPLE_RULES = {
    "title": "h1::text",
    "items": {"selector": "li.product", "many": True, "fields": {"name": ".name::text", "price": ".price::text"}},
}


class LoginRequired(Exception):
    pass


def console_user(request: Request, session: Annotated[Session, Depends(get_db)]) -> User:
    raw = request.session.get("user_id")
    try:
        user = get_active_user(session, uuid.UUID(raw)) if raw else None
    except ValueError:
        user = None
    if user is None:
        request.session.pop("user_id", None)
        raise HTTPException(303, "sign in first", headers={"Location": "/console"})
    return user


ConsoleUser = Annotated[User, Depends(console_user)]


async def checked_form(request: Request) -> dict[str, str]:
    """The posted form, after its CSRF token matched the session's."""
    form = await request.form()
    token = form.get("csrf_token")
    if not csrf_ok(request.session.get("csrf"), token if isinstance(token, str) else None):
        raise HTTPException(403, "the form expired; reload the page and try again")
    return {k: v for k, v in form.items() if isinstance(v, str)}


FormData = Annotated[dict[str, str], Depends(checked_form)]


@router.get("/")
def root() -> Response:
    return RedirectResponse("/console", status_code=307)


@router.get("/console")
def dashboard(request: Request, session: SessionDep, page: int = 1) -> Response:
    settings = get_settings()
    raw = request.session.get("user_id")
    user = None
    if raw:
        try:
            user = get_active_user(session, uuid.UUID(raw))
        except ValueError:
            user = None
    if user is None:
        return render(request, "landing.html", {"oidc_enabled": settings.oidc_enabled})
    return _dashboard(request, session, user, max(1, page))


def _dashboard(
    request: Request,
    session: Session,
    user: User,
    page: int = 1,
    form: dict[str, str] | None = None,
    errors: list[str] | None = None,
    status_code: int = 200,
) -> Response:
    limit = 20
    tasks, total = crud.list_for_user(session, user, [], limit, (page - 1) * limit)
    defaults = {
        "urls": "",
        "extract": json.dumps(EXAMPLE_RULES, indent=2),
        "timeout": "30",
        "retries": "2",
        "respect_robots": "on",
        "webhook_url": "",
    }
    return render(
        request,
        "dashboard.html",
        {
            "user": user,
            "account": account_view(session, user),
            "tasks": tasks,
            "page": page,
            "pages": max(1, (total + limit - 1) // limit),
            "form": form or defaults,
            "errors": errors or [],
            "renderer": get_settings().renderer_available,
        },
        status_code,
    )


def _form_to_body(form: dict[str, str]) -> dict[str, Any]:
    try:
        extract = json.loads(form.get("extract") or "{}")
    except ValueError as exc:
        raise ValueError(f"extraction rules: not valid JSON ({exc})") from None
    return {
        "urls": [line.strip() for line in (form.get("urls") or "").splitlines() if line.strip()],
        "extract": extract,
        "options": {
            "timeout": form.get("timeout") or 30,
            "retries": form.get("retries") or 2,
            "respect_robots": form.get("respect_robots") == "on",
            "render_js": form.get("render_js") == "on",
            **({"use_proxy": True} if form.get("use_proxy") == "on" else {}),
        },
        "webhook_url": form.get("webhook_url") or None,
    }


def _messages(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p not in ("rule", "selector") or p == err["loc"][-1])
        out.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return out


@router.post("/console/tasks")
def submit_task(request: Request, session: SessionDep, user: ConsoleUser, form: FormData) -> Response:
    settings = get_settings()
    try:  # the API's per-account limit, same counter: the form is another way to submit
        rate_limit(user, session, Response())
    except HTTPException as exc:
        page = _dashboard(request, session, user, form=form, errors=[str(exc.detail)], status_code=exc.status_code)
        page.headers.update(exc.headers or {})
        return page
    try:
        body = TaskCreate.model_validate(_form_to_body(form))
        task, _created = crud.submit(session, settings, user, body)
    except ValueError as exc:  # ValidationError is a ValueError
        errors = _messages(exc) if isinstance(exc, ValidationError) else [str(exc)]
        return _dashboard(request, session, user, form=form, errors=errors, status_code=422)
    except crud.TaskRejected as exc:
        session.rollback()
        return _dashboard(request, session, user, form=form, errors=[exc.message], status_code=exc.status_code)
    return RedirectResponse(f"/console/tasks/{task.id}", status_code=303)


@router.get("/console/tasks/{task_id}")
def task_page(request: Request, task_id: uuid.UUID, session: SessionDep, user: ConsoleUser) -> Response:
    task = crud.get_for_user(session, user, task_id, with_urls=True)
    if task is None:
        return render(request, "error.html", {"message": "No such task."}, 404)
    rules = ExtractionRules.stored(task.rules)
    storage = get_storage()
    rows: list[list[str]] = []
    for url in task.urls:
        if len(rows) >= PREVIEW_ROWS:
            break
        rows.extend(csv_rows(page_record(storage, task, url), rules))
    return render(
        request,
        "task.html",
        {
            "user": user,
            "task": task,
            "columns": csv_columns(rules),
            "rows": rows[:PREVIEW_ROWS],
            "rules": json.dumps(task.rules, indent=2),
        },
    )


@router.post("/console/tasks/{task_id}/cancel")
def cancel_task(task_id: uuid.UUID, session: SessionDep, user: ConsoleUser, form: FormData) -> Response:
    try:
        crud.cancel(session, user, task_id)
    except crud.TaskRejected:
        session.rollback()
    return RedirectResponse(f"/console/tasks/{task_id}", status_code=303)


@router.get("/console/tasks/{task_id}/results.{fmt}")
def download(task_id: uuid.UUID, fmt: str, session: SessionDep, user: ConsoleUser) -> Response:
    task = crud.get_for_user(session, user, task_id, with_urls=True)
    if task is None or fmt not in ("json", "csv"):
        raise HTTPException(404, "no such result")
    body, media_type, headers = download_parts(get_storage(), task, list(task.urls), fmt)
    return StreamingResponse(body, media_type=media_type, headers=headers)


@router.get("/console/keys")
def keys_page(request: Request, session: SessionDep, user: ConsoleUser) -> Response:
    return _keys(request, session, user)


def _keys(request: Request, session: Session, user: User, new_key: str | None = None, error: str = "") -> Response:
    keys = api_keys.list_for(session, user)
    context = {"user": user, "keys": keys, "new_key": new_key, "error": error}
    return render(request, "keys.html", context)


@router.post("/console/keys")
def create_key(request: Request, session: SessionDep, user: ConsoleUser, form: FormData) -> Response:
    name = (form.get("name") or "").strip() or "console"
    try:
        _key, secret = api_keys.create(session, user, name[:100])
    except api_keys.TooManyKeys as exc:
        return _keys(request, session, user, error=str(exc))
    session.commit()
    return _keys(request, session, user, new_key=secret)


@router.post("/console/keys/{key_id}/revoke")
def revoke_key(key_id: uuid.UUID, session: SessionDep, user: ConsoleUser, form: FormData) -> Response:
    api_keys.revoke(session, user, key_id)
    session.commit()
    return RedirectResponse("/console/keys", status_code=303)


@router.get("/console/account")
def account_page(request: Request, session: SessionDep, user: ConsoleUser) -> Response:
    settings = get_settings()
    upgrades = {
        plan: billing.checkout_url(settings, user, url) for plan, url in settings.lemonsqueezy_checkout_urls.items()
    }
    return render(request, "account.html", {"user": user, "account": account_view(session, user), "upgrades": upgrades})
