"""Machines, people, policies and what agents report: the tables the server began with."""


from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from server.db import utcnow
from server.models.base import Base, JSONType


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (
        sa.Index("ix_agents_hostname_id", "hostname", "id"),
        # The overview's list of groups (migration 0011).
        sa.Index("ix_agents_group", "group"),
    )

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
    # (see server.crypto.key_rotation). Public, and useless without the keys: it may be in
    # the database.
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


