"""Per-account request rate limit: a fixed one-minute window counted in Redis, so every
API process and server shares it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int


def hit(client: redis.Redis, subject: str, limit: int, window: int = 60) -> RateDecision:
    now = time.time()
    bucket = int(now // window)
    key = f"selextract:ratelimit:{subject}:{bucket}"
    pipe = client.pipeline()
    pipe.incr(key)
    pipe.expire(key, window + 5)
    count = int(pipe.execute()[0])
    retry_after = max(1, int((bucket + 1) * window - now))
    return RateDecision(count <= limit, limit, max(0, limit - count), retry_after)
