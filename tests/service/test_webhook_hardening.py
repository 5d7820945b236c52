"""Webhook receivers cannot take a worker down: a gzip-bomb answer is not read (only the status
counts), and a delivery that kills its worker process every time still ends after
WEBHOOK_MAX_ATTEMPTS (3 here) instead of being given back by Celery forever."""

from __future__ import annotations

import os
import signal
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from svc_helpers import WorkerProcess, make_account, wait_for_task
from svc_receiver import Receiver, answer_with, gzip_bomb, hang, pool_children, trickle
from svc_site import LocalSite

from common.config import get_settings
from common.db import session_scope
from common.models import Task, TaskState
from common.redis_client import connect

BOMB_MIB = 128


@pytest.fixture(scope="module")
def bomb_receiver() -> Iterator[Receiver]:
    bomb = gzip_bomb(BOMB_MIB)
    assert len(bomb) < 200 * 1024  # ~130 KB on the wire
    receiver = Receiver(answer_with(bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"}))
    yield receiver
    receiver.close()


def _finished_task(webhook_url: str) -> uuid.UUID:
    """A finished task whose completion webhook is due, written directly."""
    user = make_account()
    with session_scope() as session:
        task = Task(
            user_id=user.user_id,
            state=TaskState.completed,
            rules={"title": "h1"},
            options={},
            url_count=1,
            succeeded_count=1,
            webhook_url=webhook_url,
            webhook_status="pending",
            finished_at=datetime.now(UTC),
        )
        session.add(task)
        session.flush()
        return task.id


def _webhook_status(task_id: uuid.UUID | str) -> str:
    with session_scope() as session:
        task = session.get(Task, uuid.UUID(str(task_id)))
        assert task is not None
        return task.webhook_status or ""


def _peak_rss(pid: int) -> int:
    """A process's peak resident memory (VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def test_a_gzip_bomb_answer_is_neither_read_nor_inflated(bomb_receiver: Receiver) -> None:
    from worker.webhooks import deliver

    task_id = _finished_task(bomb_receiver.url)
    tracemalloc.start()
    try:
        started = time.monotonic()
        countdown = deliver(get_settings(), task_id, attempt=1)
        elapsed = time.monotonic() - started
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert countdown is None
    assert _webhook_status(task_id) == "delivered"  # a 2xx status is all that counts
    # inflating the answer would take BOMB_MIB MiB (and a worker's memory limit with it)
    assert peak < 8 * 1024 * 1024, f"delivering the webhook allocated {peak / 2**20:.0f} MiB"
    assert elapsed < 5
    assert bomb_receiver.requests[-1]["accept-encoding"] == "identity"


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_timeout() -> None:
    from worker.webhooks import deliver

    receiver = Receiver(trickle(20))
    try:
        task_id = _finished_task(receiver.url)
        settings = get_settings().model_copy(update={"webhook_timeout": 2.0})
        started = time.monotonic()
        countdown = deliver(settings, task_id, attempt=1)
        elapsed = time.monotonic() - started
    finally:
        receiver.close()
    assert countdown is not None  # retried later, like any other failed delivery
    assert _webhook_status(task_id) == "retrying: no answer within 2s (attempt 1)"
    assert elapsed < 4, f"the delivery held the worker for {elapsed:.1f}s"


def test_a_delivery_whose_message_was_lost_is_sent_again(client: Any) -> None:
    from worker.reaper import reap

    settings = get_settings()
    lost, recent = _finished_task("http://127.0.0.1:9/hook"), _finished_task("http://127.0.0.1:9/hook")
    with session_scope() as session:
        for task_id, age in ((lost, timedelta(hours=2)), (recent, timedelta(seconds=0))):
            task = session.get(Task, task_id)
            assert task is not None
            task.webhook_status = "sending (attempt 1)"
            task.updated_at = datetime.now(UTC) - age
    broker = connect(settings.broker_url)
    try:
        reap(settings)
        queued = b"".join(broker.lrange(settings.celery_queue, 0, -1))
    finally:
        broker.close()
    assert str(lost).encode() in queued and str(recent).encode() not in queued
    assert _webhook_status(lost) == "sending (attempt 1)"


def test_a_gzip_bomb_answer_leaves_the_worker_up(
    client: Any, site: LocalSite, bomb_receiver: Receiver, tmp_path: Path
) -> None:
    proc = WorkerProcess(tmp_path, "bombed", concurrency=1).start()
    try:
        children = pool_children(proc.proc.pid)  # type: ignore[union-attr]
        (child,) = children
        before = _peak_rss(child)
        user = make_account()
        created = client.post(
            "/api/v1/tasks",
            json={"urls": [f"{site.url}/products/3"], "extract": {"h": "h1"}, "webhook_url": bomb_receiver.url},
            headers=user.headers,
        )
        assert created.status_code == 201, created.text
        wait_for_task(created.json()["id"])
        deadline = time.monotonic() + 20
        while _webhook_status(created.json()["id"]) != "delivered":
            assert time.monotonic() < deadline, _webhook_status(created.json()["id"])
            time.sleep(0.2)
        assert pool_children(proc.proc.pid) == children  # type: ignore[union-attr]
        grown = _peak_rss(child) - before
        assert grown < 48 * 2**20, f"the worker's peak memory grew by {grown / 2**20:.0f} MiB"
        assert "WorkerLostError" not in proc.log()
    finally:
        proc.stop()


def test_a_webhook_that_kills_its_worker_every_time_ends_failed(client: Any, site: LocalSite, tmp_path: Path) -> None:
    receiver = Receiver(hang(30))
    proc = WorkerProcess(tmp_path, "hooked", concurrency=1).start()
    try:
        user = make_account()
        created = client.post(
            "/api/v1/tasks",
            json={"urls": [f"{site.url}/products/4"], "extract": {"h": "h1"}, "webhook_url": receiver.url},
            headers=user.headers,
        )
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        assert wait_for_task(task_id).state == TaskState.completed
        # every delivery dies with its worker process (as a receiver's answer that exhausts
        # the memory limit would make it), and Celery gives the message back each time
        kills = 0
        deadline = time.monotonic() + 90
        while not _webhook_status(task_id).startswith("failed"):
            assert time.monotonic() < deadline, f"still {_webhook_status(task_id)!r} after {kills} kills"
            assert kills <= 6, f"the delivery came back after {kills} worker deaths"
            if receiver.count() > kills:
                for pid in pool_children(proc.proc.pid):  # type: ignore[union-attr]
                    os.kill(pid, signal.SIGKILL)
                kills += 1
            time.sleep(0.05)
        status = _webhook_status(task_id)
        assert kills == 3 == receiver.count()
        assert status.startswith("failed: worker_lost:") and "3 attempts" in status, status
        time.sleep(6)  # no more deliveries, no status change
        assert receiver.count() == 3 and _webhook_status(task_id) == status
        assert proc.proc is not None and proc.proc.poll() is None
    except Exception:
        print(proc.log()[-4000:])
        raise
    finally:
        proc.stop()
        receiver.close()
