"""Signed policy activations: a serial that grows with every activation.

Revision ID: 0003
Revises: 0002
Create Date: 2026-01-15

Agents refuse a policy whose signed activation serial is lower than the one
they run, so an older (validly signed) policy cannot be replayed at them. The
serial lives in the one server_state row; `activation` holds the signed
document as text, exactly as signed. A database migrated here has none yet:
the server signs one for the active policy when it next starts
(server.store.policies.sign_missing_activation).
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
    # ADD COLUMN with a constant default or nullable: a plain ALTER on SQLite and PostgreSQL.
    op.add_column("server_state", sa.Column("activation_serial", sa.BigInteger,
                                            nullable=False, server_default="0"))
    op.add_column("server_state", sa.Column("activation", sa.Text, nullable=True))
    op.add_column("server_state", sa.Column("activation_signature", sa.Text, nullable=True))


def downgrade() -> None:
    for column in ("activation_signature", "activation", "activation_serial"):
        op.drop_column("server_state", column)
