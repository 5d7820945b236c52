"""Sign-in with OpenID Connect (Google by default; any issuer via OIDC_ISSUER), sessions
for the web console."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from authlib.integrations.starlette_client import OAuth, OAuthError
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from app.core.security import csrf_ok, new_csrf_token
from app.crud.users import SignInRefused, upsert_oidc_user
from app.web.templating import render
from common.config import Settings, get_settings
from common.db import session_scope

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)


@lru_cache
def _oauth(client_id: str, issuer: str) -> OAuth:
    settings = get_settings()
    assert settings.oidc_client_secret is not None
    oauth = OAuth()
    oauth.register(
        name="oidc",
        client_id=client_id,
        client_secret=settings.oidc_client_secret.get_secret_value(),
        server_metadata_url=settings.oidc_metadata_url,
        client_kwargs={"scope": settings.oidc_scopes, "code_challenge_method": "S256", "timeout": 10},
    )
    return oauth


def oidc_client(settings: Settings) -> Any:
    assert settings.oidc_client_id is not None
    return _oauth(settings.oidc_client_id, settings.oidc_issuer).oidc


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console"


def _unverified_email(claims: dict[str, Any]) -> str | None:
    """Why the provider's e-mail cannot be trusted, or None. Accounts (and paid plans) are
    keyed on the e-mail, so only an address the provider says it verified signs in; a
    missing `email_verified` claim is refused like a false one."""
    verified = claims.get("email_verified")
    if verified is True or (isinstance(verified, str) and verified.lower() == "true"):
        return None
    email = str(claims.get("email") or "the e-mail address")
    if verified is None:
        return f"the identity provider did not say that {email} is verified (no email_verified claim)"
    return f"{email} is not verified with the identity provider"


@router.get("/auth/login")
async def login(request: Request, next: str | None = None) -> Response:
    settings = get_settings()
    if not settings.oidc_enabled:
        return render(request, "error.html", {"message": "Sign-in is not configured on this server."}, 503)
    request.session["next"] = _safe_next(next)
    try:
        return await oidc_client(settings).authorize_redirect(request, f"{settings.public_base_url}/auth/callback")
    except Exception as exc:  # the identity provider's metadata could not be read
        log.warning("OIDC login failed: %s", exc)
        return render(request, "error.html", {"message": "The sign-in provider is unreachable; try again soon."}, 503)


@router.get("/auth/callback")
async def callback(request: Request) -> Response:
    settings = get_settings()
    if not settings.oidc_enabled:
        return render(request, "error.html", {"message": "Sign-in is not configured on this server."}, 503)
    try:
        token = await oidc_client(settings).authorize_access_token(request)
    except OAuthError as exc:
        return render(request, "error.html", {"message": f"Sign-in failed: {exc.description or exc.error}"}, 400)
    claims = dict(token.get("userinfo") or {})
    unverified = _unverified_email(claims)
    if unverified is not None:
        return render(request, "error.html", {"message": f"Sign-in refused: {unverified}"}, 403)

    def store() -> str:
        with session_scope(settings) as session:
            return str(upsert_oidc_user(session, settings.oidc_issuer, claims).id)

    try:
        user_id = await run_in_threadpool(store)
    except SignInRefused as exc:
        return render(request, "error.html", {"message": f"Sign-in refused: {exc}"}, 403)
    target = _safe_next(request.session.pop("next", None))
    request.session.clear()
    request.session.update({"user_id": user_id, "csrf": new_csrf_token()})
    return RedirectResponse(target, status_code=303)


@router.post("/auth/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    token = form.get("csrf_token")
    if csrf_ok(request.session.get("csrf"), token if isinstance(token, str) else None):
        request.session.clear()
    return RedirectResponse("/console", status_code=303)
