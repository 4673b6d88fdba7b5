"""Agents: enrollment, token authentication, check-ins, revocation and re-admission."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from policies.vocabulary import AgentState
from server.crypto import enrollment_proof, hashing
from server.crypto.enrollment_proof import Proof
from server.db import utcnow
from server.models import Agent, EnrollSecret, Finding
from server.store import audit, policies, reenrollments


@dataclass(frozen=True)
class HostFacts:
    """What an agent tells about its machine when it enrolls."""

    hostname: str
    machine_id: str
    os: str
    os_version: str
    arch: str
    agent_version: str
    user: str


class AgentRevokedError(Exception):
    """A revoked machine tried to enroll again; an administrator revoked it on purpose."""


class AgentNotRevokedError(Exception):
    """Re-admission asked for an agent that is not revoked (nothing to re-admit)."""


def enroll(
    session: Session, facts: HostFacts, secret: EnrollSecret, proof: Proof | None = None,
    address: str = "", now: dt.datetime | None = None,
) -> tuple[Agent, str]:
    """Enroll a machine, or re-enroll it: the agent and its new token (in clear, once).

    A new machine binds the key its `proof` names (none from an agent before keys).
    Re-enrolling a known machine id keeps the agent id (and so its findings) and
    replaces the token, so a reinstalled agent or a leaked token is fixed by enrolling
    again — but only with a fresh proof by the key bound to the machine, or once an
    administrator approved the request: otherwise it is held (reenrollments.hold) and
    ReenrollmentPending raised, for the caller to commit and answer. The secret's group
    becomes the agent's group.
    """
    now = now or utcnow()
    token = hashing.new_token(hashing.AGENT_TOKEN_PREFIX)
    agent = _by_machine_id(session, facts.machine_id)
    created = agent is None
    if agent is None:
        agent = Agent(id=str(uuid.uuid4()), enrolled_at=now, **asdict(facts))
        agent.token_hash = hashing.hash_token(token)
        agent.last_seen = now
        agent.group = secret.group
        _bind(agent, proof)
        try:
            # A savepoint: if the same machine enrolls twice at once, the loser re-reads.
            with session.begin_nested():
                session.add(agent)
        except sa.exc.IntegrityError:
            agent = _by_machine_id(session, facts.machine_id)
            if agent is None:
                raise
            created = False
    if not created:
        if agent.revoked_at is not None:
            raise AgentRevokedError(agent.id)
        _admit(session, agent, facts, secret, proof, address, now)
        for name, value in asdict(facts).items():
            setattr(agent, name, value)
        agent.token_hash = hashing.hash_token(token)
        agent.group = secret.group
        agent.last_seen = now
        _bind(agent, proof)
    session.execute(sa.update(EnrollSecret).where(EnrollSecret.id == secret.id)
                    .values(uses=EnrollSecret.uses + 1))
    session.flush()
    audit.record(session, f"secret:{secret.id}", "agent.enroll" if created else "agent.reenroll",
                 f"agent:{agent.id}", after=as_dict(agent))
    return agent, token


def _bind(agent: Agent, proof: Proof | None) -> None:
    agent.public_key = proof.public_key if proof else None
    agent.key_proven_at = proof.signed_at if proof else None


def _admit(session: Session, agent: Agent, facts: HostFacts, secret: EnrollSecret,
           proof: Proof | None, address: str, now: dt.datetime) -> None:
    """Return when this re-enrollment of `agent` proved the machine's key or was approved;
    else hold it and raise ReenrollmentPending."""
    reason = enrollment_proof.refusal(agent.public_key, agent.key_proven_at, proof, now)
    public_key = proof.public_key if proof else None
    if reason is None or reenrollments.take_approved(session, agent.id, public_key):
        if reason is None:
            # Proven: any request still pending for this machine was not the machine.
            pending = reenrollments.get(session, agent.id)
            if pending is not None:
                session.delete(pending)
        return
    raise reenrollments.hold(session, agent, asdict(facts), public_key, address, reason,
                             f"secret:{secret.id}", now)


def _by_machine_id(session: Session, machine_id: str) -> Agent | None:
    return session.scalars(
        sa.select(Agent).where(Agent.machine_id == machine_id).with_for_update()
    ).one_or_none()


def authenticate(session: Session, token: str) -> Agent | None:
    """The live (unrevoked) agent owning `token`, or None."""
    digest = token_digest(token)
    if digest is None:
        return None
    agent = session.scalars(sa.select(Agent).where(Agent.token_hash == digest)).one_or_none()
    if agent is None or agent.revoked_at is not None:
        return None
    return agent if hashing.tokens_equal(agent.token_hash, digest) else None


def token_digest(token: str) -> str | None:
    """How an agent token is stored; None for anything else (an API token, a secret)."""
    if not token.startswith(hashing.AGENT_TOKEN_PREFIX):
        return None
    return hashing.hash_token(token)


# -- the agent API's hot path ----------------------------------------------------------
#
# Every agent checks in every minute and polls its policy as often, so each of these is
# one statement that authenticates the token (the unique token_hash index; revoked agents
# never match) and reads the active policy in the same round trip. Core statements on a
# Connection, built once: constructing and cache-keying an ORM statement per request cost
# more CPU than running it (measured: 0.30 ms a check-in on SQLite, 0.14 ms prebuilt).

_AGENTS = Agent.metadata.tables[Agent.__tablename__]
_ACTIVE = policies.active_subquery()

_CHECKIN = (
    sa.update(_AGENTS)
    .where(_AGENTS.c.token_hash == sa.bindparam("digest"), _AGENTS.c.revoked_at.is_(None))
    .values(last_seen=sa.bindparam("last_seen"), policy_version=sa.bindparam("policy_version"),
            status=sa.bindparam("status"),
            # An agent enrolled before machine keys binds its key here, once: the token
            # authenticates it, and a key already bound never moves this way.
            public_key=sa.func.coalesce(_AGENTS.c.public_key,
                                        sa.bindparam("public_key", type_=sa.String)))
    .returning(_AGENTS.c.id, sa.select(_ACTIVE.c.version).scalar_subquery(),
               sa.select(_ACTIVE.c.number).scalar_subquery())
)

_STATUS_OF = (
    sa.select(_AGENTS.c.status)
    .where(_AGENTS.c.token_hash == sa.bindparam("digest"), _AGENTS.c.revoked_at.is_(None))
    .with_for_update()
)

_POLICY_FOR = (
    sa.select(_AGENTS.c.id, _ACTIVE.c.number, _ACTIVE.c.version)
    .select_from(_AGENTS.outerjoin(_ACTIVE, sa.true()))
    .where(_AGENTS.c.token_hash == sa.bindparam("digest"), _AGENTS.c.revoked_at.is_(None))
)


_LIVE_ID = (
    sa.select(_AGENTS.c.id)
    .where(_AGENTS.c.token_hash == sa.bindparam("digest"), _AGENTS.c.revoked_at.is_(None))
)


def live_agent_id(session: Session, token: str) -> str | None:
    """The id of the live agent owning `token`, or None: for a route that authenticates in
    the transaction that does its work (an event batch)."""
    digest = token_digest(token)
    if digest is None:
        return None
    agent_id: str | None = session.execute(_LIVE_ID, {"digest": digest}).scalar_one_or_none()
    return agent_id


@dataclass(frozen=True)
class CheckedIn:
    agent_id: str
    policy_etag: str | None  # the active bundle version; None while no policy is active
    policy_number: int | None = None  # its version number, for people (v2)
    # Sensors this check-in reports stalled or in error that the last one did not.
    new_sensor_problems: dict[str, dict[str, Any]] = field(default_factory=dict)


def checkin(
    connection: Connection,
    token: str,
    policy_version: str | None,
    status: dict[str, Any],
    now: dt.datetime | None = None,
    public_key: str | None = None,
) -> CheckedIn | None:
    """Record a check-in by the agent owning `token`; None if there is no such live agent.

    Run it in a write transaction (`writer(engine).begin()`); the caller commits.
    """
    digest = token_digest(token)
    if digest is None:
        return None
    previous: dict[str, Any] | None = None
    if sensor_problems(status):
        # Only an agent reporting a sick sensor costs a second statement: the status it
        # reported before, to tell a new problem (alerted) from one already known.
        previous = connection.execute(_STATUS_OF, {"digest": digest}).scalar_one_or_none()
    row = connection.execute(_CHECKIN, {
        "digest": digest, "last_seen": now or utcnow(), "policy_version": policy_version,
        "status": status, "public_key": public_key}).one_or_none()
    if row is None:
        return None
    return CheckedIn(agent_id=row[0], policy_etag=row[1], policy_number=row[2],
                     new_sensor_problems=new_sensor_problems(previous, status))


def sensor_problems(status: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The sensors a check-in status reports `stalled` or `error`: name -> report."""
    sensors = (status or {}).get("sensors")
    if not isinstance(sensors, dict):
        return {}
    return {name: report for name, report in sensors.items()
            if isinstance(report, dict) and report.get("state", "ok") != "ok"}


def new_sensor_problems(
    previous: dict[str, Any] | None, status: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The problems `status` reports that `previous` did not (in that state): each is
    alerted once, when it starts, not at every check-in while it lasts."""
    before = sensor_problems(previous)
    return {name: report for name, report in sensor_problems(status).items()
            if before.get(name, {}).get("state") != report.get("state")}


@dataclass(frozen=True)
class AgentPolicy:
    agent_id: str
    active: policies.ActivePolicy | None  # None while no policy is active


def policy_for(connection: Connection, token: str) -> AgentPolicy | None:
    """The live agent owning `token` and the policy it should run; None if no such agent."""
    digest = token_digest(token)
    if digest is None:
        return None
    row = connection.execute(_POLICY_FOR, {"digest": digest}).one_or_none()
    if row is None:
        return None
    agent_id, number, version = row
    active = None if number is None else policies.ActivePolicy(number=number, version=version)
    return AgentPolicy(agent_id=agent_id, active=active)


def get(session: Session, agent_id: str) -> Agent | None:
    return session.get(Agent, agent_id)


def revoke(session: Session, agent_id: str, actor: str) -> Agent | None:
    """Stop the agent's token from working; None if there is no such agent."""
    agent = session.get(Agent, agent_id, with_for_update=True)
    if agent is None:
        return None
    before = as_dict(agent)
    if agent.revoked_at is None:
        agent.revoked_at = utcnow()
    audit.record(session, actor, "agent.revoke", f"agent:{agent.id}", before=before,
                 after=as_dict(agent))
    return agent


def readmit(session: Session, agent_id: str, actor: str) -> Agent | None:
    """Let a revoked agent's machine enroll again; None if there is no such agent,
    AgentNotRevokedError if it is not revoked.

    The old token is not revived: it is replaced by the hash of a fresh one nobody is
    given, so the machine gets in only by enrolling again with a valid secret (which
    keeps the agent id, its findings and history, and hands it a new token). Until then
    the agent is silent, or active while its last check-in is recent. The machine's
    bound key stays: the machine proves itself with it when it enrolls back, and anyone
    else holding a secret and its id is held for approval as before the revocation.
    """
    agent = session.get(Agent, agent_id, with_for_update=True)
    if agent is None:
        return None
    if agent.revoked_at is None:
        raise AgentNotRevokedError(agent_id)
    before = as_dict(agent)
    agent.revoked_at = None
    agent.token_hash = hashing.hash_token(hashing.new_token(hashing.AGENT_TOKEN_PREFIX))
    audit.record(session, actor, "agent.readmit", f"agent:{agent.id}", before=before,
                 after=as_dict(agent))
    return agent


def state(agent: Agent, now: dt.datetime, silent_after: dt.timedelta) -> AgentState:
    if agent.revoked_at is not None:
        return "revoked"
    return "silent" if now - agent.last_seen > silent_after else "active"


def count_by_state(
    session: Session, now: dt.datetime, silent_after: dt.timedelta
) -> dict[AgentState, int]:
    """How many agents are active, silent and revoked (the same rule as `state`)."""
    cutoff = now - silent_after
    state_of = sa.case(
        (Agent.revoked_at.is_not(None), "revoked"),
        (Agent.last_seen < cutoff, "silent"),
        else_="active",
    )
    counts: dict[AgentState, int] = {"active": 0, "silent": 0, "revoked": 0}
    for name, count in session.execute(sa.select(state_of, sa.func.count()).group_by(state_of)):
        counts[name] = count
    return counts


def open_findings_by_agent(session: Session) -> dict[str, int]:
    rows = session.execute(
        sa.select(Finding.agent_id, sa.func.count())
        .where(Finding.status == "open")
        .group_by(Finding.agent_id)
    )
    return {agent_id: count for agent_id, count in rows}


def as_dict(agent: Agent) -> dict[str, Any]:
    return {
        "id": agent.id,
        "hostname": agent.hostname,
        "machine_id": agent.machine_id,
        "os": agent.os,
        "os_version": agent.os_version,
        "arch": agent.arch,
        "agent_version": agent.agent_version,
        "user": agent.user,
        "group": agent.group,
        "enrolled_at": agent.enrolled_at.isoformat(),
        "last_seen": agent.last_seen.isoformat(),
        "policy_version": agent.policy_version,
        "status": agent.status,
        "revoked_at": agent.revoked_at.isoformat() if agent.revoked_at else None,
        "public_key": agent.public_key,
        "source": agent.source,
        "retired_at": agent.retired_at.isoformat() if agent.retired_at else None,
        "notify_error": agent.notify_error,
    }
