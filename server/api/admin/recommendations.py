"""`/api/v1/recommendations/{app}`: what to use instead of a banned app, per the active policy."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.admin.common import ROUTER_ERRORS
from server.api.deps import ContextDep, SessionDep, ViewerDep
from server.api.errors import ApiError
from server.recommendations import UnknownApp, recommendations_for
from server.schemas.errors import error_responses
from server.schemas.recommendations import Recommendations
from server.store import policies

router = APIRouter(prefix="/api/v1", tags=["recommendations"], responses=ROUTER_ERRORS)


@router.get("/recommendations/{app}", responses=error_responses(404))
def recommendations(
    principal: ViewerDep, app: str, session: SessionDep, context: ContextDep
) -> Recommendations:
    """The approved alternatives (links, per-OS install hints), the policy's own choice first."""
    active = policies.active(session)
    row = policies.get(session, active.number) if active is not None else None
    # With no active policy, the catalog alone still names the apps.
    bundle = policies.bundle_of(row) if row is not None else {}
    try:
        return Recommendations.model_validate(recommendations_for(app, bundle, context.catalog))
    except UnknownApp as exc:
        raise ApiError(404, str(exc), code="unknown_app") from exc
