"""Action outcomes: what became of each action on a finding, and machines that cannot notify.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

Until now an action's result (a notification that failed, a termination held
back by audit mode) lived only in the finding's timeline, so every view said
"action: notify" whether or not anybody was told. `findings.outcomes` keeps
the latest result per action; `agents.notify_error` is why the machine's last
notification failed (None once one succeeds), so the overview can count the
machines whose users cannot be told.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    # Nullable columns: a plain ALTER TABLE ADD COLUMN on SQLite and PostgreSQL.
    op.add_column("findings", sa.Column("outcomes", _json, nullable=True))
    op.add_column("agents", sa.Column("notify_error", sa.Text, nullable=True))
    op.add_column("agents", sa.Column("notify_checked_at", sa.DateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    op.drop_column("agents", "notify_checked_at")
    op.drop_column("agents", "notify_error")
    op.drop_column("findings", "outcomes")
