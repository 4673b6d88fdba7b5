"""Initial schema: agents, secrets, tokens, users, policies, events, findings, audit.

Revision ID: 0001
Revises:
Create Date: 2025-11-28

Written by hand to run unchanged on SQLite and PostgreSQL. Kept independent of
server.models on purpose: a migration must keep meaning what it meant when it
shipped, whatever the models become later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_json = sa.JSON().with_variant(JSONB(), "postgresql")


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("machine_id", sa.String(255), nullable=False),
        sa.Column("os", sa.String(16), nullable=False),
        sa.Column("os_version", sa.String(255), nullable=False),
        sa.Column("arch", sa.String(64), nullable=False),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("group", sa.String(255), nullable=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        _time("enrolled_at"),
        _time("last_seen"),
        sa.Column("policy_version", sa.String(64), nullable=True),
        sa.Column("status", _json, nullable=True),
        _time("revoked_at", nullable=True),
        sa.UniqueConstraint("machine_id", name="uq_agents_machine_id"),
        sa.UniqueConstraint("token_hash", name="uq_agents_token_hash"),
    )
    op.create_table(
        "enroll_secrets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("group", sa.String(255), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=False),
        _time("created_at"),
        _time("revoked_at", nullable=True),
        sa.Column("uses", sa.Integer, nullable=False),
        sa.UniqueConstraint("secret_hash", name="uq_enroll_secrets_secret_hash"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        _time("created_at"),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=True),
        _time("created_at"),
        _time("revoked_at", nullable=True),
        _time("last_used", nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_table(
        "policy_versions",
        sa.Column("number", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("source_format", sa.String(8), nullable=False),
        sa.Column("bundle", sa.Text, nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        _time("created_at"),
    )
    op.create_index("ix_policy_versions_version", "policy_versions", ["version"])
    op.create_table(
        "server_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("active_policy_number", sa.Integer,
                  sa.ForeignKey("policy_versions.number"), nullable=True),
        sa.Column("previous_policy_number", sa.Integer,
                  sa.ForeignKey("policy_versions.number"), nullable=True),
        _time("updated_at"),
    )
    # The one state row always exists, so activation only ever updates it (no insert race).
    op.execute(sa.text("INSERT INTO server_state (id, updated_at) VALUES (1, CURRENT_TIMESTAMP)"))
    op.create_table(
        "events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("agent_id", sa.String(36), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        _time("time"),
        _time("received_at"),
        sa.Column("finding_key", sa.String(512), nullable=True),
        sa.Column("payload", _json, nullable=False),
    )
    op.create_index("ix_events_agent_finding", "events", ["agent_id", "finding_key"])
    op.create_index("ix_events_received_at", "events", ["received_at"])
    op.create_table(
        "findings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(36), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("sensor", sa.String(32), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _time("first_seen"),
        _time("last_seen"),
        _time("resolved_at", nullable=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("evidence", _json, nullable=False),
        sa.Column("alternative", sa.String(64), nullable=True),
        sa.Column("confidence", sa.String(16), nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("matched", sa.Text, nullable=False),
        sa.Column("triage", sa.String(16), nullable=False),
        sa.Column("triage_comment", sa.Text, nullable=True),
        sa.Column("triage_by", sa.String(255), nullable=True),
        _time("triage_at", nullable=True),
        sa.UniqueConstraint("agent_id", "key", name="uq_findings_agent_key"),
    )
    op.create_index("ix_findings_app_status", "findings", ["app", "status"])
    op.create_index("ix_findings_last_seen", "findings", ["last_seen"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _time("time"),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("before", _json, nullable=True),
        sa.Column("after", _json, nullable=True),
    )
    op.create_index("ix_audit_log_time", "audit_log", ["time"])


def downgrade() -> None:
    for table in ("audit_log", "findings", "events", "server_state", "policy_versions",
                  "api_tokens", "users", "enroll_secrets", "agents"):
        op.drop_table(table)
