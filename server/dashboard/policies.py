"""Policies: versions and the active one, diffs, upload with inline errors, activate, roll back.

Everyone signed in may read policies (the API's `GET policies` is viewer
too); only administrators see and may use the forms that change them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from sqlalchemy.orm import Session

from policies.errors import PolicyError, ValidationIssue
from policies.loader import parse_policy
from server import policy_diff
from server.api.params import RowId
from server.dashboard import apps
from server.dashboard.auth import Admin, AdminPost, Person, Viewer
from server.dashboard.web import Dashboard, DashboardDep, DashboardRoute, PageError, redirect
from server.db import utcnow
from server.models import PolicyVersion
from server.store import impact, policies

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

# Fixed texts for the notice after a redirect: the URL never carries text to show.
NOTICES = {
    "activated": "This version is now active: agents fetch it at their next check-in.",
    "rolled_back": "Rolled back: the previously active version is active again.",
    "uploaded": "Uploaded and signed. It is not active yet: check its impact, then activate.",
}
MAX_SOURCE_CHARS = 512 * 1024
IMPACT_ROWS = 500


@router.get("/policies")
def policy_list(request: Request, dashboard: DashboardDep, person: Viewer,
                notice: str = "") -> Response:
    return _list_page(request, dashboard, person, notice=NOTICES.get(notice, ""))


@router.get("/policies/diff")
def policy_diff_page(
    request: Request,
    dashboard: DashboardDep,
    person: Viewer,
    from_number: Annotated[int, Query(alias="from", ge=1)],
    to_number: Annotated[int, Query(alias="to", ge=1)],
) -> Response:
    with request.app.state.context.read_sessions() as session:
        old, new = policies.get(session, from_number), policies.get(session, to_number)
        versions = policies.list_versions(session)
    if old is None or new is None:
        raise PageError(404, "One of these policy versions does not exist.")
    old_bundle, new_bundle = policies.bundle_of(old), policies.bundle_of(new)
    return dashboard.page(
        request, "policy_diff.html", old=old, new=new, versions=versions,
        hunks=policy_diff.source_diff(old.source, new.source),
        rules=policy_diff.rule_changes(old_bundle, new_bundle),
        settings=policy_diff.setting_changes(old_bundle, new_bundle))


@router.get("/policies/{number:int}")
def policy_detail(request: Request, dashboard: DashboardDep, person: Viewer, number: RowId,
                  notice: str = "") -> Response:
    context = request.app.state.context
    with context.read_sessions() as session:
        row = policies.get(session, number)
        if row is None:
            raise PageError(404, f"There is no policy version {number}.")
        active, previous = policies.active_numbers(session)
    bundle = policies.bundle_of(row)
    return dashboard.page(
        request, "policy.html", version=row, bundle=bundle, active=active, previous=previous,
        lines=list(enumerate(row.source.splitlines(), start=1)),
        names=apps.app_names(bundle, context.catalog), notice=NOTICES.get(notice, ""))


@router.get("/policies/{number:int}/impact")
def policy_impact(request: Request, dashboard: DashboardDep, person: Admin,
                  number: RowId) -> Response:
    """What activating this version would change: findings and hosts whose verdict moves."""
    context = request.app.state.context
    with context.read_sessions() as session:
        row = policies.get(session, number)
        if row is None:
            raise PageError(404, f"There is no policy version {number}.")
        active, _ = policies.active_numbers(session)
        active_row = policies.get(session, active) if active is not None else None
        baseline = policies.bundle_of(active_row) if active_row is not None else None
        result = impact.preview(session, policies.bundle_of(row), baseline, utcnow().date(),
                                limit=IMPACT_ROWS)
    return dashboard.page(
        request, "policy_impact.html", version=row, active=active, impact=result,
        names=apps.app_names(policies.bundle_of(row), context.catalog))


@router.post("/policies/upload")
async def upload_policy(
    request: Request,
    dashboard: DashboardDep,
    person: AdminPost,
    source: Annotated[str, Form(max_length=MAX_SOURCE_CHARS)] = "",
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    name = "pasted policy"
    if file is not None and file.filename:
        raw = await file.read(MAX_SOURCE_CHARS + 1)
        try:
            source = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _list_page(request, dashboard, person, status=422, source="",
                              issues=[_issue(file.filename, "the file is not UTF-8 text")])
        name = file.filename
    if len(source) > MAX_SOURCE_CHARS:
        return _list_page(request, dashboard, person, status=422, source="",
                          issues=[_issue(name, "the policy is larger than 512 KiB")])
    if not source.strip():
        return _list_page(request, dashboard, person, status=422, source=source,
                          issues=[_issue(name, "the policy is empty")])
    context = request.app.state.context
    try:
        # Validated first and apart: a refused policy must not take the database's write lock.
        parse_policy(source, name, context.catalog)
    except PolicyError as exc:
        return _list_page(request, dashboard, person, status=422, source=source,
                          issues=exc.issues)
    with context.write_sessions() as session:
        row = policies.add_version(session, text=source, source_name=name,
                                   catalog=context.catalog, signer=context.signer,
                                   actor=person.actor)
        session.commit()
    return redirect(f"/policies/{row.number}?notice=uploaded")


@router.post("/policies/{number:int}/activate")
def activate_policy(request: Request, person: AdminPost, number: RowId) -> Response:
    context = request.app.state.context
    with context.write_sessions() as session:
        try:
            policies.activate(session, number, person.actor, context.signer)
        except policies.NoSuchPolicyError as exc:
            raise PageError(404, str(exc)) from exc
        session.commit()
    return redirect(f"/policies/{number}?notice=activated")


@router.post("/policies/rollback")
def rollback_policy(request: Request, person: AdminPost) -> Response:
    context = request.app.state.context
    with context.write_sessions() as session:
        try:
            row = policies.rollback(session, person.actor, context.signer)
        except policies.NoSuchPolicyError as exc:
            raise PageError(409, "There is no previously active version to roll back to.",
                            title="Nothing to roll back to") from exc
        session.commit()
    return redirect(f"/policies/{row.number}?notice=rolled_back")


def _list_page(request: Request, dashboard: Dashboard, person: Person, status: int = 200,
               notice: str = "", source: str = "",
               issues: list[ValidationIssue] | None = None) -> Response:
    with request.app.state.context.read_sessions() as session:
        versions, active, previous = _versions(session)
    issues = issues or []
    return dashboard.page(
        request, "policies.html", status=status, versions=versions, active=active,
        previous=previous, notice=notice, source=source, issues=issues,
        annotated=annotate(source, issues) if issues and source else [],
        unplaced=[issue for issue in issues if not _placeable(issue, source)],
        can_admin=person.has_role("admin"))


def _versions(session: Session) -> tuple[list[PolicyVersion], int | None, int | None]:
    active, previous = policies.active_numbers(session)
    versions = sorted(policies.list_versions(session), key=lambda row: -row.number)
    return versions, active, previous


def _issue(name: str, message: str) -> ValidationIssue:
    return ValidationIssue(file=name, line=None, field="", message=message)


def annotate(source: str, issues: list[ValidationIssue]) -> list[dict[str, Any]]:
    """The source's lines, each with the issues reported at it (to show them inline)."""
    by_line: dict[int, list[ValidationIssue]] = {}
    for issue in issues:
        if _placeable(issue, source):
            assert issue.line is not None
            by_line.setdefault(issue.line, []).append(issue)
    return [{"number": number, "text": text, "issues": by_line.get(number, [])}
            for number, text in enumerate(source.splitlines(), start=1)]


def _placeable(issue: ValidationIssue, source: str) -> bool:
    return issue.line is not None and 1 <= issue.line <= max(1, len(source.splitlines()))
