"""Policy-signing key rotation: the signed statements that lead from one key to the next.

Revision ID: 0004
Revises: 0003
Create Date: 2026-01-20

`warden server rotate-key` signs, with the key it retires, a statement naming
the new key; agents that pin the old key follow it to the new one. The chain
is kept, oldest first, in the one server_state row, so the agent API serves it
in the same statement as the bundle and its activation. Null until the first
rotation.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("server_state", sa.Column("key_rotations", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("server_state", "key_rotations")
