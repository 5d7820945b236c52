"""Finds tasks whose queue message was lost and sends a new one.

Celery/Redis redelivers the messages of dead workers after the visibility timeout, but a
message can also be lost outright (API died between commit and send, Redis restarted
without persistence). The database is the source of truth: every active task is either
leased by a live run, waiting for its retry, or recently (re)queued; anything else gets a
fresh message. Duplicates are harmless because runs take a lease first.
Run it with ``python -m worker.reaper`` or let each worker run it every REAPER_INTERVAL s.

The same thread deletes finished tasks and their results RESULTS_RETENTION_DAYS after they
finished (``expire_results``, every RETENTION_INTERVAL), so result storage cannot grow forever.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from datetime import timedelta
from typing import Any

import redis
from sqlalchemy import and_, delete, func, or_, select, update

from common.config import Settings, get_settings
from common.db import session_scope
from common.models import Task, TaskState
from common.queue import enqueue_scrape, enqueue_webhook
from common.redis_client import connect
from common.results import task_prefix
from common.storage import Storage, get_storage

log = logging.getLogger(__name__)
_stop = threading.Event()


# A queued task whose message is older than this gets another one, in case it was lost
# (a backlog only means the duplicate finds the task done and is dropped). Sooner than that,
# a queued task is resent only when the broker holds no message for it (see _broker_task_ids).
QUEUED_RESEND = timedelta(minutes=15)
# Above this many messages the broker is not scanned; the 15-minute rule still applies.
BROKER_SCAN_LIMIT = 20_000
# kombu's Redis transport: priority sub-queues are "<queue>\x06\x16<n>"; messages a worker
# has taken but not acknowledged live in this hash until acked or restored.
_PRIORITY_SEP = "\x06\x16"
_UNACKED = "unacked"
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _broker_task_ids(client: redis.Redis, queue: str) -> set[str] | None:
    """Task ids named by any message waiting in the queue or held unacked by a worker.

    The API sends our task id as the message's only argument, which kombu also puts in
    plain text in the ``argsrepr`` header, so a regex over the raw messages finds it
    without decoding bodies. None when the broker is too full to scan cheaply."""
    queues = [queue, *(f"{queue}{_PRIORITY_SEP}{n}" for n in range(1, 10))]
    pipe = client.pipeline()
    for key in queues:
        pipe.llen(key)
    pipe.hlen(_UNACKED)
    if sum(pipe.execute()) > BROKER_SCAN_LIMIT:
        return None
    pipe = client.pipeline()
    for key in queues:
        pipe.lrange(key, 0, -1)
    pipe.hvals(_UNACKED)
    found: set[str] = set()
    for messages in pipe.execute():
        for raw in messages:
            found.update(m.decode() for m in _UUID.findall(raw))
    return found


def _lost_queued(settings: Settings, cutoff: Any) -> list[uuid.UUID]:
    """Queued, never-claimed tasks past the grace whose message the broker no longer holds:
    a worker killed between taking the message and claiming the task leaves exactly this,
    and Celery would only restore it after the visibility timeout (if at all)."""
    with session_scope(settings) as session:
        waiting = session.scalars(
            select(Task.id).where(
                Task.state == TaskState.queued,
                Task.lease_expires_at.is_(None),
                Task.enqueued_at < cutoff,
            )
        ).all()
    if not waiting:
        return []
    client = connect(settings.broker_url)
    try:
        present = _broker_task_ids(client, settings.celery_queue)
    finally:
        client.close()
    if present is None:
        return []
    return [task_id for task_id in waiting if str(task_id) not in present]


def reap(settings: Settings) -> dict[str, int]:
    grace = timedelta(seconds=max(settings.task_lease_seconds, 5))
    cutoff = func.now() - grace
    active = Task.state.in_([TaskState.queued, TaskState.running])
    lost = _lost_queued(settings, cutoff)
    stale = or_(
        # its message is in neither the queue nor a worker's hands (re-checked state: a
        # worker that claimed it since the scan set a lease)
        and_(Task.id.in_(lost), Task.state == TaskState.queued, Task.lease_expires_at.is_(None)),
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
        # a delivery still "sending" after the longest a live one can take (the hard time
        # limit) and after Celery would have restored its message (visibility timeout) lost
        # its message; sent again, its status is kept (the next attempt is counted anyway)
        stuck = timedelta(seconds=max(settings.task_time_limit, settings.celery_visibility_timeout)) + grace
        webhook_ids += session.scalars(
            update(Task)
            .where(Task.webhook_status.startswith("sending"), Task.updated_at < func.now() - stuck)
            .values(updated_at=func.now())
            .returning(Task.id)
        ).all()
    for task_id in task_ids:
        log.warning("reaper: task %s had no live run or message; re-queued", task_id)
        enqueue_scrape(task_id)
    for task_id in webhook_ids:
        enqueue_webhook(task_id)
    return {"tasks": len(task_ids), "webhooks": len(webhook_ids)}


# Expired tasks are looked for this often (one worker does it), at most this many per sweep,
# so a backlog (retention just turned on) is worked off without holding up the reaper.
RETENTION_INTERVAL = 600
RETENTION_BATCH = 2000
_TERMINAL = [state for state in TaskState if state.terminal]


def expire_results(settings: Settings, storage: Storage | None = None, limit: int = RETENTION_BATCH) -> int:
    """Delete tasks that finished more than RESULTS_RETENTION_DAYS ago: result objects first,
    then the rows (a storage failure leaves the row for the next sweep). The credit ledger
    keeps its rows. Returns how many tasks were deleted."""
    if not settings.results_retention_days:
        return 0
    storage = storage or get_storage()
    expired = and_(
        Task.state.in_(_TERMINAL),
        Task.finished_at < func.now() - timedelta(days=settings.results_retention_days),
    )
    with session_scope(settings) as session:
        task_ids = session.scalars(select(Task.id).where(expired).order_by(Task.finished_at).limit(limit)).all()
    deleted = 0
    for task_id in task_ids:
        storage.delete_prefix(task_prefix(task_id))
        with session_scope(settings) as session:
            deleted += len(session.scalars(delete(Task).where(Task.id == task_id, expired).returning(Task.id)).all())
    if deleted:
        log.info("retention: deleted %d task(s) finished over %d days ago", deleted, settings.results_retention_days)
    return deleted


def _loop(settings: Settings) -> None:
    client = connect(settings.redis_url.get_secret_value())
    while not _stop.wait(settings.reaper_interval):
        try:
            # one sweep per interval across all workers
            if client.set("selextract:reaper", "1", nx=True, ex=max(1, settings.reaper_interval - 1)):
                reap(settings)
        except Exception:
            log.exception("reaper sweep failed")
        try:
            if client.set("selextract:retention", "1", nx=True, ex=RETENTION_INTERVAL):
                expire_results(settings)
        except Exception:
            log.exception("retention sweep failed")


def start_reaper_thread(settings: Settings) -> None:
    _stop.clear()
    threading.Thread(target=_loop, args=(settings,), name="reaper", daemon=True).start()


def stop_reaper_thread() -> None:
    _stop.set()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print({**reap(get_settings()), "expired": expire_results(get_settings())})
