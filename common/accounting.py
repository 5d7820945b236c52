"""Credits: a plan gives N credits (pages) per calendar month; a task is charged one credit
per URL when it is accepted and refunded for URLs that did not succeed.

The ledger has at most one charge and one refund per task (unique constraint), so a
retried worker, a redelivered message or a double click cannot charge twice.

Refunds for URLs that were fetched without success stop at a daily budget per account
(``refund_budget``): otherwise failing URLs cost nothing and an account could probe any
number of hosts for free. URLs never fetched (a cancel before their turn) are always given
back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, and_, cast, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from common.config import get_settings
from common.models import CreditBalance, LedgerKind, Plan, Task, TaskUrl, UrlState, UsageEntry, User

# pg_advisory_xact_lock(class, key) namespace of the per-account refund lock
REFUND_LOCK_CLASS = 0x5E1E


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


def refund_budget(plan: Plan) -> int:
    """Credits a day an account gets back for URLs fetched without success: REFUND_BUDGET_PER_DAY
    or a tenth of the plan's monthly credits, whichever is larger."""
    return max(get_settings().refund_budget_per_day, plan.monthly_credits // 10)


def _never_fetched(task_id: Any) -> Any:
    """Scalar subquery: the task's URLs still pending that no run has tried (always refunded)."""
    return (
        select(func.count())
        .select_from(TaskUrl)
        .where(TaskUrl.task_id == task_id, TaskUrl.state == UrlState.pending, TaskUrl.attempts == 0)
        .scalar_subquery()
    )


def _budget_used_today(session: Session, user_id: uuid.UUID) -> int:
    """Credits refunded today (UTC) for URLs that were tried: each refund minus its task's
    never-fetched URLs (a deleted task's whole refund counts)."""
    tried = func.greatest(0, UsageEntry.credits - func.coalesce(_never_fetched(UsageEntry.task_id), 0))
    used = session.scalar(
        select(func.coalesce(func.sum(tried), 0)).where(
            and_(
                UsageEntry.user_id == user_id,
                UsageEntry.kind == LedgerKind.refund,
                UsageEntry.created_at >= func.date_trunc("day", func.now(), "UTC"),
            )
        )
    )
    return int(used or 0)


def refund(session: Session, task: Task, credits: int, note: str) -> bool:
    """Give back ``credits`` of a task that ended (once per task). Call it once the task's URLs
    are final: those tried without success draw on the account's daily budget, taken under a
    per-account lock held until the commit, so concurrent refunds cannot overdraw it."""
    if credits <= 0:
        return False
    unfetched = int(session.scalar(select(_never_fetched(task.id))) or 0)
    tried = max(0, credits - unfetched)
    withheld = 0
    if tried:
        key = cast(task.user_id.int % 2**31, Integer)
        session.execute(select(func.pg_advisory_xact_lock(cast(REFUND_LOCK_CLASS, Integer), key)))
        user = session.get_one(User, task.user_id)
        budget = refund_budget(effective_plan(session, user))
        withheld = max(0, tried - max(0, budget - _budget_used_today(session, task.user_id)))
        if withheld:
            note = f"{note}; {withheld} not refunded (over the daily refund budget of {budget} credits)"
    given = credits - withheld
    if _record(session, task, LedgerKind.refund, given, note):
        task.credits_charged = max(0, task.credits_charged - given)
        return True
    return False


def task_charge_total(session: Session, task_id: uuid.UUID) -> int:
    """Net credits a task cost (for tests and the console)."""
    total = session.scalar(select(func.coalesce(func.sum(UsageEntry.credits), 0)).where(UsageEntry.task_id == task_id))
    return -int(total or 0)
