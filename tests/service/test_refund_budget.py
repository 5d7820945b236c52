"""The daily refund budget (issue 17): refunds for URLs that were fetched and failed stop at
a per-account daily budget, so a free account cannot scan the internet for free; URLs never
fetched are always given back, and within the budget every failure is refunded once."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from svc_helpers import make_account

from common import accounting
from common.config import get_settings
from common.db import session_scope
from common.models import LedgerKind, Task, TaskState, TaskUrl, UrlState, UsageEntry, User

BUDGET = 50  # above the free plan's tenth of its monthly credits (10), so this is the budget


@pytest.fixture
def budget(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setenv("REFUND_BUDGET_PER_DAY", str(BUDGET))
    get_settings.cache_clear()
    yield BUDGET
    monkeypatch.undo()
    get_settings.cache_clear()


def charged_task(user_id: uuid.UUID, failed: int, unfetched: int = 0, retrying: int = 0) -> uuid.UUID:
    """A charged task whose URLs are ``failed``, pending never fetched, or pending after a try."""
    states = [(UrlState.failed, 1)] * failed + [(UrlState.pending, 0)] * unfetched + [(UrlState.pending, 2)] * retrying
    with session_scope() as session:
        task = Task(
            id=uuid.uuid4(),
            user_id=user_id,
            state=TaskState.running,
            rules={"t": "h1::text"},
            options={},
            url_count=len(states),
            created_at=datetime.now(UTC),
        )
        task.urls = [
            TaskUrl(position=i, url=f"https://example.com/{i}", state=state, attempts=attempts)
            for i, (state, attempts) in enumerate(states)
        ]
        session.add(task)
        session.flush()
        accounting.charge(session, task)
        return task.id


def refund_failed(task_id: uuid.UUID, credits: int) -> int:
    """What the worker does when a task ends; returns the credits given back."""
    with session_scope() as session:
        task = session.scalar(select(Task).where(Task.id == task_id).with_for_update())
        assert task is not None
        accounting.refund(session, task, credits, f"{credits} URL(s) failed")
    return refunded(task_id)


def refunded(task_id: uuid.UUID) -> int:
    with session_scope() as session:
        entry = session.scalar(
            select(UsageEntry).where(UsageEntry.task_id == task_id, UsageEntry.kind == LedgerKind.refund)
        )
        return entry.credits if entry else 0


def balance_agrees(user_id: uuid.UUID) -> bool:
    with session_scope() as session:
        period = accounting.period_of()
        used = accounting.credit_status(session, session.get_one(User, user_id)).used
        return used == accounting.ledger_used(session, user_id, period)


def test_failed_urls_are_refunded_up_to_the_daily_budget(budget: int) -> None:
    user = make_account(plan="free").user_id
    first, second, third = charged_task(user, 30), charged_task(user, 30), charged_task(user, 5)
    assert refund_failed(first, 30) == 30
    assert refund_failed(second, 30) == 20  # 10 over the budget
    assert refund_failed(third, 5) == 0
    with session_scope() as session:
        note = session.scalar(
            select(UsageEntry.note).where(UsageEntry.task_id == second, UsageEntry.kind == LedgerKind.refund)
        )
    assert note is not None and "10 not refunded" in note and "daily refund budget of 50" in note
    assert refund_failed(second, 30) == 20  # a second finish refunds nothing more
    assert balance_agrees(user)
    other = make_account(plan="free").user_id  # budgets are per account
    assert refund_failed(charged_task(other, 5), 5) == 5


def test_urls_never_fetched_are_always_refunded(budget: int) -> None:
    user = make_account(plan="free").user_id
    assert refund_failed(charged_task(user, 50), 50) == 50  # budget used up
    # a cancel gives back failed and not-done URLs: only the never-fetched ones pass now
    cancelled = charged_task(user, failed=3, unfetched=10, retrying=4)
    assert refund_failed(cancelled, 17) == 10
    assert balance_agrees(user)


def test_the_budget_is_per_day(budget: int) -> None:
    user = make_account(plan="free").user_id
    assert refund_failed(charged_task(user, 50), 50) == 50
    assert refund_failed(charged_task(user, 5), 5) == 0
    with session_scope() as session:
        session.execute(
            update(UsageEntry)
            .where(UsageEntry.user_id == user, UsageEntry.kind == LedgerKind.refund)
            .values(created_at=datetime.now(UTC) - timedelta(days=1))
        )
    assert refund_failed(charged_task(user, 5), 5) == 5


def test_concurrent_refunds_stay_within_the_budget(budget: int) -> None:
    user = make_account(plan="free").user_id
    tasks = [charged_task(user, 20) for _ in range(5)]
    threads = [threading.Thread(target=refund_failed, args=(task, 20)) for task in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(refunded(task) for task in tasks) == budget
    assert balance_agrees(user)


def test_paid_plans_get_a_tenth_of_their_monthly_credits(budget: int) -> None:
    user = make_account(plan="starter").user_id  # 5,000 credits a month: 500 a day
    assert refund_failed(charged_task(user, 100), 100) == 100
    with session_scope() as session:
        plan = accounting.effective_plan(session, session.get_one(User, user))
        assert accounting.refund_budget(plan) == 500
