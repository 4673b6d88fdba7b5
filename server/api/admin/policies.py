"""`/api/v1/policies`: upload (validated, compiled, signed), list, show, diff, activate,
roll back, and preview a version's impact before activating it."""

from __future__ import annotations

import difflib
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from policies.errors import PolicyError
from policies.policy_model import Policy
from server.api.admin.common import ROUTER_ERRORS, not_found
from server.api.bodies import openapi_json_body
from server.api.deps import AdminDep, ContextDep, SessionDep, ViewerDep
from server.api.errors import ApiError
from server.api.params import RowId
from server.db import utcnow
from server.models import PolicyVersion
from server.schemas.common import MAX_ROW_ID
from server.schemas.errors import error_responses
from server.schemas.policies import (
    ImpactPreview,
    PolicyDetail,
    PolicyDiff,
    PolicyPage,
    PolicySummary,
)
from server.store import impact, policies

router = APIRouter(prefix="/api/v1", tags=["policies"], responses=ROUTER_ERRORS)

# YAML has no registered type yet; clients send any of these. JSON is a subset of YAML.
POLICY_MEDIA_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml",
                      "text/plain", "application/json")
# Where a validation issue in an upload says it is; there is no file name over HTTP.
UPLOAD_SOURCE = "upload"


async def policy_text(request: Request) -> str:
    """The uploaded policy: YAML or JSON text in UTF-8 (the body size cap applies)."""
    media_type = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media_type not in POLICY_MEDIA_TYPES:
        shown = repr(media_type) if media_type else "no Content-Type"
        raise ApiError(415, f"send the policy as YAML or JSON text, not {shown}",
                       details=[{"accepted": list(POLICY_MEDIA_TYPES)}])
    try:
        return (await request.body()).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(422, f"the policy is not UTF-8 text: {exc}", code="malformed") from exc


PolicyText = Annotated[str, Depends(policy_text)]


# The document a policy is: in YAML or JSON, the mapping that policies.policy_model.Policy
# describes (the catalog's app ids and the like are checked on upload: `422 invalid_policy`).
_POLICY_SCHEMA = openapi_json_body(Policy)["requestBody"]["content"]["application/json"]["schema"]


@router.post("/policies", status_code=201, responses=error_responses(415), openapi_extra={
    "requestBody": {"required": True, "content": {
        media: {"schema": {"type": "string", "description": "a policy file's text"}
                if media == "text/plain" else _POLICY_SCHEMA}
        for media in POLICY_MEDIA_TYPES}}})
def upload_policy(
    principal: AdminDep, text: PolicyText, session: SessionDep, context: ContextDep
) -> PolicySummary:
    """Store a new version (not yet active). `422 invalid_policy` lists every problem with its
    line, as `warden policy validate` does."""
    try:
        row = policies.add_version(session, text=text, source_name=UPLOAD_SOURCE,
                                   catalog=context.catalog, signer=context.signer,
                                   actor=principal.actor)
    except PolicyError as exc:
        raise ApiError(422, "the policy is invalid; nothing was stored", code="invalid_policy",
                       details=[issue.as_dict() for issue in exc.issues]) from exc
    session.commit()
    active, _ = policies.active_numbers(session)
    return PolicySummary.model_validate(policies.as_dict(row, active))


@router.get("/policies")
def list_policies(principal: ViewerDep, session: SessionDep) -> PolicyPage:
    """Every stored version, oldest first; `active` marks the one agents get."""
    active, _ = policies.active_numbers(session)
    return PolicyPage.model_validate({
        "items": [policies.as_dict(row, active) for row in policies.list_versions(session)],
        "next_cursor": None})


@router.get("/policies/diff", responses=error_responses(404))
def diff_policies(
    principal: ViewerDep, session: SessionDep,
    from_number: Annotated[int, Query(alias="from", ge=1, le=MAX_ROW_ID)],
    to_number: Annotated[int, Query(alias="to", ge=1, le=MAX_ROW_ID)],
) -> PolicyDiff:
    """A unified diff of two versions' source texts (empty when they are the same)."""
    old, new = _version(session, from_number), _version(session, to_number)
    lines = difflib.unified_diff(
        _lines(old.source), _lines(new.source),
        fromfile=f"policy {old.number} ({old.name})", tofile=f"policy {new.number} ({new.name})")
    return PolicyDiff.model_validate({"from": old.number, "to": new.number,
                                      "diff": "".join(lines)})


def _lines(text: str) -> list[str]:
    # Every line ends in a newline, or the last line would run into the next diff line.
    return [line if line.endswith("\n") else line + "\n" for line in text.splitlines(True)]


@router.get("/policies/{number:int}", responses=error_responses(404))
def get_policy(principal: ViewerDep, number: RowId, session: SessionDep) -> PolicyDetail:
    """One version: metadata, the source text as uploaded, the compiled bundle and signature."""
    row = _version(session, number)
    active, previous = policies.active_numbers(session)
    return PolicyDetail.model_validate({
        **policies.as_dict(row, active), "previous": row.number == previous,
        "source": row.source, "source_format": row.source_format,
        "bundle": policies.bundle_of(row), "signature": row.signature})


@router.post("/policies/{number:int}/activate", responses=error_responses(404))
def activate_policy(
    principal: AdminDep, number: RowId, session: SessionDep, context: ContextDep
) -> PolicySummary:
    """Serve version `number` to agents from now on (they fetch it at their next check-in)."""
    try:
        row = policies.activate(session, number, principal.actor, context.signer)
    except policies.NoSuchPolicyError as exc:
        raise not_found(f"policy version {number}") from exc
    session.commit()
    return PolicySummary.model_validate(policies.as_dict(row, row.number))


@router.post("/policies/rollback", responses=error_responses(409))
def rollback_policy(
    principal: AdminDep, session: SessionDep, context: ContextDep
) -> PolicySummary:
    """Activate the previously active version again; a second rollback undoes the first."""
    try:
        row = policies.rollback(session, principal.actor, context.signer)
    except policies.NoSuchPolicyError as exc:
        raise ApiError(409, str(exc), code="nothing_to_roll_back") from exc
    session.commit()
    return PolicySummary.model_validate(policies.as_dict(row, row.number))


@router.get("/policies/{number:int}/impact", responses=error_responses(404))
def policy_impact(
    principal: AdminDep, number: RowId, session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=impact.MAX_LIMIT)] = impact.DEFAULT_LIMIT,
) -> ImpactPreview:
    """Which agents' open findings (and recorded observations) would change verdict if version
    `number` were active."""
    row = _version(session, number)
    active, _ = policies.active_numbers(session)
    active_row = policies.get(session, active) if active is not None else None
    baseline = policies.bundle_of(active_row) if active_row is not None else None
    result = impact.preview(session, policies.bundle_of(row), baseline, utcnow().date(), limit)
    return ImpactPreview.model_validate(
        {"version_number": row.number, "active_version_number": active, **result})


def _version(session: Session, number: int) -> PolicyVersion:
    row = policies.get(session, number)
    if row is None:
        raise not_found(f"policy version {number}")
    return row
