"""One Redis client per process (it pools connections itself)."""

from __future__ import annotations

from functools import lru_cache

import redis

from common.config import get_settings


@lru_cache
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(
        get_settings().redis_url.get_secret_value(),
        socket_timeout=2,
        socket_connect_timeout=2,
        health_check_interval=30,
    )
