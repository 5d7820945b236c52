"""Tasks keep working after the selector checks grew (issue 17, item 3): rules stored before
``re:``/``set:`` selectors were refused are read back as stored, not re-checked, so the task
detail and its CSV download answer instead of failing with a 500."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

from svc_helpers import Account

from common.db import session_scope
from common.models import Task, TaskState, TaskUrl, UrlState
from common.results import page_key
from common.storage import get_storage

OLD_RULES = {
    "title": "h1::text",
    "flag": {"type": "xpath", "selector": "re:test(//h1, 'P')"},
    "tags": {"type": "xpath", "selector": "set:distinct(//li/text())", "many": True},
}


def old_task(account: Account) -> uuid.UUID:
    """A finished task whose rules a submission would refuse today."""
    with session_scope() as session:
        task = Task(
            user_id=account.user_id,
            state=TaskState.completed,
            rules=OLD_RULES,
            options={},
            url_count=1,
            urls=[TaskUrl(position=0, url="https://example.com/", state=UrlState.succeeded)],
        )
        session.add(task)
        session.flush()
        task_id = task.id
    get_storage().put(page_key(task_id, 0), b'{"data": {"title": "Plain", "flag": null}}', "application/json")
    return task_id


def test_task_detail_of_rules_stored_before_the_checks(client: Any, account: Account) -> None:
    task_id = old_task(account)
    answer = client.get(f"/api/v1/tasks/{task_id}", headers=account.headers)
    assert answer.status_code == 200, answer.text[:500]
    assert answer.json()["extract"]["flag"]["selector"] == "re:test(//h1, 'P')"


def test_csv_download_of_rules_stored_before_the_checks(client: Any, account: Account) -> None:
    task_id = old_task(account)
    answer = client.get(f"/api/v1/tasks/{task_id}/results", params={"format": "csv"}, headers=account.headers)
    assert answer.status_code == 200, answer.text[:500]
    header, row = list(csv.reader(io.StringIO(answer.text.lstrip("\ufeff"))))
    cells = dict(zip(header, row, strict=True))
    assert {"title", "flag", "tags"} <= cells.keys() and cells["title"] == "Plain"
