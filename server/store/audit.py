"""The audit log: who changed what, when, with the state before and after."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.actors import actor_name
from server.db import utcnow
from server.models import AuditEntry
from server.store.listing import text_matches


def record(
    session: Session,
    actor: str,
    action: str,
    target: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEntry:
    entry = AuditEntry(time=utcnow(), actor=actor, action=action, target=target,
                       before=before, after=after)
    session.add(entry)
    return entry


def list_entries(
    session: Session,
    limit: int = 100,
    before_id: int | None = None,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
) -> list[AuditEntry]:
    """Newest first; pass the last id seen as `before_id` for the next page.

    `actor`, `action` and `target` match exactly, or by prefix when they end
    in `*` (`action="policy.*"` is every policy change).
    """
    query = sa.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    for column, wanted in ((AuditEntry.actor, actor), (AuditEntry.action, action),
                           (AuditEntry.target, target)):
        if wanted is not None:
            query = query.where(text_matches(column, wanted))
    return list(session.scalars(query))


def as_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "time": entry.time.isoformat(),
        "actor": entry.actor,
        "actor_name": actor_name(entry.actor),
        "action": entry.action,
        "target": entry.target,
        "before": entry.before,
        "after": entry.after,
    }
