"""The /api/v1 router: every resource router, with the per-account rate limit."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.deps import rate_limit
from app.api.routes import account, billing, keys, tasks

api_router = APIRouter(prefix="/api/v1")
limited = APIRouter(dependencies=[Depends(rate_limit)])
limited.include_router(tasks.router)
limited.include_router(keys.router)
limited.include_router(account.router)
api_router.include_router(limited)
api_router.include_router(billing.router)
