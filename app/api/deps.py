"""Request dependencies: database session, settings, the caller (API key) and rate limit."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

import redis
from fastapi import Depends, HTTPException, Request, Response, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.core import ratelimit
from app.core.redis import get_redis
from app.crud import api_keys
from common.accounting import effective_plan
from common.config import Settings, get_settings
from common.db import session_factory
from common.models import User

log = logging.getLogger(__name__)


def get_db() -> Iterator[Session]:
    session = session_factory()()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer sx_… (create keys in the console)")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key, as an alternative header")


def current_user(
    request: Request,
    session: SessionDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    header_key: Annotated[str | None, Depends(header_scheme)],
) -> User:
    secret = header_key or (bearer.credentials if bearer else None)
    challenge = {"WWW-Authenticate": "Bearer"}
    if not secret:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' (create keys in the console)",
            headers=challenge,
        )
    user = api_keys.authenticate_user(session, secret)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Invalid or revoked API key", headers=challenge)
    session.commit()  # also ends the transaction: no pooled connection is held between dependencies
    request.state.user_id = user.id
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def rate_limit(user: CurrentUser, session: SessionDep, response: Response) -> None:
    """Per-account requests per minute, from the plan. Fails open if Redis is down."""
    plan = effective_plan(session, user)
    try:
        decision = ratelimit.hit(get_redis(), f"user:{user.id}", plan.rate_limit_per_minute)
    except redis.RedisError as exc:
        log.warning("rate limiter unavailable, letting the request through: %s", exc)
        return
    response.headers["X-RateLimit-Limit"] = str(decision.limit)
    response.headers["X-RateLimit-Remaining"] = str(decision.remaining)
    if not decision.allowed:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"Rate limit exceeded: the {plan.name} plan allows {decision.limit} requests per minute; "
            f"retry in {decision.retry_after}s",
            headers={"Retry-After": str(decision.retry_after), "X-RateLimit-Limit": str(decision.limit)},
        )
