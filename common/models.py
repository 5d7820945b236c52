"""Database schema (SQLAlchemy 2 typed ORM). Alembic migrations in app/alembic mirror it."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    DDL,
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSONB, datetime: DateTime(timezone=True)}


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    """Store enums as short strings with a CHECK constraint (no Postgres enum types to migrate)."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
    )


class TaskState(enum.StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TaskState.completed, TaskState.failed, TaskState.cancelled)


class UrlState(enum.StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


class LedgerKind(enum.StrEnum):
    charge = "charge"
    refund = "refund"
    adjustment = "adjustment"


class Plan(Base):
    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    monthly_credits: Mapped[int] = mapped_column(Integer)
    rate_limit_per_minute: Mapped[int] = mapped_column(Integer)
    max_concurrent_tasks: Mapped[int] = mapped_column(Integer)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("oidc_issuer", "oidc_subject"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    oidc_issuer: Mapped[str] = mapped_column(String(300))
    oidc_subject: Mapped[str] = mapped_column(String(255))
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    plan_expires_at: Mapped[datetime | None]
    subscription_id: Mapped[str | None] = mapped_column(String(64))
    subscription_status: Mapped[str | None] = mapped_column(String(32))
    # when Lemon Squeezy created the current subscription: only a newer one may replace it
    subscription_created_at: Mapped[datetime | None]
    webhook_secret: Mapped[str] = mapped_column(String(64))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_login_at: Mapped[datetime | None]

    plan: Mapped[Plan] = relationship(lazy="joined")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(lazy="joined")


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_user_created", "user_id", "created_at"),
        Index("ix_tasks_state", "state"),
        # the retention sweep and the webhook reaper look for tasks finished before a cutoff
        Index("ix_tasks_finished_at", "finished_at"),
        # the per-account active-task limit counts these at every submission
        Index(
            "ix_tasks_user_active",
            "user_id",
            postgresql_where=text("state IN ('queued', 'running')"),
        ),
        UniqueConstraint("user_id", "idempotency_key", name="uq_tasks_user_idempotency_key"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    state: Mapped[TaskState] = mapped_column(_enum(TaskState, "task_state"), default=TaskState.queued)
    rules: Mapped[dict[str, Any]]
    options: Mapped[dict[str, Any]]
    webhook_url: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), doc="client's Idempotency-Key header")
    url_count: Mapped[int] = mapped_column(Integer)
    succeeded_count: Mapped[int] = mapped_column(Integer, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    credits_charged: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # Execution bookkeeping: the worker holding the lease renews it while it runs; a lapsed
    # lease means the worker died and the task may be taken over (see worker/runner.py).
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    enqueued_at: Mapped[datetime | None] = mapped_column(doc="when the queue message was last sent")
    retry_at: Mapped[datetime | None] = mapped_column(doc="next attempt due (backoff), while waiting")
    webhook_status: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    urls: Mapped[list[TaskUrl]] = relationship(
        back_populates="task", order_by="TaskUrl.position", cascade="all, delete-orphan"
    )


class TaskUrl(Base):
    """One target URL of a task and its outcome; (task_id, position) makes retries overwrite."""

    __tablename__ = "task_urls"
    __table_args__ = (UniqueConstraint("task_id", "position"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text)
    state: Mapped[UrlState] = mapped_column(_enum(UrlState, "url_state"), default=UrlState.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status_code: Mapped[int | None] = mapped_column(Integer)
    final_url: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    item_count: Mapped[int | None] = mapped_column(Integer)
    content_bytes: Mapped[int | None] = mapped_column(Integer)
    elapsed_ms: Mapped[int | None] = mapped_column(Integer)
    fetched_at: Mapped[datetime | None]

    task: Mapped[Task] = relationship(back_populates="urls")


class UsageEntry(Base):
    """Credit ledger. At most one charge and one refund per task, enforced by the database."""

    __tablename__ = "usage_ledger"
    __table_args__ = (
        UniqueConstraint("task_id", "kind", name="uq_usage_ledger_task_kind"),
        Index("ix_usage_ledger_user_period", "user_id", "period"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    task_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"))
    kind: Mapped[LedgerKind] = mapped_column(_enum(LedgerKind, "ledger_kind"))
    credits: Mapped[int] = mapped_column(Integer, doc="negative = spent, positive = given back")
    period: Mapped[str] = mapped_column(String(7), doc="YYYY-MM the entry counts against")
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class CreditBalance(Base):
    """Credits used per account and period: the ledger's sum, kept equal to it by a trigger
    on ``usage_ledger`` (migration 0002, ``BALANCE_DDL`` below), so a submission checks one
    row instead of summing the ledger."""

    __tablename__ = "credit_balances"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True, doc="YYYY-MM")
    used: Mapped[int] = mapped_column(Integer, default=0)


class WebhookEvent(Base):
    """Incoming billing webhooks, keyed by provider event id so redeliveries are no-ops."""

    __tablename__ = "webhook_events"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_name: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    outcome: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())


# The trigger that keeps credit_balances equal to the ledger's sums (also created by
# Base.metadata.create_all, for databases built without migrations).
BALANCE_DDL = (
    """
CREATE OR REPLACE FUNCTION credit_balances_follow_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE credit_balances SET used = used + OLD.credits
        WHERE user_id = OLD.user_id AND period = OLD.period;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO credit_balances (user_id, period, used) VALUES (NEW.user_id, NEW.period, -NEW.credits)
        ON CONFLICT (user_id, period) DO UPDATE SET used = credit_balances.used - NEW.credits;
    END IF;
    RETURN NULL;
END
$$
""",
    "CREATE TRIGGER usage_ledger_balance AFTER INSERT OR UPDATE OR DELETE ON usage_ledger "
    "FOR EACH ROW EXECUTE FUNCTION credit_balances_follow_ledger()",
)
for _statement in BALANCE_DDL:
    event.listen(UsageEntry.__table__, "after_create", DDL(_statement).execute_if(dialect="postgresql"))
