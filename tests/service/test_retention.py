"""Results do not pile up forever (issue 17, item 6): finished tasks and their stored
results are deleted RESULTS_RETENTION_DAYS after they finished, by the worker's reaper."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from svc_helpers import Account

from common.config import get_settings
from common.db import session_scope
from common.models import LedgerKind, Task, TaskState, TaskUrl, UrlState, UsageEntry
from common.results import page_key
from common.storage import get_storage
from worker.reaper import expire_results


def make_task(account: Account, state: TaskState, finished_days_ago: float | None) -> uuid.UUID:
    """A task with one stored result, as the worker leaves it."""
    now = datetime.now(UTC)
    finished = now - timedelta(days=finished_days_ago) if finished_days_ago is not None else None
    with session_scope() as session:
        task = Task(
            user_id=account.user_id,
            state=state,
            rules={"title": "h1::text"},
            options={},
            url_count=1,
            finished_at=finished,
            urls=[TaskUrl(position=0, url="https://example.com/", state=UrlState.succeeded)],
        )
        session.add(task)
        session.flush()
        task_id = task.id
    get_storage().put(page_key(task_id, 0), b'{"data": {"title": "x"}}', "application/json")
    return task_id


def test_old_finished_tasks_and_their_results_are_deleted(account: Account) -> None:
    settings = get_settings().model_copy(update={"results_retention_days": 30})
    storage = get_storage()
    old = [make_task(account, state, 31) for state in (TaskState.completed, TaskState.failed, TaskState.cancelled)]
    recent = make_task(account, TaskState.completed, 29)
    running = make_task(account, TaskState.running, None)
    with session_scope() as session:
        session.add(
            UsageEntry(user_id=account.user_id, task_id=old[0], kind=LedgerKind.charge, credits=-1, period="2000-01")
        )

    assert expire_results(settings, storage) >= 3
    with session_scope() as session:
        left = set(session.scalars(select(Task.id).where(Task.user_id == account.user_id)))
        ledger = session.scalars(select(UsageEntry).where(UsageEntry.user_id == account.user_id)).all()
    assert left == {recent, running}
    assert not any(storage.exists(page_key(task_id, 0)) for task_id in old)
    assert storage.exists(page_key(recent, 0)) and storage.exists(page_key(running, 0))
    assert [entry.task_id for entry in ledger] == [None]  # the credit history stays

    keep_forever = settings.model_copy(update={"results_retention_days": 0})
    assert expire_results(keep_forever, storage) == 0
