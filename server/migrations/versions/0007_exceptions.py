"""Exceptions granted by administrators, and requests for them from machines.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

`exceptions`: one app allowed on one agent (or a group) until a time; agents get
theirs signed at check-in and enforce `until` on their own clock. Overlapping
grants for one app and scope are one row, extended. `exception_requests`: a
person's request from a machine, pending until approved or denied.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "exceptions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.String(36), sa.ForeignKey("agents.id"), nullable=True),
        sa.Column("group", sa.String(255), nullable=True),
        _time("until"),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        _time("created_at"),
        _time("revoked_at", nullable=True),
        sa.Column("revoked_by", sa.String(255), nullable=True),
    )
    op.create_index("ix_exceptions_agent_until", "exceptions", ["agent_id", "until"])
    op.create_index("ix_exceptions_group_until", "exceptions", ["group", "until"])
    op.create_table(
        "exception_requests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("agent_id", sa.String(36), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("days", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("requested_uid", sa.Integer, nullable=True),
        _time("requested_at"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(255), nullable=True),
        _time("decided_at", nullable=True),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("exception_id", sa.Integer, sa.ForeignKey("exceptions.id"), nullable=True),
        sa.UniqueConstraint("event_id", name="uq_exception_requests_event_id"),
    )
    op.create_index("ix_exception_requests_agent_id", "exception_requests", ["agent_id"])
    op.create_index("ix_exception_requests_status_id", "exception_requests", ["status", "id"])


def downgrade() -> None:
    op.drop_table("exception_requests")
    op.drop_table("exceptions")
