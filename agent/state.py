"""What the agent keeps in its state directory, written atomically and 0600.

- `identity.json`: agent id, agent token, server URL and the policy public key
  pinned at enrollment, which only the server's signed key rotations move on
  (agent.uplink.trust); with it the rotations as last served, so the key can be checked
  against the `policy_public_key` setting without the server;
- `policy.json`: the last-known-good signed bundle, applied only after its
  signature and content hash verified, so the agent starts and enforces offline;
  with it the server's signed activation of that bundle, whose serial is the
  floor below which no bundle is accepted any more (see `refuse_older`), and the
  key rotations it came with. After a rotation `policy.json` is written before
  `identity.json`: a policy signed by the new key still loads with the old key
  pinned, and the pin is moved at the next start (agent.uplink.sync.PolicySync).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.host.ownership import require_trusted
from agent.uplink.trust import UntrustedKey, follow, key_b64, key_path
from policies.compiler import bundle_version, canonical_json
from policies.engine import Engine
from policies.private_files import write_private

# What the server's signed activation document says it is (server/store/policies.py).
ACTIVATION_PURPOSE = "warden.policy-activation"


class BundleRejected(Exception):
    """A policy bundle failed verification; the previous policy stays in force."""


@dataclass(frozen=True)
class Activation:
    """The server's signed word that bundle `version` became active at `activated_at` as
    activation `serial`, a number that grows with every activation (rollbacks included)."""

    serial: int
    activated_at: str
    version: str
    document: dict[str, Any]  # exactly as signed, to be saved and verified again
    signature: bytes


@dataclass(frozen=True)
class SignedPolicy:
    bundle: dict[str, Any]
    activation: Activation | None  # None from a server, or a state dir, before serials
    public_key: bytes  # what it verified with: the pinned key, or where rotations led
    key_rotations: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Identity:
    agent_id: str
    agent_token: str
    server_url: str
    policy_public_key: bytes
    group: str | None = None
    # The server's signed key rotations as last served, oldest first (agent.uplink.trust).
    key_rotations: tuple[dict[str, Any], ...] = ()

    def trusted_from(self, configured: bytes) -> bool:
        """Whether the pinned key is `configured`, or one its rotations lead to."""
        try:
            return self.policy_public_key in key_path(configured, self.key_rotations)
        except UntrustedKey:
            return False


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Its token and policy are only as safe as the folder: nobody else may write it.
        require_trusted(path, "the agent state directory", "directory")

    @property
    def spool_path(self) -> Path:
        return self.path / "spool.db"

    # -- identity -------------------------------------------------------------

    def load_identity(self) -> Identity | None:
        path = self.path / "identity.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return Identity(
            agent_id=data["agent_id"],
            agent_token=data["agent_token"],
            server_url=data["server_url"],
            policy_public_key=base64.b64decode(data["policy_public_key"]),
            group=data.get("group"),
            key_rotations=tuple(data.get("key_rotations") or ()),
        )

    def save_identity(self, identity: Identity) -> None:
        data = {
            "agent_id": identity.agent_id,
            "agent_token": identity.agent_token,
            "server_url": identity.server_url,
            "policy_public_key": base64.b64encode(identity.policy_public_key).decode(),
            "group": identity.group,
            "key_rotations": list(identity.key_rotations),
        }
        write_private(self.path / "identity.json", json.dumps(data, indent=2).encode())

    def forget_identity(self) -> None:
        (self.path / "identity.json").unlink(missing_ok=True)

    def drop_untrusted_identity(self, configured: bytes | None) -> str | None:
        """Forget an identity (and the policy it verified) whose pinned key the configured
        `policy_public_key` does not lead to; why, or None when there was nothing to drop.

        Such a state dir was enrolled with another server, or trusted an impostor's key on
        first use, or predates a lost key: the agent enrolls again, checking the key.
        """
        identity = self.load_identity()
        if configured is None or identity is None or identity.trusted_from(configured):
            return None
        # Set aside, not deleted: a mistyped setting pushed to a fleet must be recoverable
        # (fix it, move the files back) even where the enrollment secret is gone by now.
        for name in ("identity.json", "policy.json"):
            if (self.path / name).exists():
                os.replace(self.path / name, self.path / f"{name}.untrusted")
        return (f"the state dir pinned policy key {key_b64(identity.policy_public_key)}, "
                f"which the configured policy_public_key {key_b64(configured)} does not "
                "lead to; its identity and policy are set aside (*.untrusted) and the agent "
                "enrolls again")

    # -- policy ---------------------------------------------------------------

    def load_policy(self, public_key: bytes) -> dict[str, Any] | None:
        """The cached bundle, verified again: the file may have been edited on disk."""
        signed = self.load_signed_policy(public_key)
        return signed.bundle if signed else None

    def load_signed_policy(self, public_key: bytes) -> SignedPolicy | None:
        """The cached bundle and its activation, both verified again."""
        path = self.path / "policy.json"
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            bundle, signature = data["bundle"], base64.b64decode(data["signature"])
            # A policy.json written before activation serials has none: it still loads.
            activation_signature = data.get("activation_signature")
            activation_document = data.get("activation")
            if activation_signature is not None:
                activation_signature = base64.b64decode(activation_signature)
            rotations = tuple(data.get("key_rotations") or ())
        except (ValueError, KeyError, TypeError) as exc:  # binascii.Error is a ValueError
            raise BundleRejected(f"{path} is unreadable: {exc!r}") from exc
        key = signing_key(public_key, rotations)
        bundle = verify_bundle(bundle, signature, key)
        return SignedPolicy(bundle, verify_activation(activation_document, activation_signature,
                                                      key, bundle), key, rotations)

    def save_policy(self, bundle: dict[str, Any], signature: bytes,
                    activation: Activation | None = None,
                    key_rotations: tuple[dict[str, Any], ...] = ()) -> None:
        data: dict[str, Any] = {"bundle": bundle,
                                "signature": base64.b64encode(signature).decode()}
        if activation is not None:
            data["activation"] = activation.document
            data["activation_signature"] = base64.b64encode(activation.signature).decode()
        if key_rotations:
            data["key_rotations"] = list(key_rotations)
        write_private(self.path / "policy.json", json.dumps(data).encode())


def signing_key(pinned: bytes, rotations: tuple[dict[str, Any], ...]) -> bytes:
    """The key a policy that came with `rotations` must verify with; else BundleRejected."""
    try:
        return follow(pinned, rotations)
    except UntrustedKey as exc:
        raise BundleRejected(str(exc)) from exc


def _verify_signature(public_key: bytes, signature: bytes, data: Any, what: str) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, canonical_json(data))
    except (InvalidSignature, ValueError) as exc:
        raise BundleRejected(f"{what} signature does not verify with the pinned key") from exc


def verify_bundle(bundle: dict[str, Any], signature: bytes, public_key: bytes) -> dict[str, Any]:
    """Return the bundle when its signature, hash and shape check out; else BundleRejected."""
    _verify_signature(public_key, signature, bundle, "policy bundle")
    if bundle.get("version") != bundle_version(bundle):
        raise BundleRejected("policy bundle version does not match its content")
    try:
        Engine(bundle)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleRejected(f"policy bundle is malformed: {exc!r}") from exc
    return bundle


def verify_activation(
    document: dict[str, Any] | None, signature: bytes | None, public_key: bytes,
    bundle: dict[str, Any],
) -> Activation | None:
    """The verified activation of the (verified) `bundle`; None when there is none."""
    if document is None:
        return None
    if signature is None:
        raise BundleRejected("policy activation is not signed")
    _verify_signature(public_key, signature, document, "policy activation")
    serial, activated_at = document.get("serial"), document.get("activated_at")
    if (document.get("purpose") != ACTIVATION_PURPOSE or type(serial) is not int
            or not isinstance(activated_at, str)):
        raise BundleRejected("policy activation is malformed")
    if document.get("version") != bundle.get("version"):
        raise BundleRejected("policy activation is for another bundle version")
    return Activation(serial, activated_at, bundle["version"], document, signature)


def refuse_older(offered: Activation | None, in_force: Activation | None) -> None:
    """BundleRejected unless `offered` is at least as new as the activation in force.

    Every activation on the server, a rollback to an older version too, signs a
    higher serial; so a lower one is an old answer replayed (by someone on the
    path, or a stale mirror), and so is a missing one once serials are in force.
    The same serial is fine for the same version: it is the policy already in force.
    """
    if in_force is None:
        return  # the first policy, or a state dir from before serials: nothing to compare
    replayed = "(a replayed or downgraded policy)"
    if offered is None:
        raise BundleRejected(f"policy bundle has no activation serial, but serial "
                             f"{in_force.serial} is in force {replayed}")
    if offered.serial < in_force.serial:
        raise BundleRejected(f"policy activation serial {offered.serial} is older than "
                             f"serial {in_force.serial} in force {replayed}")
    if offered.serial == in_force.serial and offered.version != in_force.version:
        raise BundleRejected(f"policy activation serial {offered.serial} is in force for "
                             f"another version {replayed}")
