"""One Redis client per process (it pools connections itself)."""

from __future__ import annotations

from functools import lru_cache

import redis

from common.config import get_settings
from common.redis_client import connect


@lru_cache
def get_redis() -> redis.Redis:
    return connect(get_settings().redis_url.get_secret_value(), timeout=2)
