"""Indexes for the review API, and a note on enrollment secrets.

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-01

The findings list pages by keyset on (last_seen, id) or (first_seen, id);
PostgreSQL needs `id` in the index to walk it in that order without a sort
(SQLite appends the rowid to every index anyway, so there it is free). The
compliance summary counts agents with open deny findings straight from the
(status, verdict, agent_id) index. Agents page by (hostname, id), the audit
log filters by action or actor and pages by id.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_findings_last_seen", table_name="findings")
    op.create_index("ix_findings_last_seen_id", "findings", ["last_seen", "id"])
    op.create_index("ix_findings_first_seen_id", "findings", ["first_seen", "id"])
    op.create_index("ix_findings_status_verdict_agent", "findings",
                    ["status", "verdict", "agent_id"])
    op.create_index("ix_agents_hostname_id", "agents", ["hostname", "id"])
    op.create_index("ix_audit_log_action_id", "audit_log", ["action", "id"])
    op.create_index("ix_audit_log_actor_id", "audit_log", ["actor", "id"])
    # ADD COLUMN of a nullable column: a plain ALTER on both SQLite and PostgreSQL.
    op.add_column("enroll_secrets", sa.Column("note", sa.String(255), nullable=True))


def downgrade() -> None:
    op.drop_column("enroll_secrets", "note")
    for name, table in (("ix_audit_log_actor_id", "audit_log"),
                        ("ix_audit_log_action_id", "audit_log"),
                        ("ix_agents_hostname_id", "agents"),
                        ("ix_findings_status_verdict_agent", "findings"),
                        ("ix_findings_first_seen_id", "findings"),
                        ("ix_findings_last_seen_id", "findings")):
        op.drop_index(name, table_name=table)
    op.create_index("ix_findings_last_seen", "findings", ["last_seen"])
