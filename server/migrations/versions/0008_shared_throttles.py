"""Login and enrollment throttles and logged-out sessions move into the database.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

Until now each server process kept them in memory, so N processes gave an
attacker N times the allowance and a logged-out cookie still worked at the
other processes. `throttle_failures` holds one row per limited key (its recent
failure times); `revoked_sessions` one row per session logged out before it
expired. Both are small and pruned as they age (server.throttling,
server.dashboard.sessions).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "throttle_failures",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(320), primary_key=True),
        sa.Column("failures", sa.Text, nullable=False),
        sa.Column("last_failed_at", sa.Float, nullable=False),
    )
    op.create_index("ix_throttle_failures_scope_last", "throttle_failures",
                    ["scope", "last_failed_at"])
    op.create_table(
        "revoked_sessions",
        sa.Column("sid", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_revoked_sessions_expires_at", "revoked_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("revoked_sessions")
    op.drop_table("throttle_failures")
