"""create_app(settings): the whole server as one ASGI app, nothing built before it is called.

Parts written separately plug in here: Prometheus metrics (server.metrics; `/metrics`
wants a bearer token when `metrics_token` is set), alert delivery (server.alerts,
wired when a webhook URL or syslog address is configured and fed every newly
opened deny finding after commit), SIEM delivery (server.siem, wired when
`siem_destinations` are configured and fed every finding change, action and sensor
problem after commit), and — looked up when the app is created,
so the server runs before they land — `server.api.admin` and `server.dashboard`,
each exposing `install(app: FastAPI, context: ServerContext) -> None` to add its routes,
middleware and hooks (see `server.api.deps.Hooks`). A module that is present
but fails to import is a bug and fails loudly; only an absent one is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from fastapi import Depends, FastAPI, Response
from fastapi.responses import JSONResponse
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from policies.loader import load_catalog
from server import dashboard, db
from server.alerts import AlertDispatcher
from server.api import admin, agent
from server.api.bodies import BodyLimitMiddleware
from server.api.deps import ContextDep, ServerContext, TokenDep, unauthorized
from server.api.errors import error_response, install_error_handlers
from server.connectors import runner as connector_runner
from server.crypto import hashing
from server.crypto.signing import PolicySigner
from server.hsts import StrictTransportSecurityMiddleware
from server.jobs.compliance import ComplianceTask
from server.jobs.pruning import RetentionTask
from server.metrics import Metrics, MetricsMiddleware, MetricsState
from server.settings import ServerSettings, is_loopback
from server.siem.publisher import SiemPublisher, describe
from server.store import agents, findings, policies
from server.store.known_apps import KnownApps, bounded_by_app
from server.throttling import EnrollThrottle

log = logging.getLogger(__name__)

def create_app(settings: ServerSettings) -> FastAPI:
    """Build the app; raises server.crypto.signing.SigningKeyError if the data dir is not
    initialised."""
    signer = PolicySigner.load(settings.signing_key_path)
    engine = db.create_engine(settings.resolved_database_url)
    write_engine = db.writer(engine)
    catalog = load_catalog()
    context = ServerContext(
        settings=settings,
        engine=engine,
        read_sessions=db.session_factory(engine),
        write_sessions=db.session_factory(write_engine),
        write_engine=write_engine,
        signer=signer,
        catalog=catalog,
        known_apps=KnownApps(catalog),
        enroll_throttle=EnrollThrottle(db.session_factory(write_engine),
                                       settings.enroll_failures_per_address,
                                       settings.enroll_failure_window_seconds),
    )
    app = FastAPI(title="Warden", version=_version(), lifespan=_lifespan(context),
                  redoc_url=None)
    app.state.context = context
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.trusted_proxies:
        # Here, not in uvicorn: the same trust however the app is served (one process,
        # workers, tests), and only the proxies the settings name.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["operations"],
                      response_model=None)
    app.include_router(agent.router)
    metrics = _install_metrics(app, context)
    _install_alerts(context, metrics)
    _install_siem(context, metrics)
    # Prune old events and resolved findings once a day (settings.retention_days).
    retention = RetentionTask(context)
    context.hooks.on_startup.append(retention.start)
    context.hooks.on_shutdown.append(retention.shutdown)
    # Snapshot compliance once a day (and the weekly report, when configured).
    snapshots = ComplianceTask(context)
    context.hooks.on_startup.append(snapshots.start)
    context.hooks.on_shutdown.append(snapshots.shutdown)
    app.state.compliance_task = snapshots
    context.hooks.on_startup.append(lambda: _sign_missing_activation(context))
    # MDM connectors: syncs on demand (API) and on each connector's interval.
    app.state.connector_runner = connector_runner.install(context)
    admin.install(app, context)
    dashboard.install(app, context)
    if settings.sends_hsts:
        # Outermost: error answers of the middlewares inside carry it too.
        app.add_middleware(StrictTransportSecurityMiddleware)
    return app


def _sign_missing_activation(context: ServerContext) -> None:
    with context.write_sessions() as session:
        serial = policies.sign_missing_activation(session, context.signer)
        session.commit()
    if serial is not None:
        log.info("signed activation serial %d for the active policy (the database predates "
                 "activation serials)", serial)


def healthz(context: ContextDep) -> JSONResponse:
    if db.ping(context.engine):
        return JSONResponse({"status": "ok"})
    return error_response(503, "the database does not answer", code="database_unavailable")


def _lifespan(context: ServerContext) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            for start in context.hooks.on_startup:
                start()
            yield
        finally:
            for stop in reversed(context.hooks.on_shutdown):
                try:
                    stop()
                except Exception:
                    log.exception("shutdown hook %r failed", stop)
            context.engine.dispose()

    return lifespan


def _install_metrics(app: FastAPI, context: ServerContext) -> Metrics:
    metrics = Metrics(collect_state=lambda: _metrics_state(context))
    app.state.metrics = metrics
    # Added last, so outermost: it also counts what the body limit and errors answer.
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    def render_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    app.add_api_route("/metrics", render_metrics, methods=["GET"], tags=["operations"],
                      response_model=None, include_in_schema=False,
                      dependencies=_metrics_guard(context.settings))
    settings = context.settings
    if settings.metrics_token is None and not is_loopback(settings.host):
        context.hooks.on_startup.append(lambda: _warn_open_metrics(settings.host))

    def count_ingested(accepted_by_type: dict[str, int], duplicates: int) -> None:
        for event_type, count in accepted_by_type.items():
            metrics.events_ingested(event_type, count)
        if duplicates:
            metrics.duplicate_events(duplicates)

    context.hooks.on_events_ingested.append(count_ingested)
    return metrics


def _metrics_guard(settings: ServerSettings) -> list[Any]:
    """What a scrape must show: the metrics token when one is set, else nothing."""
    if settings.metrics_token is None:
        return []
    # Only the digest is kept; comparing digests in constant time hides even the length.
    expected = hashing.hash_token(settings.metrics_token.get_secret_value())

    def check(token: TokenDep) -> None:
        if not hashing.token_matches(token, expected):
            raise unauthorized("/metrics wants the metrics token (WARDEN_METRICS_TOKEN)")

    return [Depends(check)]


def _warn_open_metrics(host: str) -> None:
    log.warning("/metrics needs no token and the server listens on %s: whoever reaches it "
                "reads open findings by app and agents by state. Set WARDEN_METRICS_TOKEN, "
                "or restrict /metrics at the proxy or firewall", host)


def _metrics_state(context: ServerContext) -> MetricsState:
    silent_after = context.settings.silent_after
    with context.read_sessions() as session:
        by_state = agents.count_by_state(session, db.utcnow(), silent_after)
        # Bounded: an agent's made-up app ids are counted as `other`, not a series each.
        open_by_app = bounded_by_app(findings.open_counts_by_app(session),
                                     context.known_apps.ids(session))
        return {"open_findings": open_by_app,
                "agents": {str(state): count for state, count in by_state.items()}}


def _install_alerts(context: ServerContext, metrics: Metrics) -> None:
    settings = context.settings
    if not (settings.alert_webhook_url or settings.alert_syslog_address):
        return
    dispatcher = AlertDispatcher(
        settings.alert_webhook_url, settings.alert_syslog_address,
        settings.alert_retry_max_seconds,
        app_names={app_id: app.name for app_id, app in context.catalog.items()},
        on_outcome=metrics.alert_outcome)
    context.hooks.on_startup.append(dispatcher.start)
    context.hooks.on_shutdown.append(lambda: _stop_alerts(dispatcher))
    context.hooks.on_deny_opened.append(dispatcher.submit)
    context.hooks.on_sensor_problem.append(dispatcher.submit)


def _install_siem(context: ServerContext, metrics: Metrics) -> None:
    destinations = context.settings.siem_destinations
    if not destinations:
        return
    publisher = SiemPublisher(
        destinations, _version(),
        app_names={app_id: app.name for app_id, app in context.catalog.items()},
        on_outcome=metrics.siem_outcome)
    for destination in destinations:
        log.info("SIEM destination: %s", describe(destination))
    context.hooks.on_startup.append(publisher.start)
    context.hooks.on_shutdown.append(lambda: _stop_siem(publisher))
    context.hooks.on_findings_stream.append(publisher.on_findings_stream)
    context.hooks.on_sensor_problem.append(publisher.on_sensor_problem)


def _stop_siem(publisher: SiemPublisher) -> None:
    if not publisher.stop():
        log.warning("a SIEM destination did not stop in time; its queued records are lost")


def _stop_alerts(dispatcher: AlertDispatcher) -> None:
    if not dispatcher.stop():
        log.warning("the alert dispatcher did not stop in time; queued alerts may be lost")


def _version() -> str:
    try:
        return package_version("warden")
    except PackageNotFoundError:
        return "0"
