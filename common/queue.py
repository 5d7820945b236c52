"""The Celery application (broker settings, task names) shared by the API, which only sends
messages, and the worker, which runs them."""

from __future__ import annotations

import uuid
from functools import lru_cache

from celery import Celery

from common.config import Settings, get_settings

SCRAPE_TASK = "selextract.scrape"
WEBHOOK_TASK = "selextract.deliver_webhook"


def make_celery(settings: Settings) -> Celery:
    app = Celery("selextract", broker=settings.broker_url)
    visibility = settings.celery_visibility_timeout
    app.conf.update(
        task_default_queue=settings.celery_queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # at-least-once: a message is acknowledged only after the task body finished, and a
        # worker that dies mid-task gives it back; the task itself is idempotent (leases).
        # Celery gives it back without limit: the task bodies count such deaths themselves
        # and end a task that keeps killing its worker (worker/attempts.py).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=settings.worker_prefetch_multiplier,
        worker_concurrency=settings.worker_concurrency,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": visibility,
            # how often unacked messages of dead workers are looked for
            "unacked_restore_interval": max(1, min(10, visibility // 5)),
            "unacked_restore_throttle": 1 if visibility < 600 else 10,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


@lru_cache
def get_celery() -> Celery:
    return make_celery(get_settings())


def enqueue_scrape(task_id: uuid.UUID | str, countdown: float | None = None) -> None:
    settings = get_settings()
    get_celery().send_task(SCRAPE_TASK, args=[str(task_id)], queue=settings.celery_queue, countdown=countdown)


def enqueue_webhook(task_id: uuid.UUID | str, countdown: float | None = None) -> None:
    settings = get_settings()
    get_celery().send_task(WEBHOOK_TASK, args=[str(task_id)], queue=settings.celery_queue, countdown=countdown)
