"""`/api/v1/violations`: one row per machine x denied app; list with filters and cursors, one
violation with its findings, triage (carried to its findings), and export as CSV or JSON."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from server import exports
from server.api.admin.common import ROUTER_ERRORS, invalid_cursor, not_found
from server.api.deps import AnalystDep, ContextDep, SessionDep, ViewerDep
from server.api.params import RowId
from server.schemas.errors import error_responses
from server.schemas.violations import (
    Violation,
    ViolationDetail,
    ViolationExport,
    ViolationExportQuery,
    ViolationListQuery,
    ViolationPage,
    ViolationTriageRequest,
)
from server.store import agents, findings, violations, violations_query
from server.store.listing import CursorError

router = APIRouter(prefix="/api/v1", tags=["violations"], responses=ROUTER_ERRORS)


@router.get("/violations")
def list_violations(
    principal: ViewerDep, query: Annotated[ViolationListQuery, Query()], session: SessionDep
) -> ViolationPage:
    """Violations matching the filters, newest `last_seen` first unless `order`/`direction`
    say otherwise; follow `next_cursor` for the next page (null on the last)."""
    try:
        items, next_cursor = violations_query.query_violations(
            session, query, query.limit, query.cursor, order=query.order,
            descending=query.direction == "desc")
    except CursorError as exc:
        raise invalid_cursor(exc) from exc
    return ViolationPage.model_validate({"items": items, "next_cursor": next_cursor})


@router.get("/violations/export", response_class=StreamingResponse, responses={
    200: {"model": ViolationExport, "content": {"text/csv": {"schema": {"type": "string"}}},
          "description": "every matching violation, streamed as an attachment"}})
def export_violations(
    principal: ViewerDep, query: Annotated[ViolationExportQuery, Query()], context: ContextDep
) -> StreamingResponse:
    return exports.violations_download(context, query, query.format)


@router.get("/violations/{violation_id:int}", responses=error_responses(404))
def get_violation(principal: ViewerDep, violation_id: RowId,
                  session: SessionDep) -> ViolationDetail:
    """The violation and its evidence: every finding of the app on that machine."""
    row = violations.get(session, violation_id)
    if row is None:
        raise not_found(f"violation {violation_id}")
    agent = agents.get(session, row.agent_id)
    view = violations.as_dict(row, agent)
    view["findings"] = [findings.as_dict(finding, agent)
                        for finding in violations.findings_of(session, row)]
    return ViolationDetail.model_validate(view)


@router.post("/violations/{violation_id:int}/triage", responses=error_responses(404))
def triage_violation(
    principal: AnalystDep, violation_id: RowId, body: ViolationTriageRequest,
    session: SessionDep
) -> Violation:
    """Set the reviewers' state of a violation and of each of its findings, with a comment;
    recorded in the audit log."""
    row = violations.set_triage(session, violation_id, body.state, body.comment.strip(),
                                principal.actor)
    if row is None:
        raise not_found(f"violation {violation_id}")
    session.commit()
    return Violation.model_validate(violations.as_dict(row, agents.get(session, row.agent_id)))
