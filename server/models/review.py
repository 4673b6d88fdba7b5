"""Review at fleet scale: violations, compliance snapshots, exceptions and requests."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from server.db import utcnow
from server.models.base import Base, JSONType


class Violation(Base):
    """One denied app on one machine: every finding of it there (launches, installs,
    connections) gathered into the row reviewers work on. Kept up to date from the findings
    in the same transaction that changes them (server.store.violations)."""

    __tablename__ = "violations"
    __table_args__ = (
        sa.UniqueConstraint("agent_id", "app", name="uq_violations_agent_app"),
        # The list pages by keyset on (last_seen, id), like findings.
        sa.Index("ix_violations_last_seen_id", "last_seen", "id"),
        sa.Index("ix_violations_status_app", "status", "app"),
        # "Open ones, most recent first" without sorting: the list's commonest question.
        sa.Index("ix_violations_status_last_seen_id", "status", "last_seen", "id"),
        # Time to remediate, from the index alone (migration 0011).
        sa.Index("ix_violations_status_resolved_at", "status", "resolved_at", "opened_at",
                 "agent_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(sa.ForeignKey("agents.id"))
    app: Mapped[str] = mapped_column(sa.String(64))
    # `open` while any of its findings is open.
    status: Mapped[str] = mapped_column(sa.String(16))
    first_seen: Mapped[dt.datetime]
    last_seen: Mapped[dt.datetime]
    # When the current episode began (a reopened violation starts a new one) and ended:
    # the span that time-to-remediate measures.
    opened_at: Mapped[dt.datetime]
    resolved_at: Mapped[dt.datetime | None]
    findings: Mapped[int] = mapped_column(default=0)
    open_findings: Mapped[int] = mapped_column(default=0)
    # Sightings per sensor: {"process": 12, "installed": 1}.
    sensor_counts: Mapped[dict[str, Any]] = mapped_column(JSONType)
    triage: Mapped[str] = mapped_column(sa.String(16), default="new")
    triage_comment: Mapped[str | None] = mapped_column(sa.Text)
    triage_by: Mapped[str | None] = mapped_column(sa.String(255))
    triage_at: Mapped[dt.datetime | None]


class ComplianceSnapshot(Base):
    """How one group stood on one UTC day; `group` is "" for machines in no group."""

    __tablename__ = "compliance_snapshots"
    __table_args__ = (
        sa.UniqueConstraint("day", "group", name="uq_compliance_snapshots_day_group"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    day: Mapped[dt.date] = mapped_column(sa.Date)
    group: Mapped[str] = mapped_column(sa.String(255))
    compliant: Mapped[int]
    with_open_violation: Mapped[int]
    silent: Mapped[int]
    total: Mapped[int]
    # Open violations by app: {"telegram": 12}.
    open_by_app: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # The moment measured; the next snapshot's remediation figures start here.
    taken_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Violations of the group resolved since the previous snapshot, and their median days
    # from opening to resolution (None when none was): the history's time to remediate
    # without reading the violations again (server.store.compliance).
    resolved: Mapped[int] = mapped_column(default=0, server_default="0")
    median_days_to_remediate: Mapped[float | None] = mapped_column(sa.Float)


class AppException(Base):
    """An administrator's grant: one app may run on one machine (or a group) until a time.

    Agents get the ones that concern them signed at check-in (server.store.exceptions)
    and honour them until `until` by their own clock; a revoked one stops at the next
    check-in. Overlapping grants for the same app and scope are one row, extended."""

    __tablename__ = "exceptions"
    __table_args__ = (
        sa.Index("ix_exceptions_agent_until", "agent_id", "until"),
        sa.Index("ix_exceptions_group_until", "group", "until"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    app: Mapped[str] = mapped_column(sa.String(64))
    # Exactly one of the two: a machine, or every machine of a group.
    agent_id: Mapped[str | None] = mapped_column(sa.ForeignKey("agents.id"))
    group: Mapped[str | None] = mapped_column(sa.String(255))
    until: Mapped[dt.datetime]
    reason: Mapped[str] = mapped_column(sa.Text)
    created_by: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(sa.String(255))


class ExceptionRequest(Base):
    """A person's request, made at a machine (`warden-agent request-exception`), that
    reached the server through the agent's spool; pending until an administrator
    approves (an exception is granted) or denies it. The agent tells the person."""

    __tablename__ = "exception_requests"
    __table_args__ = (sa.Index("ix_exception_requests_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    # The agent's event id: the same request uploaded twice is one row.
    event_id: Mapped[str] = mapped_column(sa.String(36), unique=True)
    agent_id: Mapped[str] = mapped_column(sa.ForeignKey("agents.id"), index=True)
    app: Mapped[str] = mapped_column(sa.String(64))
    days: Mapped[int]
    reason: Mapped[str] = mapped_column(sa.Text)
    # The account that asked, as the agent saw it over its socket (SO_PEERCRED).
    requested_by: Mapped[str] = mapped_column(sa.String(255))
    requested_uid: Mapped[int | None]
    requested_at: Mapped[dt.datetime]
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    decided_by: Mapped[str | None] = mapped_column(sa.String(255))
    decided_at: Mapped[dt.datetime | None]
    comment: Mapped[str] = mapped_column(sa.Text, default="")
    exception_id: Mapped[int | None] = mapped_column(sa.ForeignKey("exceptions.id"))
