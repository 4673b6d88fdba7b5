"""MDM connectors: phones and tablets as hosts, read from Intune, Jamf Pro, Android Management.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

`connectors` holds each MDM's settings, its encrypted secret, the last sync's
outcome and the lease that lets one server process sync it at a time. A phone is
a row in `agents` with `source` = `KIND:NAME` (no usable token); `retired_at` is
set when its MDM stops listing it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_json = sa.JSON().with_variant(JSONB(), "postgresql")


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("agents", sa.Column("source", sa.String(255), nullable=True))
    op.add_column("agents", _time("retired_at", nullable=True))
    op.create_index("ix_agents_source", "agents", ["source"])
    op.create_table(
        "connectors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("settings", _json, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("interval_minutes", sa.Integer, nullable=False),
        sa.Column("group", sa.String(255), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=False),
        _time("created_at"),
        _time("next_sync_at"),
        _time("last_sync_at", nullable=True),
        sa.Column("last_result", sa.String(16), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_counts", _json, nullable=True),
        _time("last_success_at", nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        _time("lease_until", nullable=True),
        sa.UniqueConstraint("name", name="uq_connectors_name"),
    )


def downgrade() -> None:
    op.drop_table("connectors")
    op.drop_index("ix_agents_source", "agents")
    op.drop_column("agents", "retired_at")
    op.drop_column("agents", "source")
