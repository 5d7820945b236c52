"""when the account's current Lemon Squeezy subscription was created

Billing events for another subscription than the account's current one change nothing,
except a newer subscription from a signed-in checkout: this column is what "newer" is
measured against. Existing rows start empty (any signed-in newer subscription wins once).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("subscription_created_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "subscription_created_at")
