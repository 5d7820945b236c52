"""Credits: a plan gives N credits (pages) per calendar month; a task is charged one credit
per URL when it is accepted and refunded for URLs that did not succeed.

The ledger has at most one charge and one refund per task (unique constraint), so a
retried worker, a redelivered message or a double click cannot charge twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from common.config import get_settings
from common.models import CreditBalance, LedgerKind, Plan, Task, UsageEntry, User


def period_of(moment: datetime | None = None) -> str:
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m")


def period_end(period: str) -> datetime:
    year, month = (int(p) for p in period.split("-"))
    return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


def default_plan(session: Session) -> Plan:
    name = get_settings().default_plan
    plan = session.scalar(select(Plan).where(Plan.name == name))
    if plan is None:
        raise RuntimeError(f"plan {name!r} (DEFAULT_PLAN) is not in the plans table; run migrations")
    return plan


def effective_plan(session: Session, user: User) -> Plan:
    """A cancelled subscription keeps its plan until the paid period ends."""
    if user.plan_expires_at is not None and user.plan_expires_at <= datetime.now(UTC):
        return default_plan(session)
    return user.plan


@dataclass(frozen=True)
class CreditStatus:
    plan: Plan
    period: str
    included: int
    used: int

    @property
    def remaining(self) -> int:
        return max(0, self.included - self.used)

    @property
    def resets_at(self) -> datetime:
        return period_end(self.period)


def credit_status(session: Session, user: User) -> CreditStatus:
    period = period_of()
    used = session.scalar(
        select(CreditBalance.used).where(CreditBalance.user_id == user.id, CreditBalance.period == period)
    )
    plan = effective_plan(session, user)
    return CreditStatus(plan=plan, period=period, included=plan.monthly_credits, used=int(used or 0))


def ledger_used(session: Session, user_id: uuid.UUID, period: str) -> int:
    """Credits used in a period according to the ledger itself (the balance must agree)."""
    spent = session.scalar(
        select(func.coalesce(func.sum(UsageEntry.credits), 0)).where(
            UsageEntry.user_id == user_id, UsageEntry.period == period
        )
    )
    return -int(spent or 0)


def _record(session: Session, task: Task, kind: LedgerKind, credits: int, note: str) -> bool:
    """Insert a ledger row once per (task, kind); returns False when it already existed."""
    stmt = (
        insert(UsageEntry)
        .values(
            user_id=task.user_id,
            task_id=task.id,
            kind=kind,
            credits=credits,
            period=period_of(task.created_at),
            note=note,
        )
        .on_conflict_do_nothing(constraint="uq_usage_ledger_task_kind")
        .returning(UsageEntry.id)
    )
    return session.execute(stmt).first() is not None


def charge(session: Session, task: Task) -> bool:
    task.credits_charged = task.url_count
    return _record(session, task, LedgerKind.charge, -task.url_count, f"{task.url_count} URL(s)")


def charge_within(session: Session, task: Task, included: int) -> bool:
    """Charge a new task if the period's usage stays within ``included``; the caller rolls
    back on False.

    The ledger insert makes the database trigger add the credits to the account's
    ``credit_balances`` row, locking it until the caller commits: concurrent submissions of
    an account queue there, and each sees the charges committed before it, so two requests
    cannot both spend the last credits. No account-wide lock, no ledger sum. Call it late
    in the transaction (the lock lasts until the commit)."""
    if task.url_count > included:
        return False
    charge(session, task)
    used = session.scalar(
        select(CreditBalance.used).where(
            CreditBalance.user_id == task.user_id, CreditBalance.period == period_of(task.created_at)
        )
    )
    return used is not None and used <= included


def refund(session: Session, task: Task, credits: int, note: str) -> bool:
    if credits <= 0:
        return False
    if _record(session, task, LedgerKind.refund, credits, note):
        task.credits_charged = max(0, task.credits_charged - credits)
        return True
    return False


def task_charge_total(session: Session, task_id: uuid.UUID) -> int:
    """Net credits a task cost (for tests and the console)."""
    total = session.scalar(select(func.coalesce(func.sum(UsageEntry.credits), 0)).where(UsageEntry.task_id == task_id))
    return -int(total or 0)
