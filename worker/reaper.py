"""Finds tasks whose queue message was lost and sends a new one.

Celery/Redis redelivers the messages of dead workers after the visibility timeout, but a
message can also be lost outright (API died between commit and send, Redis restarted
without persistence). The database is the source of truth: every active task is either
leased by a live run, waiting for its retry, or recently (re)queued; anything else gets a
fresh message. Duplicates are harmless because runs take a lease first.
Run it with ``python -m worker.reaper`` or let each worker run it every REAPER_INTERVAL s.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import redis
from sqlalchemy import and_, func, or_, update

from common.config import Settings, get_settings
from common.db import session_scope
from common.models import Task, TaskState
from common.queue import enqueue_scrape, enqueue_webhook

log = logging.getLogger(__name__)
_stop = threading.Event()


# A queued task whose message is older than this gets another one, in case it was lost
# (a backlog only means the duplicate finds the task done and is dropped).
QUEUED_RESEND = timedelta(minutes=15)


def reap(settings: Settings) -> dict[str, int]:
    grace = timedelta(seconds=max(settings.task_lease_seconds, 5))
    cutoff = func.now() - grace
    active = Task.state.in_([TaskState.queued, TaskState.running])
    stale = or_(
        # never (successfully) sent
        and_(Task.state == TaskState.queued, Task.enqueued_at.is_(None), Task.created_at < cutoff),
        # sent long ago and never picked up
        and_(
            Task.state == TaskState.queued,
            Task.lease_expires_at.is_(None),
            Task.enqueued_at < func.now() - QUEUED_RESEND,
        ),
        # leased by a run whose worker stopped renewing it
        and_(active, Task.lease_expires_at < cutoff, or_(Task.enqueued_at.is_(None), Task.enqueued_at < cutoff)),
        # waiting for a retry message that should have arrived by now
        and_(active, Task.lease_expires_at.is_(None), Task.retry_at < cutoff, Task.enqueued_at < cutoff),
    )
    with session_scope(settings) as session:
        task_ids = session.scalars(update(Task).where(stale).values(enqueued_at=func.now()).returning(Task.id)).all()
        webhook_ids = session.scalars(
            update(Task)
            .where(Task.webhook_status == "pending", Task.finished_at < cutoff - grace)
            .values(webhook_status="requeued")
            .returning(Task.id)
        ).all()
    for task_id in task_ids:
        log.warning("reaper: task %s had no live run or message; re-queued", task_id)
        enqueue_scrape(task_id)
    for task_id in webhook_ids:
        enqueue_webhook(task_id)
    return {"tasks": len(task_ids), "webhooks": len(webhook_ids)}


def _loop(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    while not _stop.wait(settings.reaper_interval):
        try:
            # one sweep per interval across all workers
            if client.set("selextract:reaper", "1", nx=True, ex=max(1, settings.reaper_interval - 1)):
                reap(settings)
        except Exception:
            log.exception("reaper sweep failed")


def start_reaper_thread(settings: Settings) -> None:
    _stop.clear()
    threading.Thread(target=_loop, args=(settings,), name="reaper", daemon=True).start()


def stop_reaper_thread() -> None:
    _stop.set()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(reap(get_settings()))
