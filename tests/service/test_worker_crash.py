"""A worker killed with SIGKILL in the middle of a task: another worker finishes it, each
URL is recorded once, and the account is charged once."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select
from svc_helpers import WorkerProcess, make_account, wait_for_task
from svc_site import LocalSite

from common.accounting import task_charge_total
from common.db import session_scope
from common.models import LedgerKind, Task, TaskUrl, UrlState, UsageEntry


def test_killed_worker_leaves_the_task_to_another_run(
    client: Any, site: LocalSite, tmp_path: Path, service_env: dict[str, str]
) -> None:
    first = WorkerProcess(tmp_path, "doomed", concurrency=1).start()
    second = WorkerProcess(tmp_path, "rescuer", concurrency=1)
    try:
        user = make_account()
        tag = uuid.uuid4().hex
        fast = [f"{site.url}/products/{n}?t={tag}" for n in (1, 2, 3)]
        slow = f"{site.url}/slow?ms=5000&t={tag}"
        created = client.post(
            "/api/v1/tasks", json={"urls": [*fast, slow], "extract": {"title": "h1::text"}}, headers=user.headers
        )
        assert created.status_code == 201
        task_id = uuid.UUID(created.json()["id"])

        # wait until the fast pages are recorded and the slow one is in flight, then kill -9
        deadline = time.monotonic() + 30
        while True:
            with session_scope() as session:
                done = session.scalars(
                    select(TaskUrl.url).where(TaskUrl.task_id == task_id, TaskUrl.state == UrlState.succeeded)
                ).all()
            if len(done) == 3 and any(p.startswith("/slow") and tag in p for p in site.state.paths()):
                break
            assert time.monotonic() < deadline, "the first worker never got going"
            time.sleep(0.1)
        first.kill9()
        with session_scope() as session:
            task = session.get(Task, task_id)
            assert task is not None and task.state.value == "running"

        second.start()
        task = wait_for_task(task_id, timeout=60)
        assert task.state.value == "completed", task.error
        assert task.succeeded_count == 4 and task.attempts == 2
        with session_scope() as session:
            urls = session.scalars(select(TaskUrl).where(TaskUrl.task_id == task_id)).all()
            assert sorted(u.position for u in urls) == [0, 1, 2, 3]
            assert {u.state for u in urls} == {UrlState.succeeded}
            assert [u.attempts for u in sorted(urls, key=lambda u: u.position)] == [1, 1, 1, 1]
            entries = session.scalars(select(UsageEntry).where(UsageEntry.task_id == task_id)).all()
            assert [(e.kind, e.credits) for e in entries] == [(LedgerKind.charge, -4)]
            assert task_charge_total(session, task_id) == 4
        # the pages recorded before the crash were not fetched again; the interrupted one was
        paths = site.state.paths()
        for url in fast:
            assert paths.count(url.removeprefix(site.url)) == 1
        assert paths.count(slow.removeprefix(site.url)) == 2
        document = client.get(f"/api/v1/tasks/{task_id}/results", headers=user.headers).json()
        assert [r["data"]["title"] for r in document["results"]] == ["Product 1", "Product 2", "Product 3", "Slow 5000"]
        assert json.dumps(document).count("Product 1") == 1
    except Exception:
        print(first.log()[-4000:], second.log()[-4000:])
        raise
    finally:
        first.stop()
        second.stop()


def test_a_duplicate_message_for_a_finished_task_changes_nothing(client: Any, site: LocalSite, tmp_path: Path) -> None:
    from common.queue import enqueue_scrape

    proc = WorkerProcess(tmp_path, "dup", concurrency=2).start()
    try:
        user = make_account()
        created = client.post(
            "/api/v1/tasks", json={"urls": [f"{site.url}/products/5"], "extract": {"t": "h1"}}, headers=user.headers
        ).json()
        first = wait_for_task(created["id"])
        enqueue_scrape(created["id"])  # as if Redis redelivered the message
        enqueue_scrape(created["id"])
        time.sleep(2)
        again = wait_for_task(created["id"])
        assert (again.finished_at, again.attempts) == (first.finished_at, first.attempts)
        with session_scope() as session:
            assert task_charge_total(session, uuid.UUID(created["id"])) == 1
    finally:
        proc.stop()
