"""MDM connectors: their rows, the lease that lets one server process sync each at a time,
and each sync's outcome. Secrets arrive sealed (server.crypto.secretbox) and never leave here."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.db import utcnow
from server.models import Agent, Connector
from server.store import audit

# How long a claimed sync may run before another process may take it over (the claimer
# died). A sync of 10,000 devices takes well under a minute (docs/benchmarks.md).
LEASE = dt.timedelta(minutes=15)


class ConnectorExistsError(Exception):
    """A connector with this name exists already."""


def create(session: Session, *, name: str, kind: str, settings: dict[str, Any],
           sealed_secret: str, interval_minutes: int, group: str | None,
           actor: str) -> Connector:
    if get(session, name) is not None:
        raise ConnectorExistsError(name)
    now = utcnow()
    row = Connector(name=name, kind=kind, settings=settings, secret=sealed_secret,
                    interval_minutes=interval_minutes, group=group, created_by=actor,
                    created_at=now, next_sync_at=now)
    session.add(row)
    session.flush()
    audit.record(session, actor, "connector.create", f"connector:{name}", after=as_dict(row))
    return row


def get(session: Session, name: str) -> Connector | None:
    return session.scalars(sa.select(Connector).where(Connector.name == name)).one_or_none()


def list_all(session: Session) -> list[Connector]:
    return list(session.scalars(sa.select(Connector).order_by(Connector.name)))


def remove(session: Session, name: str, actor: str) -> Connector | None:
    """Delete the connector; its phones stay as hosts (with their findings), retired."""
    row = session.scalars(
        sa.select(Connector).where(Connector.name == name).with_for_update()).one_or_none()
    if row is None:
        return None
    now = utcnow()
    session.execute(sa.update(Agent).where(Agent.source == source_of(row),
                                           Agent.retired_at.is_(None))
                    .values(retired_at=now, revoked_at=sa.func.coalesce(Agent.revoked_at, now)))
    audit.record(session, actor, "connector.remove", f"connector:{name}", before=as_dict(row))
    session.delete(row)
    return row


def source_of(row: Connector) -> str:
    """A phone's `source`: which connector reports it (`intune:NAME`)."""
    return f"{row.kind}:{row.name}"


def claim(session: Session, name: str, owner: str, now: dt.datetime | None = None) -> bool:
    """Take the connector's sync lease: True if this caller now holds it. One UPDATE with the
    condition in its WHERE, so of two processes racing exactly one gets the row."""
    now = now or utcnow()
    result = session.execute(
        sa.update(Connector)
        .where(Connector.name == name,
               sa.or_(Connector.lease_until.is_(None), Connector.lease_until < now))
        .values(lease_owner=owner, lease_until=now + LEASE)
        .execution_options(synchronize_session=False))
    return getattr(result, "rowcount", 0) == 1


def due(session: Session, now: dt.datetime) -> list[str]:
    """Connectors whose next sync time has come and that nobody is syncing."""
    return list(session.scalars(
        sa.select(Connector.name)
        .where(Connector.next_sync_at <= now,
               sa.or_(Connector.lease_until.is_(None), Connector.lease_until < now))
        .order_by(Connector.next_sync_at)))


def finish(session: Session, name: str, owner: str, *, ok: bool, error: str | None,
           counts: dict[str, Any] | None, now: dt.datetime | None = None) -> None:
    """Record a sync's outcome and release the lease (only if this caller still holds it)."""
    now = now or utcnow()
    row = session.scalars(sa.select(Connector).where(Connector.name == name)
                          .with_for_update()).one_or_none()
    if row is None:
        return  # removed while it synced
    row.last_sync_at = now
    row.last_result = "ok" if ok else "failed"
    row.last_error = error
    if ok:
        row.last_counts = counts
        row.last_success_at = now
    row.next_sync_at = now + dt.timedelta(minutes=row.interval_minutes)
    if row.lease_owner == owner:
        row.lease_owner = None
        row.lease_until = None


def hosts_count(session: Session, row: Connector) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(Agent).where(
        Agent.source == source_of(row), Agent.retired_at.is_(None))) or 0


def as_dict(row: Connector, hosts: int | None = None) -> dict[str, Any]:
    """The API shape: settings and outcome, never the secret."""
    return {
        "name": row.name,
        "kind": row.kind,
        "source": source_of(row),
        "settings": row.settings,
        "interval_minutes": row.interval_minutes,
        "group": row.group,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "next_sync_at": row.next_sync_at.isoformat(),
        "last_sync_at": row.last_sync_at.isoformat() if row.last_sync_at else None,
        "last_result": row.last_result,
        "last_error": row.last_error,
        "last_counts": row.last_counts,
        "last_success_at": row.last_success_at.isoformat() if row.last_success_at else None,
        "syncing": row.lease_until is not None and row.lease_until > utcnow(),
        "hosts": hosts,
    }
