"""`/api/v1/connectors`: MDM connectors — add, list, show, remove, sync now (admin only).

The secret goes in once, sealed with the data directory's key (server.crypto.secretbox);
no answer carries it. A sync runs in the request and answers its counts, or 502
with the reason when the MDM could not be read (nothing changed then), or 409
while another sync of the connector runs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from server.api.admin.common import ROUTER_ERRORS, not_found
from server.api.deps import AdminDep, SessionDep
from server.api.errors import ApiError
from server.connectors.runner import (
    ConnectorRunner,
    LeaseHeldError,
    UnknownConnectorError,
)
from server.crypto.secretbox import SecretBoxError
from server.models import Connector
from server.schemas.connectors import (
    CONNECTOR_NAME,
    ConnectorPage,
    ConnectorRecord,
    ConnectorRequest,
    SyncCounts,
)
from server.schemas.errors import error_responses
from server.store import connectors

router = APIRouter(prefix="/api/v1", tags=["connectors"], responses=ROUTER_ERRORS)

Name = Annotated[str, Path(pattern=CONNECTOR_NAME, max_length=63)]


def _runner(request: Request) -> ConnectorRunner:
    runner: ConnectorRunner = request.app.state.connector_runner
    return runner


def _record(session: SessionDep, row: Connector) -> ConnectorRecord:
    return ConnectorRecord.model_validate(
        connectors.as_dict(row, connectors.hosts_count(session, row)))


@router.post("/connectors", status_code=201, responses=error_responses(409))
def add_connector(principal: AdminDep, body: ConnectorRequest, request: Request,
                  session: SessionDep) -> ConnectorRecord:
    try:
        sealed = _runner(request).box.seal(body.secret)
    except SecretBoxError as exc:
        raise ApiError(503, str(exc), code="secret_store_unavailable") from exc
    try:
        row = connectors.create(session, name=body.name, kind=body.kind,
                                settings=body.settings(), sealed_secret=sealed,
                                interval_minutes=body.interval_minutes, group=body.group,
                                actor=principal.actor)
    except connectors.ConnectorExistsError:
        raise ApiError(409, f"a connector named {body.name!r} exists; remove it first or "
                       "pick another name", code="connector_exists") from None
    session.commit()
    return _record(session, row)


@router.get("/connectors")
def list_connectors(principal: AdminDep, session: SessionDep) -> ConnectorPage:
    return ConnectorPage(items=[_record(session, row) for row in connectors.list_all(session)],
                         next_cursor=None)


@router.get("/connectors/{name}", responses=error_responses(404))
def show_connector(principal: AdminDep, name: Name, session: SessionDep) -> ConnectorRecord:
    row = connectors.get(session, name)
    if row is None:
        raise not_found(f"connector {name!r}")
    return _record(session, row)


@router.delete("/connectors/{name}", responses=error_responses(404))
def remove_connector(principal: AdminDep, name: Name, session: SessionDep) -> ConnectorRecord:
    """Its phones stay as hosts, retired, with their findings."""
    row = connectors.get(session, name)
    if row is None:
        raise not_found(f"connector {name!r}")
    record = _record(session, row)
    connectors.remove(session, name, principal.actor)
    session.commit()
    return record


@router.post("/connectors/{name}/sync", responses=error_responses(404, 409, 502))
def sync_connector(principal: AdminDep, name: Name, request: Request) -> SyncCounts:
    try:
        outcome = _runner(request).sync(name)
    except UnknownConnectorError:
        raise not_found(f"connector {name!r}") from None
    except LeaseHeldError:
        raise ApiError(409, f"connector {name!r} is syncing now; wait for it to finish",
                       code="sync_running") from None
    if not outcome.ok or outcome.report is None:
        raise ApiError(502, f"the sync of {name!r} failed and changed nothing: "
                       f"{outcome.error}", code="sync_failed")
    return SyncCounts.model_validate(outcome.report.counts())
