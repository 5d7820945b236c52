"""index on tasks.finished_at for the retention sweep

The workers' reaper looks for tasks that finished more than RESULTS_RETENTION_DAYS ago every
10 minutes (and for finished tasks whose webhook is still pending); without an index each
sweep reads the whole tasks table. Built CONCURRENTLY, so a deploy does not block task
writes while it builds on a large table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():  # CREATE INDEX CONCURRENTLY cannot run in a transaction
        op.create_index(
            "ix_tasks_finished_at", "tasks", ["finished_at"], postgresql_concurrently=True, if_not_exists=True
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_tasks_finished_at", table_name="tasks", postgresql_concurrently=True, if_exists=True)
