"""The server's tables, as SQLAlchemy 2.0 declarative models.

The schema itself is created by the Alembic migrations in server/migrations/;
these classes must describe the same tables (a test compares them).
Timestamps are aware UTC datetimes on both SQLite and PostgreSQL (see
`server.db.UTCDateTime`). `group` and `user` are reserved words in SQL; the
columns keep those names because SQLAlchemy quotes them — quote them yourself
in hand-written SQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from policies.vocabulary import FINDING_STATUSES, ROLES, TRIAGE_STATES
from server.db import UTCDateTime, utcnow

__all__ = ["FINDING_STATUSES", "ROLES", "TRIAGE_STATES"]

# JSONB on PostgreSQL (comparable, indexable); JSON text on SQLite.
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")



class Base(DeclarativeBase):
    # Names as the migrations spell them, so models and schema compare equal.
    metadata = sa.MetaData(naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
    })
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSONType}


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (sa.Index("ix_agents_hostname_id", "hostname", "id"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    hostname: Mapped[str] = mapped_column(sa.String(255))
    machine_id: Mapped[str] = mapped_column(sa.String(255), unique=True)
    os: Mapped[str] = mapped_column(sa.String(16))
    os_version: Mapped[str] = mapped_column(sa.String(255))
    arch: Mapped[str] = mapped_column(sa.String(64))
    agent_version: Mapped[str] = mapped_column(sa.String(64))
    user: Mapped[str] = mapped_column(sa.String(255))
    group: Mapped[str | None] = mapped_column(sa.String(255))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    enrolled_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The bundle version the agent says it runs (from its last check-in).
    policy_version: Mapped[str | None] = mapped_column(sa.String(64))
    status: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    revoked_at: Mapped[dt.datetime | None]
    # The machine's own Ed25519 public key (base64), bound at enrollment or, for an agent
    # enrolled before keys, at its first check-in; None until then. Re-enrolling this
    # machine needs a statement signed by it, or an administrator's approval.
    public_key: Mapped[str | None] = mapped_column(sa.String(64))
    # `signed_at` of the last accepted enrollment statement: a statement is taken once.
    key_proven_at: Mapped[dt.datetime | None]
    # Where the host comes from: None for a machine with an agent, `intune:NAME` (the
    # connector's kind and name) for a phone an MDM reports. Such a host has no usable token.
    source: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    # When its MDM stopped listing it: kept (its findings stay), no longer counted.
    retired_at: Mapped[dt.datetime | None]
    # Why this machine's latest notification failed (None: it worked, or none was tried),
    # and that notification's time: the overview counts machines whose users cannot be told.
    notify_error: Mapped[str | None] = mapped_column(sa.Text)
    notify_checked_at: Mapped[dt.datetime | None]


class ReenrollmentRequest(Base):
    """An enrollment of a known machine that did not prove it holds the machine's key:
    held until an administrator approves (it may then enroll once) or rejects it."""

    __tablename__ = "reenrollment_requests"

    agent_id: Mapped[str] = mapped_column(sa.ForeignKey("agents.id"), primary_key=True)
    # The key it asked to bind (None: an agent from before keys) and the facts it sent.
    public_key: Mapped[str | None] = mapped_column(sa.String(64))
    facts: Mapped[dict[str, Any]] = mapped_column(JSONType)
    address: Mapped[str] = mapped_column(sa.String(255))
    reason: Mapped[str] = mapped_column(sa.Text)
    requested_at: Mapped[dt.datetime]
    last_attempt_at: Mapped[dt.datetime]
    attempts: Mapped[int] = mapped_column(default=1)
    # How many different keys asked while it was pending: more than one means someone
    # else holds the secret and this machine's id.
    keys_seen: Mapped[int] = mapped_column(default=1)
    approved_at: Mapped[dt.datetime | None]
    approved_by: Mapped[str | None] = mapped_column(sa.String(255))


class EnrollSecret(Base):
    __tablename__ = "enroll_secrets"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    secret_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # Agents enrolled with a scoped secret land in this group.
    group: Mapped[str | None] = mapped_column(sa.String(255))
    created_by: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]
    uses: Mapped[int] = mapped_column(default=0)
    # What it is for ("laptops of the finance team"), shown in listings.
    note: Mapped[str | None] = mapped_column(sa.String(255))


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(sa.String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    disabled: Mapped[bool] = mapped_column(default=False)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    role: Mapped[str] = mapped_column(sa.String(16))
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]
    last_used: Mapped[dt.datetime | None]


class PolicyVersion(Base):
    __tablename__ = "policy_versions"

    number: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    # The bundle's own version: SHA-256 of its canonical JSON; the agents' ETag.
    version: Mapped[str] = mapped_column(sa.String(64), index=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    mode: Mapped[str] = mapped_column(sa.String(16))
    source: Mapped[str] = mapped_column(sa.Text)
    source_format: Mapped[str] = mapped_column(sa.String(8))
    # Canonical JSON text, exactly the bytes that were signed.
    bundle: Mapped[str] = mapped_column(sa.Text)
    signature: Mapped[str] = mapped_column(sa.String(128))
    created_by: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ServerState(Base):
    """One row (id 1): which policy version agents get, the one before it, the signed
    activation that tells agents this version is newer than any they ran before, and the
    signed rotations that lead agents from an older signing key to the current one."""

    __tablename__ = "server_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    active_policy_number: Mapped[int | None] = mapped_column(
        sa.ForeignKey("policy_versions.number"))
    previous_policy_number: Mapped[int | None] = mapped_column(
        sa.ForeignKey("policy_versions.number"))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Grows with every activation, rollbacks included (see server.store.policies).
    activation_serial: Mapped[int] = mapped_column(sa.BigInteger, default=0,
                                                   server_default="0")
    # The signed activation document as canonical JSON text, exactly as signed, and its
    # signature; None only in a database migrated from before activations were signed.
    activation: Mapped[str | None] = mapped_column(sa.Text)
    activation_signature: Mapped[str | None] = mapped_column(sa.Text)
    # Every rotation of the policy-signing key, oldest first, as canonical JSON text: a list
    # of {"statement", "signature"}, each signed by the key it retires; None before the first
    # (see server.key_rotation). Public, and useless without the keys: it may be in the database.
    key_rotations: Mapped[str | None] = mapped_column(sa.Text)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (sa.Index("ix_events_agent_finding", "agent_id", "finding_key"),)

    # The agent's UUID for the event: inserting it twice is a no-op (idempotent retries).
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    agent_id: Mapped[str] = mapped_column(sa.ForeignKey("agents.id"))
    type: Mapped[str] = mapped_column(sa.String(32))
    time: Mapped[dt.datetime]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    finding_key: Mapped[str | None] = mapped_column(sa.String(512))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)


class Finding(Base):
    __tablename__ = "findings"
    __table_args__ = (
        sa.UniqueConstraint("agent_id", "key", name="uq_findings_agent_key"),
        sa.Index("ix_findings_app_status", "app", "status"),
        # Keyset pagination walks these in (time, id) order; see migration 0002.
        sa.Index("ix_findings_last_seen_id", "last_seen", "id"),
        sa.Index("ix_findings_first_seen_id", "first_seen", "id"),
        sa.Index("ix_findings_status_verdict_agent", "status", "verdict", "agent_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(sa.ForeignKey("agents.id"))
    app: Mapped[str] = mapped_column(sa.String(64))
    sensor: Mapped[str] = mapped_column(sa.String(32))
    # The agent's identity for "the same thing seen again" (app, sensor, what matched).
    key: Mapped[str] = mapped_column(sa.String(512))
    verdict: Mapped[str] = mapped_column(sa.String(16))
    action: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16))
    first_seen: Mapped[dt.datetime]
    last_seen: Mapped[dt.datetime]
    resolved_at: Mapped[dt.datetime | None]
    count: Mapped[int] = mapped_column(default=1)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONType)
    alternative: Mapped[str | None] = mapped_column(sa.String(64))
    confidence: Mapped[str | None] = mapped_column(sa.String(16))
    message: Mapped[str] = mapped_column(sa.Text, default="")
    matched: Mapped[str] = mapped_column(sa.Text, default="")
    triage: Mapped[str] = mapped_column(sa.String(16), default="new")
    triage_comment: Mapped[str | None] = mapped_column(sa.Text)
    triage_by: Mapped[str | None] = mapped_column(sa.String(255))
    triage_at: Mapped[dt.datetime | None]
    # The latest result of each action the agent ran on it, by action name:
    # {"state": done|failed|would_have, "detail": why, "time": RFC 3339} (server.store.outcomes).
    outcomes: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        sa.Index("ix_audit_log_action_id", "action", "id"),
        sa.Index("ix_audit_log_actor_id", "actor", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    time: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(sa.String(255))
    action: Mapped[str] = mapped_column(sa.String(64))
    target: Mapped[str] = mapped_column(sa.String(255))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class ThrottleFailures(Base):
    """One rate-limited key's recent failures (server.throttling): shared by every server
    process on the database, so N processes allow what one does."""

    __tablename__ = "throttle_failures"
    __table_args__ = (sa.Index("ix_throttle_failures_scope_last", "scope", "last_failed_at"),)

    # What is limited ("login", "enroll"): each scope has its own window and pruning.
    scope: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    # Who is limited: "account:bob", "address:203.0.113.7"...
    key: Mapped[str] = mapped_column(sa.String(320), primary_key=True)
    # When each failure in the window happened, oldest first: a JSON list of epoch seconds.
    # Wall-clock time, not monotonic: the processes sharing a row share only that clock.
    failures: Mapped[str] = mapped_column(sa.Text, default="[]")
    # The newest failure (epoch seconds), what pruning goes by.
    last_failed_at: Mapped[float] = mapped_column(sa.Float)


class RevokedSession(Base):
    """A dashboard session logged out before it expired: refused by every server process."""

    __tablename__ = "revoked_sessions"

    sid: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    # When the session would have expired anyway (epoch seconds); the row is pruned after.
    expires_at: Mapped[float] = mapped_column(sa.Float, index=True)


class Connector(Base):
    """An MDM the server reads phones and their apps from (server.connectors)."""

    __tablename__ = "connectors"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    # Tenant, client id, URLs, enterprise: nothing secret.
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # The client secret or service-account key, Fernet-encrypted with the key in the data
    # directory (server.secretbox): the database alone does not give it away.
    secret: Mapped[str] = mapped_column(sa.Text)
    interval_minutes: Mapped[int] = mapped_column(default=60)
    # Phones of this connector join this group (scope, exceptions, filters).
    group: Mapped[str | None] = mapped_column(sa.String(255))
    created_by: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    next_sync_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_sync_at: Mapped[dt.datetime | None]
    last_result: Mapped[str | None] = mapped_column(sa.String(16))
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    last_counts: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    last_success_at: Mapped[dt.datetime | None]
    # One sync at a time across server processes: whoever set the lease (until it
    # expires) runs it; see server.store.connectors.claim.
    lease_owner: Mapped[str | None] = mapped_column(sa.String(64))
    lease_until: Mapped[dt.datetime | None]


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
    taken_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


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
