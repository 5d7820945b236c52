"""credit balances per account and period; partial index of active tasks per account

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


BALANCE_FUNCTION = """
CREATE FUNCTION credit_balances_follow_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
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
"""
BALANCE_TRIGGER = (
    "CREATE TRIGGER usage_ledger_balance AFTER INSERT OR UPDATE OR DELETE ON usage_ledger "
    "FOR EACH ROW EXECUTE FUNCTION credit_balances_follow_ledger()"
)


def upgrade() -> None:
    op.create_table(
        "credit_balances",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_credit_balances_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "period", name=op.f("pk_credit_balances")),
    )
    # the ledger is the record: a trigger keeps the balances equal to its sums, whoever
    # writes it (charges, refunds, manual adjustments); start them from the sums so far
    op.execute(BALANCE_FUNCTION)
    op.execute(BALANCE_TRIGGER)
    op.execute(
        "INSERT INTO credit_balances (user_id, period, used) "
        "SELECT user_id, period, -SUM(credits) FROM usage_ledger GROUP BY user_id, period"
    )
    op.create_index(
        "ix_tasks_user_active",
        "tasks",
        ["user_id"],
        unique=False,
        postgresql_where=sa.text("state IN ('queued', 'running')"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_user_active", table_name="tasks")
    op.execute("DROP TRIGGER usage_ledger_balance ON usage_ledger")
    op.execute("DROP FUNCTION credit_balances_follow_ledger()")
    op.drop_table("credit_balances")
