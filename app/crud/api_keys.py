"""API keys: created and revoked by their owner, stored as SHA-256 hashes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.security import generate_api_key, hash_api_key
from common.models import ApiKey, User

MAX_ACTIVE_KEYS = 50


class TooManyKeys(Exception):
    pass


def create(session: Session, user: User, name: str) -> tuple[ApiKey, str]:
    active = session.scalars(select(ApiKey.id).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))).all()
    if len(active) >= MAX_ACTIVE_KEYS:
        raise TooManyKeys(f"at most {MAX_ACTIVE_KEYS} active keys; revoke one first")
    secret, prefix, digest = generate_api_key()
    key = ApiKey(user_id=user.id, name=name, prefix=prefix, key_hash=digest, created_at=datetime.now(UTC))
    session.add(key)
    session.flush()
    return key, secret


def list_for(session: Session, user: User, include_revoked: bool = False) -> list[ApiKey]:
    query = select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at.desc())
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(query).all())


def revoke(session: Session, user: User, key_id: uuid.UUID) -> ApiKey | None:
    key = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user.id))
    if key is not None and key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
    return key


def authenticate(session: Session, secret: str) -> ApiKey | None:
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(secret)))
    if key is None or key.revoked_at is not None or not key.user.is_active:
        return None
    now = datetime.now(UTC)
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
        key.last_used_at = now  # coarse, to avoid a write per request
    return key
