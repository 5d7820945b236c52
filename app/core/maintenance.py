"""Maintenance mode: everything but health answers 503 with Retry-After.

Turned on by MAINTENANCE_MODE=true (static) or at run time by the Redis key
``selextract:maintenance`` that the ops CLI sets (``python -m app.maintenance on``), so
every API server follows one switch without a restart.
"""

from __future__ import annotations

import html
import json
import logging
import time
from dataclasses import dataclass

import redis
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from common.config import Settings

KEY = "selextract:maintenance"
CACHE_SECONDS = 2.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Maintenance:
    message: str
    retry_after: int


def enable(client: redis.Redis, message: str, retry_after: int) -> None:
    client.set(KEY, json.dumps({"message": message, "retry_after": retry_after, "since": int(time.time())}))


def disable(client: redis.Redis) -> None:
    client.delete(KEY)


def read(client: redis.Redis) -> Maintenance | None:
    raw = client.get(KEY)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return Maintenance(str(data.get("message") or "Down for maintenance"), int(data.get("retry_after") or 300))
    except (ValueError, TypeError, AttributeError):
        return Maintenance("Down for maintenance", 300)


class MaintenanceSwitch:
    """Reads the flag at most every CACHE_SECONDS; a Redis outage does not trigger it."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client
        self._cached: tuple[float, Maintenance | None] = (0.0, None)

    def current(self) -> Maintenance | None:
        if self.settings.maintenance_mode:
            return Maintenance("Down for maintenance", self.settings.maintenance_retry_after)
        checked_at, value = self._cached
        if time.monotonic() - checked_at < CACHE_SECONDS:
            return value
        try:
            value = read(self.client)
        except redis.RedisError as exc:
            log.warning("cannot read the maintenance flag: %s", exc)
            value = None
        self._cached = (time.monotonic(), value)
        return value


EXEMPT_PATHS = ("/health", "/health/ready", "/metrics")


class MaintenanceMiddleware:
    """503 + Retry-After on everything but health and metrics while the switch is on."""

    def __init__(self, app: ASGIApp, switch: MaintenanceSwitch) -> None:
        self.app = app
        self.switch = switch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        state = await run_in_threadpool(self.switch.current)
        if state is None:
            await self.app(scope, receive, send)
            return
        headers = {"Retry-After": str(state.retry_after)}
        response: Response
        if scope["path"].startswith("/api/"):
            response = JSONResponse({"detail": state.message}, status_code=503, headers=headers)
        else:
            page = f"<!doctype html><title>Maintenance</title><h1>Maintenance</h1><p>{html.escape(state.message)}</p>"
            response = HTMLResponse(page, status_code=503, headers=headers)
        await response(scope, receive, send)
