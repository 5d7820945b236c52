"""Redis clients with bounded timeouts: while Redis restarts (or its container's address is
gone) a call fails within seconds and the caller answers 503 or retries, instead of hanging
on the kernel's TCP connect timeout."""

from __future__ import annotations

import redis


def connect(url: str, timeout: float = 5) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30, retry_on_timeout=False
    )
