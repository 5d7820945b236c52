"""The FastAPI application: ``uvicorn --factory app.main:create_app``."""

from __future__ import annotations

import logging
from pathlib import Path

import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.sessions import SessionMiddleware

from app.api.main import api_router
from app.api.routes import health
from app.core.maintenance import MaintenanceMiddleware, MaintenanceSwitch
from app.core.metrics import MetricsMiddleware, prepare_multiprocess
from app.core.redis import get_redis
from app.crud.tasks import TaskRejected
from app.web import auth, console
from common.config import get_settings
from common.storage import StorageError

DESCRIPTION = """
Scrape many URLs per task with CSS or XPath rules and download clean JSON or CSV.

1. Sign in to the console (`/console`) and create an API key.
2. `POST /api/v1/tasks` with `Authorization: Bearer <key>`, your URLs and extraction rules.
3. Poll `GET /api/v1/tasks/{id}` (or pass a `webhook_url`), then download
   `GET /api/v1/tasks/{id}/results?format=json|csv`.

Each URL costs one credit; failed URLs are refunded. Webhooks carry
`X-Selextract-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">` keyed with the
account's `webhook_secret` (see `GET /api/v1/account`).
"""


def create_app() -> FastAPI:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    prepare_multiprocess()
    app = FastAPI(
        title="Selextract API",
        version="1.0.0",
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
    )
    # the last middleware added runs first: metrics see everything, maintenance precedes sessions
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.require_secret_key(),
        session_cookie="selextract_session",
        max_age=settings.session_max_age,
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(MaintenanceMiddleware, switch=MaintenanceSwitch(settings, get_redis()))
    app.add_middleware(MetricsMiddleware)

    @app.exception_handler(TaskRejected)
    async def _rejected(_request: Request, exc: TaskRejected) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse({"detail": exc.detail()}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(sqlalchemy.exc.InterfaceError)
    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    async def _backend_down(_request: Request, exc: Exception) -> JSONResponse:
        # A backing service restarting (or a credential being rotated) is temporary: say so
        # with 503 + Retry-After rather than a 500, and name the part without its details.
        return _unavailable("database" if isinstance(exc, sqlalchemy.exc.DBAPIError) else "redis")

    @app.exception_handler(StorageError)
    async def _storage_down(_request: Request, exc: StorageError) -> JSONResponse:
        # results are read before a download starts (common/results.py), so this is still
        # a clean status line rather than a body broken off after a 200
        return JSONResponse(
            {"detail": "the object store is temporarily unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    app.include_router(health.router)
    app.include_router(api_router)
    app.include_router(auth.router)
    app.include_router(console.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "web" / "static"), name="static")
    return app


def _unavailable(part: str) -> JSONResponse:
    return JSONResponse(
        {"detail": f"the {part} is temporarily unavailable; retry shortly"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


def __getattr__(name: str) -> FastAPI:
    """``uvicorn app.main:app`` works too: the app is built on first access, not at import."""
    if name == "app":
        return create_app()
    raise AttributeError(name)
