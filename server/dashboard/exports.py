"""The findings table's current filter as a CSV or JSON download.

The browser cannot send the API's bearer token with a plain link, so the
dashboard serves the export itself — through server.exports, the very code
behind `GET /api/v1/findings/export`: the same columns, cells and bytes.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server import exports
from server.dashboard import listing
from server.dashboard.auth import Viewer
from server.dashboard.web import DashboardRoute
from server.store.findings_query import FindingFilters

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)


@router.get("/findings/export.csv")
def export_csv(request: Request, person: Viewer) -> Response:
    return exports.findings_download(request.app.state.context, _filters(request), "csv")


@router.get("/findings/export.json")
def export_json(request: Request, person: Viewer) -> Response:
    return exports.findings_download(request.app.state.context, _filters(request), "json")


def _filters(request: Request) -> FindingFilters:
    return listing.download_filters(FindingFilters.from_query, request)
