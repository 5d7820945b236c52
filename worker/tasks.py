"""Celery tasks. They are thin: the work lives in worker.runner and worker.webhooks."""

from __future__ import annotations

import logging
import threading
import uuid

import redis
from celery import Task as CeleryTask
from sqlalchemy.exc import InterfaceError, OperationalError

from common.config import get_settings
from common.redis_client import connect
from common.storage import get_storage
from worker.celery_app import app
from worker.fetch import Fetcher
from worker.runner import TaskRunner
from worker.webhooks import deliver

log = logging.getLogger(__name__)
_fetcher: Fetcher | None = None
_lock = threading.Lock()


def get_fetcher() -> Fetcher:
    """One fetcher (connection pools, robots cache) per worker process."""
    global _fetcher
    with _lock:
        if _fetcher is None:
            settings = get_settings()
            _fetcher = Fetcher(settings, connect(settings.redis_url.get_secret_value()))
        return _fetcher


def close_fetcher() -> None:
    global _fetcher
    with _lock:
        if _fetcher is not None:
            _fetcher.close()
            _fetcher = None


# A database or Redis outage is waited out with backoff instead of failing the message.
OUTAGES = (OperationalError, InterfaceError, redis.ConnectionError, redis.TimeoutError)

# Both tasks give their message back when their worker process dies (reject_on_worker_lost,
# also the app's default: at-least-once). Celery does not count that as a retry, so each body
# bounds it itself (worker/attempts.py): a scrape ends ``worker_lost`` after
# runner.MAX_LOST_RUNS lost runs, a webhook after WEBHOOK_MAX_ATTEMPTS started deliveries.


@app.task(
    name="selextract.scrape",
    bind=True,
    max_retries=None,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=OUTAGES,
    retry_backoff=5,
    retry_backoff_max=300,
)
def scrape(self: CeleryTask, task_id: str) -> str:
    """Run (or continue) a scrape task; re-queues itself with backoff while URLs remain."""
    settings = get_settings()
    outcome = TaskRunner(settings, get_storage(), get_fetcher()).run(uuid.UUID(task_id))
    if not outcome.done:
        log.info("task %s: again in %.1fs (%s)", task_id, outcome.countdown, outcome.reason)
        raise self.retry(countdown=outcome.countdown)
    return outcome.reason


@app.task(
    name="selextract.deliver_webhook",
    bind=True,
    max_retries=None,
    acks_late=True,
    autoretry_for=OUTAGES,
    retry_backoff=5,
    retry_backoff_max=300,
)
def deliver_webhook(self: CeleryTask, task_id: str) -> str:
    """POST the signed completion notice; retried with backoff until it lands or gives up."""
    settings = get_settings()
    countdown = deliver(settings, uuid.UUID(task_id), attempt=self.request.retries + 1)
    if countdown is not None:
        raise self.retry(countdown=countdown)
    return "done"
