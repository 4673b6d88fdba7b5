"""MDM connectors (administrators): each one's last sync, its result and its last error,
and a button to sync now. Adding and removing is `warden connectors` (secrets come from
files, never from a form)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from server.connectors.runner import ConnectorRunner, LeaseHeldError, UnknownConnectorError
from server.dashboard.auth import Admin, AdminPost
from server.dashboard.web import DashboardDep, DashboardRoute, PageError, redirect
from server.schemas.connectors import CONNECTOR_NAME
from server.store import connectors

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)


@router.get("/connectors")
def connector_list(request: Request, dashboard: DashboardDep, person: Admin) -> Response:
    with request.app.state.context.read_sessions() as session:
        rows = [connectors.as_dict(row, connectors.hosts_count(session, row))
                for row in connectors.list_all(session)]
    return dashboard.page(request, "connectors.html", connectors=rows)


@router.post("/connectors/{name}/sync")
def sync_now(request: Request, person: AdminPost,
             name: Annotated[str, Path(pattern=CONNECTOR_NAME, max_length=63)]) -> Response:
    runner: ConnectorRunner = request.app.state.connector_runner
    try:
        runner.sync(name)  # a failure is recorded on the connector and shown on the page
    except UnknownConnectorError:
        raise PageError(404, f"There is no connector {name}.") from None
    except LeaseHeldError:
        raise PageError(409, f"Connector {name} is syncing now; reload in a moment.") from None
    return redirect("/connectors")
