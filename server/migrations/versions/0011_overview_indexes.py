"""Indexes for the overview: time to remediate, and the list of groups.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03

Time to remediate reads every violation resolved in the last 30 days; with
no index on `resolved_at` it walked all violations by status and fetched each
row (46 ms of SQLite's CPU at 28,000 violations); (status, resolved_at,
opened_at, agent_id) answers it from the index alone. The groups are read off
an index on `agents.group` instead of a pass over every agent. Neither column
changes at a check-in or an ingest that leaves a violation open, so neither
index costs the hot paths a write.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_violations_status_resolved_at", "violations",
                    ["status", "resolved_at", "opened_at", "agent_id"])
    op.create_index("ix_agents_group", "agents", ["group"])


def downgrade() -> None:
    op.drop_index("ix_agents_group", table_name="agents")
    op.drop_index("ix_violations_status_resolved_at", table_name="violations")
