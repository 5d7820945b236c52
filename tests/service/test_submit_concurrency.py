"""Submissions of one account racing each other: credits and the active-task limit hold
without an account-wide lock (the balance row orders them), and the balance always
equals the ledger's sum."""

from __future__ import annotations

import random
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, update
from svc_helpers import make_account

from app.crud import tasks as crud
from app.schemas.tasks import TaskCreate
from common import accounting
from common.config import get_settings
from common.db import session_factory, session_scope
from common.models import Plan, Task, TaskState, User


def _plan(credits: int, max_tasks: int) -> str:
    name = f"race-{uuid.uuid4().hex[:6]}"
    with session_scope() as session:
        plan_id = (session.scalar(select(func.max(Plan.id))) or 0) + 1 + random.randrange(1000)
        session.add(
            Plan(
                id=plan_id,
                name=name,
                monthly_credits=credits,
                rate_limit_per_minute=1000,
                max_concurrent_tasks=max_tasks,
            )
        )
    return name


def _race(user_id: uuid.UUID, submissions: int, urls: int) -> list[Any]:
    """``submissions`` threads submit at the same moment; each returns a Task or a TaskRejected."""
    barrier = threading.Barrier(submissions)
    outcomes: list[Any] = [None] * submissions
    body = TaskCreate.model_validate({"urls": [f"http://shop.test/p/{n}" for n in range(urls)], "extract": {"h": "h1"}})

    def submit(i: int) -> None:
        session = session_factory()()
        try:
            user = session.get(User, user_id)
            assert user is not None
            barrier.wait(timeout=30)
            outcomes[i] = crud.submit(session, get_settings(), user, body)[0]
        except crud.TaskRejected as exc:
            outcomes[i] = exc
        finally:
            session.close()

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(submissions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return outcomes


def _balance_and_ledger(user_id: uuid.UUID) -> tuple[int, int]:
    with session_scope() as session:
        user = session.get(User, user_id)
        assert user is not None
        used = accounting.credit_status(session, user).used
        return used, accounting.ledger_used(session, user_id, accounting.period_of())


def test_concurrent_submissions_cannot_overspend(service_env: dict[str, str]) -> None:
    account = make_account(plan=_plan(credits=10, max_tasks=100))
    outcomes = _race(account.user_id, submissions=8, urls=3)
    accepted = [o for o in outcomes if isinstance(o, Task)]
    refused = [o for o in outcomes if isinstance(o, crud.TaskRejected)]
    assert len(accepted) == 3 and len(refused) == 5  # three tasks of 3 credits fit in 10, a fourth does not
    assert {r.status_code for r in refused} == {402}
    assert _balance_and_ledger(account.user_id) == (9, 9)


def test_concurrent_submissions_respect_the_active_task_limit(service_env: dict[str, str]) -> None:
    account = make_account(plan=_plan(credits=1000, max_tasks=2))
    outcomes = _race(account.user_id, submissions=6, urls=1)
    accepted = [o for o in outcomes if isinstance(o, Task)]
    assert len(accepted) == 2
    assert {o.status_code for o in outcomes if isinstance(o, crud.TaskRejected)} == {429}
    assert _balance_and_ledger(account.user_id) == (2, 2)


def test_refunds_give_credits_back_to_the_balance(service_env: dict[str, str]) -> None:
    account = make_account(plan=_plan(credits=5, max_tasks=10))
    [task] = _race(account.user_id, submissions=1, urls=4)
    assert isinstance(task, Task)
    with session_scope() as session:
        stored = session.get(Task, task.id)
        assert stored is not None
        assert accounting.refund(session, stored, 3, "test")
        assert not accounting.refund(session, stored, 3, "test again")  # once per task
        session.execute(update(Task).where(Task.id == task.id).values(state=TaskState.completed))
    assert _balance_and_ledger(account.user_id) == (1, 1)
    [again] = _race(account.user_id, submissions=1, urls=4)
    assert isinstance(again, Task)
    [over] = _race(account.user_id, submissions=1, urls=1)
    assert isinstance(over, crud.TaskRejected) and over.status_code == 402
    assert "has 0 of 5 left" in over.message


@pytest.fixture(autouse=True)
def _no_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """The queue message is not what these tests are about."""
    monkeypatch.setattr(crud, "enqueue_scrape", lambda task_id: None)
