"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from app.api.deps import SettingsDep
from app.core import metrics
from app.core.redis import get_redis
from app.schemas.common import HealthOut, ReadinessOut
from common.db import get_engine
from common.storage import get_storage

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut, operation_id="health")
def health(settings: SettingsDep) -> HealthOut:
    """Liveness: the process answers. Does not touch dependencies."""
    return HealthOut(status="ok", version=settings.git_commit)


@router.get(
    "/health/ready",
    response_model=ReadinessOut,
    operation_id="ready",
    responses={503: {"model": ReadinessOut, "description": "A dependency is unreachable; `failing` names it"}},
)
def ready(settings: SettingsDep) -> JSONResponse:
    """Readiness: database, Redis and result storage all answer. The answer is public, so it
    says `ok` or `fail` per part; why a part fails (addresses, names) goes to the log."""
    checks: dict[str, str] = {}

    def probe(name: str, func: object) -> None:
        try:
            func()  # type: ignore[operator]
            checks[name] = "ok"
        except Exception as exc:
            log.warning("readiness: %s failing: %s: %s", name, type(exc).__name__, str(exc)[:300])
            checks[name] = "fail"

    def database() -> None:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))

    probe("database", database)
    probe("redis", lambda: get_redis().ping())
    probe("storage", lambda: get_storage().check())
    failing = [name for name, result in checks.items() if result != "ok"]
    body = ReadinessOut(
        status="ok" if not failing else "unavailable", version=settings.git_commit, checks=checks, failing=failing
    )
    return JSONResponse(body.model_dump(), status_code=503 if failing else 200)


@router.get("/metrics", include_in_schema=False)
def prometheus(settings: SettingsDep) -> Response:
    return Response(metrics.render(settings, get_redis()), media_type=CONTENT_TYPE_LATEST)
