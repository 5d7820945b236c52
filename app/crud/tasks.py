"""Submitting, listing and cancelling tasks. Used by the REST API and the console alike,
so both enforce the same checks and produce the same messages."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from app.schemas.tasks import TaskCreate, TaskDetail, TaskOut, TaskUrlOut
from common import accounting
from common.config import Settings
from common.extraction import ExtractionRules
from common.models import Task, TaskState, TaskUrl, UrlState, User
from common.netpolicy import RENDERER_UNGUARDED, ForbiddenTarget, NetworkPolicy
from common.queue import enqueue_scrape, enqueue_webhook
from common.results import task_links, task_prefix
from common.storage import get_storage

log = logging.getLogger(__name__)


class TaskRejected(Exception):
    """A submission or action refused with an HTTP status and a message for the user.

    ``loc`` (a request-body path) makes it a 422 item in FastAPI's validation format."""

    def __init__(
        self, status_code: int, message: str, loc: Sequence[str | int] | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.loc = list(loc) if loc is not None else None
        self.retry_after = retry_after

    def detail(self) -> Any:
        if self.loc is None:
            return self.message
        return [{"loc": self.loc, "msg": self.message, "type": "value_error"}]


def _check_deployment(settings: Settings, body: TaskCreate) -> None:
    """Options the request schema accepts but this deployment may not support."""
    if body.options.render_js and not settings.renderer_url:
        raise TaskRejected(
            422,
            "render_js is not available: this deployment has no JavaScript renderer (RENDERER_URL is not set)",
            ["body", "options", "render_js"],
        )
    if body.options.render_js and not settings.renderer_available:
        raise TaskRejected(422, RENDERER_UNGUARDED, ["body", "options", "render_js"])
    if body.options.use_proxy and not settings.proxies_configured:
        raise TaskRejected(
            422,
            "use_proxy is not available: this deployment has no proxy list (PROXY_LIST is not set)",
            ["body", "options", "use_proxy"],
        )
    policy = NetworkPolicy(tuple(settings.scraper_allowed_networks))
    targets: list[tuple[list[str | int], str]] = [(["body", "urls", i], str(u)) for i, u in enumerate(body.urls)]
    if body.webhook_url is not None:
        targets.append((["body", "webhook_url"], str(body.webhook_url)))
    for loc, url in targets:
        try:
            policy.check_url_literal(url)
        except ForbiddenTarget as exc:
            raise TaskRejected(422, f"{url}: {exc}", loc) from None


def _reject_active(active: int, plan: Any) -> TaskRejected:
    return TaskRejected(
        429,
        f"{active} of your tasks are queued or running, the most the {plan.name} plan allows; "
        "submit more when one finishes",
        retry_after=30,
    )


def _reject_credits(status: accounting.CreditStatus, urls: int) -> TaskRejected:
    plan = status.plan
    return TaskRejected(
        402,
        f"Out of credits: this task needs {urls} credit(s), one per URL, and your {plan.name} plan has "
        f"{status.remaining} of {status.included} left for {status.period} (resets "
        f"{status.resets_at:%Y-%m-%d}). Upgrade your plan or submit fewer URLs.",
    )


def _active_tasks(session: Session, user: User, besides: uuid.UUID | None = None) -> int:
    query = (
        select(func.count())
        .select_from(Task)
        .where(Task.user_id == user.id, Task.state.in_([TaskState.queued, TaskState.running]))
    )
    if besides is not None:
        query = query.where(Task.id != besides)
    return int(session.scalar(query) or 0)


def _existing(session: Session, user: User, idempotency_key: str) -> Task | None:
    return session.scalar(select(Task).where(Task.user_id == user.id, Task.idempotency_key == idempotency_key))


def submit(
    session: Session,
    settings: Settings,
    user: User,
    body: TaskCreate,
    idempotency_key: str | None = None,
) -> tuple[Task, bool]:
    """Check, charge and queue a task; returns (task, created). Commits, then sends the
    queue message. A repeated Idempotency-Key returns the task it created the first time.

    No account-wide lock and no ledger sum: the task rows are written first, then the
    charge (``accounting.charge_within``) locks the account's balance row until the commit
    right after. That orders concurrent submissions of the account, so they cannot
    overspend, and makes the active-task count that follows see the ones before it."""
    _check_deployment(settings, body)
    if idempotency_key:
        existing = _existing(session, user, idempotency_key)
        if existing is not None:
            return existing, False
    plan = accounting.effective_plan(session, user)
    urls = len(body.urls)
    options = body.options.model_dump(mode="json")
    if body.options.use_proxy is None:
        options["use_proxy"] = settings.proxies_configured
    task = Task(
        id=uuid.uuid4(),
        user_id=user.id,
        state=TaskState.queued,
        rules=body.extract.model_dump(mode="json"),
        options=options,
        webhook_url=str(body.webhook_url) if body.webhook_url else None,
        idempotency_key=idempotency_key,
        url_count=urls,
        succeeded_count=0,
        failed_count=0,
        credits_charged=0,
        attempts=0,
        created_at=datetime.now(UTC),
    )
    task.urls = [
        TaskUrl(position=i, url=str(url), state=UrlState.pending, attempts=0) for i, url in enumerate(body.urls)
    ]
    session.add(task)
    try:
        session.flush()
    except IntegrityError:  # the same Idempotency-Key, submitted concurrently
        session.rollback()
        existing = _existing(session, user, idempotency_key) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    if not accounting.charge_within(session, task, plan.monthly_credits):
        session.rollback()
        raise _reject_credits(accounting.credit_status(session, user), urls)
    active = _active_tasks(session, user, besides=task.id)
    if active >= plan.max_concurrent_tasks:
        session.rollback()
        raise _reject_active(active, plan)
    session.commit()
    try:
        enqueue_scrape(task.id)
    except Exception:  # broker down: the task is safe in the database and the reaper sends it
        log.exception("task %s: queueing failed; the reaper will retry", task.id)
    else:
        session.execute(update(Task).where(Task.id == task.id).values(enqueued_at=func.now()))
        session.commit()
    return task, True


def get_for_user(session: Session, user: User, task_id: uuid.UUID, with_urls: bool = False) -> Task | None:
    query = select(Task).where(Task.id == task_id, Task.user_id == user.id)
    if with_urls:
        query = query.options(selectinload(Task.urls))
    return session.scalar(query)


_DETAIL_COLUMNS = [getattr(Task, name) for name in sorted(TaskOut.model_fields.keys() - {"links"})]
_URL_COLUMNS = [getattr(TaskUrl, name) for name in TaskUrlOut.model_fields]


@lru_cache(maxsize=512)
def _rules(canonical: str) -> ExtractionRules:
    """Stored rules were checked at submit time (read back as stored, so rules accepted then
    still show after the checks grew); parse each distinct set once per process."""
    return ExtractionRules.stored(json.loads(canonical))


def detail_json(session: Session, user: User, task_id: uuid.UUID, base_url: str) -> bytes | None:
    """The TaskDetail document of a task, serialised, from two column-only queries (no ORM
    entities, no relationship loading); None if the user has no such task."""
    row = session.execute(
        select(*_DETAIL_COLUMNS, Task.rules, Task.options).where(Task.id == task_id, Task.user_id == user.id)
    ).first()
    if row is None:
        return None
    urls = session.execute(select(*_URL_COLUMNS).where(TaskUrl.task_id == task_id).order_by(TaskUrl.position)).all()
    values = row._mapping
    detail = TaskDetail.model_validate(
        {
            **{column.key: values[column.key] for column in _DETAIL_COLUMNS},
            "links": task_links(base_url, task_id),
            "extract": _rules(json.dumps(values["rules"], sort_keys=True)),
            "options": {k: v for k, v in values["options"].items() if v is not None},
            "urls": [dict(u._mapping) for u in urls],
        }
    )
    return detail.model_dump_json().encode()


def list_for_user(
    session: Session, user: User, states: Sequence[TaskState], limit: int, offset: int
) -> tuple[list[Task], int]:
    query = select(Task).where(Task.user_id == user.id)
    if states:
        query = query.where(Task.state.in_(list(states)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(query.order_by(Task.created_at.desc(), Task.id).limit(limit).offset(offset)).all()
    return list(items), total


def cancel(session: Session, user: User, task_id: uuid.UUID) -> Task:
    """Stop a task; credits of URLs not done yet are given back. The row lock orders this
    with a worker recording a result, so each URL is either counted done or refunded."""
    task = session.scalar(select(Task).where(Task.id == task_id, Task.user_id == user.id).with_for_update())
    if task is None:
        raise TaskRejected(404, "no such task")
    if task.state.terminal:
        raise TaskRejected(409, f"the task is already {task.state.value}")
    done = dict(
        session.execute(
            select(TaskUrl.state, func.count())
            .where(TaskUrl.task_id == task.id, TaskUrl.state != UrlState.pending)
            .group_by(TaskUrl.state)
        ).all()
    )
    succeeded = int(done.get(UrlState.succeeded, 0))
    not_done = task.url_count - succeeded
    # workers refresh the counters in batches; the lock makes these the final figures
    task.succeeded_count = succeeded
    task.failed_count = int(done.get(UrlState.failed, 0))
    task.state = TaskState.cancelled
    task.finished_at = datetime.now(UTC)
    task.lease_owner = None
    task.lease_expires_at = None
    task.error = f"cancelled by the user; {not_done} URL(s) not done"
    accounting.refund(session, task, not_done, f"cancelled with {not_done} URL(s) not done")
    if task.webhook_url:
        task.webhook_status = "pending"
    session.commit()
    if task.webhook_url:
        try:
            enqueue_webhook(task.id)
        except Exception:
            log.exception("task %s: could not queue the webhook; the reaper will", task.id)
    return task


def delete(session: Session, user: User, task_id: uuid.UUID) -> None:
    """Remove a finished task and its stored results; the credit ledger keeps its rows."""
    task = session.scalar(select(Task).where(Task.id == task_id, Task.user_id == user.id).with_for_update())
    if task is None:
        raise TaskRejected(404, "no such task")
    if not task.state.terminal:
        raise TaskRejected(409, f"the task is {task.state.value}; cancel it before deleting it")
    get_storage().delete_prefix(task_prefix(task.id))
    session.delete(task)
    session.commit()


def to_out(task: Task, base_url: str) -> TaskOut:
    return TaskOut.model_validate({**_columns(task), "links": task_links(base_url, task.id)})


def to_detail(task: Task, base_url: str) -> TaskDetail:
    return TaskDetail.model_validate(
        {
            **_columns(task),
            "links": task_links(base_url, task.id),
            "extract": task.rules,
            "options": {k: v for k, v in task.options.items() if v is not None},
            "urls": task.urls,
        }
    )


def _columns(task: Task) -> dict[str, Any]:
    names = TaskOut.model_fields.keys() - {"links"}
    return {name: getattr(task, name) for name in names}
