"""What the agent keeps in its state directory, written atomically and 0600.

- `identity.json`: agent id, agent token, server URL and the policy public key
  pinned at enrollment (the server cannot swap it later without re-enrollment);
- `policy.json`: the last-known-good signed bundle, applied only after its
  signature and content hash verified, so the agent starts and enforces offline.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from policies.compiler import bundle_version, canonical_json
from policies.engine import Engine


class BundleRejected(Exception):
    """A policy bundle failed verification; the previous policy stays in force."""


@dataclass(frozen=True)
class Identity:
    agent_id: str
    agent_token: str
    server_url: str
    policy_public_key: bytes
    group: str | None = None


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, readable by the owner only (mkstemp makes 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True, mode=0o700)

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
        )

    def save_identity(self, identity: Identity) -> None:
        data = {
            "agent_id": identity.agent_id,
            "agent_token": identity.agent_token,
            "server_url": identity.server_url,
            "policy_public_key": base64.b64encode(identity.policy_public_key).decode(),
            "group": identity.group,
        }
        write_private(self.path / "identity.json", json.dumps(data, indent=2).encode())

    def forget_identity(self) -> None:
        (self.path / "identity.json").unlink(missing_ok=True)

    # -- policy ---------------------------------------------------------------

    def load_policy(self, public_key: bytes) -> dict[str, Any] | None:
        """The cached bundle, verified again: the file may have been edited on disk."""
        path = self.path / "policy.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return verify_bundle(data["bundle"], base64.b64decode(data["signature"]), public_key)

    def save_policy(self, bundle: dict[str, Any], signature: bytes) -> None:
        data = {"bundle": bundle, "signature": base64.b64encode(signature).decode()}
        write_private(self.path / "policy.json", json.dumps(data).encode())


def verify_bundle(bundle: dict[str, Any], signature: bytes, public_key: bytes) -> dict[str, Any]:
    """Return the bundle when its signature, hash and shape check out; else BundleRejected."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, canonical_json(bundle))
    except (InvalidSignature, ValueError) as exc:
        raise BundleRejected("policy bundle signature does not verify with the pinned key") \
            from exc
    if bundle.get("version") != bundle_version(bundle):
        raise BundleRejected("policy bundle version does not match its content")
    try:
        Engine(bundle)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleRejected(f"policy bundle is malformed: {exc!r}") from exc
    return bundle
