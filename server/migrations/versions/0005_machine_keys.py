"""Proof of possession: each machine's public key, and re-enrollments awaiting approval.

Revision ID: 0005
Revises: 0004
Create Date: 2026-02-02

An agent makes an Ed25519 key pair when it enrolls; the server keeps the public
key on the agent's row. Enrolling the same machine id again needs a statement
signed by that key (`key_proven_at` is the `signed_at` of the last one taken, so
none is taken twice); an enrollment without one waits in
`reenrollment_requests` (one row per agent) for an administrator. Agents from
before this migration have no key: they bind one at their next check-in.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_json = sa.JSON().with_variant(JSONB(), "postgresql")


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    # Nullable columns: a plain ALTER TABLE ADD COLUMN on SQLite and PostgreSQL.
    op.add_column("agents", sa.Column("public_key", sa.String(64), nullable=True))
    op.add_column("agents", _time("key_proven_at", nullable=True))
    op.create_table(
        "reenrollment_requests",
        sa.Column("agent_id", sa.String(36), sa.ForeignKey("agents.id"), primary_key=True),
        sa.Column("public_key", sa.String(64), nullable=True),
        sa.Column("facts", _json, nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        _time("requested_at"),
        _time("last_attempt_at"),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("keys_seen", sa.Integer, nullable=False),
        _time("approved_at", nullable=True),
        sa.Column("approved_by", sa.String(255), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("reenrollment_requests")
    op.drop_column("agents", "key_proven_at")
    op.drop_column("agents", "public_key")
