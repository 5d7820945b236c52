"""Attempt counters that a dying worker process cannot skip.

When a pool process dies mid-task (out of memory, killed, over the hard time limit), Celery
gives its message back (``task_reject_on_worker_lost``, common/queue.py) without counting a
retry, so a message that kills every worker it reaches would come back forever. The task
bodies count in Redis instead, keyed on the kind of work and the task id, *before* the part
that can kill the process; the next delivery sees how many came before and ends the task
once a limit is reached (worker/runner.py ``MAX_LOST_RUNS``, worker/webhooks.py).
"""

from __future__ import annotations

import uuid
from functools import lru_cache

import redis

from common.config import Settings
from common.redis_client import connect

# a counter outlives the last attempt by this long (a task's retries are minutes apart)
TTL_SECONDS = 7 * 24 * 3600


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return connect(url)  # redis-py re-creates its connections in a forked child


def key(kind: str, task_id: uuid.UUID | str) -> str:
    return f"selextract:attempts:{kind}:{task_id}"


def bump(settings: Settings, kind: str, task_id: uuid.UUID | str) -> int:
    """Add one to the task's ``kind`` counter and return the new value (atomic)."""
    pipe = _client(settings.redis_url.get_secret_value()).pipeline(transaction=True)
    pipe.incr(key(kind, task_id))
    pipe.expire(key(kind, task_id), TTL_SECONDS)
    value, _ = pipe.execute()
    return int(value)
