"""A task whose run kills the worker process every time (a poison message: out of memory, a
crash in a parser) ends ``failed`` with the reason after MAX_LOST_RUNS deaths, refunded once,
and its message stops coming back; Celery alone would give it back forever
(``task_reject_on_worker_lost``). One death is still survived (tests/service/test_worker_crash.py).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from svc_helpers import WorkerProcess, make_account
from svc_receiver import pool_children
from svc_site import LocalSite

from common.accounting import task_charge_total
from common.config import get_settings
from common.db import session_scope
from common.models import LedgerKind, Task, TaskState, TaskUrl, UrlState, UsageEntry
from common.redis_client import connect
from worker.reaper import _broker_task_ids
from worker.runner import MAX_LOST_RUNS


def test_a_task_that_kills_its_worker_every_time_ends_failed_once(client: Any, site: LocalSite, tmp_path: Path) -> None:
    proc = WorkerProcess(tmp_path, "poisoned", concurrency=1).start()
    assert proc.proc is not None
    try:
        user = make_account()
        url = f"{site.url}/slow?ms=30000&t={uuid.uuid4().hex}"
        created = client.post("/api/v1/tasks", json={"urls": [url], "extract": {"t": "h1"}}, headers=user.headers)
        assert created.status_code == 201, created.text
        task_id = uuid.UUID(created.json()["id"])

        # kill -9 the pool process of every run that fetches the URL (as a page that exhausts
        # the worker's memory would)
        path = url.removeprefix(site.url)
        killed: list[str] = []
        deadline = time.monotonic() + 120
        while True:
            with session_scope() as session:
                task = session.get(Task, task_id)
                assert task is not None
                state, owner, expires = task.state, task.lease_owner, task.lease_expires_at
            if state.terminal:
                break
            assert time.monotonic() < deadline, f"task still {state.value} after {len(killed)} worker deaths"
            assert len(killed) <= MAX_LOST_RUNS + 3, f"the task came back after {len(killed)} worker deaths"
            fetching = site.state.paths().count(path) > len(killed)
            if fetching and owner and owner not in killed and expires and expires > datetime.now(UTC):
                pid = int(owner.split("/")[1])
                assert pid in pool_children(proc.proc.pid), owner  # only our own worker's processes
                os.kill(pid, signal.SIGKILL)
                killed.append(owner)
            time.sleep(0.05)

        assert len(killed) == MAX_LOST_RUNS == site.state.paths().count(path)
        with session_scope() as session:
            task = session.get(Task, task_id)
            assert task is not None
            assert task.state == TaskState.failed
            assert task.attempts == MAX_LOST_RUNS + 1  # the last run only ended it
            assert task.error == "1 of 1 URL(s) failed (worker_lost: 1)"
            (row,) = session.scalars(select(TaskUrl).where(TaskUrl.task_id == task_id)).all()
            assert (row.state, row.error_code) == (UrlState.failed, "worker_lost")
            assert row.error == f"the worker process died {MAX_LOST_RUNS} times while running this task; not retried"
            entries = session.scalars(select(UsageEntry).where(UsageEntry.task_id == task_id)).all()
            assert sorted((e.kind, e.credits) for e in entries) == [(LedgerKind.charge, -1), (LedgerKind.refund, 1)]
            assert task_charge_total(session, task_id) == 0
            finished = (task.finished_at, task.attempts)

        # the message is gone: nothing runs the task again (reaper every 2 s, lease 4 s)
        time.sleep(8)
        with session_scope() as session:
            task = session.get(Task, task_id)
            assert task is not None and (task.finished_at, task.attempts) == finished
        settings = get_settings()
        broker = connect(settings.broker_url)
        try:
            assert str(task_id) not in (_broker_task_ids(broker, settings.celery_queue) or set())
        finally:
            broker.close()
        assert proc.proc.poll() is None  # the worker itself is up
    except Exception:
        print(proc.log()[-4000:])
        raise
    finally:
        proc.stop()
