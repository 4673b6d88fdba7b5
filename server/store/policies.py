"""Policy versions: validate, compile and sign on the way in; activate and roll back.

A version is immutable once stored: its bundle text is exactly what was
signed, so serving it needs no re-serialisation and the signature stays valid.

Every activation (a rollback too) also signs an activation document: "bundle
`version` became active at `activated_at` as activation `serial`". The serial
only grows, so an agent refuses a bundle whose serial is lower than the one it
runs: an older policy, validly signed but replayed by someone on the path or a
stale mirror, is recognised as old. Rolling back is an admin's decision, so
it gets a new, higher serial like any activation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from policies.catalog_model import AppDefinition
from policies.compiler import canonical_json, compile_bundle
from policies.loader import parse_policy
from server.db import utcnow
from server.models import PolicyVersion, ServerState
from server.signing import PolicySigner
from server.store import audit

_STATE_ID = 1
# What the signed document says it is, so it can never pass for a bundle or anything
# else signed with the same key. agent/state.py checks the same string.
ACTIVATION_PURPOSE = "warden.policy-activation"


class NoSuchPolicyError(LookupError):
    """The version number does not exist, or there is nothing to roll back to."""


@dataclass(frozen=True)
class ActivePolicy:
    """What the agent API needs on every request, and nothing more."""

    number: int
    version: str


def add_version(
    session: Session,
    *,
    text: str,
    source_name: str,
    catalog: dict[str, AppDefinition],
    signer: PolicySigner,
    actor: str,
) -> PolicyVersion:
    """Validate, compile, sign and store a policy; raises policies.errors.PolicyError."""
    policy = parse_policy(text, source_name, catalog)
    bundle = compile_bundle(policy, catalog)
    bundle_bytes = canonical_json(bundle)
    row = PolicyVersion(
        version=bundle["version"],
        name=policy.name,
        mode=policy.mode,
        source=text,
        source_format="json" if text.lstrip().startswith("{") else "yaml",
        bundle=bundle_bytes.decode(),
        signature=signer.sign_bytes(bundle_bytes),
        created_by=actor,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    audit.record(session, actor, "policy.create", f"policy:{row.number}",
                 after=_summary(row))
    return row


def activate(session: Session, number: int, actor: str, signer: PolicySigner) -> PolicyVersion:
    """Serve version `number` to agents from now on; the old one becomes "previous".

    Activating the active version again changes nothing but signs a new activation.
    """
    row = session.get(PolicyVersion, number)
    if row is None:
        raise NoSuchPolicyError(f"no policy version {number}")
    state = _locked_state(session)
    before = _numbers(state)
    if state.active_policy_number != number:
        state.previous_policy_number = state.active_policy_number
        state.active_policy_number = number
    _sign_activation(state, row.version, signer)
    audit.record(session, actor, "policy.activate", f"policy:{number}", before=before,
                 after=_numbers(state))
    return row


def rollback(session: Session, actor: str, signer: PolicySigner) -> PolicyVersion:
    """Swap back to the previously active version (a second rollback undoes the first)."""
    state = _locked_state(session)
    if state.previous_policy_number is None:
        raise NoSuchPolicyError("no previously active policy version to roll back to")
    before = _numbers(state)
    state.active_policy_number, state.previous_policy_number = (
        state.previous_policy_number, state.active_policy_number)
    row = session.get(PolicyVersion, state.active_policy_number)
    assert row is not None  # foreign key
    _sign_activation(state, row.version, signer)
    audit.record(session, actor, "policy.rollback", f"policy:{state.active_policy_number}",
                 before=before, after=_numbers(state))
    return row


def sign_missing_activation(session: Session, signer: PolicySigner) -> int | None:
    """Sign an activation for the active policy of a database migrated from before
    activations were signed (it has none); the new serial, or None if nothing was missing.

    Only a database that never had one (serial 0) gets one this way: every later
    activation is an admin's, through `activate` or `rollback`.
    """
    # Locked: two server processes starting together must not both sign.
    state = _locked_state(session)
    if not (state.active_policy_number is not None and state.activation is None
            and state.activation_serial == 0):
        return None
    row = session.get(PolicyVersion, state.active_policy_number)
    assert row is not None  # foreign key
    _sign_activation(state, row.version, signer)
    return state.activation_serial


def _sign_activation(state: ServerState, version: str, signer: PolicySigner) -> None:
    now = utcnow()
    # The last serial plus one — or the time in milliseconds, when that is larger: after a
    # database is restored from a backup, a plain counter would restart below serials the
    # agents already run, and they would refuse every policy until it caught up.
    serial = max(state.activation_serial + 1, int(now.timestamp() * 1000))
    document = {"purpose": ACTIVATION_PURPOSE, "serial": serial,
                "activated_at": now.isoformat(timespec="milliseconds"), "version": version}
    state.activation_serial = serial
    state.activation = canonical_json(document).decode()
    state.activation_signature = signer.sign(document)
    state.updated_at = now


def _numbers(state: ServerState) -> dict[str, int | None]:
    return {"active": state.active_policy_number, "previous": state.previous_policy_number,
            "activation_serial": state.activation_serial}


def _locked_state(session: Session) -> ServerState:
    state = session.get(ServerState, _STATE_ID, with_for_update=True)
    if state is None:
        raise RuntimeError("server_state row missing: the database was not migrated")
    return state


def active(session: Session) -> ActivePolicy | None:
    """The number and bundle version agents should run; one small query."""
    row = session.execute(_active_select()).one_or_none()
    return ActivePolicy(number=row.number, version=row.version) if row else None


def active_subquery() -> sa.Subquery:
    """`active`'s (number, version) row, none while no policy is active, for other queries
    to join: the agent API reads it in the same statement that authenticates the agent."""
    return _active_select().subquery("active_policy")


def _active_select() -> sa.Select[int, str]:
    return (sa.select(PolicyVersion.number, PolicyVersion.version)
            .join(ServerState, ServerState.active_policy_number == PolicyVersion.number)
            .where(ServerState.id == _STATE_ID))


def active_numbers(session: Session) -> tuple[int | None, int | None]:
    """(active, previous) version numbers."""
    state = session.get(ServerState, _STATE_ID)
    if state is None:
        return None, None
    return state.active_policy_number, state.previous_policy_number


@dataclass(frozen=True)
class SignedActive:
    version: str
    body: bytes


def signed_active_json(session: Session | Connection) -> SignedActive | None:
    """The agent's `GET policy` body for the active version, built from the stored text
    without re-parsing it: `{"bundle", "signature", "activation", "activation_signature"}`.

    One statement reads the bundle and the activation together, so a concurrent
    activation can never pair one version's bundle with another's activation.
    """
    found = session.execute(
        sa.select(PolicyVersion.version, PolicyVersion.bundle, PolicyVersion.signature,
                  ServerState.activation, ServerState.activation_signature)
        .join(ServerState, ServerState.active_policy_number == PolicyVersion.number)
        .where(ServerState.id == _STATE_ID)
    ).one_or_none()
    if found is None:
        return None
    body = b'{"bundle":' + found.bundle.encode() + b',"signature":' + json.dumps(
        found.signature).encode()
    if found.activation is not None:
        body += b',"activation":' + found.activation.encode() + \
            b',"activation_signature":' + json.dumps(found.activation_signature).encode()
    return SignedActive(version=found.version, body=body + b"}")


def get(session: Session, number: int) -> PolicyVersion | None:
    return session.get(PolicyVersion, number)


def list_versions(session: Session) -> list[PolicyVersion]:
    return list(session.scalars(sa.select(PolicyVersion).order_by(PolicyVersion.number)))


def bundle_of(row: PolicyVersion) -> dict[str, Any]:
    bundle: dict[str, Any] = json.loads(row.bundle)
    return bundle


def as_dict(row: PolicyVersion, active_number: int | None) -> dict[str, Any]:
    """The list shape; `GET policies/{n}` adds `source`, `bundle` and `signature`."""
    return {**_summary(row), "created_at": row.created_at.isoformat(),
            "created_by": row.created_by, "active": row.number == active_number}


def _summary(row: PolicyVersion) -> dict[str, Any]:
    return {"version_number": row.number, "version": row.version, "name": row.name,
            "mode": row.mode}
