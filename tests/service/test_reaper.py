"""The reaper resends a queued task's message as soon as the broker no longer holds one
(a worker killed between taking the message and claiming the task), and leaves tasks whose
message is still waiting alone."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import redis
from svc_helpers import make_account

from common.config import Settings
from common.db import session_scope
from common.models import Task
from worker.reaper import reap


def _messages_for(client: redis.Redis, queue: str, task_id: str) -> list[bytes]:
    return [m for m in client.lrange(queue, 0, -1) if task_id.encode() in m]


def test_a_lost_message_is_resent_and_a_waiting_one_is_not(client: Any, service_env: dict[str, str]) -> None:
    settings = Settings()
    broker = redis.Redis.from_url(settings.broker_url)
    queue = settings.celery_queue
    user = make_account()
    ids = []
    for n in (1, 2):
        created = client.post(
            "/api/v1/tasks", json={"urls": [f"https://example.com/{n}"], "extract": {"t": "h1"}}, headers=user.headers
        )
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    lost, waiting = ids
    assert len(_messages_for(broker, queue, waiting)) == 1
    for message in _messages_for(broker, queue, lost):  # what a worker killed after BRPOP leaves
        broker.lrem(queue, 0, message)
    # both were sent longer ago than the lease grace, neither was claimed
    with session_scope() as session:
        for task_id in ids:
            task = session.get(Task, uuid.UUID(task_id))
            assert task is not None and task.enqueued_at is not None
            task.enqueued_at -= timedelta(minutes=1)  # past the grace, not the 15-minute rule
    with session_scope() as session:
        before = session.get(Task, uuid.UUID(waiting)).enqueued_at  # type: ignore[union-attr]

    swept = reap(settings)

    assert swept["tasks"] == 1
    assert len(_messages_for(broker, queue, lost)) == 1, "the lost task got no new message"
    assert len(_messages_for(broker, queue, waiting)) == 1, "the waiting task got a duplicate"
    with session_scope() as session:
        assert session.get(Task, uuid.UUID(waiting)).enqueued_at == before  # type: ignore[union-attr]
        assert session.get(Task, uuid.UUID(lost)).enqueued_at > before  # type: ignore[union-attr,operator]
