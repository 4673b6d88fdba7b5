"""Proof of possession at enrollment: the statement an agent signs with its machine key.

The agent (agent/host/machine.py) sends, beside its host facts, its public key and a
proof: `signed_at` and an Ed25519 signature by that key over the canonical JSON
of `{"purpose": "warden.agent-enrollment", "machine_id", "public_key",
"signed_at"}`. A proof that does not verify is a broken request (422). One that
verifies shows the sender holds the key it names; whether that lets it enroll
*again* as a known machine is `refusal`: the key must be the one bound to the
machine, and the statement fresh and never taken before. See docs/api.md,
"Proof of possession".
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from policies.compiler import canonical_json

# What the statement says it is (agent/host/machine.py signs the same words).
ENROLLMENT_PURPOSE = "warden.agent-enrollment"
# How far `signed_at` may be from the server's clock either way: a captured statement is
# useless after this, and a machine whose clock is further off waits for an approval.
PROOF_WINDOW = dt.timedelta(minutes=5)


class InvalidProof(ValueError):
    """The proof in an enrollment request is malformed or does not verify."""


@dataclass(frozen=True)
class Proof:
    """A verified statement: whoever sent it holds the private half of `public_key`."""

    public_key: str
    signed_at: dt.datetime


def verify(machine_id: str, public_key: str, signed_at: str, signature: str) -> Proof:
    """The proof, verified; InvalidProof saying what is wrong otherwise."""
    try:
        raw_key = base64.b64decode(public_key, validate=True)
        raw_signature = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidProof("public_key and proof.signature must be base64") from exc
    if len(raw_key) != 32:
        raise InvalidProof(f"public_key must be a raw 32-byte Ed25519 key, not {len(raw_key)} "
                           "bytes")
    try:
        when = dt.datetime.fromisoformat(signed_at)
    except ValueError as exc:
        raise InvalidProof(f"proof.signed_at {signed_at!r} is not an ISO 8601 time") from exc
    if when.tzinfo is None:
        raise InvalidProof("proof.signed_at needs a time zone (e.g. +00:00)")
    statement = {"purpose": ENROLLMENT_PURPOSE, "machine_id": machine_id,
                 "public_key": public_key, "signed_at": signed_at}
    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(raw_signature,
                                                           canonical_json(statement))
    except InvalidSignature as exc:
        raise InvalidProof("proof.signature does not verify with public_key over the "
                           "enrollment statement (see docs/api.md, \"Proof of possession\")"
                           ) from exc
    return Proof(public_key=public_key, signed_at=when.astimezone(dt.UTC))


def refusal(bound_key: str | None, proven_at: dt.datetime | None, proof: Proof | None,
            now: dt.datetime) -> str | None:
    """Why `proof` does not let a known machine enroll again (its key is `bound_key`, its
    last statement was signed at `proven_at`); None when it does."""
    if bound_key is None:
        return ("no key is bound to this machine yet (its agent predates machine keys and "
                "has not checked in since), so nothing can prove it is the same machine")
    if proof is None:
        return "the request carries no proof of this machine's key (an agent from before keys?)"
    if proof.public_key != bound_key:
        return ("it is signed by another key than the one bound to this machine: a "
                "reinstalled agent, or someone else holding the secret and this machine's id")
    skew = (proof.signed_at - now).total_seconds()
    if abs(skew) > PROOF_WINDOW.total_seconds():
        return (f"its proof is signed at {proof.signed_at.isoformat()}, {abs(skew):.0f} s "
                f"{'ahead of' if skew > 0 else 'behind'} the server's clock (at most "
                f"{PROOF_WINDOW.total_seconds():.0f} s): check the machine's clock")
    if proven_at is not None and proof.signed_at <= proven_at:
        return "its proof was taken before (a replayed request)"
    return None
