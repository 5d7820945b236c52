"""API keys: created and revoked by their owner, stored as SHA-256 hashes."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.core.security import generate_api_key, hash_api_key
from common.models import ApiKey, User

log = logging.getLogger(__name__)

MAX_ACTIVE_KEYS = 50
# Bumped after every revocation; cached authentications from an older epoch are dropped,
# so a revoked key stops working at once in every API process.
EPOCH_KEY = "selextract:api-keys:epoch"


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
    """Mark a key revoked; once the caller commits, every API process forgets it."""
    key = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user.id))
    if key is not None and key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        digest = key.key_hash
        event.listen(session, "after_commit", lambda _s: auth_cache.revoked(digest), once=True)
    return key


def authenticate(session: Session, secret: str) -> ApiKey | None:
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(secret)))
    if key is None or key.revoked_at is not None or not key.user.is_active:
        return None
    now = datetime.now(UTC)
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
        key.last_used_at = now  # coarse, to avoid a write per request
    return key


# --- cached authentication ------------------------------------------------------------------


def _redis() -> redis.Redis:
    from app.core.redis import get_redis

    return get_redis()


@dataclass(frozen=True)
class _Entry:
    user_id: uuid.UUID
    epoch: bytes | None
    expires: float


class AuthCache:
    """key hash -> user id for a few seconds, per process.

    A hit still loads the user by primary key (so a deactivated account is refused at
    once) and checks the revocation epoch in Redis (one GET); it skips the key lookup,
    its joins and the ``last_used_at`` write. Without Redis there are no hits."""

    def __init__(self, ttl: float = 30.0, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _epoch(self) -> bytes | None:
        raw = _redis().get(EPOCH_KEY)
        return raw if raw is not None else b"0"

    def lookup(self, digest: str) -> uuid.UUID | None:
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.expires <= time.monotonic() or entry.epoch is None:
            self._drop(digest)
            return None
        try:
            current = self._epoch()
        except redis.RedisError:
            return None  # cannot tell whether keys were revoked meanwhile: ask the database
        if current != entry.epoch:
            self._drop(digest)
            return None
        return entry.user_id

    def epoch_or_none(self) -> bytes | None:
        try:
            return self._epoch()
        except redis.RedisError:
            return None

    def store(self, digest: str, user_id: uuid.UUID, epoch: bytes | None) -> None:
        if epoch is None or self.ttl <= 0:
            return
        with self._lock:
            self._entries[digest] = _Entry(user_id, epoch, time.monotonic() + self.ttl)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def _drop(self, digest: str) -> None:
        with self._lock:
            self._entries.pop(digest, None)

    def revoked(self, digest: str) -> None:
        self._drop(digest)
        try:
            _redis().incr(EPOCH_KEY)
        except redis.RedisError:
            log.warning("could not announce a key revocation; other API processes may accept it for %gs", self.ttl)


auth_cache = AuthCache()


def authenticate_user(session: Session, secret: str) -> User | None:
    """The active user an API key belongs to, or None (unknown or revoked key, inactive user)."""
    digest = hash_api_key(secret)
    user_id = auth_cache.lookup(digest)
    if user_id is not None:
        user = session.get(User, user_id)
        if user is not None and user.is_active:
            return user
        auth_cache._drop(digest)
        return None
    epoch = auth_cache.epoch_or_none()  # read before the key, so a revoke in between invalidates
    key = authenticate(session, secret)
    if key is None:
        return None
    auth_cache.store(digest, key.user_id, epoch)
    return key.user
