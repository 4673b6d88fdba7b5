"""Dashboard sessions logged out before they expired (server.dashboard.sessions).

A session is a signed cookie, so nothing else about it is stored; a logout
leaves a row here until the session would have expired anyway, and every
server process on the database refuses that session id.
"""

from __future__ import annotations

from typing import cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.models import RevokedSession

_TABLE = cast(sa.Table, RevokedSession.__table__)


def revoke(session: Session, sid: str, expires_at: float) -> None:
    """Bar `sid` until `expires_at` (epoch seconds); logging out twice is one row."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(_TABLE).values(sid=sid, expires_at=expires_at)
                    .on_conflict_do_nothing(index_elements=["sid"]))


def is_revoked(session: Session, sid: str) -> bool:
    return session.execute(sa.select(_TABLE.c.sid).where(_TABLE.c.sid == sid)
                           ).first() is not None


def prune(session: Session, now: float) -> int:
    """Forget sessions that have expired anyway; how many."""
    result = session.execute(sa.delete(_TABLE).where(_TABLE.c.expires_at < now))
    return int(getattr(result, "rowcount", 0) or 0)
