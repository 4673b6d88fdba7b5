"""`/api/v1/stats`: agents by state, compliance, open findings by app, findings opened per day."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from server.api.admin.common import silent_after
from server.api.deps import ContextDep, SessionDep, ViewerDep
from server.db import utcnow
from server.store import stats

router = APIRouter(prefix="/api/v1", tags=["stats"])


@router.get("/stats")
def fleet_stats(principal: ViewerDep, session: SessionDep, context: ContextDep) -> dict[str, Any]:
    """The fleet summary; `findings_per_day` covers the last 30 UTC days, today last."""
    return stats.summary(session, utcnow(), silent_after(context),
                         known_apps=context.known_apps.ids(session))
