"""Policy versions: validate, compile and sign on the way in; activate and roll back.

A version is immutable once stored: its bundle text is exactly what was
signed, so serving it needs no re-serialisation and the signature stays valid.

Every activation (a rollback too) also signs an activation document: "bundle
`version` became active at `activated_at` as activation `serial`". The serial
only grows, so an agent refuses a bundle whose serial is lower than the one it
runs: an older policy, validly signed but replayed by someone on the path or a
stale mirror, is recognised as old. Rolling back is an admin's decision, so
it gets a new, higher serial like any activation.

Rotating the signing key (`rotate_signing_key`) re-signs every stored bundle
whose signature the old key verifies, and signs a new activation, with the new
key; the old key's signed statement naming the new one is kept, with those of
earlier rotations, next to the activation and served with it.
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
from server.actors import actor_name
from server.crypto.signing import (
    PolicySigner,
    SigningKeyError,
    fingerprint,
    retired_keys,
    rotation_statement,
    verify_bytes,
)
from server.db import utcnow
from server.models import PolicyVersion, ServerState
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
    state = session.get(ServerState, _STATE_ID)
    if state is not None:
        _refuse_retired(state, signer)
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
    _refuse_retired(state, signer)
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


def _refuse_retired(state: ServerState, signer: PolicySigner) -> None:
    """SigningKeyError if `signer` holds a key a rotation retired: agents that moved on
    would refuse what it signs (a server host whose key file was not replaced)."""
    rotations = _rotations(state)
    if signer.public_key_b64 in retired_keys(rotations):
        current = rotations[-1]["statement"]["public_key"]
        raise SigningKeyError(
            f"this server's policy-signing key ({fingerprint(signer.public_key_b64)}) was "
            f"retired by a key rotation; install the current key ({fingerprint(current)}, "
            "`policy-signing.<fingerprint>.key` on the host where `warden server rotate-key` "
            "ran) as its policy-signing.key")


@dataclass(frozen=True)
class Rotation:
    """What `rotate_signing_key` did."""

    previous_public_key: str
    public_key: str
    activation_serial: int | None  # the new activation's, None while no policy is active
    resigned: list[int]  # version numbers now signed with the new key
    # Versions whose stored signature the old key did not verify (changed in the database,
    # or signed by a key lost before): left as they are, so agents still refuse them.
    not_resigned: list[int]


def rotate_signing_key(session: Session, old: PolicySigner, new: PolicySigner,
                       actor: str) -> Rotation:
    """Move signing from `old` to `new`: the old key signs a statement naming the new one;
    the new key re-signs every bundle the old one verifies and a new activation."""
    state = _locked_state(session)  # one rotation at a time, and none during an activation
    _refuse_retired(state, old)  # rotated already (by a concurrent `rotate-key`?)
    now = utcnow()
    rotations = [*_rotations(state), rotation_statement(
        old, new.public_key_b64, now.isoformat(timespec="milliseconds"))]
    state.key_rotations = canonical_json(rotations).decode()
    resigned, not_resigned = [], []
    for row in session.scalars(sa.select(PolicyVersion).order_by(PolicyVersion.number)):
        # Verified first: a bundle changed in the database must not come out of a rotation
        # with a good signature.
        if verify_bytes(old.public_key_b64, row.bundle.encode(), row.signature):
            row.signature = new.sign_bytes(row.bundle.encode())
            resigned.append(row.number)
        else:
            not_resigned.append(row.number)
    serial = None
    if state.active_policy_number is not None:
        active_row = session.get(PolicyVersion, state.active_policy_number)
        assert active_row is not None  # foreign key
        # A new, higher serial: the agents' floor keeps rising; the bundle is the same.
        _sign_activation(state, active_row.version, new)
        serial = state.activation_serial
    state.updated_at = now
    result = Rotation(previous_public_key=old.public_key_b64, public_key=new.public_key_b64,
                      activation_serial=serial, resigned=resigned, not_resigned=not_resigned)
    audit.record(session, actor, "signing_key.rotate", "signing-key",
                 before={"public_key": old.public_key_b64},
                 after={"public_key": new.public_key_b64, "activation_serial": serial,
                        "resigned": resigned, "not_resigned": not_resigned})
    return result


def key_rotations(session: Session) -> list[dict[str, Any]]:
    """Every rotation of the signing key, oldest first: `[{"statement", "signature"}]`."""
    state = session.get(ServerState, _STATE_ID)
    return _rotations(state) if state is not None else []


def _rotations(state: ServerState) -> list[dict[str, Any]]:
    rotations: list[dict[str, Any]] = json.loads(state.key_rotations or "[]")
    return rotations


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
    without re-parsing it: `{"bundle", "signature", "activation", "activation_signature",
    "key_rotations"}` (the last only once the signing key was rotated).

    One statement reads the bundle, the activation and the rotations together, so a
    concurrent activation or rotation can never pair one version's bundle with another's
    activation, or a signature with rotations that do not lead to its key.
    """
    found = session.execute(
        sa.select(PolicyVersion.version, PolicyVersion.bundle, PolicyVersion.signature,
                  ServerState.activation, ServerState.activation_signature,
                  ServerState.key_rotations)
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
    if found.key_rotations is not None:
        body += b',"key_rotations":' + found.key_rotations.encode()
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
            "created_by": row.created_by, "created_by_name": actor_name(row.created_by),
            "active": row.number == active_number}


def _summary(row: PolicyVersion) -> dict[str, Any]:
    return {"version_number": row.number, "version": row.version, "name": row.name,
            "mode": row.mode}
