"""`/api/v1/findings`: list with filters and cursors, one finding with its timeline, triage,
and export of a whole filter as CSV or JSON (server.exports, shared with the dashboard)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from server import exports
from server.api.admin.common import ROUTER_ERRORS, invalid_cursor, not_found
from server.api.deps import AnalystDep, ContextDep, SessionDep, ViewerDep
from server.api.params import RowId
from server.schemas.errors import error_responses
from server.schemas.findings import (
    BulkTriageRequest,
    BulkTriageResult,
    Finding,
    FindingDetail,
    FindingExport,
    FindingExportQuery,
    FindingListQuery,
    FindingPage,
    TriageRequest,
)
from server.store import agents, findings, findings_query
from server.store.listing import CursorError

router = APIRouter(prefix="/api/v1", tags=["findings"], responses=ROUTER_ERRORS)


@router.get("/findings")
def list_findings(
    principal: ViewerDep, query: Annotated[FindingListQuery, Query()], session: SessionDep
) -> FindingPage:
    """Findings matching the filters, newest `last_seen` first unless `order`/`direction` say
    otherwise; follow `next_cursor` for the next page (null on the last)."""
    try:
        items, next_cursor = findings_query.query_findings(
            session, query, query.limit, query.cursor, order=query.order,
            descending=query.direction == "desc")
    except CursorError as exc:
        raise invalid_cursor(exc) from exc
    return FindingPage.model_validate({"items": items, "next_cursor": next_cursor})


@router.get("/findings/export", response_class=StreamingResponse, responses={
    200: {"model": FindingExport, "content": {"text/csv": {"schema": {"type": "string"}}},
          "description": "every matching finding, streamed as an attachment"}})
def export_findings(
    principal: ViewerDep, query: Annotated[FindingExportQuery, Query()], context: ContextDep
) -> StreamingResponse:
    return exports.findings_download(context, query, query.format)


@router.get("/findings/{finding_id:int}", responses=error_responses(404))
def get_finding(principal: ViewerDep, finding_id: RowId, session: SessionDep) -> FindingDetail:
    """The finding and its timeline: every event the agent sent about it, oldest first."""
    row = findings.get(session, finding_id)
    if row is None:
        raise not_found(f"finding {finding_id}")
    view = findings.as_dict(row, agents.get(session, row.agent_id))
    view["events"] = [findings.event_as_dict(event) for event in findings.timeline(session, row)]
    return FindingDetail.model_validate(view)


@router.post("/findings/triage", responses=error_responses(404))
def triage_findings(
    principal: AnalystDep, body: BulkTriageRequest, session: SessionDep
) -> BulkTriageResult:
    """Set several findings to one triage state with one comment: all, or, if an id is
    unknown, none (404 names the ids). Each change is in the audit log."""
    rows, missing = findings.set_triage_many(session, body.ids, body.state,
                                             body.comment.strip(), principal.actor)
    if missing:
        session.rollback()
        shown = ", ".join(str(finding_id) for finding_id in missing[:20])
        raise not_found(f"finding(s) {shown}; nothing was changed")
    session.commit()
    owners = {row.agent_id: agents.get(session, row.agent_id) for row in rows}
    return BulkTriageResult.model_validate({"items": [
        findings.as_dict(row, owners[row.agent_id]) for row in rows]})


@router.post("/findings/{finding_id:int}/triage", responses=error_responses(404))
def triage_finding(
    principal: AnalystDep, finding_id: RowId, body: TriageRequest, session: SessionDep
) -> Finding:
    """Set the reviewers' state of a finding, with a comment; recorded in the audit log."""
    row = findings.set_triage(session, finding_id, body.state, body.comment.strip(),
                              principal.actor)
    if row is None:
        raise not_found(f"finding {finding_id}")
    session.commit()
    return Finding.model_validate(findings.as_dict(row, agents.get(session, row.agent_id)))
