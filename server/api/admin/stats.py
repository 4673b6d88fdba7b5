"""`/api/v1/stats`: agents by state, compliance, open findings by app, findings opened per day."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.admin.common import ROUTER_ERRORS, silent_after
from server.api.deps import ContextDep, SessionDep, ViewerDep
from server.db import utcnow
from server.schemas.stats import FleetStats
from server.store import stats

router = APIRouter(prefix="/api/v1", tags=["stats"], responses=ROUTER_ERRORS)


@router.get("/stats")
def fleet_stats(principal: ViewerDep, session: SessionDep, context: ContextDep) -> FleetStats:
    """The fleet summary; `findings_per_day` covers the last 30 UTC days, today last."""
    return FleetStats.model_validate(stats.summary(
        session, utcnow(), silent_after(context), known_apps=context.known_apps.ids(session)))
