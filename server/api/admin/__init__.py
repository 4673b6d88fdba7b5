"""The people door: the admin / review API under `/api/v1/` (docs/api.md).

One module per resource, each with its own router; every route names the
least role it needs (viewer reads, analyst also triages, admin does
everything) through server.api.deps, which also refuses agent tokens here.
`install` is what server.app.create_app calls.
"""

from __future__ import annotations

from fastapi import FastAPI

from server.api.admin import (
    agents,
    audit,
    compliance,
    connectors,
    exceptions,
    findings,
    policies,
    recommendations,
    reenrollments,
    secrets,
    stats,
    tokens,
    users,
    violations,
)
from server.api.deps import ServerContext

ROUTERS = (findings.router, violations.router, compliance.router, agents.router,
           reenrollments.router, policies.router, recommendations.router, stats.router,
           secrets.router, tokens.router, users.router, audit.router, connectors.router,
           exceptions.router)


def install(app: FastAPI, context: ServerContext) -> None:
    """Add the admin routes. They need nothing from `context` beyond what each request gets."""
    for router in ROUTERS:
        app.include_router(router)
